"""Stateful losses in SentenceTransformerTrainer: index plumbing, checkpointed state, exact resume."""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest
import torch
from sentence_transformers import SentenceTransformerTrainer, SentenceTransformerTrainingArguments
from test_losses import _pairs
from transformers import TrainerCallback

from tempnlp.losses import ISogCLRLoss, SogCLRLoss
from tempnlp.state import add_index_column
from tempnlp.train import track_loss_state


def _args(output_dir, **overrides):
    defaults = dict(
        output_dir=str(output_dir),
        per_device_train_batch_size=8,
        learning_rate=1e-3,
        logging_steps=1,
        save_strategy="no",
        report_to="none",
        disable_tqdm=True,
        dataloader_pin_memory=False,
        seed=0,
    )
    return SentenceTransformerTrainingArguments(**{**defaults, **overrides})


def _trainer(model, dataset, output_dir, loss_cls=ISogCLRLoss, make_loss=None, **overrides):
    if make_loss is not None:
        loss = make_loss(model, len(dataset))
    else:
        loss = loss_cls(model, num_samples=len(dataset), **({"eta": 0.05} if loss_cls is ISogCLRLoss else {}))
    trainer = SentenceTransformerTrainer(
        model=model, args=_args(output_dir, **overrides), train_dataset=dataset, loss=loss
    )
    track_loss_state(trainer)
    return trainer, loss


def test_isogclr_trains_through_the_trainer_and_individualises_tau(tiny_model, tmp_path):
    dataset = add_index_column(_pairs(count=32))
    trainer, loss = _trainer(tiny_model, dataset, tmp_path, num_train_epochs=3)
    trainer.train()
    history = [entry for entry in trainer.state.log_history if "loss" in entry]
    assert len(history) == 12 and all("tau_mean" in entry for entry in history)
    assert loss.objective.query_state.seen.all()
    assert len(set(loss.tau.tolist())) > 10  # one temperature per sample, no longer all 0.1
    losses = [entry["loss"] for entry in history]
    assert sum(losses[-4:]) < sum(losses[:4])


def test_sogclr_keeps_one_temperature(tiny_model, tmp_path):
    dataset = add_index_column(_pairs(count=16))
    trainer, loss = _trainer(tiny_model, dataset, tmp_path, loss_cls=SogCLRLoss, num_train_epochs=2)
    trainer.train()
    taus = set(loss.tau.tolist())
    assert len(taus) == 1 and taus.pop() == pytest.approx(0.1)
    assert loss.objective.query_state.seen.all()


def test_one_epoch_warns_that_per_sample_tau_never_acts(tiny_model, tmp_path):
    dataset = add_index_column(_pairs(count=16))
    trainer, _ = _trainer(tiny_model, dataset, tmp_path, num_train_epochs=1)
    with pytest.warns(UserWarning, match="only used when that sample comes back"):
        trainer.train()


def test_missing_index_column_is_a_clear_error(tiny_model, tmp_path):
    dataset = _pairs(count=16)
    loss = ISogCLRLoss(tiny_model, num_samples=16)
    trainer = SentenceTransformerTrainer(
        model=tiny_model, args=_args(tmp_path, max_steps=1), train_dataset=dataset, loss=loss
    )
    with pytest.raises(ValueError, match="add_index_column"):
        trainer.train()
    with pytest.raises(ValueError, match="already has a 'label' column"):
        add_index_column(add_index_column(dataset))


class StopAt(TrainerCallback):
    def __init__(self, step: int) -> None:
        self.step = step

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step == self.step:
            control.should_training_stop = True


def _run(model_factory, dataset, output_dir, stop_at=None, resume=None, make_loss=None):
    model = model_factory()
    trainer, loss = _trainer(
        model, dataset, output_dir, make_loss=make_loss, max_steps=8, save_strategy="steps", save_steps=4
    )
    if stop_at is not None:
        trainer.add_callback(StopAt(stop_at))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        trainer.train(resume_from_checkpoint=resume)
    losses = {entry["step"]: entry["loss"] for entry in trainer.state.log_history if "loss" in entry}
    return losses, loss, model


def _individual_on_infonce(model, num_samples):
    from tempnlp.losses import InfoNCELoss
    from tempnlp.temperature import IndividualTemperature

    return InfoNCELoss(model, IndividualTemperature(num_samples, eta=0.05), symmetric=True)


def _tempnet_on_sogclr_with_queue(model, num_samples):
    from tempnlp.temperature import TempNetTemperature

    policy = TempNetTemperature(model.get_embedding_dimension(), hidden=8, num_samples=num_samples)
    return SogCLRLoss(model, num_samples, temperature=policy, queue_size=8)


def _cosine_schedule_on_infonce(model, num_samples):
    from tempnlp.losses import InfoNCELoss
    from tempnlp.temperature import CosineScheduleTemperature

    return InfoNCELoss(model, CosineScheduleTemperature(0.03, 0.1, period_steps=6))


@pytest.mark.parametrize(
    "make_loss",
    [None, _individual_on_infonce, _tempnet_on_sogclr_with_queue, _cosine_schedule_on_infonce],
    ids=["isogclr", "infonce-individual", "sogclr-tempnet-queue", "infonce-cosine-schedule"],
)  # fmt: skip
def test_interrupted_and_resumed_run_is_bitwise_identical(tiny_model_path, tmp_path, make_loss):
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.base.modules import Transformer
    from sentence_transformers.sentence_transformer.modules import Pooling

    def fresh_model():
        transformer = Transformer(str(tiny_model_path), max_seq_length=32)
        return SentenceTransformer(modules=[transformer, Pooling(32)], device="cpu")

    dataset = add_index_column(_pairs(count=16))  # 2 steps an epoch: 8 steps revisit every sample 4 times
    full_losses, full_loss, full_model = _run(fresh_model, dataset, tmp_path / "full", make_loss=make_loss)
    _run(fresh_model, dataset, tmp_path / "interrupted", stop_at=4, make_loss=make_loss)
    checkpoint = tmp_path / "interrupted" / "checkpoint-4"
    assert (checkpoint / "loss_state.pt").is_file()
    resumed_losses, resumed_loss, resumed_model = _run(
        fresh_model, dataset, tmp_path / "interrupted", resume=str(checkpoint), make_loss=make_loss
    )

    # The resumed history holds the checkpoint's steps 1-4 and its own 5-8 (the trainer logs losses rounded to
    # 4 decimals); the weights and every tau_i below are compared bitwise.
    assert sorted(resumed_losses) == list(range(1, 9))
    assert resumed_losses == full_losses
    own_state = {k: v for k, v in full_loss.state_dict().items() if not k.startswith("model.")}
    assert any(name.startswith("objective.temperature.") for name in own_state)  # the policy's state is compared
    for name, buffer in own_state.items():
        assert torch.equal(buffer, resumed_loss.state_dict()[name]), name
    for (name, a), (_, b) in zip(full_model.state_dict().items(), resumed_model.state_dict().items(), strict=True):
        assert torch.equal(a, b), name


def test_resuming_without_loss_state_is_a_clear_error(tiny_model, tmp_path):
    dataset = add_index_column(_pairs(count=16))
    trainer, _ = _trainer(tiny_model, dataset, tmp_path, max_steps=2, save_strategy="steps", save_steps=2)
    trainer.train()
    (tmp_path / "checkpoint-2" / "loss_state.pt").unlink()
    trainer, _ = _trainer(tiny_model, dataset, tmp_path, max_steps=4, save_strategy="steps", save_steps=2)
    with pytest.raises(FileNotFoundError, match="written without the loss state"):
        trainer.train(resume_from_checkpoint=str(tmp_path / "checkpoint-2"))


@pytest.mark.filterwarnings("ignore:ISogCLRLoss learns one temperature per training sample")
@pytest.mark.parametrize("save_strategy", ["steps", "epoch"])
def test_loss_state_is_in_the_checkpoint_before_older_checkpoints_are_rotated_out(
    tiny_model, tmp_path, monkeypatch, save_strategy
):
    """A run killed after the trainer deleted the older checkpoint must not be left with only a checkpoint that
    lacks its loss state."""
    import transformers.trainer

    seen: list[dict[str, bool]] = []
    rotate = transformers.trainer.rotate_checkpoints

    def recording_rotate(output_dir, **kwargs):
        folders = sorted(Path(output_dir).glob("checkpoint-*"))
        seen.append({folder.name: (folder / "loss_state.pt").is_file() for folder in folders})
        return rotate(output_dir=output_dir, **kwargs)

    monkeypatch.setattr(transformers.trainer, "rotate_checkpoints", recording_rotate)
    dataset = add_index_column(_pairs(count=16))  # 2 steps an epoch
    trainer, _ = _trainer(
        tiny_model,
        dataset,
        tmp_path,
        num_train_epochs=3,
        save_strategy=save_strategy,
        save_steps=2,
        save_total_limit=1,
    )
    trainer.train()
    assert [sorted(entry) for entry in seen] == [
        ["checkpoint-2"],
        ["checkpoint-2", "checkpoint-4"],
        ["checkpoint-4", "checkpoint-6"],
    ]
    assert all(all(entry.values()) for entry in seen), seen
    assert sorted(folder.name for folder in tmp_path.glob("checkpoint-*")) == ["checkpoint-6"]
    assert (tmp_path / "checkpoint-6" / "loss_state.pt").is_file()


@pytest.mark.filterwarnings("ignore:ISogCLRLoss learns one temperature per training sample")
def test_resuming_another_runs_checkpoint_never_reads_a_same_step_checkpoint_of_output_dir(tiny_model, tmp_path):
    """A resume from a checkpoint elsewhere, into an output_dir that holds a different run's checkpoint of the same
    step, must not restore that run's loss state."""
    first = add_index_column(_pairs(count=16))
    second = add_index_column(_pairs(count=16).shuffle(seed=1).flatten_indices())
    trainer, _ = _trainer(tiny_model, first, tmp_path / "first", max_steps=2, save_strategy="steps", save_steps=2)
    trainer.train()
    trainer, _ = _trainer(tiny_model, second, tmp_path / "second", max_steps=2, save_strategy="steps", save_steps=2)
    trainer.train()
    trainer, _ = _trainer(tiny_model, second, tmp_path / "second", max_steps=4, save_strategy="no")
    with pytest.raises(ValueError, match=r"belongs to a different run.*resume_from_checkpoint=\.\.\."):
        trainer.train(resume_from_checkpoint=str(tmp_path / "first" / "checkpoint-2"))
    # its own checkpoint still resumes
    trainer, _ = _trainer(tiny_model, second, tmp_path / "second", max_steps=4, save_strategy="no")
    trainer.train(resume_from_checkpoint=str(tmp_path / "second" / "checkpoint-2"))
    assert trainer.state.global_step == 4


@pytest.mark.filterwarnings("ignore:ISogCLRLoss learns one temperature per training sample")
def test_resuming_from_a_checkpoint_outside_output_dir_reads_its_state_when_told(tiny_model, tmp_path):
    import shutil

    dataset = add_index_column(_pairs(count=16))
    trainer, saved = _trainer(tiny_model, dataset, tmp_path / "first", max_steps=2, save_strategy="steps", save_steps=2)
    trainer.train()
    moved = tmp_path / "archive" / "checkpoint-2"
    shutil.copytree(tmp_path / "first" / "checkpoint-2", moved)
    trainer, _ = _trainer(tiny_model, dataset, tmp_path / "second", max_steps=4, save_strategy="no")
    with pytest.raises(FileNotFoundError, match=r"track_loss_state\(trainer, resume_from_checkpoint=\.\.\.\)"):
        trainer.train(resume_from_checkpoint=str(moved))

    class Stop(TrainerCallback):  # stop before the first resumed step, to read the state exactly as restored
        def on_step_begin(self, args, state, control, **kwargs):
            control.should_training_stop = True

    loss = ISogCLRLoss(tiny_model, num_samples=len(dataset), eta=0.05)
    args = _args(tmp_path / "third", max_steps=4, save_strategy="no")
    trainer = SentenceTransformerTrainer(model=tiny_model, args=args, train_dataset=dataset, loss=loss)
    track_loss_state(trainer, resume_from_checkpoint=moved)
    restored = {}

    class Capture(TrainerCallback):
        def on_train_begin(self, args, state, control, **kwargs):
            restored.update({k: v.clone() for k, v in loss.objective.state_dict().items()})

    trainer.add_callback(Capture())
    trainer.add_callback(Stop())
    trainer.train(resume_from_checkpoint=str(moved))
    assert restored and all(torch.equal(v, saved.objective.state_dict()[k]) for k, v in restored.items())
    assert restored["estimates.0.seen"].all()


def test_tempnet_trains_in_one_epoch_without_warning(tiny_model, tmp_path):
    from tempnlp.losses import TempNetLoss

    dataset = add_index_column(_pairs(count=32))
    loss = TempNetLoss(tiny_model, num_samples=len(dataset), hidden=16)
    args = _args(tmp_path, num_train_epochs=1, learning_rate_mapping={r"temperature_network\.": 0.05})
    trainer = SentenceTransformerTrainer(model=tiny_model, args=args, train_dataset=dataset, loss=loss)
    track_loss_state(trainer)
    network = loss.objective.temperature_network
    before = [p.detach().clone() for p in network.parameters()]
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)  # no one-epoch warning: TempNet predicts unseen samples
        trainer.train()
    assert any(not torch.equal(a, b) for a, b in zip(before, network.parameters(), strict=True))
    embeddings = tiny_model.encode(["a man plays the guitar", "the cat sits"], convert_to_tensor=True).clone()
    with torch.no_grad():
        predicted = network(embeddings)
    assert (predicted >= 0.05).all() and (predicted <= 1.0).all()
    assert "tau_mean" in trainer.state.log_history[0]


def test_a_learnable_temperature_is_checkpointed_and_restored(tiny_model, tmp_path):
    from tempnlp.losses import InfoNCELoss
    from tempnlp.temperature import LearnableTemperature

    dataset = _pairs(count=16)
    loss = InfoNCELoss(tiny_model, temperature=LearnableTemperature())
    args = _args(tmp_path, max_steps=2, save_strategy="steps", save_steps=2, learning_rate=0.05)
    trainer = SentenceTransformerTrainer(model=tiny_model, args=args, train_dataset=dataset, loss=loss)
    track_loss_state(trainer)
    trainer.train()
    trained = loss.temperature.log_inverse_tau.detach().clone()
    fresh = InfoNCELoss(tiny_model, temperature=LearnableTemperature())
    from tempnlp.state import load_loss_state

    load_loss_state(fresh, tmp_path / "checkpoint-2")
    assert torch.equal(fresh.temperature.log_inverse_tau, trained) and trained.item() != pytest.approx(2.6593, abs=1e-4)
