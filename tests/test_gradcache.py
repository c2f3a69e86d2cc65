"""GradCache variants: same loss, gradients and per-sample state as the uncached losses."""

from __future__ import annotations

import pytest
import torch
from test_losses import TEXTS

from tempnlp.losses import DCLLoss, InfoNCELoss, ISogCLRLoss, SogCLRLoss, TempNetLoss
from tempnlp.temperature import (
    DySTreSSTemperature,
    IndividualTemperature,
    LearnableTemperature,
    MACLTemperature,
    TempNetTemperature,
)

COLUMNS = [TEXTS, [t.replace("a ", "one ") for t in TEXTS], TEXTS[3:] + TEXTS[:3]]
INDICES = torch.tensor([3, 0, 7, 1, 9, 4, 2, 8])

LOSSES = {
    "infonce-fixed": lambda m, mb: InfoNCELoss(m, 0.05, mini_batch_size=mb),
    "infonce-learnable": lambda m, mb: InfoNCELoss(m, LearnableTemperature(), symmetric=True, mini_batch_size=mb),
    "infonce-macl-reweight": lambda m, mb: InfoNCELoss(m, MACLTemperature(reweight=True), mini_batch_size=mb),
    "infonce-dystress": lambda m, mb: InfoNCELoss(m, DySTreSSTemperature(), mini_batch_size=mb),
    "dclw": lambda m, mb: DCLLoss(m, 0.05, sigma=0.5, symmetric=True, mini_batch_size=mb),
    "sogclr": lambda m, mb: SogCLRLoss(m, num_samples=10, mini_batch_size=mb),
    "isogclr": lambda m, mb: ISogCLRLoss(m, num_samples=10, symmetric=True, mini_batch_size=mb),
    "tempnet": lambda m, mb: TempNetLoss(m, num_samples=10, hidden=8, mini_batch_size=mb),
    "isogclr-queue": lambda m, mb: ISogCLRLoss(m, num_samples=10, queue_size=12, mini_batch_size=mb),
    # per-sample policies on other objectives, and a learned tau on SogCLR's estimator
    "infonce-individual": lambda m, mb: InfoNCELoss(
        m, IndividualTemperature(10, eta=0.05), symmetric=True, mini_batch_size=mb
    ),
    "dcl-tempnet": lambda m, mb: DCLLoss(
        m, TempNetTemperature(m.get_embedding_dimension(), hidden=8, num_samples=10), mini_batch_size=mb
    ),
    "sogclr-dystress": lambda m, mb: SogCLRLoss(m, 10, DySTreSSTemperature(), symmetric=True, mini_batch_size=mb),
    "infonce-same-view-queue": lambda m, mb: InfoNCELoss(
        m, IndividualTemperature(10), same_view_negatives=True, queue_size=12, mini_batch_size=mb
    ),
}


def _step(model, loss, steps: int = 2):
    values, grads = [], {}
    for _ in range(steps):  # two steps, so stateful losses also read the state the first step wrote
        model.zero_grad()
        loss.zero_grad()
        value = loss([model.preprocess(texts) for texts in COLUMNS], INDICES)
        (0.25 * value).backward()  # as gradient accumulation scales it: every gradient must follow
        values.append(value.item())
    for name, parameter in loss.named_parameters():
        if parameter.grad is not None:
            grads[name] = parameter.grad.clone()
    return values, grads, {k: v.clone() for k, v in loss.state_dict().items() if not k.startswith("model.")}


@pytest.mark.parametrize("name", list(LOSSES))
def test_cached_equals_uncached(tiny_model_path, name):
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.base.modules import Transformer
    from sentence_transformers.sentence_transformer.modules import Pooling

    def model():
        return SentenceTransformer(modules=[Transformer(str(tiny_model_path)), Pooling(32)], device="cpu").double()

    torch.manual_seed(0)
    plain_model = model()
    plain = _step(plain_model, LOSSES[name](plain_model, None).double())
    torch.manual_seed(0)
    cached_model = model()
    cached_loss = LOSSES[name](cached_model, 3).double()  # 8 rows in mini-batches of 3, 3 and 2
    assert cached_loss.uses_gradient_cache
    cached = _step(cached_model, cached_loss)
    assert cached[0] == pytest.approx(plain[0], rel=1e-5, abs=1e-7)
    assert cached[1].keys() == plain[1].keys() and len(plain[1]) > 10
    for key, grad in plain[1].items():
        torch.testing.assert_close(cached[1][key], grad, atol=1e-5, rtol=1e-5, msg=key)
    for key, buffer in plain[2].items():
        torch.testing.assert_close(cached[2][key], buffer, atol=1e-5, rtol=1e-5, msg=key)


def test_bad_mini_batch_size(tiny_model):
    with pytest.raises(ValueError, match="mini_batch_size must be a positive int"):
        InfoNCELoss(tiny_model, mini_batch_size=0)


def test_cached_queue_embeds_in_mini_batches(tiny_model):
    # GradCache bounds activation memory by the mini-batch; the queue's EMA encoder must not undo that by
    # embedding the whole batch of positives at once.
    loss = InfoNCELoss(tiny_model, queue_size=16, mini_batch_size=3)
    rows_seen = []
    loss.queue.ema_encoder.register_forward_hook(lambda module, args, out: rows_seen.append(len(args[0]["input_ids"])))
    loss([tiny_model.preprocess(texts) for texts in COLUMNS], None).backward()
    assert rows_seen == [3, 3, 2]
    assert loss.queue._filled_host == 8
