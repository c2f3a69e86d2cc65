"""Temperature schedules against their papers' formulas: the value over a whole schedule, loss and gradients at a
given step, the trainer keeping them at its step, and the errors."""

from __future__ import annotations

import math

import pytest
import reference
import torch
import torch.nn.functional as F
from test_losses import _pairs

from tempnlp.objectives import DCL, InfoNCE
from tempnlp.temperature import CooldownTemperature, CosineScheduleTemperature


def _kukleva(t: float, low: float, high: float, period: float) -> float:
    return low + 0.5 * (high - low) * (1 + math.cos(2 * math.pi * t / period))


def _jeong(t: int, start: float, end: float, length: float, mode: str) -> float:
    if mode == "switch":
        return start if t < length else end
    if mode == "two-step":
        return start if t < length / 2 else (start + end) / 2 if t < length else end
    return start - (start - end) * min(t / length, 1.0)


def _value(policy, step: int, steps_per_epoch: int | None = None) -> float:
    policy.set_progress(step, steps_per_epoch)
    sims = torch.zeros(2, 3, dtype=torch.float64)
    return float(policy(sims, sims[:, 0]))


def test_cosine_schedule_follows_kukleva_over_two_periods():
    by_steps = CosineScheduleTemperature(0.03, 0.1, period_steps=10)
    by_epochs = CosineScheduleTemperature(0.03, 0.1, period_epochs=2.5)  # 4 steps an epoch: the same 10 steps
    values = [_value(by_steps, t) for t in range(21)]
    assert values == pytest.approx([_kukleva(t, 0.03, 0.1, 10) for t in range(21)], rel=1e-12)
    assert values[0] == pytest.approx(0.1) and values[5] == pytest.approx(0.03) and values[10] == pytest.approx(0.1)
    assert [_value(by_epochs, t, 4) for t in range(21)] == pytest.approx(values, rel=1e-12)


@pytest.mark.parametrize("mode", ["switch", "two-step", "linear"])
def test_cooldown_follows_jeong(mode):
    policy = CooldownTemperature(0.1, 0.05, cooldown_steps=8, mode=mode)
    values = [_value(policy, t) for t in range(12)]
    assert values == pytest.approx([_jeong(t, 0.1, 0.05, 8, mode) for t in range(12)], rel=1e-12)
    assert values[0] == pytest.approx(0.1) and values[-1] == pytest.approx(0.05)
    default = CooldownTemperature()  # the authors' 1.4% of an epoch: 218 steps of a 15,625-step wiki1m epoch
    assert _value(default, 217, 15625) == pytest.approx(0.1) and _value(default, 219, 15625) == pytest.approx(0.05)


@pytest.mark.parametrize("objective_cls", [InfoNCE, DCL])
def test_loss_and_gradients_at_a_step_are_those_of_the_scheduled_value(objective_cls):
    generator = torch.Generator().manual_seed(0)
    anchors = torch.randn(5, 6, generator=generator, dtype=torch.float64)
    positives = anchors + 0.5 * torch.randn(5, 6, generator=generator, dtype=torch.float64)
    policy = CosineScheduleTemperature(0.03, 0.1, period_steps=10)
    policy.set_progress(3)
    tau = _kukleva(3, 0.03, 0.1, 10)
    ours = [anchors.clone().requires_grad_(), positives.clone().requires_grad_()]
    objective_cls(policy, symmetric=True).double()(ours[0], [ours[1]]).backward()
    theirs = [anchors.clone().requires_grad_(), positives.clone().requires_grad_()]
    a, p = F.normalize(theirs[0], dim=1), F.normalize(theirs[1], dim=1)
    losses = []
    for queries, candidates in ((a, p), (p, a)):
        logits = queries @ candidates.T / tau
        if objective_cls is InfoNCE:
            losses.append(torch.logsumexp(logits, 1) - logits.diagonal())
        else:
            masked = logits.masked_fill(torch.eye(5, dtype=torch.bool), float("-inf"))
            losses.append(torch.logsumexp(masked, 1) - logits.diagonal())
    (0.5 * (losses[0] + losses[1])).mean().backward()
    naive = (reference.infonce if objective_cls is InfoNCE else reference.dcl)(
        anchors.tolist(), [positives.tolist()], lambda *args: tau, symmetric=True
    )
    assert float(objective_cls(policy, symmetric=True).double()(anchors, [positives])) == pytest.approx(naive)
    for mine, want in zip(ours, theirs, strict=True):
        torch.testing.assert_close(mine.grad, want.grad, rtol=1e-10, atol=1e-12)


def test_a_schedule_nobody_told_the_step_is_a_clear_error():
    policy = CosineScheduleTemperature(0.03, 0.1, period_steps=10)
    anchors, positives = torch.randn(4, 6), torch.randn(4, 6)
    with pytest.raises(ValueError, match=r"follow_progress\(trainer\).*set_progress"):
        InfoNCE(policy)(anchors, [positives])
    with torch.no_grad():  # evaluation is fine: it reads the current position
        InfoNCE(policy)(anchors, [positives])
    # before training (an evaluation on start) the position is step 0, whatever the epoch length will be
    for by_epochs in (CosineScheduleTemperature(0.03, 0.1, period_epochs=1.0), CooldownTemperature(0.1, 0.05)):
        sims = torch.zeros(2, 3, dtype=torch.float64)
        with torch.no_grad():
            assert float(by_epochs(sims, sims[:, 0])) == pytest.approx(0.1)
        with pytest.raises(ValueError, match=r"counts in epochs but knows no epoch length"):
            by_epochs.set_progress(3)
            by_epochs(sims, sims[:, 0])
    with pytest.raises(ValueError, match=r"period_steps.*or in epochs.*one"):
        CosineScheduleTemperature(0.03, 0.1, period_steps=10, period_epochs=1.0)


def test_the_trainer_keeps_the_schedule_at_its_step(tiny_model, tmp_path):
    from sentence_transformers import SentenceTransformerTrainer, SentenceTransformerTrainingArguments

    from tempnlp.losses import InfoNCELoss
    from tempnlp.train import track_loss_state

    policy = CosineScheduleTemperature(0.03, 0.1, period_epochs=1.0)
    loss = InfoNCELoss(tiny_model, temperature=policy)
    args = SentenceTransformerTrainingArguments(
        output_dir=str(tmp_path), per_device_train_batch_size=8, num_train_epochs=2, logging_steps=1,
        save_strategy="no", report_to="none", disable_tqdm=True, dataloader_pin_memory=False,
        learning_rate=1e-4, seed=0,
    )  # fmt: skip
    trainer = SentenceTransformerTrainer(model=tiny_model, args=args, train_dataset=_pairs(count=32), loss=loss)
    track_loss_state(trainer)  # checkpoints the position and follows the trainer's step
    trainer.train()
    logged = [entry["tau_mean"] for entry in trainer.state.log_history if "tau_mean" in entry]
    # 4 steps an epoch, period one epoch: the step taken at global step t used tau(t)
    assert logged == pytest.approx([_kukleva(t, 0.03, 0.1, 4) for t in range(8)], abs=1e-6)
    assert int(policy.step) == 7 and "objective.temperature.step" in loss.state_dict()


def _libauc_gamma(epoch: int, gamma_min: float, decay_epochs: float) -> float:
    if epoch >= decay_epochs:
        return gamma_min
    return (1 - gamma_min) * 0.5 * (1 + math.cos(math.pi * epoch / decay_epochs)) + gamma_min


def test_sogclr_cosine_gamma_schedule_follows_libauc():
    """The moving average of one sample, revisited every step, with gamma(epoch) from LibAUC's formula."""
    from tempnlp.objectives import SogCLR

    objective = SogCLR(4, 0.1, gamma=0.2, gamma_schedule="cosine", gamma_decay_epochs=3).double()
    generator = torch.Generator().manual_seed(1)
    s = None
    for step in range(10):  # 2 steps an epoch: epochs 0-4
        objective.set_progress(step, 2)
        anchors = torch.randn(4, 5, generator=generator, dtype=torch.float64)
        positives = anchors + 0.5 * torch.randn(4, 5, generator=generator, dtype=torch.float64)
        objective(anchors, [positives], torch.arange(4))
        a, p = F.normalize(anchors, dim=1), F.normalize(positives, dim=1)
        gaps = [(a[0] @ p[j] - a[0] @ p[0]).item() for j in range(1, 4)]
        g = sum(math.exp(h / 0.1) for h in gaps) / 3
        gamma = _libauc_gamma(step // 2, 0.2, 3)
        s = g if s is None else (1 - gamma) * s + gamma * g
        assert objective.estimates[0].s[0].item() == pytest.approx(s, rel=1e-10), step
    assert _libauc_gamma(0, 0.2, 3) == 1.0 and objective.current_gamma() == pytest.approx(0.2)
    fresh = SogCLR(4, 0.1, gamma=0.2, gamma_schedule="cosine", gamma_decay_epochs=3)
    with pytest.raises(ValueError, match="nobody told it where training is"):
        fresh(torch.randn(4, 5), [torch.randn(4, 5)], torch.arange(4))
    with pytest.raises(ValueError, match="needs gamma_decay_epochs"):
        SogCLR(4, gamma_schedule="cosine")


def test_hardness_passes_on_what_its_policy_knows():
    """A per-sample policy or a schedule inside Hardness trains as it would alone."""
    from tempnlp.temperature import Hardness, IndividualTemperature

    wrapped = Hardness(IndividualTemperature(10, eta=0.05), "all_negatives", 2.0)
    objective = InfoNCE(wrapped, symmetric=True).double()
    assert objective.num_samples == 10 and wrapped.needs_indices and wrapped.acts_on_revisit
    generator = torch.Generator().manual_seed(2)
    for _ in range(3):
        anchors = torch.randn(5, 6, generator=generator, dtype=torch.float64)
        objective(anchors, [anchors + 0.3 * torch.randn(5, 6, generator=generator, dtype=torch.float64)],
                  torch.randperm(10, generator=generator)[:5])  # fmt: skip
    assert len(set(wrapped.tau.tolist())) > 2 and wrapped.sample_temperatures(0).numel() > 0
    scheduled = Hardness(CosineScheduleTemperature(0.03, 0.1, period_steps=10), "in_batch_negatives", 2.0)
    scheduled.set_progress(5)
    assert _value(scheduled, 5) == pytest.approx(0.03)
    with pytest.raises(ValueError, match="not another Hardness"):
        Hardness(Hardness(0.05))


def test_a_restored_gamma_schedule_resumes_from_the_loss_state():
    from tempnlp.objectives import SogCLR

    trained = SogCLR(4, 0.1, gamma=0.2, gamma_schedule="cosine", gamma_decay_epochs=4)
    trained.set_progress(5, 2)  # epoch 2
    restored = SogCLR(4, 0.1, gamma=0.2, gamma_schedule="cosine", gamma_decay_epochs=4)
    restored.load_state_dict(trained.state_dict())
    assert restored.current_gamma() == pytest.approx(_libauc_gamma(2, 0.2, 4)) == trained.current_gamma()
    restored.set_progress(6)  # a step without the epoch length keeps the known one
    assert restored.current_gamma() == pytest.approx(_libauc_gamma(3, 0.2, 4))
