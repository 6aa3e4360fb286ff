"""The levers behind the speed numbers, each measured before and after, alternately.

In this process: channels_last, intra-op threads, how a batch is gathered and converted, the
per-step finite-loss check, and inference batch size and autograd mode. In fresh processes
(`child_steps`, through `run_child`), what torch or OpenMP fix once per process: inter-op
threads, OMP_WAIT_POLICY, and torch.compile, whose compile time must count.

Each lever is one record with its before and after labels, medians, samples and a note; the
report adds what mnr does about it.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

import torch
from speed_harness import EngineRun, ab_lever, log, median, run_child, seed_config

from mnr.data.layout import FigureLayout
from mnr.engine import predict_logits
from mnr.training import build_model, load_data
from mnr.transforms import to_model_input

# --------------------------------------------------------------------------------------------
# Levers measured in this process


def _old_batch(
    images: torch.Tensor, index: torch.Tensor, mean: Sequence[float], std: Sequence[float]
) -> torch.Tensor:
    """The batch preparation before this benchmark: advanced indexing, then out-of-place maths."""
    batch = images[index]
    std_t = torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1)
    mean_t = torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1)
    x = torch.addcmul(-mean_t / std_t, batch.to(torch.float32), 1.0 / (255.0 * std_t))
    return x.contiguous(memory_format=torch.channels_last)


def _new_batch(
    images: torch.Tensor, index: torch.Tensor, mean: Sequence[float], std: Sequence[float]
) -> torch.Tensor:
    """What the engine does now: `index_select` along the batch axis, then `to_model_input`."""
    return to_model_input(images.index_select(0, index), mean=mean, std=std, channels_last=True)


def _epoch_rate(
    subset: tuple[torch.Tensor, torch.Tensor],
    layout: FigureLayout | None,
    model: str,
    *extra: str,
) -> Callable[[], float]:
    """A warmed-up engine on `subset` (read with `layout`): each call trains one epoch and
    returns its img/s."""
    run = EngineRun(seed_config(model, *extra), *subset, layout=layout)
    run.epoch()  # warm-up
    return lambda: run.epoch()["images_per_second"]


def _with_threads(fn: Callable[[], float], count: int, restore: int) -> Callable[[], float]:
    """`fn` run at `count` intra-op threads, then back to `restore`."""

    def call() -> float:
        torch.set_num_threads(count)
        try:
            return fn()
        finally:
            torch.set_num_threads(restore)

    return call


def _channels_last_levers(
    subset: tuple[torch.Tensor, torch.Tensor], layout: FigureLayout | None, *, rounds: int
) -> list[dict[str, Any]]:
    levers = []
    for model in ("baseline_cnn", "bn_cnn"):
        log(f"lever channels_last: {model}")
        levers.append(
            ab_lever(
                "channels_last",
                _epoch_rate(subset, layout, model, "train.channels_last=false"),
                _epoch_rate(subset, layout, model, "train.channels_last=true"),
                rounds=rounds,
                unit="img/s",
                higher_is_better=True,
                before_label="channels_last=false",
                after_label="channels_last=true (default)",
                model=model,
            )
        )
    return levers


def _thread_levers(
    subset: tuple[torch.Tensor, torch.Tensor],
    layout: FigureLayout | None,
    *,
    rounds: int,
    threads: int,
) -> list[dict[str, Any]]:
    levers = []
    for model in ("baseline_cnn", "bn_cnn"):
        log(f"lever threads: {model}")
        one, many = _epoch_rate(subset, layout, model), _epoch_rate(subset, layout, model)
        levers.append(
            ab_lever(
                "intra-op threads",
                _with_threads(one, 1, threads),
                _with_threads(many, threads, threads),
                rounds=rounds,
                unit="img/s",
                higher_is_better=True,
                before_label="torch.set_num_threads(1)",
                after_label=f"torch.set_num_threads({threads}) (default: one per core)",
                model=model,
            )
        )
    return levers


def _per_batch_ms(
    fn: Callable[..., torch.Tensor],
    pixels: torch.Tensor,
    batches: list[torch.Tensor],
    mean: Sequence[float],
    std: Sequence[float],
) -> Callable[[], float]:
    """Each call prepares every batch in `batches` with `fn`; returns ms per batch."""

    def call() -> float:
        started = time.perf_counter()
        for index in batches:
            fn(pixels, index, mean, std)
        return (time.perf_counter() - started) / len(batches) * 1e3

    return call


def _batch_preparation_levers(
    data: Any, pixels_now: torch.Tensor, *, rounds: int, threads: int
) -> list[dict[str, Any]]:
    """Gathering a batch from the uint8 set and turning it into model input, at the data's size
    and channels and at 128 x 128 (random pixels: only the shape matters here)."""
    levers = []
    channels = pixels_now.shape[1]
    mean = std = (0.5,) * channels
    generator = torch.Generator().manual_seed(0)
    sets = {"x".join(map(str, data.input_size)): pixels_now}
    if tuple(data.input_size) != (128, 128):
        sets["128x128"] = torch.randint(
            0,
            256,
            (len(data.train_images), channels, 128, 128),
            dtype=torch.uint8,
            generator=generator,
        )
    for label, pixels in sets.items():
        batches = [torch.randperm(len(pixels), generator=generator)[:64] for _ in range(20)]
        for index in batches[:3]:
            if not torch.equal(
                _old_batch(pixels, index, mean, std), _new_batch(pixels, index, mean, std)
            ):
                raise RuntimeError("the new batch preparation differs from the old one")
        for count in sorted({threads, 1}, reverse=True):
            log(f"lever batch preparation at {label}, {count} thread(s)")
            torch.set_num_threads(count)
            try:
                lever = ab_lever(
                    "batch gather + float conversion",
                    _per_batch_ms(_old_batch, pixels, batches, mean, std),
                    _per_batch_ms(_new_batch, pixels, batches, mean, std),
                    rounds=max(rounds, 5),
                    unit="ms/batch",
                    higher_is_better=False,
                    before_label="images[index]; addcmul; channels_last copy",
                    after_label="images.index_select(0, index); to_model_input (now)",
                    note="bit-identical tensors (checked)",
                    model=f"any (batch 64, {channels} x {label}, {count} thread(s))",
                )
            finally:
                torch.set_num_threads(threads)
            levers.append(lever)
    return levers


def _finite_check_lever() -> dict[str, Any]:
    """The per-step finite-loss check on CPU: its cost per step, kept (nothing to compare)."""
    loss_sum = torch.zeros((), dtype=torch.float64)
    started = time.perf_counter()
    for _ in range(2000):
        if not torch.isfinite(loss_sum):
            raise RuntimeError
    check_us = (time.perf_counter() - started) / 2000 * 1e6
    return {
        "lever": "per-step isfinite(loss_sum) check (CPU)",
        "model": "any",
        "unit": "us/step",
        "before": check_us,
        "after": check_us,
        "change_percent": 0.0,
        "after_is_better": False,
        "before_label": "checked every step",
        "after_label": "kept",
        "note": "cost per step; compare with a step of 100+ ms: well under 0.1 %",
    }


def _predict_rate(
    model: torch.nn.Module, images: Any, batch: int, mode: str
) -> Callable[[], float]:
    """Each call predicts `images` in batches of `batch` under autograd `mode`; returns img/s."""
    raw = predict_logits.__wrapped__  # the function without its inference_mode decorator

    def call() -> float:
        context = {
            "inference_mode": torch.inference_mode(),
            "no_grad": torch.no_grad(),
            "autograd": torch.enable_grad(),
        }[mode]
        started = time.perf_counter()
        with context:
            raw(model, images, batch_size=batch)
        return len(images) / (time.perf_counter() - started)

    return call


def _inference_levers(data: Any, *, rounds: int, quick: bool) -> list[dict[str, Any]]:
    """Inference batch size, and torch.inference_mode against no_grad (and autograd on)."""
    model = build_model(seed_config("bn_cnn"), layout=data.layout)
    model = model.to(memory_format=torch.channels_last)
    images = data.val_images

    def predict(batch: int, mode: str) -> Callable[[], float]:
        return _predict_rate(model, images, batch, mode)

    log("lever inference batch size and mode (bn_cnn)")
    predict(512, "inference_mode")()  # warm-up
    same = {"rounds": rounds, "unit": "img/s", "higher_is_better": True, "model": "bn_cnn"}
    levers = [
        ab_lever(
            "inference batch size",
            predict(64, "inference_mode"),
            predict(512, "inference_mode"),
            before_label="batch 64",
            after_label="batch 512 (evaluate/predict default)",
            **same,
        ),
        ab_lever(
            "inference autograd mode",
            predict(512, "no_grad"),
            predict(512, "inference_mode"),
            before_label="torch.no_grad",
            after_label="torch.inference_mode (now)",
            **same,
        ),
    ]
    if not quick:
        levers.append(
            ab_lever(
                "inference autograd mode",
                predict(512, "autograd"),
                predict(512, "inference_mode"),
                before_label="autograd on (no context)",
                after_label="torch.inference_mode (now)",
                **same,
            )
        )
    return levers


def section_levers(data: Any, *, images: int, rounds: int, quick: bool) -> list[dict[str, Any]]:
    """The in-process levers, on the first `images` training images, `rounds` pairs each."""
    threads = torch.get_num_threads()
    subset = (
        torch.from_numpy(data.train_images[:images]),
        torch.from_numpy(data.train_labels[:images]),
    )
    levers = _channels_last_levers(subset, data.layout, rounds=rounds)
    if threads > 1:
        levers += _thread_levers(subset, data.layout, rounds=rounds, threads=threads)
    levers += _batch_preparation_levers(data, subset[0], rounds=rounds, threads=threads)
    levers.append(_finite_check_lever())
    levers += _inference_levers(data, rounds=rounds, quick=quick)
    return levers


# --------------------------------------------------------------------------------------------
# Levers measured in fresh processes


def child_steps(spec: dict[str, Any]) -> dict[str, Any]:
    """Engine throughput in a fresh process: interop threads must be set before any parallel work."""
    if spec.get("interop"):
        torch.set_num_interop_threads(int(spec["interop"]))
    if spec.get("threads"):
        torch.set_num_threads(int(spec["threads"]))
    config = seed_config(spec["model"])
    data = load_data(config, progress=False)
    images = torch.from_numpy(data.train_images[: spec["images"]])
    labels = torch.from_numpy(data.train_labels[: spec["images"]])
    out: dict[str, Any] = {
        "interop_threads": torch.get_num_interop_threads(),
        "threads": torch.get_num_threads(),
    }
    for compiled in [False, True] if spec.get("compile") else [False]:
        run = EngineRun(config, images, labels, layout=data.layout, compile=compiled)
        first = run.epoch()
        rest = [run.epoch() for _ in range(spec.get("epochs", 2))]
        key = "compiled" if compiled else "eager"
        out[key] = {
            "first_epoch_seconds": first["seconds"],
            "images_per_second": median([r["images_per_second"] for r in rest]),
            "epoch_seconds": median([r["seconds"] for r in rest]),
        }
    return out


def _child_pair_lever(
    lever: str,
    before: list[float],
    after: list[float],
    *,
    before_label: str,
    after_label: str,
    note: str,
) -> dict[str, Any]:
    """A lever record from eager img/s samples of fresh processes, before and after."""
    b, a = median(before), median(after)
    return {
        "lever": lever,
        "model": "baseline_cnn",
        "unit": "img/s",
        "before": b,
        "after": a,
        "change_percent": (a / b - 1) * 100,
        "after_is_better": a > b,
        "before_label": before_label,
        "after_label": after_label,
        "before_samples": before,
        "after_samples": after,
        "note": note,
    }


def _interop_levers(*, images: int, quick: bool) -> list[dict[str, Any]]:
    log("lever interop threads (fresh processes)")
    samples: dict[int, list[float]] = {1: [], 2: []}
    for _ in range(1 if quick else 2):
        for interop in (1, 2):
            r = run_child(
                {"kind": "steps", "model": "baseline_cnn", "interop": interop, "images": images},
                timeout=600,
            )
            if "error" not in r:
                samples[interop].append(r["eager"]["images_per_second"])
    if not (samples[1] and samples[2]):
        return []
    return [
        _child_pair_lever(
            "inter-op threads",
            samples[1],
            samples[2],
            before_label="set_num_interop_threads(1)",
            after_label="default (2)",
            note="eager training runs ops one after another; the inter-op pool is idle",
        )
    ]


def _wait_policy_levers(*, images: int, quick: bool) -> list[dict[str, Any]]:
    log("lever OpenMP wait policy (fresh processes)")
    policy: dict[str, list[float]] = {"default": [], "PASSIVE": []}
    for _ in range(1 if quick else 2):
        for name in policy:
            env = {"OMP_WAIT_POLICY": "PASSIVE"} if name == "PASSIVE" else {}
            r = run_child(
                {"kind": "steps", "model": "baseline_cnn", "images": images}, timeout=600, env=env
            )
            if "error" not in r:
                policy[name].append(r["eager"]["images_per_second"])
    if not (policy["default"] and policy["PASSIVE"]):
        return []
    return [
        _child_pair_lever(
            "OpenMP wait policy",
            policy["default"],
            policy["PASSIVE"],
            before_label="OMP_WAIT_POLICY unset (threads spin)",
            after_label="OMP_WAIT_POLICY=PASSIVE",
            note="set before torch is imported; matters when other processes compete for the cores",
        )
    ]


def _compile_lever(*, images: int) -> dict[str, Any]:
    """Eager against torch.compile in one fresh process; the first compiled epoch pays the
    compile, so the record says after how many images it pays back, if ever."""
    log("lever torch.compile (fresh process; compile time counts)")
    r = run_child(
        {
            "kind": "steps",
            "model": "baseline_cnn",
            "images": images,
            "compile": True,
            "epochs": 2,
        },
        timeout=900,
    )
    if "error" in r:
        return {
            "lever": "torch.compile",
            "model": "baseline_cnn",
            "error": r["error"],
            "stderr_tail": r.get("stderr_tail", ""),
        }
    eager, compiled = r["eager"], r["compiled"]
    compile_seconds = compiled["first_epoch_seconds"] - compiled["epoch_seconds"]
    saving = eager["epoch_seconds"] - compiled["epoch_seconds"]
    return {
        "lever": "torch.compile",
        "model": "baseline_cnn",
        "unit": "img/s",
        "before": eager["images_per_second"],
        "after": compiled["images_per_second"],
        "change_percent": (compiled["images_per_second"] / eager["images_per_second"] - 1) * 100,
        "after_is_better": saving > 0,
        "before_label": "eager",
        "after_label": "torch.compile (inductor)",
        "compile_seconds": compile_seconds,
        "break_even_images": (compile_seconds / saving * images) if saving > 0 else None,
        "note": f"compile took {compile_seconds:.0f} s for {images}-image epochs; "
        + (
            f"pays back after {compile_seconds / saving * images:,.0f} images"
            if saving > 0
            else "steady state is not faster: never pays back"
        ),
    }


def section_child_levers(*, images: int, quick: bool) -> list[dict[str, Any]]:
    """The levers that need fresh processes; torch.compile only in a full run (it is slow)."""
    levers = _interop_levers(images=images, quick=quick)
    levers += _wait_policy_levers(images=images, quick=quick)
    if not quick:
        levers.append(_compile_lever(images=images))
    return levers
