"""The engine, its stock callbacks and the MLflow bridge on their own: in-process, on tensors.

No data folder, no subprocess: a linear model on random 8 x 8 images, so each test takes well
under a second and says exactly which piece is wrong when it fails.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from mnr import tracking
from mnr.callbacks import EarlyStopping, ModelCheckpoint, StopAtTarget
from mnr.checkpoint import load_checkpoint
from mnr.config import resolve_config
from mnr.engine import Callback, DivergedError, FitContext, fit
from mnr.errors import MnrError
from mnr.monitor import Monitor

CLASSES = 4


def _config(*overrides: str):
    # fmt: skip
    return resolve_config(
        overrides=[
            "train.epochs=3",
            "train.batch_size=8",
            "optim.name=adam",
            "optim.lr=0.05",
            "train.channels_last=false",
            "data.input_size=[8,8]",
            *overrides,
        ]
    )


def _data(seed: int = 0) -> dict[str, torch.Tensor]:
    """Images whose class is which quarter of the rows is bright: learnable in a few epochs."""
    generator = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, CLASSES, (64,), generator=generator)
    images = torch.randint(0, 60, (64, 3, 8, 8), generator=generator, dtype=torch.uint8)
    for index, label in enumerate(labels.tolist()):
        images[index, :, 2 * label : 2 * label + 2] += 180
    return {
        "train_images": images[:48],
        "train_labels": labels[:48],
        "val_images": images[48:],
        "val_labels": labels[48:],
    }


def _model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, CLASSES))


class Recorder(Callback):
    """Writes down every hook call, and stops or interrupts on request."""

    def __init__(self, *, stop_at: int | None = None, interrupt_at: int | None = None) -> None:
        self.calls: list[str] = []
        self.stop_at, self.interrupt_at = stop_at, interrupt_at

    def on_fit_start(self, ctx: FitContext) -> None:
        self.calls.append(f"start@{ctx.epoch}")

    def on_epoch_end(self, ctx: FitContext, metrics: dict[str, float]) -> None:
        self.calls.append(f"epoch{ctx.epoch}")
        if ctx.epoch == self.interrupt_at:
            raise KeyboardInterrupt
        if ctx.epoch == self.stop_at:
            ctx.should_stop, ctx.stop_reason = True, "asked to"

    def on_fit_end(self, ctx: FitContext, status: str) -> None:
        self.calls.append(f"end:{status}")


# --------------------------------------------------------------------------------------- fit
def test_fit_calls_the_hooks_in_order_and_learns() -> None:
    recorder = Recorder()
    result = fit(_model(), config=_config(), callbacks=[recorder], **_data())
    assert recorder.calls == ["start@0", "epoch1", "epoch2", "epoch3", "end:FINISHED"]
    assert result.status == "FINISHED" and result.epochs == 3 and result.stop_reason == ""
    assert {"train/loss", "train/acc", "val/loss", "val/acc", "val/top5", "train/lr"} <= set(
        result.history[-1]
    )
    assert result.history[-1]["val/acc"] > 0.9  # the task is easy: a broken loop cannot pass this


def test_a_callback_stops_early_and_says_why() -> None:
    result = fit(_model(), config=_config(), callbacks=[Recorder(stop_at=2)], **_data())
    assert result.epochs == 2 and result.stop_reason == "asked to"


def test_the_target_stops_the_fit() -> None:
    stopper = StopAtTarget(Monitor("val/acc", "max"), 0.5)
    result = fit(_model(), config=_config("train.epochs=20"), callbacks=[stopper], **_data())
    assert result.epochs < 20 and result.stop_reason == "val/acc reached 0.5"
    assert (
        result.history[-1]["val/acc"]
        >= 0.5
        > max((h["val/acc"] for h in result.history[:-1]), default=0)
    )


def test_an_interrupt_ends_with_killed_and_is_raised() -> None:
    recorder = Recorder(interrupt_at=2)
    with pytest.raises(KeyboardInterrupt):
        fit(_model(), config=_config(), callbacks=[recorder], **_data())
    assert recorder.calls[-1] == "end:KILLED"


def test_a_nan_loss_is_a_diverged_error_naming_epoch_and_step() -> None:
    with pytest.raises(DivergedError, match=r"epoch 1, step \d+"):
        fit(_model(), config=_config("optim.name=sgd", "optim.lr=1e38"), **_data())


def test_resuming_from_a_checkpoint_dict_repeats_the_uninterrupted_run() -> None:
    straight = fit(_model(), config=_config(), **_data())

    class Snapshot(Callback):
        def on_epoch_end(self, ctx: FitContext, metrics: dict[str, float]) -> None:
            if ctx.epoch == 1:
                self.state = ctx.checkpoint()
                ctx.should_stop = True

    snapshot = Snapshot()
    fit(_model(), config=_config(), callbacks=[snapshot], **_data())
    resumed = fit(_model(), config=_config(), resume=snapshot.state, **_data())
    assert [h["val/loss"] for h in resumed.history] == [h["val/loss"] for h in straight.history]


# --------------------------------------------------------------------------------- callbacks
def test_model_checkpoint_writes_last_every_epoch_and_best_on_improvement(tmp_path: Path) -> None:
    checkpoint = ModelCheckpoint(tmp_path / "ckpt", monitor="val/loss", mode="min")
    model = _model()
    result = fit(model, config=_config(), callbacks=[checkpoint], run_id="r1", **_data())
    last, best = load_checkpoint(checkpoint.last_path), load_checkpoint(checkpoint.best_path)
    assert last["epoch"] == 3 and last["run_id"] == "r1" and last["format"] == "mnr-checkpoint-1"
    losses = [h["val/loss"] for h in result.history]
    assert best["epoch"] == losses.index(min(losses)) + 1 == checkpoint.best_epoch
    assert checkpoint.state_dict() == {"best_value": min(losses), "best_epoch": best["epoch"]}
    # the finished fit leaves the best epoch's weights in the model (restore_best)
    for key, value in model.state_dict().items():
        assert torch.equal(value.cpu(), best["model"][key].cpu()), key


def test_model_checkpoint_without_a_folder_uses_the_runs_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MNR_CHECKPOINT_DIR", str(tmp_path / "checkpoints"))
    checkpoint = ModelCheckpoint(restore_best=False)
    fit(_model(), config=_config(), callbacks=[checkpoint], run_id="r2", **_data())
    assert checkpoint.dirpath == tmp_path / "checkpoints" / "r2"
    assert load_checkpoint(checkpoint.last_path)["run_id"] == "r2"


def test_model_checkpoint_refuses_an_unwritable_folder(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(MnrError, match="not writable"):
        fit(_model(), config=_config(), callbacks=[ModelCheckpoint(blocker / "ckpt")], **_data())


def test_early_stopping_waits_patience_epochs_without_improvement() -> None:
    # never "improves"
    stopper = EarlyStopping(monitor="val/loss", patience=2, mode="min", min_delta=10.0)
    result = fit(_model(), config=_config("train.epochs=10"), callbacks=[stopper], **_data())
    assert result.epochs == 3  # epoch 1 sets the best, epochs 2 and 3 fail to beat it by 10
    assert "did not improve for 2 epochs" in result.stop_reason
    assert stopper.state_dict() == {"best": result.history[0]["val/loss"], "wait": 2}


def test_two_early_stoppings_keep_their_own_state_across_a_checkpoint() -> None:
    class Snapshot(Callback):
        def on_epoch_end(self, ctx: FitContext, metrics: dict[str, float]) -> None:
            self.state = ctx.checkpoint()

    def stoppers() -> list[EarlyStopping]:
        return [
            EarlyStopping(monitor="val/loss", mode="min", patience=50),
            EarlyStopping(monitor="val/acc", mode="max", patience=50, min_delta=10.0),
        ]

    first, snapshot = stoppers(), Snapshot()
    fit(_model(), config=_config(), callbacks=[*first, snapshot], **_data())
    saved = snapshot.state["callbacks"]
    assert {key: saved[key] for key in saved if key != "Snapshot"} == {
        cb.state_key: cb.state_dict() for cb in first
    }
    assert len(saved) == 3
    assert first[0].state_dict() != first[1].state_dict()
    again = stoppers()
    fit(
        _model(), config=_config(), callbacks=again, resume=snapshot.state, **_data()
    )  # 3 of 3 done
    assert [cb.state_dict() for cb in again] == [cb.state_dict() for cb in first]


def test_early_stopping_on_an_unknown_metric_names_the_known_ones() -> None:
    with pytest.raises(MnrError, match="not a logged metric; choose one of .*val/acc"):
        fit(
            _model(), config=_config(), callbacks=[EarlyStopping(monitor="val/accuracy")], **_data()
        )


# ---------------------------------------------------------------------------- tracking bridge
def _status(run_id: str) -> str:
    return tracking.client().get_run(run_id).info.status


def test_tracked_run_ends_finished_killed_or_failed() -> None:
    with tracking.tracked_run(experiment="bridge", run_name="ok") as ok:
        assert _status(ok) == "RUNNING"
    with pytest.raises(KeyboardInterrupt), tracking.tracked_run(experiment="bridge") as killed:
        raise KeyboardInterrupt
    with pytest.raises(ValueError), tracking.tracked_run(experiment="bridge") as failed:
        raise ValueError("boom")
    assert [_status(r) for r in (ok, killed, failed)] == ["FINISHED", "KILLED", "FAILED"]


def test_tracked_run_reopens_a_run_and_nests_a_child() -> None:
    with tracking.tracked_run(experiment="bridge") as parent:
        pass
    with tracking.tracked_run(
        experiment="bridge", run_id=parent, tags={"again": "yes"}
    ) as reopened:
        assert reopened == parent and _status(parent) == "RUNNING"
        with tracking.tracked_run(experiment="bridge", parent_run_id=parent) as child:
            pass
    assert tracking.client().get_run(parent).data.tags["again"] == "yes"
    assert tracking.client().get_run(child).data.tags[tracking.PARENT_TAG] == parent
    assert _status(parent) == _status(child) == "FINISHED"


def test_tracked_run_attaches_to_the_run_mlflow_run_made(monkeypatch: pytest.MonkeyPatch) -> None:
    with tracking.tracked_run(experiment="bridge") as made_by_mlflow_run:
        pass
    monkeypatch.setenv("MLFLOW_RUN_ID", made_by_mlflow_run)
    with tracking.tracked_run(experiment="bridge", tags={"model": "x"}) as attached:
        pass
    assert attached == made_by_mlflow_run
    assert tracking.client().get_run(attached).data.tags["model"] == "x"


def test_the_logger_sends_every_epoch_and_a_resume_fills_in_what_a_killed_process_lost() -> None:
    with tracking.tracked_run(experiment="bridge") as run_id:
        result = fit(
            _model(), config=_config(), callbacks=[tracking.MlflowLogger(run_id)], **_data()
        )
    history = tracking.client().get_metric_history(run_id, "val/loss")
    assert [(m.step, m.value) for m in history] == [
        (i + 1, h["val/loss"]) for i, h in enumerate(result.history)
    ]

    with tracking.tracked_run(experiment="bridge") as fresh:  # as if epochs 1-3 were never logged
        logger = tracking.MlflowLogger(fresh)
        ctx = FitContext(model=_model(), optimizer=None, scheduler=None, config=_config(), device=torch.device("cpu"),
                         generator=torch.Generator(), callbacks=[logger], history=result.history, epoch=3)  # fmt: skip
        logger.on_fit_start(ctx)
    assert [m.step for m in tracking.client().get_metric_history(fresh, "val/acc")] == [1, 2, 3]


# ---------------------------------------------------------------------------------- monitor
def test_the_monitor_is_the_one_idea_of_better() -> None:
    loss, acc = Monitor("val/loss", "min"), Monitor("val/acc", "max")
    assert loss.better(0.4, 0.5) and not loss.better(0.45, 0.5, min_delta=0.1)
    assert acc.better(0.6, 0.5) and acc.better(0.1, None) and not acc.better(0.5, 0.5)
    assert acc.reached(0.9, 0.9) and not acc.reached(None, 0.9) and loss.reached(0.1, 0.2)
    assert acc.best_of([0.2, float("nan"), 0.7]) == 0.7 and loss.best_of([0.2, 0.7]) == 0.2
    assert acc.best_of([]) is None
    assert (acc.direction, loss.direction) == ("maximize", "minimize")
    with pytest.raises(ValueError, match="mode"):
        Monitor("val/acc", "maximize")
