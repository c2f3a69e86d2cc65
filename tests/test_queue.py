"""The momentum queue of extra negatives."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from test_losses import TEXTS, _pairs, _train

from tempnlp.losses import DCLLoss, InfoNCELoss, ISogCLRLoss, TempNetLoss
from tempnlp.objectives import InfoNCE
from tempnlp.state import add_index_column, save_loss_state
from tempnlp.temperature import DySTreSSTemperature, MACLTemperature


def _features(model, texts):
    return model.preprocess(texts)


def test_queue_holds_the_ema_embeddings_and_serves_as_negatives(tiny_model):
    tiny_model.double()
    loss = InfoNCELoss(tiny_model, temperature=MACLTemperature(), queue_size=6, queue_momentum=0.0).double()
    first = [TEXTS[:4], [t.replace("a ", "one ") for t in TEXTS[:4]]]
    second = [TEXTS[4:], [t.replace("a ", "one ") for t in TEXTS[4:]]]
    assert loss.queue.negatives() is None

    loss([_features(tiny_model, c) for c in first], None)  # nothing queued yet: plain InfoNCE
    queued = loss.queue.negatives().clone()
    with torch.no_grad():
        expected = F.normalize(tiny_model.encode(first[1], convert_to_tensor=True).double(), dim=1)
    torch.testing.assert_close(queued, expected.to(queued.dtype))  # momentum 0: the EMA copy is the model

    value = loss([_features(tiny_model, c) for c in second], None)
    with torch.no_grad():
        anchors = tiny_model.encode(second[0], convert_to_tensor=True).double()
        positives = tiny_model.encode(second[1], convert_to_tensor=True).double()
    reference = InfoNCE(MACLTemperature()).double()(anchors, positives, extra_negatives=queued.double())
    assert value.item() == pytest.approx(reference.item(), rel=1e-6)
    # A ring buffer of 6: 4 + 4 embeddings leave it full with the pointer at 2.
    assert loss.queue._filled_host == 6 and int(loss.queue.pointer) == 2


def test_queue_does_not_grow_in_evaluation(tiny_model):
    loss = InfoNCELoss(tiny_model, queue_size=8)
    with torch.no_grad():
        loss([_features(tiny_model, c) for c in (TEXTS[:4], TEXTS[4:])], None)
    assert loss.queue.negatives() is None


@pytest.mark.parametrize(
    "make_loss",
    [
        lambda m, n: InfoNCELoss(m, temperature=DySTreSSTemperature(), queue_size=32),
        lambda m, n: DCLLoss(m, temperature=0.05, sigma=0.5, queue_size=32),
        lambda m, n: ISogCLRLoss(m, num_samples=n, queue_size=32),
        lambda m, n: TempNetLoss(m, num_samples=n, hidden=8, queue_size=32, queue_momentum=0.9),
    ],
    ids=["infonce-dystress", "dclw", "isogclr", "tempnet"],
)
def test_trainer_runs_with_a_queue_and_checkpoints_it(tiny_model, tmp_path, make_loss):
    dataset = add_index_column(_pairs(count=48))
    loss = make_loss(tiny_model, len(dataset))
    trainer = _train(tiny_model, loss, dataset, tmp_path, steps=9)
    assert loss.queue._filled_host == 32
    assert all("tau_mean" in entry for entry in trainer.state.log_history if "loss" in entry)
    assert not any(p.requires_grad for p in loss.queue.ema_encoder.parameters())
    assert all(p.requires_grad is False or "ema_encoder" not in name for name, p in loss.named_parameters())
    state = torch.load(save_loss_state(loss, tmp_path), weights_only=True)
    assert "queue.queue" in state and any(key.startswith("queue.ema_encoder.") for key in state)
    assert not any(key.startswith("model.") for key in state)


def test_bad_queue_arguments(tiny_model):
    with pytest.raises(ValueError, match="queue size must be a positive int"):
        InfoNCELoss(tiny_model, queue_size=-1)
    with pytest.raises(ValueError, match=r"momentum must lie in \[0, 1\)"):
        InfoNCELoss(tiny_model, queue_size=8, queue_momentum=1.5)
    for loss_cls, extra in ((InfoNCELoss, {}), (DCLLoss, {}), (ISogCLRLoss, {"num_samples": 8})):
        with pytest.raises(ValueError, match="queue is kept per process"):
            loss_cls(tiny_model, queue_size=8, gather_across_devices=True, **extra)


@pytest.mark.parametrize("step_with", ["hand", "foreach", "fused"])
@pytest.mark.parametrize("weights", [torch.float32, torch.bfloat16])
def test_the_ema_copy_follows_the_moving_average_in_float32_whatever_the_encoder_weights(
    tiny_model, weights, step_with
):
    """ema_k = m ema_{k-1} + (1 - m) theta_k, computed here in float64 from the weights the encoder held at each
    step, once an optimizer step whatever updates the weights: by hand, torch's foreach AdamW, or its fused AdamW
    (the trainer's default, which leaves the weights' version counters as they are). With bf16 weights the copy
    must still average in float32: 0.1 x a bf16 step rounds away in bf16."""
    tiny_model.to(weights)
    loss = InfoNCELoss(tiny_model, queue_size=16, queue_momentum=0.9)
    names = [name for name, _ in tiny_model.named_parameters()]
    expected = {name: p.detach().double() for name, p in tiny_model.named_parameters()}
    generator = torch.Generator().manual_seed(0)
    optimizer = None
    if step_with != "hand":
        fused = step_with == "fused"
        optimizer = torch.optim.AdamW(tiny_model.parameters(), lr=1e-2, foreach=not fused, fused=fused)
    for step in range(4):
        if optimizer is None:
            with torch.no_grad():  # the optimizer's step, by hand: a small move of every weight
                for p in tiny_model.parameters():
                    p.add_((1e-2 * torch.randn(p.shape, generator=generator)).to(p.dtype))
        else:
            for p in tiny_model.parameters():
                p.grad = torch.randn(p.shape, generator=generator).to(p.dtype)
            optimizer.step()
        loss.queue.update(tiny_model, _features(tiny_model, TEXTS[step : step + 2]))
        for name, p in tiny_model.named_parameters():
            expected[name] = 0.9 * expected[name] + 0.1 * p.detach().double()
        # gradient accumulation: a second micro-batch before the next optimizer step enqueues, and the average
        # stays where it is (MoCo moves it once an optimizer step; twice would weigh this step's weights 0.19)
        loss.queue.update(tiny_model, _features(tiny_model, TEXTS[step + 2 : step + 4]))
    averaged = dict(loss.queue.ema_encoder.named_parameters())
    assert [name for name in averaged] == names
    for name in names:
        assert averaged[name].dtype == torch.float32
        torch.testing.assert_close(averaged[name].double(), expected[name], rtol=0, atol=1e-6, msg=name)
    assert loss.queue._filled_host == 16  # every micro-batch was enqueued


def test_the_ema_copy_embeds_under_the_autocast_the_encoder_ran_under(tiny_model):
    """Mixed precision wraps the training model's forward (accelerate patches model.forward), not the loss: the
    EMA copy, called from the loss, must take the encoder's autocast, and none when the encoder ran without."""
    loss = InfoNCELoss(tiny_model, queue_size=8)
    seen = []
    linear = next(m for m in loss.queue.ema_encoder.modules() if isinstance(m, torch.nn.Linear))
    linear.register_forward_hook(lambda module, args, output: seen.append(output.dtype))
    plain_forward = tiny_model.forward

    def under_autocast(*args, **kwargs):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            return plain_forward(*args, **kwargs)

    columns = [_features(tiny_model, c) for c in (TEXTS[:4], [t.replace("a ", "one ") for t in TEXTS[:4]])]
    loss(columns, None)
    tiny_model.forward = under_autocast
    loss([_features(tiny_model, c) for c in (TEXTS[4:], [t.replace("a ", "one ") for t in TEXTS[4:]])], None)
    assert seen[0] == torch.float32 and seen[-1] == torch.bfloat16


def test_a_train_only_head_acts_in_the_ema_copy_so_queue_and_anchors_share_a_space(tiny_model):
    """The EMA copy runs in eval mode, which would switch off SimCSE's train-only MLP: the queue would hold
    embeddings before the head while anchors and positives come after it."""
    from tempnlp.modules import SimCSEMLP

    tiny_model.append(SimCSEMLP(tiny_model.get_embedding_dimension(), train_only=True))
    loss = InfoNCELoss(tiny_model, queue_size=8, queue_momentum=0.0)
    heads = [m for m in loss.queue.ema_encoder.modules() if isinstance(m, SimCSEMLP)]
    assert len(heads) == 1 and heads[0].train_only is False
    head = next(m for m in tiny_model.modules() if isinstance(m, SimCSEMLP))
    assert head.train_only is True  # the model's own head is left as it was
    features = _features(tiny_model, TEXTS[:4])
    loss.queue.update(tiny_model, dict(features))
    tiny_model.eval()
    head.train_only = False  # the reference: the model (the same weights at momentum 0) with its head acting
    with torch.no_grad():
        expected = F.normalize(tiny_model(dict(features))["sentence_embedding"].float(), dim=1)
    torch.testing.assert_close(loss.queue.negatives(), expected)
