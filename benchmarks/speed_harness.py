"""What every section of `speed.py` measures with: clocks, memory, the machine, and fair pairs.

The sections differ in what they time, not in how: each one seeds the same way, builds models
from the same seed recipe, alternates the settings it compares so that machine noise hits both,
and reports medians. Keeping those helpers here means a change to how we measure (a better RSS
source, a longer matmul probe) changes every section at once.

Runs that must start in a fresh interpreter go through `run_child`, which starts `speed.py
--child SPEC` and reads back the one line its child prints after `CHILD_MARK`.
"""

from __future__ import annotations

import datetime
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from mnr.config import ExperimentConfig, experiment_path, resolve_config
from mnr.data.layout import FigureLayout
from mnr.device import seed_everything
from mnr.engine import FitContext, train_one_epoch
from mnr.optim import make_optimizer
from mnr.training import build_model

SEED_RECIPE = "baseline_cnn"  # throughput runs use the seed's optimizer (plain SGD) for every model
TARGET = 0.99  # the validation accuracy that time-to-accuracy runs stop at, and the report names
CHILD_MARK = "SPEED_CHILD_RESULT "  # a child's result line on stdout starts with this
ENTRY = Path(__file__).resolve().parent / "speed.py"  # the script a child process runs

__all__ = [
    "CHILD_MARK",
    "ENTRY",
    "SEED_RECIPE",
    "TARGET",
    "EngineRun",
    "ab_lever",
    "alternate",
    "current_rss",
    "load_average",
    "log",
    "machine_info",
    "matmul_gflops",
    "median",
    "peak_rss",
    "run_child",
    "seed_config",
    "summary",
]


def log(message: str) -> None:
    """A timestamped progress line on stderr (stdout carries a child's result)."""
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def current_rss() -> int:
    """Resident set size of this process now, in bytes."""
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def peak_rss() -> int:
    """Peak resident set size of this process so far, in bytes.

    VmHWM from /proc/self/status: unlike `getrusage().ru_maxrss`, which Linux carries over from
    the parent through fork and exec (a child of a large process would report the parent's peak),
    it starts afresh with the new program. Elsewhere, ru_maxrss (KiB on Linux).
    """
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def load_average() -> list[float]:
    """The 1, 5 and 15 minute load averages: on a shared machine, how much the numbers mean."""
    return [round(v, 2) for v in os.getloadavg()]


def machine_info(threads: int) -> dict[str, Any]:
    """What the results were measured on, so that two runs can be compared only when they should."""
    cpu_model = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu_model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        mem_gib = round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1)
    except (ValueError, OSError):
        mem_gib = None
    try:
        import psutil  # noqa: F401

        has_psutil = True
    except ImportError:
        has_psutil = False
    return {
        "cpu_model": cpu_model,
        "cores": os.cpu_count(),
        "memory_gib": mem_gib,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cuda_available": torch.cuda.is_available(),
        "threads": threads,
        "interop_threads": torch.get_num_interop_threads(),
        "default_threads": torch.get_num_threads(),
        "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "platform": platform.platform(),
        "memory_measured_with": "peak: VmHWM in /proc/self/status of the training process; current: /proc/self/statm"
        + ("" if has_psutil else " (psutil is not installed)"),
    }


def median(values: Sequence[float]) -> float:
    """The median, or NaN for no values (a section that measured nothing still reports)."""
    return float(statistics.median(values)) if values else float("nan")


def seed_config(model: str, *extra: str) -> ExperimentConfig:
    """The seed recipe (experiments/baseline_cnn.yaml: plain SGD, batch 64) with another model."""
    return resolve_config(
        config=experiment_path(SEED_RECIPE),
        options={"model.name": model},
        overrides=["train.device=cpu", "train.augment.enabled=false", *extra],
    )


def matmul_gflops(*, size: int = 2048, repeats: int = 5, trials: int = 5) -> dict[str, float]:
    """Dense float32 torch.mm rate at the current thread count: best and median of `trials`."""
    a, b = torch.randn(size, size), torch.randn(size, size)
    for _ in range(2):
        torch.mm(a, b)
    rates = []
    for _ in range(trials):
        started = time.perf_counter()
        for _ in range(repeats):
            torch.mm(a, b)
        rates.append(2 * size**3 * repeats / (time.perf_counter() - started) / 1e9)
    return {
        "best": max(rates),
        "median": median(rates),
        "size": size,
        "threads": torch.get_num_threads(),
    }


class EngineRun:
    """mnr's `train_one_epoch`, epoch after epoch, on a model set up exactly as `fit` does it.

    The model is built for `layout`, the figure layout the images were read with (`data.layout`):
    one input channel for a value-channel set, three for RGB. `device` is where the model and the
    optimizer live; the caller puts `images` and `labels` where it wants them (`fit` moves them
    to the device once when the device is not the CPU).
    """

    def __init__(
        self,
        config: ExperimentConfig,
        images: torch.Tensor,
        labels: torch.Tensor,
        *,
        layout: FigureLayout | None,
        compile: bool = False,
        device: torch.device | str = "cpu",
    ) -> None:
        seed_everything(config.train.seed)
        self.device = torch.device(device)
        model = build_model(config, layout=layout).to(self.device)
        in_chans = model.input_config.in_chans
        if images.ndim != 4 or images.shape[1] != in_chans:
            raise ValueError(
                f"{config.model.name} is built for {in_chans} channel(s) (layout "
                f"{None if layout is None else layout.channels}), but the images are "
                f"{tuple(images.shape)}: pass the layout the images were read with"
            )
        if config.train.channels_last:
            model = model.to(memory_format=torch.channels_last)
        self.images, self.labels = images, labels
        optimizer = make_optimizer(model, config)
        self.ctx = FitContext(
            model=torch.compile(model) if compile else model,
            optimizer=optimizer,
            scheduler=None,
            config=config,
            device=self.device,
            generator=torch.Generator().manual_seed(config.train.seed),
            callbacks=[],
        )
        self.criterion = nn.CrossEntropyLoss(label_smoothing=config.train.label_smoothing)
        # as `fit`: a loss scaler only for float16 autocast (CUDA without bfloat16)
        self.scaler = torch.amp.GradScaler(
            "cuda",
            enabled=self.device.type == "cuda"
            and config.train.amp
            and not torch.cuda.is_bf16_supported(),
        )

    def epoch(self) -> dict[str, float]:
        """One training epoch over `self.images`: its wall time, throughput and accuracy."""
        started = time.perf_counter()
        metrics = train_one_epoch(
            self.ctx, self.images, self.labels, criterion=self.criterion, scaler=self.scaler
        )
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        seconds = time.perf_counter() - started
        return {
            "seconds": seconds,
            "images_per_second": len(self.images) / seconds,
            "train_acc": metrics["train/acc"],
        }


def alternate(
    runs: dict[str, Callable[[], dict[str, float]]], pairs: int
) -> dict[str, list[dict[str, float]]]:
    """Call each run once per round, in turn, for `pairs` rounds (A, B, A, B ...)."""
    out: dict[str, list[dict[str, float]]] = {name: [] for name in runs}
    for _ in range(pairs):
        for name, run in runs.items():
            out[name].append(run())
    return out


def summary(samples: list[dict[str, float]]) -> dict[str, Any]:
    """Median epoch time and throughput of `samples`, with the samples kept for the record."""
    return {
        "seconds_median": median([s["seconds"] for s in samples]),
        "images_per_second_median": median([s["images_per_second"] for s in samples]),
        "samples": samples,
    }


def ab_lever(
    name: str,
    before: Callable[[], float],
    after: Callable[[], float],
    *,
    rounds: int,
    unit: str,
    higher_is_better: bool,
    before_label: str,
    after_label: str,
    note: str = "",
    model: str | None = None,
) -> dict[str, Any]:
    """Measure two settings alternately; report medians and the change (for `model`, if given)."""
    b_vals, a_vals = [], []
    for _ in range(rounds):
        b_vals.append(before())
        a_vals.append(after())
    b, a = median(b_vals), median(a_vals)
    change = (a / b - 1) * 100 if b else float("nan")
    better = (a > b) if higher_is_better else (a < b)
    return {
        **({"model": model} if model is not None else {}),
        "lever": name,
        "before_label": before_label,
        "after_label": after_label,
        "unit": unit,
        "before": b,
        "after": a,
        "change_percent": change,
        "after_is_better": bool(better),
        "before_samples": b_vals,
        "after_samples": a_vals,
        "note": note,
    }


def run_child(
    spec: dict[str, Any], *, timeout: float, env: dict[str, str] | None = None
) -> dict[str, Any]:
    """Run `speed.py --child SPEC` in a fresh interpreter and return what it measured.

    A fresh process is the only honest way to time a cold start, or to set what torch fixes once
    per process (inter-op threads, OpenMP's wait policy). The child's wall time is added, and the
    part of it before the child's own clock started (interpreter, imports) as `startup_seconds`.
    A child that fails or times out yields {"error": ...} instead, so the section goes on.
    """
    started = time.perf_counter()
    try:
        proc = subprocess.run(
            [sys.executable, str(ENTRY), "--child", json.dumps(spec)],
            capture_output=True,
            text=True,
            timeout=timeout,
            env={**os.environ, **(env or {})},
        )
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {timeout:.0f} s", "spec": spec}
    wall = time.perf_counter() - started
    for line in reversed(proc.stdout.splitlines()):
        if line.startswith(CHILD_MARK):
            result = json.loads(line[len(CHILD_MARK) :])
            result["process_wall_seconds"] = wall
            result["startup_seconds"] = wall - result.get("total_seconds", wall)
            return result
    return {
        "error": f"child exited {proc.returncode}",
        "stderr_tail": proc.stderr[-2000:],
        "spec": spec,
    }
