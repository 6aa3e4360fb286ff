"""Continuing a run: find its checkpoint, and apply what the command line may change.

`mnr train --resume RUN_ID --epochs 60` continues the run, in the same MLflow run, with the
config it was trained with, changed only where the user asks and where a change keeps the
continued run one experiment: how long it trains, when it stops, what it records and on what
it runs (`CHANGEABLE`). Any other setting given with a value other than the run's (another
model, data, batch size, seed...) is refused by name: it would be a new experiment, which is a
new run. The command line is honoured or refused, never dropped.
"""

from __future__ import annotations

import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mnr import settings, tracking
from mnr.checkpoint import load_checkpoint
from mnr.coerce import from_dict
from mnr.config import ExperimentConfig, check_config, get_dotted, set_dotted, to_dict
from mnr.errors import MnrError

__all__ = ["CHANGEABLE", "Resume", "load_resume", "resume_config"]

# The settings a resumed run may change (dotted key -> what it changes).
CHANGEABLE: dict[str, str] = {
    "train.epochs": "how long it trains (the learning-rate schedule follows; mnr.optim)",
    "train.target": "when it stops",
    "train.early_stopping.enabled": "when it stops",
    "train.early_stopping.patience": "when it stops",
    "train.early_stopping.min_delta": "when it stops",
    "tracking.run_name": "the run's name",
    "tracking.register": "the name the final model is registered under",
    "tracking.log_model": "whether the final model is logged",
    "tracking.checkpoint_artifacts": "whether the best checkpoint is uploaded",
    "tracking.system_metrics": "whether CPU and memory use are recorded",
    "train.device": "where it runs",
    "train.threads": "where it runs",
    "train.eval_batch_size": "how many images are evaluated at once (not what is learnt)",
    "data.workers": "how many processes decode the images",
    "model.module": "where a user's model is imported from (the model itself must match)",
    "search": "`mnr tune`'s search space, unused by a training run",
}


@dataclass(frozen=True)
class Resume:
    """A checkpoint to continue from, and the config the continued run trains with."""

    state: dict[str, Any]  # the engine's checkpoint (`FitContext.checkpoint`)
    run_id: str | None  # the MLflow run it continues, when it has one
    config: ExperimentConfig  # the checkpoint's config with the allowed changes applied
    # dotted key -> (the run's value, the new value), for what the command line changed
    changes: dict[str, tuple[Any, Any]] = field(default_factory=dict)


def load_resume(
    target: str,
    *,
    given: Mapping[str, Any] | None = None,
    option_names: Mapping[str, str] | None = None,
) -> Resume:
    """The checkpoint of `target` (a run id or a checkpoint file) and the config to continue with.

    `given` holds only the settings the user named (`mnr.config.given_settings`); see
    `resume_config` for what happens to them, and `option_names` for how errors name them.
    """
    state, run_id = _find_checkpoint(target)
    saved = from_dict(ExperimentConfig, state["config"])
    config, changes = resume_config(
        saved,
        given or {},
        epochs_done=int(state["epoch"]),
        run=run_id or target,
        option_names=option_names or {},
    )
    return Resume(state=state, run_id=run_id, config=config, changes=changes)


def resume_config(
    saved: ExperimentConfig,
    given: Mapping[str, Any],
    *,
    epochs_done: int,
    run: str,
    option_names: Mapping[str, str],
) -> tuple[ExperimentConfig, dict[str, tuple[Any, Any]]]:
    """`saved` with the `given` settings that may change (`CHANGEABLE`) applied, and the changes.

    A given setting equal to the run's is no change. Any other that differs is refused in one
    `MnrError` naming each (as `option_names` spells it, e.g. `--model`, else `-s key`), with the
    run's and the given value. Fewer `train.epochs` than the run has done is refused too.
    """
    data = to_dict(saved)
    changes: dict[str, tuple[Any, Any]] = {}
    refused: list[str] = []
    for key, value in given.items():
        old = get_dotted(data, key)
        if _same(key, old, value):
            continue
        name = option_names.get(key, f"-s {key}")
        if key not in CHANGEABLE:
            refused.append(f"{name} ({key}): the run has {old!r}, given {value!r}")
            continue
        changes[key] = (old, value)
        set_dotted(data, key, value)
    if refused:
        raise MnrError(
            f"--resume continues run {run} as it was trained; these options would make it "
            f"another experiment: {'; '.join(refused)}. Leave them out to continue the run, or "
            f"start a new run without --resume. What may change: {', '.join(CHANGEABLE)}"
        )
    if "train.epochs" in changes and changes["train.epochs"][1] < epochs_done:
        raise MnrError(
            f"{option_names.get('train.epochs', '-s train.epochs')} {changes['train.epochs'][1]}: "
            f"run {run} has already trained {epochs_done} epochs; give more to train it longer"
        )
    return check_config(from_dict(ExperimentConfig, data)), changes


def _same(key: str, old: Any, new: Any) -> bool:
    """Equal values; for the data path, the same folder however it is written."""
    if key == "data.path" and isinstance(old, str) and isinstance(new, str):
        return Path(old).expanduser().resolve() == Path(new).expanduser().resolve()
    return old == new


def _find_checkpoint(target: str) -> tuple[dict[str, Any], str | None]:
    """The checkpoint to resume from: a file path, or an MLflow run id.

    For a run id, the local `MNR_CHECKPOINT_DIR/<run_id>/last.pt` is used when present, else the
    run's logged `checkpoints/last.pt` artifact is downloaded.
    """
    path = Path(target).expanduser()
    if path.is_file():
        state = load_checkpoint(path)
        return state, state.get("run_id")
    local = settings.MNR_CHECKPOINT_DIR.path() / target / "last.pt"
    if local.is_file():
        return load_checkpoint(local), target
    tracking.configure_tracking()
    try:
        with tempfile.TemporaryDirectory() as tmp:
            downloaded = tracking.client().download_artifacts(target, "checkpoints/last.pt", tmp)
            return load_checkpoint(downloaded), target
    except Exception as exc:  # noqa: BLE001 - any failure means "nothing to resume from"
        raise MnrError(
            f"nothing to resume for {target!r}: no checkpoint file, no {local}, "
            f"and no checkpoints/last.pt artifact in that MLflow run ({exc})"
        ) from None
