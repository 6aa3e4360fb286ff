"""The model registry: register, list, describe and create models by name.

Modelled on timm's `_registry.py` and `_factory.py`. An architecture lives in a class; each
variant is a tiny keyword-only function decorated with `@register_model` that builds it. Code
elsewhere (the CLI, the engine, Optuna trials, prediction) only ever says a name:

    >>> from mnr.models import create_model, list_models
    >>> list_models("*cnn")
    ['baseline_cnn', 'bn_cnn', 'deep_cnn']
    >>> model = create_model("bn_cnn", input_size=(128, 16), dropout=None)  # None: keep default
    >>> model.input_config.input_size, model.model_name
    ((128, 16), 'bn_cnn')

Every model that `create_model` returns carries `model.input_config` (`InputConfig`: input size,
channels, normalisation, class count) and `model.model_name`. Checkpoints and registered MLflow
models store both, so prediction applies exactly the preprocessing used in training.

Unlike timm, registering a name twice is an error: a plugin silently replacing a built-in model
would make results depend on import order.

Models from outside mnr arrive two ways, both running the module's `@register_model` functions:

- installed packages that declare an entry point in the group `mnr.models`, e.g. in their
  pyproject.toml ``[project.entry-points."mnr.models"] my_nets = "my_pkg.nets"``; these load on
  first use of `list_models`, `is_model` or `create_model`, and a broken one warns and is skipped;
- a `.py` file or dotted module named on the command line (``--model-module path/to/nets.py``),
  imported by `import_model_module`.
"""

from __future__ import annotations

import dataclasses
import difflib
import fnmatch
import hashlib
import importlib
import importlib.metadata
import importlib.util
import inspect
import re
import sys
import types
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch import nn

from mnr.config import DEFAULT_INPUT_SIZE
from mnr.console import note
from mnr.data.layout import FigureLayout
from mnr.errors import MnrError

__all__ = [
    "PLUGIN_GROUP",
    "InputConfig",
    "count_parameters",
    "create_model",
    "describe_models",
    "import_model_module",
    "is_model",
    "list_models",
    "load_plugins",
    "model_description",
    "register_model",
    "takes_in_chans",
]

PLUGIN_GROUP = "mnr.models"  # the entry-point group that installed plugins declare

_model_entrypoints: dict[str, Callable[..., nn.Module]] = {}  # name -> function that builds it
_model_descriptions: dict[str, str] = {}  # name -> one-line description shown by `mnr models`
_model_modules: dict[str, str] = {}  # name -> module that registered it (named in errors)
_imported_files: dict[Path, types.ModuleType] = {}  # resolved .py path -> module, imported once
_loaded_plugins: set[str] = set()  # entry-point names already loaded (or skipped as broken)
_plugins_loaded = False  # whether `load_plugins` has run; the first lookup triggers it
_param_counts: dict[str, int | None] = {}  # name -> parameter count at the default config


@dataclass(frozen=True)
class InputConfig:
    """What a model expects as input: the contract between training and prediction.

    Each image is read as its figure `layout` says (`mnr.data.layout`: the plot box cropped, one
    value channel read back through the colormap or the RGB colours), resized to `input_size`
    (H, W), divided by 255, then normalised per channel as ``(x - mean) / std``. Stored with every
    checkpoint and registered model so that prediction can rebuild exactly this preprocessing.
    `layout` None (a model created without data, e.g. `create_model` alone): the whole image as
    RGB.
    """

    input_size: tuple[int, int]
    in_chans: int = 3
    mean: tuple[float, ...] = (0.5, 0.5, 0.5)
    std: tuple[float, ...] = (0.5, 0.5, 0.5)
    num_classes: int = 88
    layout: FigureLayout | None = None

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON/YAML-safe values (lists, not tuples), for checkpoints and MLflow."""
        return {
            "input_size": [int(v) for v in self.input_size],
            "in_chans": int(self.in_chans),
            "mean": [float(v) for v in self.mean],
            "std": [float(v) for v in self.std],
            "num_classes": int(self.num_classes),
            "layout": None if self.layout is None else self.layout.to_dict(),
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> InputConfig:
        """The inverse of `to_dict`; keys left out take their defaults, unknown keys are refused."""
        known = {"input_size", "in_chans", "mean", "std", "num_classes", "layout"}
        unknown = set(d) - known
        if unknown:
            raise MnrError(
                f"input config has unknown keys {sorted(unknown)}; expected {', '.join(sorted(known))} "
                "(was the checkpoint written by a newer mnr?)"
            )
        if "input_size" not in d:
            raise MnrError("input config has no 'input_size'; the checkpoint looks damaged")
        kwargs: dict[str, Any] = {"input_size": _check_input_size(d["input_size"])}
        if "in_chans" in d:
            kwargs["in_chans"] = int(d["in_chans"])
        if "mean" in d:
            kwargs["mean"] = tuple(float(v) for v in d["mean"])
        if "std" in d:
            kwargs["std"] = tuple(float(v) for v in d["std"])
        if "num_classes" in d:
            kwargs["num_classes"] = int(d["num_classes"])
        if d.get("layout") is not None:
            kwargs["layout"] = FigureLayout.from_dict(d["layout"])
        return cls(**kwargs)


def _check_input_size(input_size: Any) -> tuple[int, int]:
    """`input_size` as an (H, W) tuple of positive ints, or an MnrError saying what was wrong."""
    try:
        h, w = (int(v) for v in input_size)
    except (TypeError, ValueError):
        raise MnrError(
            f"input_size must be two positive integers (height, width), got {input_size!r}"
        ) from None
    if h <= 0 or w <= 0:
        raise MnrError(
            f"input_size must be two positive integers (height, width), got {input_size!r}"
        )
    return h, w


def _first_doc_line(fn: Callable[..., Any]) -> str:
    doc = inspect.getdoc(fn) or ""
    return doc.strip().splitlines()[0].strip() if doc.strip() else ""


def register_model(
    fn: Callable[..., nn.Module] | None = None,
    *,
    name: str | None = None,
    description: str | None = None,
) -> Any:
    """Register a function that builds a model, under its own name or `name`.

    Use it bare (``@register_model``) or with options
    (``@register_model(name="tiny", description="...")``). The description defaults to the first
    line of the function's docstring. The function is called by `create_model` as
    ``fn(num_classes=..., input_size=..., pretrained=..., **model_kwargs)`` and is returned
    unchanged, so it can still be called directly.

    Registering a name that is already taken raises MnrError naming both modules, because
    silently replacing a model would make results depend on import order.
    """

    def decorate(f: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        if not callable(f):
            raise TypeError(f"register_model expects a function, got {f!r}")
        model_name = name or f.__name__
        if model_name in _model_entrypoints:
            if _model_entrypoints[model_name] is f:
                return f  # the same function seen again (e.g. via an alias module): harmless
            raise MnrError(
                f"model {model_name!r} is already registered by module "
                f"{_model_modules[model_name]!r}; {f.__module__!r} cannot register it again. "
                "Rename one of them (register_model(name=...))."
            )
        _model_entrypoints[model_name] = f
        _model_descriptions[model_name] = (
            description if description is not None else _first_doc_line(f)
        )
        _model_modules[model_name] = f.__module__
        return f

    if fn is None:
        return decorate
    return decorate(fn)


def _unregister_since(names_before: set[str]) -> None:
    """Forget models registered after `names_before` was taken: a failed import leaves none."""
    for model_name in set(_model_entrypoints) - names_before:
        del _model_entrypoints[model_name]
        _model_descriptions.pop(model_name, None)
        _model_modules.pop(model_name, None)
        _param_counts.pop(model_name, None)


def _plugin_entry_points() -> list[importlib.metadata.EntryPoint]:
    """The installed entry points in `PLUGIN_GROUP` (a seam for tests)."""
    return list(importlib.metadata.entry_points(group=PLUGIN_GROUP))


def load_plugins() -> list[str]:
    """Load the installed plugins (entry points in group ``mnr.models``); return their names.

    An entry point may name a module (``my_pkg.nets``), whose import runs its `@register_model`
    functions, or a callable (``my_pkg.nets:wide_net``); a callable that its import did not
    already register is registered under the entry point's name. A plugin that fails to load
    warns, naming the plugin and the error, and is skipped, so that one broken package does not
    stop mnr from training. Each entry point is loaded at most once.
    """
    global _plugins_loaded
    _plugins_loaded = True
    loaded: list[str] = []
    for ep in _plugin_entry_points():
        key = f"{ep.name}={ep.value}"
        if key in _loaded_plugins:
            continue
        _loaded_plugins.add(key)
        names_before = set(_model_entrypoints)
        try:
            obj = ep.load()
            if (
                not isinstance(obj, types.ModuleType)
                and callable(obj)
                and all(obj is not f for f in _model_entrypoints.values())
            ):
                register_model(obj, name=ep.name)
        except Exception as e:  # any failure in foreign code skips that plugin
            _unregister_since(names_before)
            note(f"skipping model plugin {ep.name!r} ({ep.value}): {type(e).__name__}: {e}")
            continue
        loaded.append(ep.name)
    return loaded


def _ensure_plugins() -> None:
    if not _plugins_loaded:
        load_plugins()


def _module_name_for(path: Path) -> str:
    """A module name for a user's file: readable in tracebacks, unlikely to shadow a real one."""
    stem = re.sub(r"\W", "_", path.stem) or "module"
    digest = hashlib.sha1(str(path).encode()).hexdigest()[:8]  # same file, same name, every run
    return f"mnr_user_models.{stem}_{digest}"


def import_model_module(spec: str) -> types.ModuleType:
    """Import a `.py` file or a dotted module so that its `@register_model` models are available.

    This is what ``--model-module`` calls. `spec` is a path to a Python file
    (``nets/wide.py``) or an importable module name (``my_pkg.nets``). A file is imported once
    per resolved path, so naming it twice (say, in a config and again on the command line) is
    harmless. A file that does not exist, or whose import fails, raises MnrError naming it; the
    models it registered before failing are forgotten, so a fixed file can be imported again.
    """
    spec = str(spec)
    looks_like_path = spec.endswith(".py") or "/" in spec or "\\" in spec or Path(spec).exists()
    if not looks_like_path:
        names_before = set(_model_entrypoints)
        try:
            return importlib.import_module(spec)
        except Exception as e:  # reported to the user with the module's name
            _unregister_since(names_before)
            raise MnrError(
                f"cannot import model module {spec!r}: {type(e).__name__}: {e}. "
                "Give a path to a .py file or an importable module name."
            ) from e

    path = Path(spec).expanduser().resolve()
    if path in _imported_files:
        return _imported_files[path]
    if not path.is_file():
        raise MnrError(f"model module {spec!r} does not exist (looked for {path})")
    module_name = _module_name_for(path)
    import_spec = importlib.util.spec_from_file_location(module_name, path)
    if import_spec is None or import_spec.loader is None:
        raise MnrError(f"model module {spec!r} is not a Python file mnr can import")
    module = importlib.util.module_from_spec(import_spec)
    # in sys.modules during execution so that dataclasses, pickling and relative lookups work
    sys.modules[module_name] = module
    names_before = set(_model_entrypoints)
    try:
        import_spec.loader.exec_module(module)
    except Exception as e:  # reported to the user with the file's name
        sys.modules.pop(module_name, None)
        _unregister_since(names_before)
        raise MnrError(f"cannot import model module {spec!r}: {type(e).__name__}: {e}") from e
    _imported_files[path] = module
    return module


def list_models(pattern: str | list[str] | None = None) -> list[str]:
    """The registered model names, sorted; `pattern` filters with fnmatch wildcards.

    A list of patterns keeps names matching any of them: ``list_models(["*cnn", "resnet*"])``.
    """
    _ensure_plugins()
    names = sorted(_model_entrypoints)
    if pattern is None:
        return names
    patterns = [pattern] if isinstance(pattern, str) else list(pattern)
    return [n for n in names if any(fnmatch.fnmatchcase(n, p) for p in patterns)]


def is_model(name: str) -> bool:
    """Whether `name` is a registered model."""
    _ensure_plugins()
    return name in _model_entrypoints


def _unknown_model(name: str) -> MnrError:
    close = difflib.get_close_matches(name, list(_model_entrypoints), n=3, cutoff=0.6)
    hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
    return MnrError(
        f"unknown model {name!r}.{hint} Run `mnr models` to list the available models "
        "(a model in your own file needs --model-module path/to/file.py)."
    )


def model_description(name: str) -> str:
    """The one-line description of a registered model."""
    _ensure_plugins()
    if name not in _model_entrypoints:
        raise _unknown_model(name)
    return _model_descriptions[name]


_STANDARD = (
    "num_classes",
    "input_size",
    "in_chans",
    "pretrained",
)  # what create_model passes itself


def takes_in_chans(name: str) -> bool:
    """Whether model `name` can be built for other than 3 input channels: its function names an
    `in_chans` parameter. Any other model reads RGB (`data.channels: auto` picks rgb for it)."""
    _ensure_plugins()
    if name not in _model_entrypoints:
        raise _unknown_model(name)
    try:
        return "in_chans" in inspect.signature(_model_entrypoints[name]).parameters
    except (TypeError, ValueError):
        return False


def _check_kwargs(name: str, fn: Callable[..., nn.Module], kwargs: dict[str, Any]) -> None:
    """Refuse options the model does not take, naming the ones it does (a user's config typo)."""
    try:
        params = inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return
    required = [k for k in _STANDARD if k not in params and k != "in_chans"]
    if required:
        raise MnrError(
            f"model {name!r} (from {_model_modules[name]}) cannot be built by mnr: its function "
            f"must accept the keyword arguments num_classes, input_size and pretrained "
            f"(missing: {', '.join(required)}); add them, or **kwargs"
        )
    unknown = [k for k in kwargs if k not in params]
    if unknown:
        options = [k for k in params if k not in _STANDARD]
        raise MnrError(
            f"model {name!r} does not take option(s) {', '.join(map(repr, unknown))}; "
            f"its options are: {', '.join(options) if options else '(none)'}"
        )


def create_model(
    name: str,
    *,
    num_classes: int = 88,
    input_size: tuple[int, int] = DEFAULT_INPUT_SIZE,
    layout: FigureLayout | None = None,
    pretrained: bool = False,
    **kwargs: Any,
) -> nn.Module:
    """Build the registered model `name` and attach its `input_config` and `model_name`.

    `layout` is how its input images are read; the model is built for its channel count (1 for
    a value channel, 3 for RGB) and carries it in `input_config`. A model whose function takes
    no `in_chans` only reads RGB.

    Keyword arguments that are None are dropped, so an option the user did not set (a CLI flag,
    a config key left empty, an Optuna trial that does not tune it) keeps the model's default
    instead of overriding it. An unknown name raises MnrError suggesting close matches; an
    option the model does not take raises MnrError listing the ones it does.

    >>> model = create_model("baseline_cnn", input_size=(64, 48))
    >>> model.input_config.to_dict()["input_size"]
    [64, 48]
    """
    _ensure_plugins()
    if name not in _model_entrypoints:
        raise _unknown_model(name)
    if int(num_classes) < 1:
        raise MnrError(f"num_classes must be at least 1, got {num_classes!r}")
    input_size = _check_input_size(input_size)
    kwargs = {k: v for k, v in kwargs.items() if v is not None}
    fn = _model_entrypoints[name]
    _check_kwargs(name, fn, kwargs)
    in_chans = layout.in_chans if layout is not None else 3
    if takes_in_chans(name):
        kwargs["in_chans"] = in_chans
    elif in_chans != 3:
        raise MnrError(
            f"model {name!r} reads 3-channel images only (its function takes no in_chans), but the "
            f"data is read as {in_chans} channel(s); set -s data.channels=rgb, or give it in_chans"
        )
    model = fn(
        num_classes=int(num_classes), input_size=input_size, pretrained=bool(pretrained), **kwargs
    )
    config = getattr(model, "input_config", None)
    if not isinstance(config, InputConfig):
        # a builder may set its own (say, ImageNet statistics for pretrained weights); else default
        neutral = (0.5,) * in_chans
        config = InputConfig(
            input_size=input_size,
            in_chans=in_chans,
            mean=neutral,
            std=neutral,
            num_classes=int(num_classes),
        )
    model.input_config = dataclasses.replace(config, layout=layout)
    model.model_name = name
    return model


def count_parameters(model: nn.Module, *, trainable_only: bool = False) -> int:
    """The number of parameters in `model` (only those with requires_grad if `trainable_only`)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


def _default_param_count(name: str) -> int | None:
    """Parameters at the default config (88 classes, `DEFAULT_INPUT_SIZE`), cached; None if it fails to build."""
    if name not in _param_counts:
        try:
            _param_counts[name] = count_parameters(create_model(name))
        except Exception as e:  # one broken plugin model must not break the listing
            note(f"model {name!r} fails to build: {type(e).__name__}: {e}")
            _param_counts[name] = None
    return _param_counts[name]


def describe_models(pattern: str | list[str] | None = None) -> list[dict[str, Any]]:
    """One dict per model matching `pattern`: name, description, params, module.

    `params` is the parameter count at the default config (88 classes, `DEFAULT_INPUT_SIZE`); a
    model that fails to build warns and reports None. `module` is the module that registered it.
    """
    return [
        {
            "name": n,
            "description": _model_descriptions[n],
            "params": _default_param_count(n),
            "module": _model_modules[n],
        }
        for n in list_models(pattern)
    ]
