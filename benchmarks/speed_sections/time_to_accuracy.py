"""Section 4: wall time from a cold command to 99 % validation accuracy, per model.

Each run is a fresh `python3 speed.py --child` process (`child_tta`) running `run_training` with
the model's default config plus a stop-at-target monitor, so that the time counts what a user
waits for: interpreter start, imports, the data load or cache build, and the epochs. `Budget`
caps a run by epochs and wall time without touching the configured schedule. Cold runs repeat a
warm one with an empty cache folder, so that every PNG is decoded first.

`tta_spec` and `tta_line` are shared with the input-size section, which runs the same child.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from collections.abc import Sequence
from typing import Any

from speed_harness import TARGET, current_rss, load_average, log, median, peak_rss, run_child

from mnr.config import experiment_path, resolve_config
from mnr.engine import Callback, FitContext
from mnr.training import load_data, run_training


class Budget(Callback):
    """Records when each epoch ended and stops a run that would overrun its time or epoch cap.

    It never changes `train.epochs`, so a schedule (cosine, onecycle) stays the config's own.
    """

    def __init__(
        self, started: float, *, max_epochs: int, max_seconds: float, target: float
    ) -> None:
        self.started, self.max_epochs, self.max_seconds, self.target = (
            started,
            max_epochs,
            max_seconds,
            target,
        )
        self.epochs: list[dict[str, float]] = []
        self.reached: dict[str, float] | None = None
        self.capped = ""

    def on_epoch_end(self, ctx: FitContext, metrics: dict[str, float]) -> None:
        now = time.perf_counter() - self.started
        self.epochs.append(
            {
                "epoch": ctx.epoch,
                "seconds": now,
                "val_acc": metrics["val/acc"],
                "epoch_seconds": metrics["train/epoch_seconds"],
                "images_per_second": metrics["train/images_per_second"],
            }
        )
        if self.reached is None and metrics["val/acc"] >= self.target:
            self.reached = {"epoch": ctx.epoch, "seconds": now}
        if ctx.should_stop:
            return
        if ctx.epoch >= self.max_epochs:
            ctx.should_stop, self.capped = True, f"epoch cap {self.max_epochs}"
        elif now + metrics["train/epoch_seconds"] > self.max_seconds:
            ctx.should_stop, self.capped = True, f"time cap {self.max_seconds:.0f} s"


def _memory(
    arrays: list[Any], *, channels: int, height: int, width: int, rss_growth: int
) -> dict[str, Any]:
    """What the decoded dataset costs in RAM, next to the N x C x H x W bytes it should take."""
    count = sum(len(a) for a in arrays)
    return {
        "dataset_bytes": int(sum(a.nbytes for a in arrays)),
        "channels": channels,
        "expected_uint8_bytes": int(count * channels * height * width),
        "float32_copy_would_be_bytes": int(count * channels * height * width * 4),
        "dtypes": sorted({str(a.dtype) for a in arrays}),
        "rss_increase_on_load_bytes": rss_growth,
        "peak_rss_bytes": peak_rss(),
    }


def child_tta(spec: dict[str, Any]) -> dict[str, Any]:
    """In a fresh process: train the spec's model to TARGET (or its caps) and report the times."""
    started = time.perf_counter()
    if spec.get("cache_dir"):
        os.environ["MNR_CACHE_DIR"] = spec["cache_dir"]
    config = resolve_config(
        model=spec["model"],
        overrides=[
            "train.device=cpu",
            f"train.target={TARGET}",
            "train.monitor=val/acc",
            "train.monitor_mode=max",
            "tracking.log_model=false",
            *spec.get("overrides", []),
        ],
    )
    rss_before = current_rss()
    data = load_data(config, progress=False)
    load_seconds = time.perf_counter() - started
    rss_after = current_rss()
    arrays = [data.train_images, data.val_images] + (
        [data.test_images] if data.test_images is not None else []
    )
    height, width = config.data.input_size
    budget = Budget(
        started, max_epochs=spec["max_epochs"], max_seconds=spec["max_seconds"], target=TARGET
    )
    result = run_training(
        config,
        data=data,
        track=False,
        save_checkpoints=False,
        final_evaluation=True,
        progress=False,
        extra_callbacks=[budget],
    )
    return {
        "model": spec["model"],
        "config_file": str(
            experiment_path(spec["model"]) or "(defaults: no experiments/<model>.yaml)"
        ),
        "input_size": [height, width],
        "optimizer": f"{config.optim.name} lr={config.optim.lr:g} momentum={config.optim.momentum:g}",
        "scheduler": config.scheduler.name,
        "epochs_configured": config.train.epochs,
        "cache": "cold" if spec.get("cache_dir") else "warm",
        "from_cache": data.from_cache,
        "load_seconds": load_seconds,
        "reached": budget.reached,
        "capped": budget.capped,
        "epochs_run": len(result.history),
        "best_val_acc": result.best_val_acc,
        "final_val_acc": result.history[-1]["val/acc"] if result.history else None,
        "test_accuracy": result.final_metrics.get("test/accuracy"),
        "train_images_per_second_median": median(
            [h["train/images_per_second"] for h in result.history]
        ),
        "epochs": budget.epochs,
        "total_seconds": time.perf_counter() - started,
        "memory": _memory(
            arrays,
            channels=data.layout.in_chans,
            height=height,
            width=width,
            rss_growth=rss_after - rss_before,
        ),
    }


def tta_line(r: dict[str, Any]) -> str:
    """One log line for a time-to-accuracy child's result."""
    if "error" in r:
        return f"error: {r['error']}"
    reached = r.get("reached")
    if reached:
        return (
            f"{r['model']} {r['cache']} {r['input_size']}: {TARGET:.0%} at epoch {reached['epoch']} after "
            f"{reached['seconds'] + r['startup_seconds']:.1f} s (test acc {r['test_accuracy']:.4f})"
        )
    return f"{r['model']} {r['cache']} {r['input_size']}: not reached ({r['capped']}; best val {r['best_val_acc']:.4f})"


def tta_spec(
    model: str, variant: str, *, max_epochs: int, max_seconds: float, extra: Sequence[str] = ()
) -> dict[str, Any]:
    """A child spec: the model's default config, plus the variant's overrides ("" = none)."""
    overrides = [*extra, *(v for v in variant.split() if v)]
    return {
        "kind": "tta",
        "model": model,
        "variant": variant,
        "overrides": overrides,
        "max_epochs": max_epochs,
        "max_seconds": max_seconds,
    }


def _warm_runs(
    runs: Sequence[tuple[str, str, float]], *, max_epochs: int, extra: list[str]
) -> dict[str, Any]:
    """One child per (model, variant, time cap), with the cache as it is."""
    warm: dict[str, Any] = {}
    for name, variant, cap in runs:
        key = f"{name} {variant}".strip()
        log(f"time to accuracy: {key}, warm cache (cap {max_epochs} epochs / {cap:.0f} s)")
        spec = tta_spec(name, variant, max_epochs=max_epochs, max_seconds=cap, extra=extra)
        warm[key] = {
            **run_child(spec, timeout=cap * 3 + 300),
            "variant": variant,
            "cap_seconds": cap,
        }
        log("  " + tta_line(warm[key]))
    return warm


def _cold_runs(
    warm: dict[str, Any], keys: Sequence[str], *, max_epochs: int, extra: list[str]
) -> dict[str, Any]:
    """The warm runs named by `keys` again, each with an empty cache folder (2 more minutes)."""
    cold_runs: dict[str, Any] = {}
    for key in keys:
        name, variant, cap = (
            warm[key]["model"],
            warm[key]["variant"],
            warm[key]["cap_seconds"] + 120,
        )
        folder = tempfile.mkdtemp(prefix="mnr-speed-cold-cache-")
        try:
            log(f"time to accuracy: {key}, cold cache in {folder}")
            spec = {
                **tta_spec(name, variant, max_epochs=max_epochs, max_seconds=cap, extra=extra),
                "cache_dir": folder,
            }
            cold_runs[key] = {
                **run_child(spec, timeout=cap * 3 + 420),
                "variant": variant,
                "cap_seconds": cap,
            }
            log("  " + tta_line(cold_runs[key]))
        finally:
            shutil.rmtree(folder, ignore_errors=True)
    return cold_runs


def section_time_to_accuracy(
    *,
    runs: Sequence[tuple[str, str, float]],
    max_epochs: int,
    cold: str,
    threads: int | None,
) -> dict[str, Any]:
    """`runs` is (model, variant, time cap): variant "" is the default config as it is, and e.g.
    "train.threads=1" adds that override. Cold runs repeat the warm runs that reached the target
    (cold="reached"), or the models named in `cold`, with an empty cache folder."""
    extra = [f"train.threads={threads}"] if threads else []
    warm = _warm_runs(runs, max_epochs=max_epochs, extra=extra)
    if cold == "reached":
        cold_keys = [k for k, r in warm.items() if r.get("reached")]
    else:
        cold_keys = [k for k in warm if k.split()[0] in cold.split(",")]
    return {
        "target": TARGET,
        "warm": warm,
        "cold": _cold_runs(warm, cold_keys, max_epochs=max_epochs, extra=extra),
        "cold_policy": cold,
        "load_average": load_average(),
    }
