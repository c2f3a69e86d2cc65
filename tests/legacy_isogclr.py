"""The iSogCLR objective as tempnlp 0.1 wrote it, frozen: the old side of the old-versus-new tests.

A verbatim copy of ``tempnlp/objectives/isogclr.py`` before the temperature became its own axis (commit b79b117),
less its input validation and process gathering, with the three small helpers it imported inlined. It is never
edited to follow the package: ``tests/test_legacy_parity.py`` checks that today's compositions give its numbers.
"""

# ruff: noqa

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from tempnlp._checks import check_embeddings, ordered_bounds, positive_float


def as_columns(documents):
    if isinstance(documents, Tensor):
        return list(documents.unbind(1)) if documents.dim() == 3 else [documents]
    return list(documents)


def normalized_similarities(anchors, columns, extra_negatives=None):
    anchors_normalized = F.normalize(anchors, p=2, dim=1)
    documents = torch.cat([*columns, extra_negatives] if extra_negatives is not None else columns, dim=0)
    return anchors_normalized @ F.normalize(documents, p=2, dim=1).T, anchors_normalized


class SampleState(nn.Module):
    """Per-sample buffers of one direction: log s, u, tau, and whether the sample has been seen."""

    def __init__(self, num_samples: int, tau_init: float) -> None:
        super().__init__()
        self.register_buffer("tau", torch.full((num_samples,), float(tau_init), dtype=torch.float32))
        self.register_buffer("log_s", torch.zeros(num_samples, dtype=torch.float32))
        self.register_buffer("u", torch.zeros(num_samples, dtype=torch.float32))
        self.register_buffer("seen", torch.zeros(num_samples, dtype=torch.bool))

    @property
    def s(self) -> Tensor:
        return self.log_s.exp()


class TempNet(nn.Module):
    """A small network mapping a (detached) embedding to a temperature in [tau_min, tau_max] (Qiu et al. 2024).

    ``Linear(d, hidden) -> ReLU -> Linear(hidden, 1) -> sigmoid``, rescaled to the bounds; the last layer starts
    at zero weight with the bias that gives ``tau_init``, so every sample begins at ``tau_init``.
    """

    def __init__(self, embedding_dim: int, hidden: int, tau_init: float, tau_min: float, tau_max: float) -> None:
        super().__init__()
        if not tau_min < tau_init < tau_max:
            raise ValueError(f"TempNet needs tau_min < tau_init < tau_max, got {tau_min}, {tau_init}, {tau_max}.")
        self.tau_min, self.tau_max = tau_min, tau_max
        self.hidden = nn.Linear(embedding_dim, hidden)
        self.output = nn.Linear(hidden, 1)
        nn.init.zeros_(self.output.weight)
        fraction = (tau_init - tau_min) / (tau_max - tau_min)
        nn.init.constant_(self.output.bias, math.log(fraction / (1.0 - fraction)))

    def forward(self, embeddings: Tensor) -> Tensor:
        hidden = torch.relu(self.hidden(embeddings.detach().to(self.hidden.weight.dtype)))
        return self.tau_min + (self.tau_max - self.tau_min) * torch.sigmoid(self.output(hidden).squeeze(-1))


class ISogCLR(nn.Module):
    """iSogCLR (``learn_temperature=True``, the default) or SogCLR (``False``) at tensor level.

    Call as ``objective(queries, documents, indices)``: queries (B, d), documents positives (B, d) or a list
    ``[positives, negatives_1, ...]``, indices the dataset index of each row (B,), all distinct.

    Args:
        num_samples: size of the training set (indices must lie in ``[0, num_samples)``).
        tau_init: initial temperature (0.1: the authors' unimodal setting; SogCLR's fixed tau).
        tau_min, tau_max: bounds of the per-sample temperature (0.05, 1.0).
        gamma: moving-average weight of the new partition estimate (0.9).
        rho: KL radius (0.3-0.4 in the authors' unimodal runs); must be below log(number of negatives).
        eta: temperature step size (0.01-0.03).
        beta: moving-average weight of the temperature gradient (0.8).
        grad_clip: clip of the temperature gradient G_i (5.0, as in the authors' code); None disables it.
        learn_temperature: False gives SogCLR (one fixed temperature ``tau_init``).
        symmetric: add the document-to-query direction, which keeps its own buffers (``document_state``), as
            the bimodal (query/document) form of iSogCLR does.
        check_finite: raise a ValueError on NaN/inf embeddings or invalid indices (one host read per call).
        temperature_network: a :class:`TempNet` (or any module mapping (B, d) embeddings to (B,) temperatures):
            tau_i is predicted from the detached query embedding instead of read from the buffer, and the network
            is trained by the robust objective's gradient ``G_i`` (steps 5-6 become a backward pass through
            ``G_i * tau_i``, whose value is kept at zero). ``tau`` then records the last prediction per index.
        gather_across_devices: in multi-process training, gather embeddings and indices of every rank, so the
            loss and the state updates are those of the global batch, identical on every rank.
    """

    def __init__(
        self,
        num_samples: int,
        tau_init: float = 0.1,
        tau_min: float = 0.05,
        tau_max: float = 1.0,
        gamma: float = 0.9,
        rho: float = 0.3,
        eta: float = 0.01,
        beta: float = 0.8,
        grad_clip: float | None = 5.0,
        learn_temperature: bool = True,
        symmetric: bool = False,
        check_finite: bool = True,
        temperature_network: nn.Module | None = None,
        gather_across_devices: bool = False,
    ) -> None:
        super().__init__()
        self.gather_across_devices = bool(gather_across_devices)
        if isinstance(num_samples, bool) or not isinstance(num_samples, int) or num_samples < 1:
            raise ValueError(f"num_samples must be a positive int (the training set size), got {num_samples!r}.")
        self.num_samples = num_samples
        self.tau_init = positive_float("tau_init", tau_init)
        self.tau_min = positive_float("tau_min", tau_min)
        self.tau_max = positive_float("tau_max", tau_max)
        ordered_bounds("tau_min", self.tau_min, "tau_max", self.tau_max)
        if learn_temperature and not self.tau_min <= self.tau_init <= self.tau_max:
            raise ValueError(
                f"tau_init ({self.tau_init}) must lie in [tau_min, tau_max] = [{self.tau_min}, {self.tau_max}]."
            )
        for name, value in (("gamma", gamma), ("beta", beta)):
            if not 0.0 < float(value) <= 1.0:
                raise ValueError(f"{name} is a moving-average weight in (0, 1], got {value!r}.")
        self.gamma, self.beta = float(gamma), float(beta)
        self.rho = positive_float("rho", rho, hint="The authors use 0.3-0.4 for unimodal data.")
        self.eta = positive_float("eta", eta)
        self.grad_clip = None if grad_clip is None else positive_float("grad_clip", grad_clip)
        self.learn_temperature = bool(learn_temperature)
        self.symmetric = bool(symmetric)
        self.check_finite = bool(check_finite)
        self.query_state = SampleState(num_samples, self.tau_init)
        self.document_state = SampleState(num_samples, self.tau_init) if self.symmetric else None
        # TempNet replaces the per-sample temperature buffer by a prediction from the embedding.
        self.temperature_network = temperature_network
        self.last_temperatures: list[Tensor] = []
        self._largest_batch = 0  # host-side, to tell a trailing short batch from a misconfigured rho

    @property
    def tau(self) -> Tensor:
        """Per-sample temperatures of the queries (one per dataset index)."""
        return self.query_state.tau

    def temperature_stats(self) -> dict[str, float]:
        from tempnlp.temperature import temperature_stats

        return temperature_stats(self.last_temperatures)

    def forward(
        self,
        queries: Tensor,
        documents: Tensor | Sequence[Tensor],
        indices: Tensor | None,
        extra_negatives: Tensor | None = None,
    ) -> Tensor:
        columns = as_columns(documents)
        # with gathering, every rank evaluates, and updates the state of, the global batch
        indices = self._validate_indices(indices, queries, columns)
        batch = queries.size(0)
        negatives = self.negatives_per_row(batch, len(columns), 0 if extra_negatives is None else len(extra_negatives))
        if negatives < 1:
            raise ValueError("iSogCLR needs at least one negative: use a batch size > 1 or a hard-negative column.")
        update_temperature = self.learn_temperature and torch.is_grad_enabled()  # evaluation moves nothing
        if update_temperature and self.rho >= math.log(negatives):
            if batch >= self._largest_batch:
                self.check_rho(negatives)
            # A short trailing batch (the epoch's remainder): train on it, leave its temperatures as they are.
            update_temperature = False
        self._largest_batch = max(self._largest_batch, batch)
        self.last_temperatures = []
        similarities, queries_n = normalized_similarities(queries, columns, extra_negatives)
        dtype = torch.promote_types(similarities.dtype, torch.float32)
        similarities = similarities.to(dtype)
        loss = self._direction(similarities, indices, self.query_state, queries, update_temperature)
        if self.symmetric:
            positives_n = F.normalize(columns[0], dim=1)
            backward = (positives_n @ queries_n.T).to(dtype)  # each positive against the B queries
            document_loss = self._direction(backward, indices, self.document_state, columns[0], update_temperature)
            loss = 0.5 * (loss + document_loss)
        return loss

    def negatives_per_row(self, batch: int, document_columns: int, extra: int = 0) -> int:
        """The fewest negatives a row has: the other documents and the extra ones, and in the symmetric form
        the document direction's B - 1 other queries."""
        negatives = batch * document_columns - 1 + extra
        return min(negatives, batch - 1) if self.symmetric else negatives

    def check_rho(self, negatives: int) -> None:
        """A tau step needs rho below log(negatives): a KL ball that wide contains every weighting."""
        if self.learn_temperature and self.rho >= math.log(max(negatives, 1)):
            raise ValueError(
                f"rho ({self.rho}) must be below log(number of negatives) = log({negatives}) = "
                f"{math.log(max(negatives, 1)):.3f}: the KL ball would contain every weighting. Lower rho or raise "
                "the batch size."
            )

    def _direction(
        self,
        similarities: Tensor,
        indices: Tensor | None,
        state: SampleState,
        anchors: Tensor,
        update_temperature: bool,
    ) -> Tensor:
        """One direction. Outside training (no gradient, so no indices: see _validate_indices) the state is neither
        read nor written: every row uses tau_init (or TempNet's prediction) and its own batch estimate of s."""
        training = torch.is_grad_enabled()
        batch = similarities.size(0)
        rows = torch.arange(batch, device=similarities.device)
        positive = similarities[rows, rows]
        h = similarities - positive.unsqueeze(1)  # h_ij; gradients flow through it
        negative_mask = torch.ones_like(h, dtype=torch.bool)
        negative_mask[rows, rows] = False
        count = negative_mask.sum(dim=1).to(h.dtype)  # n_i

        predicted = None
        if self.temperature_network is not None:
            predicted = self.temperature_network(anchors).to(h.dtype)  # (B,), differentiable in the network only
        with torch.no_grad():
            if predicted is not None:
                tau = predicted.detach()
            elif indices is None:
                tau = torch.full((batch,), self.tau_init, dtype=h.dtype, device=h.device)
            else:
                tau = state.tau[indices].to(h.dtype)
            scaled = (h.detach() / tau.unsqueeze(1)).masked_fill(~negative_mask, float("-inf"))
            log_g = torch.logsumexp(scaled, dim=1) - count.log()  # log of (1/n_i) sum_j exp(h_ij / tau)
            seen = state.seen[indices] if indices is not None else torch.zeros_like(log_g, dtype=torch.bool)
            previous = state.log_s[indices].to(h.dtype) if indices is not None else log_g
            moving = (
                torch.logaddexp(math.log1p(-self.gamma) + previous, math.log(self.gamma) + log_g)
                if self.gamma < 1
                else log_g
            )
            log_s = torch.where(seen, moving, log_g)
            weights = torch.exp(scaled - log_s.unsqueeze(1))  # p_ij, zero off the negatives
            if training:
                state.log_s[indices] = log_s.to(state.log_s.dtype)
                state.seen[indices] = True
                if predicted is not None:  # TempNet's latest tau_i, for the histograms; a short batch's too
                    state.tau[indices] = tau.to(state.tau.dtype)

        loss = ((weights * h).sum(dim=1) / count).mean()

        if update_temperature and training:
            with torch.no_grad():
                weighted = (weights * h.detach()).sum(dim=1) / count
                gradient = log_s + self.rho - weighted / tau
                if self.grad_clip is not None:
                    gradient = gradient.clamp(-self.grad_clip, self.grad_clip)
            if predicted is not None:
                # d/d(theta) of mean_i G_i * tau_i(theta): the robust objective's descent direction for the
                # network; the term's value is zero so the logged loss stays the contrastive one.
                loss = loss + (gradient * (predicted - predicted.detach())).mean()
                self.last_temperatures.append(tau.detach())
                return loss
            with torch.no_grad():
                u = (1.0 - self.beta) * state.u[indices].to(h.dtype) + self.beta * gradient
                state.u[indices] = u.to(state.u.dtype)
                state.tau[indices] = (tau - self.eta * u).clamp(self.tau_min, self.tau_max).to(state.tau.dtype)
        self.last_temperatures.append(tau.detach())
        return loss

    def _validate_indices(self, indices: Tensor | None, queries: Tensor, columns: list[Tensor]) -> Tensor | None:
        if not torch.is_grad_enabled():
            # Evaluation is stateless, see _direction: an evaluation set's 'label' column (NLI labels, say) does not
            # index the training samples whose state the buffers hold, so it is not read as one.
            return None
        if indices is None:
            raise ValueError(
                "iSogCLR needs the dataset index of every row. Add it with "
                "tempnlp.state.add_index_column(dataset) (sentence-transformers passes the 'label' column to the "
                "loss untokenised), or pass indices=... at tensor level."
            )
        if not isinstance(indices, Tensor):
            indices = torch.as_tensor(indices)
        if indices.dim() != 1 or indices.numel() != queries.size(0) or indices.is_floating_point():
            raise ValueError(
                f"indices must be a 1-D integer tensor with one entry per row ({queries.size(0)}), got "
                f"{indices.dtype} of shape {tuple(indices.shape)}."
            )
        indices = indices.to(device=queries.device, dtype=torch.long)
        if self.check_finite:
            # One host read for every value check: finite embeddings, indices in range, indices distinct.
            ordered = indices.sort().values
            flags = torch.stack(
                [
                    *(column.isfinite().all() for column in [queries, *columns]),
                    (indices >= 0).all() & (indices < self.num_samples).all(),
                    (ordered[1:] != ordered[:-1]).all(),
                ]
            ).tolist()
            if not all(flags[:-2]):
                check_embeddings("queries", queries, batch_size=None, dim=None)
                raise ValueError(
                    "Non-finite (NaN or inf) values in the embeddings. The encoder diverged or overflowed: lower "
                    "the learning rate, use bf16 instead of fp16, or enable gradient clipping (max_grad_norm)."
                )
            if not flags[-2]:
                raise ValueError(
                    f"Dataset indices must lie in [0, {self.num_samples}) (num_samples), got values from "
                    f"{int(indices.min())} to {int(indices.max())}: set num_samples to the training set size."
                )
            if not flags[-1]:
                raise ValueError(
                    "Duplicate dataset indices in one batch: a sample's state would be updated twice. Each row "
                    "must be a distinct training sample (use add_index_column on the dataset you train on)."
                )
        return indices

    def extra_repr(self) -> str:
        kind = "iSogCLR" if self.learn_temperature else "SogCLR"
        return (
            f"{kind}, num_samples={self.num_samples}, tau_init={self.tau_init}, tau=[{self.tau_min}, {self.tau_max}], "
            f"gamma={self.gamma}, rho={self.rho}, eta={self.eta}, beta={self.beta}, grad_clip={self.grad_clip}, "
            f"symmetric={self.symmetric}"
        )
