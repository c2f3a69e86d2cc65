"""sentence-transformers modules of tempnlp: SimCSE's MLP over the pooled sentence embedding.

SimCSE (Gao et al. 2021) puts a ``Linear(d, d)`` and a ``Tanh`` over the [CLS] embedding while it trains. The
unsupervised model uses it in training only (the authors' ``--mlp_only_train``: evaluation and the released
model read plain [CLS]); the supervised one keeps it. :class:`SimCSEMLP` is that layer as a sentence-transformers
module, so it sits in the model like any other module, is saved in every checkpoint and loaded back when a run
resumes or the trainer restores its best checkpoint. :func:`finish_simcse_mlp` turns the trained model into the
one to save: a train-only MLP is dropped, a kept one becomes sentence-transformers' own ``Dense`` with ``Tanh``
(the same function), so the saved model loads with plain sentence-transformers, without tempnlp.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar, Literal

import torch
from sentence_transformers.sentence_transformer.modules import Dense, Module
from torch import Tensor, nn

#: standard deviation of the initial weights: BERT's ``initializer_range``, with which the authors' code (a new
#: layer of a ``BertPreTrainedModel``) starts its MLP; the bias starts at zero
INIT_STD = 0.02


class SimCSEMLP(Module):
    """SimCSE's MLP: ``tanh(W x + b)`` over the sentence embedding, ``W`` a ``d x d`` matrix.

    With ``train_only=True`` the layer acts only while the module is in training mode; in evaluation mode (what
    ``model.encode`` and every evaluator switch to) it passes the embedding through unchanged, which is how the
    authors evaluate unsupervised SimCSE during and after training. Saved as ``config.json`` plus
    ``model.safetensors`` in its module folder. A model folder that holds this module (a training checkpoint)
    loads with ``SentenceTransformer(path, trust_remote_code=True)``, as sentence-transformers asks for any
    module class of another package; the model a ``tempnlp train`` run saves never holds it
    (:func:`finish_simcse_mlp`).

    Args:
        embedding_dimension: size of the sentence embedding it reads and writes (768 for BERT-base).
        train_only: act in training mode only (SimCSE's ``--mlp_only_train``); False: always.

    Example::

        transformer = Transformer("bert-base-uncased", max_seq_length=32)
        model = SentenceTransformer(modules=[transformer, Pooling(768, "cls"), SimCSEMLP(768, train_only=True)])
    """

    config_keys: ClassVar[list[str]] = ["embedding_dimension", "train_only"]

    def __init__(self, embedding_dimension: int, train_only: bool = False) -> None:
        super().__init__()
        if isinstance(embedding_dimension, bool) or not isinstance(embedding_dimension, int) or embedding_dimension < 1:
            raise ValueError(f"embedding_dimension must be a positive int, got {embedding_dimension!r}.")
        if not isinstance(train_only, bool):
            raise TypeError(f"train_only must be True or False, got {train_only!r}.")
        self.embedding_dimension = embedding_dimension
        self.train_only = train_only
        self.linear = nn.Linear(embedding_dimension, embedding_dimension)
        self.activation = nn.Tanh()
        nn.init.normal_(self.linear.weight, mean=0.0, std=INIT_STD)
        nn.init.zeros_(self.linear.bias)

    @property
    def active(self) -> bool:
        """Whether the layer changes the embedding in the module's current mode."""
        return self.training or not self.train_only

    def forward(self, features: dict[str, Tensor], **kwargs: Any) -> dict[str, Tensor]:
        if self.active:
            features["sentence_embedding"] = self.activation(self.linear(features["sentence_embedding"]))
        return features

    def get_embedding_dimension(self) -> int:
        return self.embedding_dimension

    def save(self, output_path: str, *args: Any, safe_serialization: bool = True, **kwargs: Any) -> None:
        Path(output_path).mkdir(parents=True, exist_ok=True)  # the model creates it; on its own, the module does
        self.save_config(output_path)
        self.save_torch_weights(output_path, safe_serialization=safe_serialization)

    @classmethod
    def load(
        cls,
        model_name_or_path: str,
        subfolder: str = "",
        token: bool | str | None = None,
        cache_folder: str | None = None,
        revision: str | None = None,
        local_files_only: bool = False,
        **kwargs: Any,
    ) -> SimCSEMLP:
        where = {
            "subfolder": subfolder,
            "token": token,
            "cache_folder": cache_folder,
            "revision": revision,
            "local_files_only": local_files_only,
        }
        config = cls.load_config(model_name_or_path, **where)
        unknown = set(config) - set(cls.config_keys)
        if unknown:
            raise ValueError(f"{cls.__name__} config in {model_name_or_path} has unknown keys {sorted(unknown)}.")
        module = cls(**config)
        return cls.load_torch_weights(model_name_or_path, model=module, **where)

    def to_dense(self) -> Dense:
        """The same function as sentence-transformers' ``Dense(d, d, activation_function=Tanh())``, weights copied."""
        return Dense(
            self.embedding_dimension,
            self.embedding_dimension,
            activation_function=nn.Tanh(),
            init_weight=self.linear.weight.detach().clone(),
            init_bias=self.linear.bias.detach().clone(),
        )


SimCSEMLPMode = Literal["train-only", "keep"]


def finish_simcse_mlp(model: torch.nn.Sequential) -> SimCSEMLPMode | None:
    """Make the trained model the one to save and evaluate, in place: a train-only :class:`SimCSEMLP` is removed
    (the model ends at its pooling, plain [CLS] for SimCSE), a kept one is replaced by the equal ``Dense``.
    Returns what was done (``"train-only"``: removed, ``"keep"``: kept as ``Dense``), None without an MLP."""
    done: SimCSEMLPMode | None = None
    for index in reversed(range(len(model))):
        module = model[index]
        if not isinstance(module, SimCSEMLP):
            continue
        if module.train_only:
            del model[index]
            done = "train-only"
        else:
            model[index] = module.to_dense()
            done = "keep"
    return done
