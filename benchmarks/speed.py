"""Speed and memory of mnr, measured side by side with a plain notebook pipeline.

One command measures, on the built-in dataset and in one run:

1. epoch throughput of mnr's engine versus the notebook pipeline (`notebook_pipeline.py`),
   alternating their epochs so that machine noise hits both;
2. the cost of MLflow tracking per epoch (MlflowLogger + a real sqlite store) versus none;
3. FLOPs per training image, the FLOP rate mnr reaches, and the machine's dense matmul rate,
   with a profile of where the time goes;
4. wall time to 99 % validation accuracy from a cold and a warm cache, per model;
5. prediction throughput from PNG files, training's peak memory, and the cache's RAM cost;

plus the levers behind those numbers (channels_last, threads, batch gathering, per-step checks,
input size, torch.compile, inference batching), each measured before and after. Results go to
`benchmarks/results/speed.json` and `speed.md`.

    python3 benchmarks/speed.py                    # the full run: ~15 min on 2 idle cores, longer if shared
    python3 benchmarks/speed.py --quick            # a smoke test (a few minutes), to speed_quick.*
    python3 benchmarks/speed.py --only tta,resolution   # re-run sections into the existing results

Runs that must start cold (time to accuracy, interop threads, torch.compile) run in child
processes of this script (`--child SPEC`), so that each sees a fresh interpreter.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Sequence
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
import notebook_pipeline  # noqa: E402

from mnr.config import ExperimentConfig, experiment_path, resolve_config  # noqa: E402
from mnr.data import resolve_data, scan_folder, stratified_split  # noqa: E402
from mnr.data.cache import map_images  # noqa: E402
from mnr.data.images import decode_png  # noqa: E402
from mnr.engine import (  # noqa: E402
    Callback,
    FitContext,
    fit,
    make_optimizer,
    predict_logits,
    seed_everything,
    train_one_epoch,
)
from mnr.training import build_model, load_data, run_training  # noqa: E402
from mnr.transforms import to_model_input  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
MODELS = ("baseline_cnn", "bn_cnn", "deep_cnn", "resnet18")
SEED_RECIPE = "baseline_cnn"  # throughput runs use the seed's optimizer (plain SGD) for every model
TARGET = 0.99
FAST_VARIANT = "train.threads=1"  # on a machine shared with other jobs, one thread is much faster
RESOLUTIONS = (
    (128, 128),
    (128, 64),
    (64, 64),
    (128, 32),
)  # (H, W) candidates for the default input size
CHILD_MARK = "SPEED_CHILD_RESULT "


# --------------------------------------------------------------------------------------------
# Small helpers


def log(message: str) -> None:
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
    return [round(v, 2) for v in os.getloadavg()]


def machine_info(threads: int) -> dict[str, Any]:
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
    """mnr's `train_one_epoch`, epoch after epoch, on a model set up exactly as `fit` does it."""

    def __init__(
        self,
        config: ExperimentConfig,
        images: torch.Tensor,
        labels: torch.Tensor,
        *,
        compile: bool = False,
    ) -> None:
        seed_everything(config.train.seed)
        model = build_model(config)
        if config.train.channels_last:
            model = model.to(memory_format=torch.channels_last)
        self.images, self.labels = images, labels
        optimizer = make_optimizer(model, config)
        self.ctx = FitContext(
            model=torch.compile(model) if compile else model,
            optimizer=optimizer,
            scheduler=None,
            config=config,
            device=torch.device("cpu"),
            generator=torch.Generator().manual_seed(config.train.seed),
            callbacks=[],
        )
        self.criterion = nn.CrossEntropyLoss(label_smoothing=config.train.label_smoothing)
        self.scaler = torch.amp.GradScaler("cuda", enabled=False)

    def epoch(self) -> dict[str, float]:
        started = time.perf_counter()
        metrics = train_one_epoch(
            self.ctx, self.images, self.labels, criterion=self.criterion, scaler=self.scaler
        )
        seconds = time.perf_counter() - started
        return {
            "seconds": seconds,
            "images_per_second": len(self.images) / seconds,
            "train_acc": metrics["train_acc"],
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


# --------------------------------------------------------------------------------------------
# 1. Epoch throughput: mnr's engine versus the notebook pipeline


def train_files(config: ExperimentConfig, data: Any) -> tuple[list[Path], list[int]]:
    """The PNG files of the training split, in the order of `data.train_images`."""
    paths = resolve_data(config.data.path, progress=False)
    image_set = scan_folder(paths.train)
    labels = np.asarray(image_set.labels, dtype=np.int64)
    train_idx, _ = stratified_split(
        labels, val_fraction=config.data.val_fraction, seed=config.data.split_seed
    )
    if not np.array_equal(labels[train_idx], data.train_labels):
        raise RuntimeError("the notebook's file list does not match mnr's training split")
    return [image_set.path(int(i)) for i in train_idx], [int(v) for v in labels[train_idx]]


def section_throughput(
    data: Any, *, models: Sequence[str], pairs: dict[str, int], limit: int | None, label: str = ""
) -> dict[str, Any]:
    out: dict[str, Any] = {}
    size = list(data.input_size)
    for name in models:
        config = seed_config(name, f"data.input_size=[{size[0]},{size[1]}]")
        files, labels = train_files(config, data)
        count = limit or len(files)
        images = torch.from_numpy(data.train_images[:count])
        targets = torch.from_numpy(data.train_labels[:count])
        engine = EngineRun(config, images, targets)
        seed_everything(config.train.seed)
        nb_model = build_model(config)  # the same architecture and initial weights, channels-first
        nb_optimizer = torch.optim.SGD(
            nb_model.parameters(), lr=config.optim.lr, momentum=config.optim.momentum
        )
        mean, std = nb_model.input_config.mean, nb_model.input_config.std
        dataset = notebook_pipeline.PngDataset(
            files[:count], labels[:count], size=tuple(config.data.input_size), mean=mean, std=std
        )
        loader = notebook_pipeline.make_loader(dataset, batch_size=config.train.batch_size)
        log(
            f"throughput {name} at {size[0]}x{size[1]}: {pairs[name]} x (engine epoch, notebook epoch) on {count} images"
        )
        samples = alternate(
            {
                "engine": engine.epoch,
                "notebook": partial(
                    notebook_pipeline.train_one_epoch, nb_model, loader, nb_optimizer
                ),
            },
            pairs[name],
        )
        ratios = [
            n["seconds"] / e["seconds"]
            for e, n in zip(samples["engine"], samples["notebook"], strict=True)
        ]
        out[name + label] = {
            "model": name,
            "images": count,
            "batch_size": config.train.batch_size,
            "input_size": list(config.data.input_size),
            "threads": torch.get_num_threads(),
            "channels_last_engine": config.train.channels_last,
            "notebook_num_workers": loader.num_workers,
            "engine": summary(samples["engine"]),
            "notebook": summary(samples["notebook"]),
            "ratio_per_pair": ratios,
            "ratio": median([s["seconds"] for s in samples["notebook"]])
            / median([s["seconds"] for s in samples["engine"]]),
            "load_average": load_average(),
        }
        r = out[name + label]
        log(
            f"  engine {r['engine']['images_per_second_median']:.1f} img/s, notebook "
            f"{r['notebook']['images_per_second_median']:.1f} img/s, ratio {r['ratio']:.2f}x"
        )
    return out


# --------------------------------------------------------------------------------------------
# 2. Tracking overhead


class _TimedCallback(Callback):
    """Wraps a callback and adds up the time spent in its hooks."""

    def __init__(self, inner: Callback) -> None:
        self.inner, self.seconds = inner, 0.0

    def _timed(self, hook: str, *args: Any) -> None:
        started = time.perf_counter()
        getattr(self.inner, hook)(*args)
        self.seconds += time.perf_counter() - started

    def on_fit_start(self, ctx: FitContext) -> None:
        self._timed("on_fit_start", ctx)

    def on_epoch_end(self, ctx: FitContext, metrics: dict[str, float]) -> None:
        self._timed("on_epoch_end", ctx, metrics)

    def on_fit_end(self, ctx: FitContext, status: str) -> None:
        self._timed("on_fit_end", ctx, status)


def section_tracking(data: Any, *, pairs: int, epochs: int, limit: int | None) -> dict[str, Any]:
    from mnr import tracking

    folder = Path(tempfile.mkdtemp(prefix="mnr-speed-mlflow-"))
    saved_uri = os.environ.get("MLFLOW_TRACKING_URI")
    os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{folder / 'mlflow.db'}"
    try:
        tracking.configure_tracking()
        started = time.perf_counter()
        run_id = tracking.create_run(experiment="speed-benchmark", run_name="tracking-overhead")
        config = seed_config("baseline_cnn", f"train.epochs={epochs}")
        tracking.log_params(run_id, config)
        tracking.log_dataset(
            run_id, name="builtin/train", digest=data.digest, source=str(data.paths.train)
        )
        setup_seconds = (
            time.perf_counter() - started
        )  # once per run, not per epoch (store creation included)
        count = limit or len(data.train_images)
        arrays = {
            "train_images": torch.from_numpy(data.train_images[:count]),
            "train_labels": torch.from_numpy(data.train_labels[:count]),
            "val_images": torch.from_numpy(data.val_images),
            "val_labels": torch.from_numpy(data.val_labels),
        }
        hook_seconds: list[float] = []

        def run(tracked: bool) -> dict[str, float]:
            seed_everything(config.train.seed)
            model = build_model(config)
            callbacks: list[Callback] = []
            if tracked:
                timed = _TimedCallback(tracking.MlflowLogger(run_id))
                callbacks.append(timed)
            started, cpu_started = time.perf_counter(), time.process_time()
            fit(model, config=config, callbacks=callbacks, **arrays)
            seconds = (time.perf_counter() - started) / epochs
            cpu = (
                time.process_time() - cpu_started
            ) / epochs  # all threads, MLflow's async writer too
            if tracked:
                hook_seconds.append(timed.seconds / epochs)
            return {"seconds": seconds, "cpu_seconds": cpu, "images_per_second": count / seconds}

        log(
            f"tracking: {pairs} x (off, on) fits of {epochs} epoch(s) each, baseline_cnn, {count} images"
        )
        run(False)  # warm-up, discarded: a process's first fit pays one-off allocation costs
        hook_seconds.clear()
        off, on = [], []
        for index in range(pairs):
            order = (False, True) if index % 2 == 0 else (True, False)
            for tracked in order:
                (on if tracked else off).append(run(tracked))
        tracking.end_run(run_id, "FINISHED")
        logged = tracking.client().get_metric_history(run_id, "val_acc")
        off_s, on_s = median([s["seconds"] for s in off]), median([s["seconds"] for s in on])
        off_cpu, on_cpu = (
            median([s["cpu_seconds"] for s in off]),
            median([s["cpu_seconds"] for s in on]),
        )
        hook = median(hook_seconds)
        result = {
            "model": "baseline_cnn",
            "epochs_per_fit": epochs,
            "images": count,
            "store": "sqlite in a temporary folder",
            "epoch_seconds_off": off_s,
            "epoch_seconds_on": on_s,
            "overhead_percent_end_to_end": (on_s / off_s - 1) * 100,
            "cpu_seconds_off": off_cpu,
            "cpu_seconds_on": on_cpu,
            "overhead_percent_cpu": (on_cpu / off_cpu - 1) * 100,
            "hook_seconds_per_epoch": hook,
            "overhead_percent_in_hooks": hook / off_s * 100,
            "run_setup_seconds": setup_seconds,
            "metrics_logged": len(logged),
            "off": off,
            "on": on,
            "load_average": load_average(),
        }
        log(
            f"  off {off_s:.2f} s/epoch, on {on_s:.2f} s/epoch ({result['overhead_percent_end_to_end']:+.1f} %), "
            f"hooks {hook * 1e3:.1f} ms/epoch ({result['overhead_percent_in_hooks']:.2f} %)"
        )
        return result
    finally:
        if saved_uri is None:
            os.environ.pop("MLFLOW_TRACKING_URI", None)
        else:
            os.environ["MLFLOW_TRACKING_URI"] = saved_uri
        shutil.rmtree(folder, ignore_errors=True)


# --------------------------------------------------------------------------------------------
# 3. Compute limit: FLOPs, achieved rate, matmul rate, profiles


def train_flops_per_image(config: ExperimentConfig, batch: int = 64) -> dict[str, float]:
    """FLOPs of forward and forward+backward per image, counted by FlopCounterMode."""
    from torch.utils.flop_counter import FlopCounterMode

    seed_everything(0)
    model = build_model(config).train()
    height, width = config.data.input_size
    x = torch.randn(batch, 3, height, width)
    y = torch.randint(0, 88, (batch,))
    with FlopCounterMode(display=False) as forward_counter:
        with torch.no_grad():
            model(x)
    with FlopCounterMode(display=False) as train_counter:
        nn.functional.cross_entropy(model(x), y).backward()
    return {
        "forward": forward_counter.get_total_flops() / batch,
        "train": train_counter.get_total_flops() / batch,
    }


_CONV = ("convolution", "conv2d", "mkldnn_conv")
_GEMM = ("aten::mm", "aten::addmm", "aten::bmm", "aten::matmul", "aten::linear")


def _category(name: str) -> str:
    if any(key in name for key in _CONV):
        return "convolution"
    if name in _GEMM:
        return "matmul (linear layers)"
    return "elementwise, pooling, norm, copies, optimizer, other"


def profile_model(config: ExperimentConfig, data: Any, *, steps: int) -> dict[str, Any]:
    """Top ops by self CPU time over `steps` training steps of mnr's engine."""
    from torch.profiler import ProfilerActivity, profile

    batch = config.train.batch_size
    run = EngineRun(
        config,
        torch.from_numpy(data.train_images[:batch]),
        torch.from_numpy(data.train_labels[:batch]),
    )
    run.epoch()  # warm-up: oneDNN primitives
    run.images = torch.from_numpy(data.train_images[: batch * steps])
    run.labels = torch.from_numpy(data.train_labels[: batch * steps])
    with profile(activities=[ProfilerActivity.CPU], record_shapes=True) as prof:
        run.epoch()
    by_name = prof.key_averages()
    total = sum(e.self_cpu_time_total for e in by_name) or 1.0
    categories: dict[str, float] = {}
    for event in by_name:
        key = _category(event.key)
        categories[key] = categories.get(key, 0.0) + event.self_cpu_time_total / total * 100
    by_shape = sorted(
        prof.key_averages(group_by_input_shape=True),
        key=lambda e: e.self_cpu_time_total,
        reverse=True,
    )
    top = [
        {
            "op": e.key,
            "shapes": str(e.input_shapes)[:120],
            "self_cpu_percent": e.self_cpu_time_total / total * 100,
            "self_cpu_ms_per_step": e.self_cpu_time_total / 1e3 / steps,
            "calls_per_step": e.count / steps,
        }
        for e in by_shape[:10]
    ]
    return {
        "steps": steps,
        "self_cpu_ms_per_step": total / 1e3 / steps,
        "categories_percent": categories,
        "top_ops": top,
    }


def _engine_ips(config: ExperimentConfig, data: Any, *, images: int) -> float:
    """Engine throughput over `images` training images, after a 1-batch warm-up epoch."""
    batch = config.train.batch_size
    train_images, train_labels = (
        torch.from_numpy(data.train_images),
        torch.from_numpy(data.train_labels),
    )
    run = EngineRun(config, train_images[:batch], train_labels[:batch])
    run.epoch()
    run.images, run.labels = train_images[:images], train_labels[:images]
    return run.epoch()["images_per_second"]


def section_compute(
    datasets: dict[str, Any],
    *,
    models: Sequence[str],
    partial_images: int,
    profile_steps: int,
    thread_counts: Sequence[int],
) -> dict[str, Any]:
    """Per model and input size: FLOPs per image, and the FLOP rate the engine reaches next to the
    matmul rate measured just before and after it (the load on a shared machine drifts)."""
    default_threads = torch.get_num_threads()
    out: dict[str, Any] = {
        "models": {},
        "thread_counts": list(thread_counts),
        "partial_images": partial_images,
    }
    for label, data in datasets.items():
        height, width = data.input_size
        for name in models:
            log(f"compute: {name} at {label}")
            config = seed_config(name, f"data.input_size=[{height},{width}]")
            flops = train_flops_per_image(config)
            entry: dict[str, Any] = {
                "model": name,
                "input_size": [height, width],
                "forward_gflop_per_image": flops["forward"] / 1e9,
                "train_gflop_per_image": flops["train"] / 1e9,
                "by_threads": {},
            }
            for threads in thread_counts:
                torch.set_num_threads(threads)
                try:
                    before = matmul_gflops(repeats=2, trials=3)["best"]
                    ips = _engine_ips(config, data, images=partial_images)
                    after = matmul_gflops(repeats=2, trials=3)["best"]
                finally:
                    torch.set_num_threads(default_threads)
                limit = max(before, after)
                achieved = flops["train"] * ips / 1e9
                entry["by_threads"][str(threads)] = {
                    "images_per_second": ips,
                    "achieved_gflops": achieved,
                    "matmul_gflops_before_after": [before, after],
                    "matmul_gflops": limit,
                    "percent_of_matmul": achieved / limit * 100,
                }
                log(
                    f"  {threads} thread(s): {flops['train'] / 1e6:.0f} MFLOP/img x {ips:.1f} img/s = "
                    f"{achieved:.1f} GFLOP/s, {achieved / limit * 100:.0f} % of matmul {limit:.1f}"
                )
            main = entry["by_threads"][str(thread_counts[0])]
            entry.update(
                images_per_second=main["images_per_second"],
                achieved_gflops=main["achieved_gflops"],
                percent_of_matmul_best=main["percent_of_matmul"],
            )
            entry["profile"] = profile_model(config, data, steps=profile_steps)
            if (
                len(thread_counts) > 1
            ):  # without contention for cores: what the kernels themselves cost
                torch.set_num_threads(1)
                try:
                    entry["profile_1_thread"] = profile_model(config, data, steps=profile_steps)
                finally:
                    torch.set_num_threads(default_threads)
            out["models"][f"{name} @ {label}"] = entry
    out["load_average"] = load_average()
    out["notes"] = compute_notes(out)
    return out


def compute_notes(compute: dict[str, Any]) -> list[str]:
    """One line per model under 40 % of the matmul rate: where its time goes, from the profiles."""
    notes = []
    for name, r in compute["models"].items():
        if max(b["percent_of_matmul"] for b in r["by_threads"].values()) >= 40:
            continue
        rates = ", ".join(
            f"{b['percent_of_matmul']:.0f} % at {t} thread(s)" for t, b in r["by_threads"].items()
        )
        profile = r.get("profile_1_thread", r["profile"])
        cats = profile["categories_percent"]
        top = "; ".join(
            f"{op['op'].removeprefix('aten::')} {op['shapes'][:50]} {op['self_cpu_percent']:.0f} %"
            for op in profile["top_ops"][:4]
        )
        notes.append(
            f"{name} ({rates}; {r['train_gflop_per_image'] * 1e3:.0f} MFLOP per training image): "
            f"{'with 1 thread ' if 'profile_1_thread' in r else ''}convolutions take "
            f"{cats.get('convolution', 0):.0f} % of self CPU time, linear layers "
            f"{cats.get('matmul (linear layers)', 0):.0f} %, and the memory-bound rest (ReLU, pooling, batch norm, "
            f"dropout, copies, optimizer) {cats.get('elementwise, pooling, norm, copies, optimizer, other', 0):.0f} %. "
            f"Top ops: {top}."
        )
    return notes


# --------------------------------------------------------------------------------------------
# 4. Time to accuracy (children) and 5. prediction and memory


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
                "val_acc": metrics["val_acc"],
                "epoch_seconds": metrics["epoch_seconds"],
                "images_per_second": metrics["images_per_second"],
            }
        )
        if self.reached is None and metrics["val_acc"] >= self.target:
            self.reached = {"epoch": ctx.epoch, "seconds": now}
        if ctx.should_stop:
            return
        if ctx.epoch >= self.max_epochs:
            ctx.should_stop, self.capped = True, f"epoch cap {self.max_epochs}"
        elif now + metrics["epoch_seconds"] > self.max_seconds:
            ctx.should_stop, self.capped = True, f"time cap {self.max_seconds:.0f} s"


def child_tta(spec: dict[str, Any]) -> dict[str, Any]:
    started = time.perf_counter()
    if spec.get("cache_dir"):
        os.environ["MNR_CACHE_DIR"] = spec["cache_dir"]
    config = resolve_config(
        model=spec["model"],
        overrides=[
            "train.device=cpu",
            f"train.target={TARGET}",
            "train.monitor=val_acc",
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
    count = sum(len(a) for a in arrays)
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
        "final_val_acc": result.history[-1]["val_acc"] if result.history else None,
        "test_accuracy": result.final_metrics.get("test_accuracy"),
        "train_images_per_second_median": median([h["images_per_second"] for h in result.history]),
        "epochs": budget.epochs,
        "total_seconds": time.perf_counter() - started,
        "memory": {
            "dataset_bytes": int(sum(a.nbytes for a in arrays)),
            "expected_uint8_bytes": int(count * 3 * height * width),
            "float32_copy_would_be_bytes": int(count * 3 * height * width * 4),
            "dtypes": sorted({str(a.dtype) for a in arrays}),
            "rss_increase_on_load_bytes": rss_after - rss_before,
            "peak_rss_bytes": peak_rss(),
        },
    }


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
        run = EngineRun(config, images, labels, compile=compiled)
        first = run.epoch()
        rest = [run.epoch() for _ in range(spec.get("epochs", 2))]
        key = "compiled" if compiled else "eager"
        out[key] = {
            "first_epoch_seconds": first["seconds"],
            "images_per_second": median([r["images_per_second"] for r in rest]),
            "epoch_seconds": median([r["seconds"] for r in rest]),
        }
    return out


def run_child(
    spec: dict[str, Any], *, timeout: float, env: dict[str, str] | None = None
) -> dict[str, Any]:
    started = time.perf_counter()
    try:
        proc = subprocess.run(
            [sys.executable, str(Path(__file__).resolve()), "--child", json.dumps(spec)],
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


def _tta_line(r: dict[str, Any]) -> str:
    if "error" in r:
        return f"error: {r['error']}"
    reached = r.get("reached")
    if reached:
        return (
            f"{r['model']} {r['cache']} {r['input_size']}: {TARGET:.0%} at epoch {reached['epoch']} after "
            f"{reached['seconds'] + r['startup_seconds']:.1f} s (test acc {r['test_accuracy']:.4f})"
        )
    return f"{r['model']} {r['cache']} {r['input_size']}: not reached ({r['capped']}; best val {r['best_val_acc']:.4f})"


def _tta_spec(
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
    warm: dict[str, Any] = {}
    for name, variant, cap in runs:
        key = f"{name} {variant}".strip()
        log(f"time to accuracy: {key}, warm cache (cap {max_epochs} epochs / {cap:.0f} s)")
        spec = _tta_spec(name, variant, max_epochs=max_epochs, max_seconds=cap, extra=extra)
        warm[key] = {
            **run_child(spec, timeout=cap * 3 + 300),
            "variant": variant,
            "cap_seconds": cap,
        }
        log("  " + _tta_line(warm[key]))
    if cold == "reached":
        cold_keys = [k for k, r in warm.items() if r.get("reached")]
    else:
        cold_keys = [k for k in warm if k.split()[0] in cold.split(",")]
    cold_runs: dict[str, Any] = {}
    for key in cold_keys:
        name, variant, cap = (
            warm[key]["model"],
            warm[key]["variant"],
            warm[key]["cap_seconds"] + 120,
        )
        folder = tempfile.mkdtemp(prefix="mnr-speed-cold-cache-")
        try:
            log(f"time to accuracy: {key}, cold cache in {folder}")
            spec = {
                **_tta_spec(name, variant, max_epochs=max_epochs, max_seconds=cap, extra=extra),
                "cache_dir": folder,
            }
            cold_runs[key] = {
                **run_child(spec, timeout=cap * 3 + 420),
                "variant": variant,
                "cap_seconds": cap,
            }
            log("  " + _tta_line(cold_runs[key]))
        finally:
            shutil.rmtree(folder, ignore_errors=True)
    return {
        "target": TARGET,
        "warm": warm,
        "cold": cold_runs,
        "cold_policy": cold,
        "load_average": load_average(),
    }


def section_resolution(
    model: str,
    *,
    variant: str,
    sizes: Sequence[tuple[int, int]],
    base: dict[str, Any] | None,
    max_epochs: int,
    max_seconds: float,
) -> dict[str, Any]:
    """The same config at other input sizes, each with the same wall-time budget."""
    rows: dict[str, Any] = {}
    if base is not None and "input_size" in base:
        rows["x".join(map(str, base["input_size"]))] = base
    for height, width in sizes:
        log(
            f"input size lever: {model} {variant} at {height}x{width} (warm, or first build of that cache)"
        )
        spec = _tta_spec(
            model,
            variant,
            max_epochs=max_epochs,
            max_seconds=max_seconds,
            extra=[f"data.input_size=[{height},{width}]"],
        )
        rows[f"{height}x{width}"] = run_child(spec, timeout=max_seconds * 3 + 300)
        log("  " + _tta_line(rows[f"{height}x{width}"]))
    return {"model": model, "variant": variant, "max_seconds": max_seconds, "rows": rows}


def section_predict(data: Any, *, models: Sequence[str], batch_size: int = 512) -> dict[str, Any]:
    log("predict: parallel decode of the test PNGs + predict_logits")
    paths = data.paths
    if paths.test is None:
        return {"error": "the dataset has no labelled test folder"}
    test_set = scan_folder(paths.test, truth=paths.test_truth)
    size = tuple(data.input_size)
    started = time.perf_counter()
    decoded, problems = map_images(partial(decode_png, size=size), test_set, progress=False)
    images = np.stack(decoded)
    decode_seconds = time.perf_counter() - started
    out: dict[str, Any] = {
        "images": len(images),
        "decode_seconds": decode_seconds,
        "decode_workers": os.cpu_count(),
        "problems": len(problems),
        "models": {},
    }
    for name in models:
        config = seed_config(name)
        seed_everything(0)
        model = build_model(config).to(memory_format=torch.channels_last)
        predict_logits(model, images[:batch_size], batch_size=batch_size)  # warm-up
        started = time.perf_counter()
        logits = predict_logits(model, images, batch_size=batch_size)
        predict_seconds = time.perf_counter() - started
        out["models"][name] = {
            "predict_seconds": predict_seconds,
            "images_per_second_model_only": len(images) / predict_seconds,
            "images_per_second_with_decode": len(images) / (predict_seconds + decode_seconds),
            "logits_shape": list(logits.shape),
        }
        log(
            f"  {name}: {out['models'][name]['images_per_second_with_decode']:.0f} img/s with decode, "
            f"{out['models'][name]['images_per_second_model_only']:.0f} img/s model only"
        )
    out["load_average"] = load_average()
    return out


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


def section_levers(data: Any, *, images: int, rounds: int, quick: bool) -> list[dict[str, Any]]:
    levers: list[dict[str, Any]] = []
    threads = torch.get_num_threads()
    subset = (
        torch.from_numpy(data.train_images[:images]),
        torch.from_numpy(data.train_labels[:images]),
    )

    def engine_ips(model: str, *extra: str) -> Callable[[], float]:
        run = EngineRun(seed_config(model, *extra), *subset)
        run.epoch()  # warm-up
        return lambda: run.epoch()["images_per_second"]

    for model in ("baseline_cnn", "bn_cnn"):
        log(f"lever channels_last: {model}")
        levers.append(
            ab_lever(
                "channels_last",
                engine_ips(model, "train.channels_last=false"),
                engine_ips(model, "train.channels_last=true"),
                rounds=rounds,
                unit="img/s",
                higher_is_better=True,
                before_label="channels_last=false",
                after_label="channels_last=true (default)",
                model=model,
            )
        )
    if threads > 1:
        for model in ("baseline_cnn", "bn_cnn"):
            log(f"lever threads: {model}")
            one, many = engine_ips(model), engine_ips(model)

            def with_threads(fn: Callable[[], float], count: int) -> Callable[[], float]:
                def call() -> float:
                    torch.set_num_threads(count)
                    try:
                        return fn()
                    finally:
                        torch.set_num_threads(threads)

                return call

            levers.append(
                ab_lever(
                    "intra-op threads",
                    with_threads(one, 1),
                    with_threads(many, threads),
                    rounds=rounds,
                    unit="img/s",
                    higher_is_better=True,
                    before_label="torch.set_num_threads(1)",
                    after_label=f"torch.set_num_threads({threads}) (default: one per core)",
                    model=model,
                )
            )

    # Batch preparation: gathering a batch from the uint8 set and turning it into model input,
    # at the data's size and at 128 x 128 (random pixels: only the shape matters here).
    mean = std = (0.5, 0.5, 0.5)
    generator = torch.Generator().manual_seed(0)
    sets = {"x".join(map(str, data.input_size)): subset[0]}
    if tuple(data.input_size) != (128, 128):
        sets["128x128"] = torch.randint(
            0, 256, (len(data.train_images), 3, 128, 128), dtype=torch.uint8, generator=generator
        )
    for label, pixels in sets.items():
        batches = [torch.randperm(len(pixels), generator=generator)[:64] for _ in range(20)]
        for index in batches[:3]:
            if not torch.equal(
                _old_batch(pixels, index, mean, std), _new_batch(pixels, index, mean, std)
            ):
                raise RuntimeError("the new batch preparation differs from the old one")

        def per_batch_ms(
            fn: Callable[..., torch.Tensor], pixels: torch.Tensor = pixels, batches: list = batches
        ) -> Callable[[], float]:
            def call() -> float:
                started = time.perf_counter()
                for index in batches:
                    fn(pixels, index, mean, std)
                return (time.perf_counter() - started) / len(batches) * 1e3

            return call

        for count in sorted({threads, 1}, reverse=True):
            log(f"lever batch preparation at {label}, {count} thread(s)")
            torch.set_num_threads(count)
            try:
                lever = ab_lever(
                    "batch gather + float conversion",
                    per_batch_ms(_old_batch),
                    per_batch_ms(_new_batch),
                    rounds=max(rounds, 5),
                    unit="ms/batch",
                    higher_is_better=False,
                    before_label="images[index]; addcmul; channels_last copy",
                    after_label="images.index_select(0, index); to_model_input (now)",
                    note="bit-identical tensors (checked)",
                    model=f"any (batch 64, {label}, {count} thread(s))",
                )
            finally:
                torch.set_num_threads(threads)
            levers.append(lever)

    # The per-step finite-loss check on CPU.
    loss_sum = torch.zeros((), dtype=torch.float64)
    started = time.perf_counter()
    for _ in range(2000):
        if not torch.isfinite(loss_sum):
            raise RuntimeError
    check_us = (time.perf_counter() - started) / 2000 * 1e6
    levers.append(
        {
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
    )

    # Inference: batch size and autograd mode.
    model = build_model(seed_config("bn_cnn")).to(memory_format=torch.channels_last)
    images_np = data.val_images
    raw = predict_logits.__wrapped__  # the function without its inference_mode decorator

    def predict(batch: int, mode: str) -> Callable[[], float]:
        def call() -> float:
            context = {
                "inference_mode": torch.inference_mode(),
                "no_grad": torch.no_grad(),
                "autograd": torch.enable_grad(),
            }[mode]
            started = time.perf_counter()
            with context:
                raw(model, images_np, batch_size=batch)
            return len(images_np) / (time.perf_counter() - started)

        return call

    log("lever inference batch size and mode (bn_cnn)")
    predict(512, "inference_mode")()  # warm-up
    levers.append(
        ab_lever(
            "inference batch size",
            predict(64, "inference_mode"),
            predict(512, "inference_mode"),
            rounds=rounds,
            unit="img/s",
            higher_is_better=True,
            before_label="batch 64",
            after_label="batch 512 (evaluate/predict default)",
            model="bn_cnn",
        )
    )
    levers.append(
        ab_lever(
            "inference autograd mode",
            predict(512, "no_grad"),
            predict(512, "inference_mode"),
            rounds=rounds,
            unit="img/s",
            higher_is_better=True,
            before_label="torch.no_grad",
            after_label="torch.inference_mode (now)",
            model="bn_cnn",
        )
    )
    if not quick:
        levers.append(
            ab_lever(
                "inference autograd mode",
                predict(512, "autograd"),
                predict(512, "inference_mode"),
                rounds=rounds,
                unit="img/s",
                higher_is_better=True,
                before_label="autograd on (no context)",
                after_label="torch.inference_mode (now)",
                model="bn_cnn",
            )
        )
    return levers


def section_child_levers(*, images: int, quick: bool) -> list[dict[str, Any]]:
    levers: list[dict[str, Any]] = []
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
    if samples[1] and samples[2]:
        b, a = median(samples[1]), median(samples[2])
        levers.append(
            {
                "lever": "inter-op threads",
                "model": "baseline_cnn",
                "unit": "img/s",
                "before": b,
                "after": a,
                "change_percent": (a / b - 1) * 100,
                "after_is_better": a > b,
                "before_label": "set_num_interop_threads(1)",
                "after_label": "default (2)",
                "before_samples": samples[1],
                "after_samples": samples[2],
                "note": "eager training runs ops one after another; the inter-op pool is idle",
            }
        )
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
    if policy["default"] and policy["PASSIVE"]:
        b, a = median(policy["default"]), median(policy["PASSIVE"])
        levers.append(
            {
                "lever": "OpenMP wait policy",
                "model": "baseline_cnn",
                "unit": "img/s",
                "before": b,
                "after": a,
                "change_percent": (a / b - 1) * 100,
                "after_is_better": a > b,
                "before_label": "OMP_WAIT_POLICY unset (threads spin)",
                "after_label": "OMP_WAIT_POLICY=PASSIVE",
                "before_samples": policy["default"],
                "after_samples": policy["PASSIVE"],
                "note": "set before torch is imported; matters when other processes compete for the cores",
            }
        )
    if not quick:
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
            levers.append(
                {
                    "lever": "torch.compile",
                    "model": "baseline_cnn",
                    "error": r["error"],
                    "stderr_tail": r.get("stderr_tail", ""),
                }
            )
        else:
            eager, compiled = r["eager"], r["compiled"]
            compile_seconds = compiled["first_epoch_seconds"] - compiled["epoch_seconds"]
            saving = eager["epoch_seconds"] - compiled["epoch_seconds"]
            levers.append(
                {
                    "lever": "torch.compile",
                    "model": "baseline_cnn",
                    "unit": "img/s",
                    "before": eager["images_per_second"],
                    "after": compiled["images_per_second"],
                    "change_percent": (
                        compiled["images_per_second"] / eager["images_per_second"] - 1
                    )
                    * 100,
                    "after_is_better": saving > 0,
                    "before_label": "eager",
                    "after_label": "torch.compile (inductor)",
                    "compile_seconds": compile_seconds,
                    "break_even_images": (compile_seconds / saving * images)
                    if saving > 0
                    else None,
                    "note": f"compile took {compile_seconds:.0f} s for {images}-image epochs; "
                    + (
                        f"pays back after {compile_seconds / saving * images:,.0f} images"
                        if saving > 0
                        else "steady state is not faster: never pays back"
                    ),
                }
            )
    return levers


# --------------------------------------------------------------------------------------------
# Report


def _fmt(value: Any, digits: int = 1) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:,.{digits}f}"
    return str(value)


def _split(profile: dict[str, Any]) -> str:
    cats = profile["categories_percent"]
    conv = cats.get("convolution", 0.0)
    linear = cats.get("matmul (linear layers)", 0.0)
    return f"{conv:.0f} / {linear:.0f} / {100 - conv - linear:.0f} %"


def write_markdown(results: dict[str, Any], path: Path) -> None:
    m = results["machine"]
    lines = [
        "# mnr speed benchmark",
        "",
        f"`python3 benchmarks/speed.py{' --quick' if results['quick'] else ''}` — generated {m['date']}; do not edit by hand.",
        "",
        "| machine | |",
        "|---|---|",
        f"| CPU | {m['cpu_model']}, {m['cores']} cores, {m['memory_gib']} GiB |",
        f"| torch | {m['torch']} (CUDA available: {m['cuda_available']}; everything below ran on the CPU) |",
        f"| threads | {m['threads']} intra-op (default {m['default_threads']}), {m['interop_threads']} inter-op |",
        f"| load average | start {results['load_average_start']}, end {results['load_average_end']} (other processes share this machine: read ratios, not absolute numbers) |",
        f"| wall time of this run | {results['wall_seconds'] / 60:.1f} min |",
        "",
        "## Goals",
        "",
        "| goal | measured | target | met |",
        "|---|---|---|---|",
    ]
    for g in results["goals"]:
        lines.append(
            f"| {g['goal']} | {g['measured']} | {g['target']} | {'yes' if g['met'] else 'no' if g['met'] is not None else '-'} |"
        )
    tp = results.get("throughput", {})
    if tp:
        lines += [
            "",
            "## 1. Epoch throughput: mnr engine vs notebook pipeline",
            "",
            "Same data, model, initial weights, SGD step, batch size, input size and thread count; epochs "
            "alternate engine, notebook, engine, notebook ... The notebook decodes each PNG with PIL every "
            "epoch (RGBA->RGB, `Resize`, `ToTensor`, `Normalize`) in a `DataLoader(batch_size=64, shuffle=True)` "
            "with the default `num_workers=0` (no worker processes); mnr gathers batches from the decode-once "
            "uint8 cache and converts them per batch. Train epochs only (no validation pass).",
            "",
            "| model | input (H x W) | images/epoch | engine s/epoch | engine img/s | notebook s/epoch | notebook img/s | notebook time in data loading | engine speed-up |",
            "|---|---|---|---|---|---|---|---|---|",
        ]
        for r in tp.values():
            name = f"{r['model']} | {r['input_size'][0]}x{r['input_size'][1]}"
            load_frac = median([s["load_fraction"] for s in r["notebook"]["samples"]]) * 100
            lines.append(
                f"| {name} | {r['images']} | {_fmt(r['engine']['seconds_median'], 2)} | {_fmt(r['engine']['images_per_second_median'])} | "
                f"{_fmt(r['notebook']['seconds_median'], 2)} | {_fmt(r['notebook']['images_per_second_median'])} | {load_frac:.0f} % | "
                f"**{r['ratio']:.2f}x** (pairs: {', '.join(f'{x:.2f}' for x in r['ratio_per_pair'])}) |"
            )
    tr = results.get("tracking")
    if tr:
        lines += [
            "",
            "## 2. Tracking overhead",
            "",
            f"`fit` of baseline_cnn ({tr['images']} train images + validation, {tr['epochs_per_fit']} epoch(s) per fit), alternating "
            "no callbacks with `MlflowLogger` on a real sqlite store in a temporary folder.",
            "",
            "| | wall s/epoch | CPU s/epoch (all threads) |",
            "|---|---|---|",
            f"| tracking off | {_fmt(tr['epoch_seconds_off'], 3)} | {_fmt(tr.get('cpu_seconds_off'), 3)} |",
            f"| tracking on | {_fmt(tr['epoch_seconds_on'], 3)} | {_fmt(tr.get('cpu_seconds_on'), 3)} |",
            f"| difference | {tr['overhead_percent_end_to_end']:+.2f} % | {tr.get('overhead_percent_cpu', float('nan')):+.2f} % |",
            "",
            f"Time inside `MlflowLogger`'s hooks (the training thread waits only for these): "
            f"**{tr['hook_seconds_per_epoch'] * 1e3:.2f} ms/epoch = {tr['overhead_percent_in_hooks']:.3f} %** of an "
            "epoch. The end-to-end differences are medians of alternated fits on a shared machine, where "
            "epoch-to-epoch noise is larger than the effect being measured; the CPU-time difference also counts "
            "MLflow's background writer thread.",
            "",
            f"Per-run setup (create the run, log params + config.yaml, log the dataset; first use of the store included): "
            f"{tr['run_setup_seconds']:.2f} s once, not per epoch. Metric rows logged for val_acc: {tr['metrics_logged']}.",
        ]
    cp = results.get("compute")
    if cp:
        threads_list = cp["thread_counts"]
        lines += [
            "",
            "## 3. Compute limit",
            "",
            "FLOPs are counted with `torch.utils.flop_counter.FlopCounterMode` over forward + backward "
            "(cross-entropy loss) of one batch of 64 in train mode, divided by 64: convolutions and matmuls, "
            "a multiply-add = 2 FLOPs; elementwise ops, pooling, batch norm and the optimizer are not counted. "
            f"The engine's rate is `train_one_epoch` over {cp['partial_images']} images after a 1-batch warm-up, "
            "with the seed's SGD step. The limit is dense float32 `torch.mm` of 2048 x 2048 (best of 3 x 2 "
            "products) at the same thread count, measured just before and just after each engine measurement "
            "(the higher of the two), because the load from other jobs drifts.",
            "",
            "| model @ input | forward MFLOP/img | train MFLOP/img | "
            + " | ".join(
                f"{t} thread(s): img/s, GFLOP/s, matmul GFLOP/s, **%**" for t in threads_list
            )
            + " | self CPU time: convolution / linear / everything else |",
            "|---|---|---|" + "---|" * len(threads_list) + "---|",
        ]
        for name, r in cp["models"].items():
            where = f"{threads_list[0]} thread(s): {_split(r['profile'])}"
            if "profile_1_thread" in r:
                where += f"; 1 thread: {_split(r['profile_1_thread'])}"
            cells = []
            for t in threads_list:
                b = r["by_threads"][str(t)]
                cells.append(
                    f"{b['images_per_second']:,.0f}, {b['achieved_gflops']:.1f}, {b['matmul_gflops']:.1f}, "
                    f"**{b['percent_of_matmul']:.0f} %**"
                )
            lines.append(
                f"| {name} | {r['forward_gflop_per_image'] * 1e3:,.1f} | {r['train_gflop_per_image'] * 1e3:,.1f} | "
                + " | ".join(cells)
                + f" | {where} |"
            )
        lines += [
            "",
            "Top ops by self CPU time (torch.profiler, record_shapes, over "
            f"{next(iter(cp['models'].values()))['profile']['steps']} engine steps):",
            "",
        ]
        for name, r in cp["models"].items():
            for key, label in (
                ("profile", f"{threads_list[0]} thread(s)"),
                ("profile_1_thread", "1 thread"),
            ):
                if key not in r:
                    continue
                lines += [
                    f"**{name}, {label}** ({r[key]['self_cpu_ms_per_step']:.0f} ms self CPU per step):",
                    "",
                    "| op | input shapes | % | ms/step |",
                    "|---|---|---|---|",
                ]
                for op in r[key]["top_ops"][:5]:
                    lines.append(
                        f"| {op['op']} | `{op['shapes']}` | {op['self_cpu_percent']:.1f} | {op['self_cpu_ms_per_step']:.1f} |"
                    )
                lines.append("")
        if cp.get("notes"):
            lines += ["Where the time goes (models under 40 %):", ""] + [
                f"- {n}" for n in cp["notes"]
            ]
    tta = results.get("time_to_accuracy")
    if tta:
        lines += [
            "",
            f"## 4. Time to {TARGET:.0%} validation accuracy",
            "",
            f"Each run is a fresh `python3` process running `run_training` with the model's default config "
            f"(experiments/<model>.yaml) plus `train.target={TARGET}`, `train.monitor=val_acc` (it stops at the first "
            "epoch that reaches it), no tracking or checkpoints; capped by epochs and wall time without changing the "
            "configured schedule. Wall time counts from the command's start (interpreter, imports, data load or cache "
            "build) to the end of the epoch that reached the target. Cold = `MNR_CACHE_DIR` pointing at an empty "
            "folder, so every PNG is decoded first.",
            "",
            "| model | config | cache | data load s | wall s to 99 % | epochs | best val acc | held-out test acc | train img/s | peak RSS |",
            "|---|---|---|---|---|---|---|---|---|---|",
        ]
        for kind in ("warm", "cold"):
            for name, r in tta[kind].items():
                if "error" in r:
                    lines.append(f"| {name} | | {kind} | error: {r['error']} | | | | | | |")
                    continue
                reached = r["reached"]
                wall = (
                    f"**{reached['seconds'] + r['startup_seconds']:.1f}**"
                    if reached
                    else f"not reached ({r['capped']})"
                )
                lines.append(
                    f"| {name} | {Path(r['config_file']).name}: {r['optimizer']}, {r['scheduler']} | {kind} | {r['load_seconds']:.1f} | {wall} | "
                    f"{reached['epoch'] if reached else r['epochs_run']} | {r['best_val_acc']:.4f} | {_fmt(r['test_accuracy'], 4)} | "
                    f"{_fmt(r['train_images_per_second_median'])} | {r['memory']['peak_rss_bytes'] / 2**20:,.0f} MiB |"
                )
        if tta.get("note"):
            lines += ["", tta["note"]]
    res = results.get("resolution")
    if res and res.get("rows"):
        lines += [
            "",
            f"### Input size ({res['model']} {res.get('variant', '')}, same config otherwise, warm cache, "
            f"{res.get('max_seconds', 150):.0f} s budget each)",
            "",
            "| input (H x W) | train s to 99 % (after data load) | epochs | best val acc | held-out test acc | train img/s |",
            "|---|---|---|---|---|---|",
        ]
        for size, r in res["rows"].items():
            if "error" in r:
                lines.append(f"| {size} | error: {r['error']} | | | | |")
                continue
            reached = r["reached"]
            secs = (
                f"{reached['seconds'] - r['load_seconds']:.1f}"
                if reached
                else f"not reached ({r['capped']})"
            )
            lines.append(
                f"| {size} | {secs} | {reached['epoch'] if reached else r['epochs_run']} | {r['best_val_acc']:.4f} | "
                f"{_fmt(r['test_accuracy'], 4)} | {_fmt(r['train_images_per_second_median'])} |"
            )
    pr = results.get("predict")
    if pr and "models" in pr:
        lines += [
            "",
            "## 5. Prediction and memory",
            "",
            f"{pr['images']} test PNGs decoded in parallel (`map_images(partial(decode_png, size=...))`, "
            f"{pr['decode_workers']} processes) in {pr['decode_seconds']:.2f} s, then `predict_logits` in batches of 512 "
            "(inference_mode, channels_last).",
            "",
            "| model | predict img/s (decode included) | model only img/s |",
            "|---|---|---|",
        ]
        for name, r in pr["models"].items():
            lines.append(
                f"| {name} | {r['images_per_second_with_decode']:,.0f} | {r['images_per_second_model_only']:,.0f} |"
            )
    mem = results.get("memory")
    if mem:
        lines += [
            "",
            "| memory | |",
            "|---|---|",
            f"| decoded dataset in RAM (train + val + test) | {mem['dataset_bytes'] / 2**20:,.1f} MiB, dtype {', '.join(mem['dtypes'])} |",
            f"| N x 3 x H x W bytes | {mem['expected_uint8_bytes'] / 2**20:,.1f} MiB ({'matches' if mem['dataset_bytes'] == mem['expected_uint8_bytes'] else 'DIFFERS'}) |",
            f"| a float32 copy would be | {mem['float32_copy_would_be_bytes'] / 2**20:,.1f} MiB |",
            f"| RSS increase while loading the cached set | {mem['rss_increase_on_load_bytes'] / 2**20:,.1f} MiB |",
            f"| peak RSS of a whole training run ({mem['model']}, warm) | {mem['peak_rss_bytes'] / 2**20:,.0f} MiB |",
        ]
    lv = results.get("levers")
    if lv:
        lines += [
            "",
            "## Levers",
            "",
            "Each pair is measured alternately (before, after, before, after ...); medians. Engine levers run "
            "`train_one_epoch` on a fixed subset after a warm-up epoch.",
            "",
            "| lever | model | before | after | change | verdict | what mnr does | note |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for r in lv:
            if "error" in r:
                lines.append(f"| {r['lever']} | {r['model']} | | | | error | {r['error']} |")
                continue
            lines.append(
                f"| {r['lever']} | {r['model']} | {r['before_label']}: {_fmt(r['before'], 2)} {r['unit']} | {r['after_label']}: {_fmt(r['after'], 2)} {r['unit']} | "
                f"{r['change_percent']:+.1f} % | {verdict(r)} | {MNR_CHOICE.get(r['lever'], '')} | {r.get('note', '')} |"
            )
    if results.get("notes"):
        lines += ["", "## Notes", ""] + [f"- {n}" for n in results["notes"]]
    for section, error in results.get("errors", {}).items():
        lines += ["", f"**Section {section} failed:**", "", "```", error.strip(), "```"]
    path.write_text("\n".join(lines) + "\n")


MNR_CHOICE = {
    "channels_last": "train.channels_last=true by default",
    "intra-op threads": "train.threads unset = torch's default, one per core",
    "inter-op threads": "torch's default",
    "batch gather + float conversion": "adopted (engine.py, transforms.py)",
    "per-step isfinite(loss_sum) check (CPU)": "kept: every step on CPU, every 25 on GPU",
    "inference batch size": "predict_logits batch_size=512, train.eval_batch_size=512",
    "inference autograd mode": "predict_logits runs in torch.inference_mode",
    "torch.compile": "not used",
    "OpenMP wait policy": "not set by mnr (must be set before torch is imported)",
}


def verdict(lever: dict[str, Any]) -> str:
    """Measured outcome; changes under 5 % are within this machine's run-to-run noise."""
    if lever["lever"].startswith("per-step"):
        return "negligible"
    if abs(lever["change_percent"]) < 5:
        return "no clear difference"
    return "after is faster" if lever["after_is_better"] else "before is faster"


def goals(results: dict[str, Any]) -> list[dict[str, Any]]:
    out = []
    for tp in results.get("throughput", {}).values():
        if tp["model"] == "baseline_cnn":
            size = "x".join(map(str, tp["input_size"]))
            out.append(
                {
                    "goal": f"engine vs notebook epoch throughput, baseline_cnn at {size}",
                    "measured": f"{tp['ratio']:.2f}x",
                    "target": ">= 3x",
                    "met": tp["ratio"] >= 3,
                }
            )
    tr = results.get("tracking")
    if tr:
        out.append(
            {
                "goal": "MLflow tracking overhead per epoch",
                "measured": f"{tr['overhead_percent_in_hooks']:.2f} % in hooks; {tr['overhead_percent_end_to_end']:+.1f} % wall, "
                f"{tr.get('overhead_percent_cpu', float('nan')):+.1f} % CPU end to end (noise)",
                "target": "<= 3 %",
                "met": tr["overhead_percent_in_hooks"] <= 3,
            }
        )
    cp = results.get("compute")
    if cp:
        for name, r in cp["models"].items():
            out.append(
                {
                    "goal": f"achieved / matmul FLOP rate, {name}",
                    "measured": ", ".join(
                        f"{b['percent_of_matmul']:.0f} % at {t} thread(s)"
                        for t, b in r["by_threads"].items()
                    ),
                    "target": ">= 40 % (conv-heavy models)",
                    "met": r["percent_of_matmul_best"] >= 40,
                }
            )
    tta = results.get("time_to_accuracy")
    if tta:
        best = None
        for r in tta["warm"].values():
            if r.get("reached") and (
                best is None
                or r["reached"]["seconds"] + r["startup_seconds"]
                < best["reached"]["seconds"] + best["startup_seconds"]
            ):
                best = r
        if best:
            secs = best["reached"]["seconds"] + best["startup_seconds"]
            out.append(
                {
                    "goal": f"a default config to {TARGET:.0%} val acc from a warm cache",
                    "measured": f"{best['model']} {best.get('variant', '')}: {secs:.0f} s (held-out test acc {best['test_accuracy']:.4f})".replace(
                        " :", ":"
                    ),
                    "target": "<= 120 s",
                    "met": secs <= 120,
                }
            )
        else:
            out.append(
                {
                    "goal": f"a default config to {TARGET:.0%} val acc from a warm cache",
                    "measured": "not reached within the caps",
                    "target": "<= 120 s",
                    "met": False,
                }
            )
        memory = results.get("memory")  # run_section stores the first warm run's
        if memory:
            ratio = memory["dataset_bytes"] / memory["expected_uint8_bytes"]
            out.append(
                {
                    "goal": "cached dataset in RAM vs N x 3 x H x W bytes",
                    "measured": f"{memory['dataset_bytes'] / 2**20:.1f} MiB = {ratio:.2f}x ({', '.join(memory['dtypes'])}; "
                    f"a float32 copy would be {memory['float32_copy_would_be_bytes'] / 2**20:.1f} MiB); "
                    f"training peak RSS {memory['peak_rss_bytes'] / 2**20:.0f} MiB",
                    "target": "about 1x",
                    "met": ratio <= 1.05,
                }
            )
    return out


def readme_markdown(results: dict[str, Any]) -> str:
    """The README's speed section: how it was made, on what, and the goals table."""
    machine = results["machine"]
    loads = results.get("load_average_start", []), results.get("load_average_end", [])
    lines = [
        f"Measured by `python3 benchmarks/speed.py` ({results.get('wall_seconds', 0) / 60:.0f} min) on "
        f"{machine['cpu_model']} ({machine['cores']} cores, torch {machine['torch']}, CPU only), "
        f"load average {loads[0][0] if loads[0] else '?'} at the start and {loads[1][0] if loads[1] else '?'} "
        "at the end; every figure, the levers tried and the profiles are in "
        "[benchmarks/results/speed.md](benchmarks/results/speed.md).",
        *(f"Then {note}." for note in results.get("notes", []) if note.startswith("sections ")),
        "",
        "| goal | measured | target | met |",
        "|---|---|---|---|",
    ]
    for g in results.get("goals", []):
        lines.append(f"| {g['goal']} | {g['measured']} | {g['target']} | {'yes' if g['met'] else 'no'} |")
    predict = results.get("predict")
    if predict:
        rates = ", ".join(
            f"{name} {m['images_per_second_with_decode']:.0f}" for name, m in predict["models"].items()
        )
        lines += [
            "",
            f"Prediction from PNG files, decode included ({predict['images']} images, "
            f"{predict['decode_workers']} decode processes), images/s: {rates}.",
        ]
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="reduced smoke-test run (fewer epochs, subsets); writes speed_quick.*",
    )
    parser.add_argument(
        "--threads",
        type=int,
        default=None,
        help="torch intra-op threads for every measurement (default: torch's, one per core)",
    )
    parser.add_argument(
        "--only",
        default="",
        help="comma-separated sections to run: throughput,tracking,compute,levers,predict,tta,resolution",
    )
    parser.add_argument(
        "--out", type=Path, default=None, help="output folder (default benchmarks/results)"
    )
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.child:
        spec = json.loads(args.child)
        result = {"tta": child_tta, "steps": child_steps}[spec["kind"]](spec)
        print(CHILD_MARK + json.dumps(result), flush=True)
        return 0

    wall_started = time.perf_counter()
    if args.threads:
        torch.set_num_threads(args.threads)
    threads = torch.get_num_threads()
    quick = args.quick
    out = args.out or RESULTS
    out.mkdir(parents=True, exist_ok=True)
    stem = "speed_quick" if quick else "speed"
    json_path = out / f"{stem}.json"
    sections = [s for s in SECTIONS if not args.only or s in args.only.split(",")]
    results: dict[str, Any] = {}
    if (
        args.only and json_path.exists()
    ):  # re-running some sections updates an earlier run's results
        results = json.loads(json_path.read_text())
        results.setdefault("notes", []).append(
            f"sections {', '.join(sections)} re-run on {datetime.date.today()} (load average {load_average()})"
        )
    results.update(quick=quick, machine=machine_info(threads), errors=results.get("errors", {}))
    full_run = not args.only or "wall_seconds" not in results  # else a re-run into a full run's results
    if full_run:  # a partial re-run keeps the full run's load and wall time; its note says more
        results["load_average_start"] = load_average()
    results.setdefault("notes", [])
    log(
        f"machine: {results['machine']['cpu_model']}, {results['machine']['cores']} cores, "
        f"torch {torch.__version__}, {threads} threads; load average {results['load_average_start']}"
    )
    results["matmul_all"] = [matmul_gflops()["best"]]

    config = seed_config("baseline_cnn")
    started = time.perf_counter()
    data = load_data(config, progress=False)
    results["default_input_size"] = list(resolve_config().data.input_size)
    results["data"] = {
        "train": len(data.train_images),
        "val": len(data.val_images),
        "test": 0 if data.test_images is None else len(data.test_images),
        "input_size": list(data.input_size),
        "from_cache": data.from_cache,
        "load_seconds": time.perf_counter() - started,
        "source": str(data.paths.train.parent),
    }
    log(f"data: {results['data']}")

    def save() -> None:
        if full_run:
            results["load_average_end"] = load_average()
            results["wall_seconds"] = time.perf_counter() - wall_started
        results["goals"] = goals(results)
        json_path.write_text(json.dumps(results, indent=2, default=str) + "\n")
        write_markdown(results, out / f"{stem}.md")

    for section in sections:
        try:
            run_section(section, results, data, quick=quick, threads=args.threads)
            results["errors"].pop(section, None)
        except Exception:  # noqa: BLE001 - one broken section must not lose the others' results
            results["errors"][section] = traceback.format_exc()[-3000:]
            log(f"section {section} failed:\n{results['errors'][section]}")
        save()

    results["matmul_all"].append(matmul_gflops()["best"])
    save()
    if not quick and not args.out:  # the real results (a full run, or sections re-run into it)
        from readme import write_section

        write_section("speed", readme_markdown(results), heading="Speed")
    log(f"wrote {json_path} and {stem}.md in {results['wall_seconds'] / 60:.1f} min")
    for g in results["goals"]:
        log(
            f"  {g['goal']}: {g['measured']} (target {g['target']}) {'MET' if g['met'] else 'not met'}"
        )
    return 1 if results["errors"] else 0


SECTIONS = ("throughput", "tracking", "compute", "levers", "predict", "tta", "resolution")


def run_section(
    section: str, results: dict[str, Any], data: Any, *, quick: bool, threads: int | None
) -> None:
    """Run one section and store its results under its key."""
    if section == "throughput":
        pairs = {"baseline_cnn": 1, "bn_cnn": 1} if quick else {"baseline_cnn": 3, "bn_cnn": 2}
        results["throughput"] = section_throughput(
            data, models=("baseline_cnn", "bn_cnn"), pairs=pairs, limit=512 if quick else None
        )
        if not quick and tuple(data.input_size) != (128, 128):
            # The seed's own input size too, so the ratio is not only the smaller default's doing.
            big = load_data(
                seed_config("baseline_cnn", "data.input_size=[128,128]"), progress=False
            )
            results["throughput"].update(
                section_throughput(
                    big,
                    models=("baseline_cnn",),
                    pairs={"baseline_cnn": 2},
                    limit=None,
                    label="@128x128",
                )
            )
    elif section == "tracking":
        # Fits of several epochs, as real runs are: the run's one flush at the end of fit
        # (waiting for MLflow's async writer) is paid once per run, not once per epoch.
        results["tracking"] = section_tracking(
            data, pairs=1 if quick else 5, epochs=1 if quick else 5, limit=512 if quick else None
        )
    elif section == "compute":
        datasets = {"x".join(map(str, data.input_size)): data}
        if not quick and tuple(data.input_size) != (128, 128):
            datasets["128x128"] = load_data(
                seed_config("baseline_cnn", "data.input_size=[128,128]"), progress=False
            )
        threads_now = torch.get_num_threads()
        results["compute"] = section_compute(
            datasets,
            models=MODELS,
            partial_images=128 if quick else 192,
            profile_steps=2 if quick else 3,
            thread_counts=[threads_now] if quick or threads_now == 1 else [threads_now, 1],
        )
    elif section == "levers":
        images = 128 if quick else 384
        results["levers"] = section_levers(
            data, images=images, rounds=1 if quick else 3, quick=quick
        )
        results["levers"] += section_child_levers(images=images, quick=quick)
    elif section == "predict":
        results["predict"] = section_predict(data, models=MODELS)
    elif section == "tta":
        if quick:
            runs = [("bn_cnn", "", 60.0)]
            results["time_to_accuracy"] = section_time_to_accuracy(
                runs=runs, max_epochs=1, cold="bn_cnn", threads=threads
            )
        else:
            runs = [(m, "", 150.0) for m in MODELS] + [
                (m, FAST_VARIANT, 240.0) for m in ("bn_cnn", "deep_cnn")
            ]
            results["time_to_accuracy"] = section_time_to_accuracy(
                runs=runs, max_epochs=40, cold="reached", threads=threads
            )
        warm = results["time_to_accuracy"]["warm"]
        first = next((r for r in warm.values() if "memory" in r), None)
        if first:
            results["memory"] = {"model": first["model"], **first["memory"]}
    elif section == "resolution" and not quick:
        warm = results.get("time_to_accuracy", {}).get("warm", {})
        base = warm.get(f"bn_cnn {FAST_VARIANT}")
        sizes = [s for s in RESOLUTIONS if list(s) != list(data.input_size)]
        results["resolution"] = section_resolution(
            "bn_cnn", variant=FAST_VARIANT, sizes=sizes, base=base, max_epochs=40, max_seconds=150
        )


if __name__ == "__main__":
    sys.exit(main())
