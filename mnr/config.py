"""The experiment config: dataclasses, YAML loading, overrides, validation and dumping.

One place resolves a config, in this order: the dataclass defaults, then `experiments/NAME.yaml`
(or `--config FILE`), then the named CLI options (`--epochs` ...) or the Python API's keyword
arguments, then `-s key=value` overrides (or the API's `overrides={"key": value}`).
Unknown keys and wrong types are errors that name the key. Values are parsed with
`yaml.safe_load`, never evaluated as code.
"""

from __future__ import annotations

import dataclasses
import importlib.resources
import typing
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from mnr.coerce import from_dict
from mnr.errors import MnrError

__all__ = [
    "AugmentConfig",
    "DataConfig",
    "EarlyStoppingConfig",
    "ExperimentConfig",
    "ModelConfig",
    "Overrides",
    "OptimConfig",
    "SchedulerConfig",
    "TrackingConfig",
    "TrainConfig",
    "apply_overrides",
    "check_config",
    "experiment_path",
    "experiments_dir",
    "field_type",
    "flatten",
    "get_dotted",
    "given_settings",
    "load_config",
    "resolve_config",
    "set_dotted",
    "to_dict",
    "to_yaml",
]

# The models mnr ships a config for (experiments/<name>.yaml); a missing one is an error, never
# a silent fallback to the defaults. A user's or a plugin's model may come without one.
SHIPPED_EXPERIMENTS = ("baseline_cnn", "bn_cnn", "deep_cnn", "resnet18")
DEFAULT_INPUT_SIZE = (128, 16)  # (H, W): one row per mel band, time squeezed; docs/data.md says why
# Epochs per trial (at most; a shorter experiment keeps its own). Measured on the built-in set:
# with a good learning rate baseline_cnn passes its full 45-epoch experiment's validation
# accuracy within 15 epochs (lr 0.02, batch 32: 96.0 % vs 93.4 %), while 4-epoch trials topped
# out at 89 %: too short to rank configs by what they reach. Pruning keeps the study short.
DEFAULT_TUNE_EPOCHS = 15
# `-s key=value` strings (the value read as YAML), or dotted keys -> values (the Python API's)
Overrides = Sequence[str] | Mapping[str, Any]


@dataclass
class ModelConfig:
    """Which registered model to build, and its keyword arguments."""

    name: str = "baseline_cnn"
    kwargs: dict[str, Any] = field(default_factory=dict)
    pretrained: bool = False  # only resnet18 has weights, and they need network access
    module: str | None = (
        None  # a user's .py file or module whose @register_model functions load first
    )


@dataclass
class DataConfig:
    """Where the data is and how it becomes tensors."""

    path: str | None = None  # a labelled folder or a dataset root; None = the built-in set
    input_size: list[int] = field(default_factory=lambda: list(DEFAULT_INPUT_SIZE))
    # what the model reads of the plot: "value", one channel read back through a known
    # colormap; "rgb", the three colours; "auto", value when a known colormap fits (mnr.data.layout)
    channels: Literal["auto", "value", "rgb"] = "auto"
    val_fraction: float = 0.2
    split_seed: int = 0
    workers: int | None = None  # decode processes; None = all cores


@dataclass
class AugmentConfig:
    """Spectrogram-safe augmentation: nothing that moves energy across frequency rows.

    Flips and vertical shifts would change the pitch, so there are none.
    """

    enabled: bool = False
    time_shift: float = 0.0  # max circular shift along time, as a fraction of the width
    time_masks: int = 0  # SpecAugment time masks per image
    time_mask_width: float = 0.1  # max width of each, as a fraction of the width
    freq_masks: int = 0  # SpecAugment frequency masks per image
    freq_mask_width: float = 0.05  # max height of each, as a fraction of the height
    gain: float = 0.0  # max relative brightness change, e.g. 0.1 = +-10 %
    noise: float = 0.0  # std of Gaussian noise added to the normalised input
    # max level of a random smooth curve over frequency added where the note sounds: another
    # instrument's partial strengths, a weak fundamental, a microphone or speaker (timbre), in
    # normalised input units; it moves no energy between rows, so it never changes the pitch
    timbre: float = 0.0


@dataclass
class OptimConfig:
    """Optimizer and its hyper-parameters."""

    name: Literal["sgd", "adam", "adamw"] = "sgd"
    lr: float = 0.005
    momentum: float = 0.0
    nesterov: bool = False
    weight_decay: float = 0.0


@dataclass
class SchedulerConfig:
    """Learning-rate schedule: stepped once per epoch, except onecycle (once per batch)."""

    name: Literal["none", "step", "cosine", "onecycle"] = "none"
    step_size: int = 10  # step: epochs between decays
    gamma: float = 0.1  # step: decay factor
    min_lr: float = 0.0  # cosine: final learning rate
    pct_start: float = 0.3  # onecycle: fraction of steps spent warming up


@dataclass
class EarlyStoppingConfig:
    """Stop when the monitored metric has not improved by min_delta for patience epochs."""

    enabled: bool = False
    monitor: str = "val/loss"
    patience: int = 5
    mode: Literal["min", "max"] = "min"
    min_delta: float = 0.0


@dataclass
class TrainConfig:
    """The loop itself."""

    epochs: int = 45
    batch_size: int = 64
    eval_batch_size: int = 512
    label_smoothing: float = 0.0
    seed: int = 0
    deterministic: bool = False  # torch.use_deterministic_algorithms; slower on GPU
    device: Literal["auto", "cpu", "cuda", "mps"] = "auto"
    amp: bool = True  # mixed precision on CUDA only; a no-op on CPU
    threads: int | None = None  # torch intra-op threads; None = one per core
    channels_last: bool = True
    monitor: str = "val/acc"  # what "best" means, for checkpoints and pruning
    monitor_mode: Literal["min", "max"] = "max"
    target: float | None = None  # stop as soon as the monitored metric reaches this value
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    early_stopping: EarlyStoppingConfig = field(default_factory=EarlyStoppingConfig)


@dataclass
class TrackingConfig:
    """What goes to MLflow."""

    experiment: str = "mnr"
    run_name: str | None = None
    log_model: bool = True
    register: str | None = None  # register the final model under this name
    checkpoint_artifacts: bool = True  # upload the best checkpoint as an artifact
    system_metrics: bool = True  # CPU, memory (and GPU) use as system/... metrics while training


@dataclass
class ExperimentConfig:
    """One experiment: everything `mnr train` needs, loadable from YAML."""

    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    scheduler: SchedulerConfig = field(default_factory=SchedulerConfig)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)
    search: dict[str, dict[str, Any]] | None = None  # `mnr tune` search space; see mnr.tuning


def to_dict(config: Any) -> dict[str, Any]:
    """The config as plain YAML-safe data."""
    return dataclasses.asdict(config)


def to_yaml(config: Any) -> str:
    """The config as YAML text, keys in declaration order."""
    return yaml.safe_dump(to_dict(config), sort_keys=False)


def flatten(data: dict[str, Any], *, prefix: str = "") -> dict[str, Any]:
    """{"optim": {"lr": 0.1}} -> {"optim.lr": 0.1}, for MLflow params.

    An empty mapping has no entries to flatten and is left out: a model without options logs no
    `model.kwargs` param, rather than a `{}` that no other model has (and that MLflow's
    comparison views would then pick as a varying parameter).
    """
    flat: dict[str, Any] = {}
    for key, value in data.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(flatten(value, prefix=f"{name}."))
        else:
            flat[name] = value
    return flat


def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise MnrError(f"{path}: cannot read the config ({exc.strerror or exc})") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark is not None else str(path)
        raise MnrError(f"{where}: invalid YAML ({getattr(exc, 'problem', exc)})") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise MnrError(f"{path}: the config must be a mapping of sections (model:, train:, ...)")
    return data


def get_dotted(data: dict[str, Any], dotted: str) -> Any:
    """The value at `dotted` (e.g. "optim.lr") in raw config data; KeyError if it is not there."""
    for part in dotted.split("."):
        data = data[part]
    return data


def set_dotted(data: dict[str, Any], dotted: str, value: Any) -> None:
    """Set `dotted` (e.g. "optim.lr") in raw config data, creating missing sections."""
    parts = dotted.split(".")
    node = data
    for part in parts[:-1]:
        child = node.get(part)
        if child is None:
            child = node[part] = {}
        if not isinstance(child, dict):
            raise MnrError(f"override {dotted!r}: {part!r} is not a section")
        node = child
    node[parts[-1]] = value


def field_type(dotted: str) -> Any:
    """The annotation of the setting a dotted key names, e.g. float for "optim.lr".

    A key inside a free-form mapping (`model.kwargs.dropout`) is `Any`. Raises `MnrError` naming
    the first part that is not a config key, or saying that the key names a whole section.
    """
    cls: Any = ExperimentConfig
    parts = dotted.split(".")
    for index, part in enumerate(parts):
        names = {f.name for f in dataclasses.fields(cls)}
        if part not in names:
            where = ".".join(parts[:index]) or "the top level"
            raise MnrError(
                f"{dotted!r} is not a config key ({part!r} is not in {where}; "
                f"valid there: {', '.join(sorted(names))})"
            )
        hint = typing.get_type_hints(cls)[part]
        last = index == len(parts) - 1
        if dataclasses.is_dataclass(hint):
            if last:
                raise MnrError(f"{dotted!r} is a config section; name one of its keys")
            cls = hint
            continue
        if typing.get_origin(hint) is dict:
            return hint if last else Any  # a free-form mapping such as model.kwargs.<name>
        if last:
            return hint
        raise MnrError(f"{'.'.join(parts[: index + 1])!r} is a single value, not a section")
    raise AssertionError("unreachable")  # pragma: no cover


def apply_overrides(data: dict[str, Any], overrides: list[str] | tuple[str, ...]) -> dict[str, Any]:
    """Apply `-s key=value` overrides to raw config data; values are parsed as YAML scalars."""
    for item in overrides:
        key, sep, text = item.partition("=")
        if not sep or not key.strip():
            raise MnrError(f"override {item!r}: write key=value, e.g. -s optim.lr=0.01")
        try:
            value = yaml.safe_load(text) if text.strip() else None
        except yaml.YAMLError:
            value = text
        set_dotted(data, key.strip(), value)
    return data


def experiments_dir() -> Path:
    """The folder of shipped experiment configs: the repository's `experiments/`, installed as
    the package `mnr.experiments` (so a wheel carries it too)."""
    return Path(str(importlib.resources.files("mnr.experiments")))


def experiment_path(name: str) -> Path | None:
    """`experiments/<name>.yaml` when mnr ships one by that name, else None."""
    path = experiments_dir() / f"{name}.yaml"
    return path if path.is_file() else None


def _config_source(*, model: str | None, config: str | Path | None) -> Path | None:
    """The YAML to start from: `config` (a file, or the name of a shipped experiment), else the
    model's shipped experiment; None for a model that ships none (a user's own)."""
    if config is not None:
        path = Path(config).expanduser()
        if path.is_file():
            return path
        named = (
            experiment_path(str(config).removesuffix(".yaml")) if path.parent == Path(".") else None
        )
        if named is not None:
            return named
        raise MnrError(
            f"config {config!r} not found: looked for the file {path.resolve()} and for a shipped "
            f"experiment {experiments_dir() / path.with_suffix('.yaml').name}"
        )
    if model is None:
        return None
    found = experiment_path(model)
    if found is None and model in SHIPPED_EXPERIMENTS:
        raise MnrError(
            f"the experiment config of {model!r} is missing: looked for {experiments_dir() / (model + '.yaml')}. "
            "Reinstall mnr, or pass --config FILE"
        )
    return found


def load_config(path: str | Path) -> ExperimentConfig:
    """Load and validate one experiment YAML."""
    return from_dict(ExperimentConfig, _read_yaml(Path(path)))


def resolve_config(
    *,
    model: str | None = None,
    config: str | Path | None = None,
    options: dict[str, Any] | None = None,
    overrides: Overrides = (),
) -> ExperimentConfig:
    """The one place a config is resolved: defaults < YAML < named options < -s overrides.

    `config` is a YAML file or the name of a shipped experiment (`baseline_cnn_tuned`); without
    it, `model` picks `experiments/<model>.yaml`. `options` maps dotted keys to values and skips
    those that are None (an option the user did not give). `overrides` are `-s` strings
    (``"optim.lr=0.01"``, the value read as YAML) or a mapping of dotted keys to values.
    """
    data = _given_data(
        source=_config_source(model=model, config=config),
        options={"model.name": model, **(options or {})},
        overrides=overrides,
    )
    return check_config(from_dict(ExperimentConfig, data))


def check_config(config: ExperimentConfig) -> ExperimentConfig:
    """Refuse settings that each type-check but cannot work (together); return `config`.

    Called where a config is resolved (`resolve_config`) and where a resumed run's is rebuilt.
    """
    if len(config.data.input_size) != 2 or min(config.data.input_size) < 8:
        raise MnrError(
            f"data.input_size: expected [height, width] of at least 8, got {config.data.input_size}"
        )
    if config.tracking.register and not config.tracking.log_model:
        raise MnrError(
            f"--register {config.tracking.register!r} (tracking.register) needs the model logged, "
            "but tracking.log_model is false; leave out -s tracking.log_model=false to register "
            "the model, or leave out --register"
        )
    return config


def _given_data(
    *, source: Path | None, options: dict[str, Any] | None, overrides: Overrides
) -> dict[str, Any]:
    """Raw config data from a YAML file, named options (None = not given) and overrides."""
    data = _read_yaml(source) if source is not None else {}
    for key, value in (options or {}).items():
        if value is not None:
            set_dotted(data, key, value)
    if isinstance(overrides, Mapping):  # the Python API's: values are already Python values
        for key, value in overrides.items():
            set_dotted(data, key, value)
        return data
    return apply_overrides(data, overrides)


def given_settings(
    *,
    config: str | Path | None = None,
    options: dict[str, Any] | None = None,
    overrides: Overrides = (),
) -> dict[str, Any]:
    """Only the settings a command line gives: dotted key -> checked value, no defaults.

    `resolve_config` fills in everything; a resumed run must instead know which keys the user
    actually named, so that an option left out is never compared with the run's value. `config`
    (a file or a shipped experiment's name) counts as giving every key it sets; `options` skips
    values that are None. A key is a setting, not a section (`train.epochs`; `model.kwargs`
    whole). Unknown keys and wrong types fail by name, as in `resolve_config`.
    """
    source = _config_source(model=None, config=config) if config is not None else None
    data = _given_data(source=source, options=options, overrides=overrides)
    checked = to_dict(from_dict(ExperimentConfig, data))
    return {key: get_dotted(checked, key) for key in _setting_keys(data, ExperimentConfig)}


def _setting_keys(data: dict[str, Any], cls: Any, prefix: str = "") -> list[str]:
    """The dotted keys of raw data, down to the settings of `cls` (into sections only)."""
    hints = typing.get_type_hints(cls)
    keys = []
    for name, value in data.items():
        if dataclasses.is_dataclass(hints[name]) and isinstance(value, dict):
            keys += _setting_keys(value, hints[name], f"{prefix}{name}.")
        else:
            keys.append(f"{prefix}{name}")
    return keys
