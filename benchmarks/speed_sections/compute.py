"""Section 3: how close training comes to the machine's compute limit, and where the time goes.

Per model and input size: FLOPs per training image (counted, not estimated), the FLOP rate the
engine reaches, and the dense matmul rate measured just before and after it at the same thread
count (the load on a shared machine drifts, so one probe at the start would flatter or shame the
engine at random). A profile per model says which ops take the time; for models far from the
limit, `compute_notes` turns it into one line each.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from speed_harness import EngineRun, load_average, log, matmul_gflops, seed_config
from torch import nn

from mnr.config import ExperimentConfig
from mnr.data.layout import FigureLayout
from mnr.device import seed_everything
from mnr.training import build_model


def train_flops_per_image(
    config: ExperimentConfig, layout: FigureLayout | None, batch: int = 64
) -> dict[str, float]:
    """FLOPs of forward and forward+backward per image, counted by FlopCounterMode, for the
    model built for `layout` (its channel count) at the config's input size."""
    from torch.utils.flop_counter import FlopCounterMode

    seed_everything(0)
    model = build_model(config, layout=layout).train()
    height, width = config.data.input_size
    x = torch.randn(batch, model.input_config.in_chans, height, width)
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
        layout=data.layout,
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
    run = EngineRun(config, train_images[:batch], train_labels[:batch], layout=data.layout)
    run.epoch()
    run.images, run.labels = train_images[:images], train_labels[:images]
    return run.epoch()["images_per_second"]


def _rate_at_threads(
    config: ExperimentConfig,
    data: Any,
    train_flops: float,
    *,
    threads: int,
    default_threads: int,
    partial_images: int,
) -> dict[str, Any]:
    """The engine's FLOP rate at `threads` threads, between two matmul probes at that count."""
    torch.set_num_threads(threads)
    try:
        before = matmul_gflops(repeats=2, trials=3)["best"]
        ips = _engine_ips(config, data, images=partial_images)
        after = matmul_gflops(repeats=2, trials=3)["best"]
    finally:
        torch.set_num_threads(default_threads)
    limit = max(before, after)
    achieved = train_flops * ips / 1e9
    log(
        f"  {threads} thread(s): {train_flops / 1e6:.0f} MFLOP/img x {ips:.1f} img/s = "
        f"{achieved:.1f} GFLOP/s, {achieved / limit * 100:.0f} % of matmul {limit:.1f}"
    )
    return {
        "images_per_second": ips,
        "achieved_gflops": achieved,
        "matmul_gflops_before_after": [before, after],
        "matmul_gflops": limit,
        "percent_of_matmul": achieved / limit * 100,
    }


def _model_entry(
    name: str,
    data: Any,
    *,
    partial_images: int,
    profile_steps: int,
    thread_counts: Sequence[int],
    default_threads: int,
) -> dict[str, Any]:
    """One model at `data`'s input size: FLOPs, the rate per thread count, and its profiles."""
    height, width = data.input_size
    config = seed_config(name, f"data.input_size=[{height},{width}]")
    flops = train_flops_per_image(config, data.layout)
    entry: dict[str, Any] = {
        "model": name,
        "input_size": [height, width],
        "channels": data.layout.channels,
        "forward_gflop_per_image": flops["forward"] / 1e9,
        "train_gflop_per_image": flops["train"] / 1e9,
        "by_threads": {},
    }
    for threads in thread_counts:
        entry["by_threads"][str(threads)] = _rate_at_threads(
            config,
            data,
            flops["train"],
            threads=threads,
            default_threads=default_threads,
            partial_images=partial_images,
        )
    main = entry["by_threads"][str(thread_counts[0])]
    entry.update(
        images_per_second=main["images_per_second"],
        achieved_gflops=main["achieved_gflops"],
        percent_of_matmul_best=main["percent_of_matmul"],
    )
    entry["profile"] = profile_model(config, data, steps=profile_steps)
    if len(thread_counts) > 1:  # without contention for cores: what the kernels themselves cost
        torch.set_num_threads(1)
        try:
            entry["profile_1_thread"] = profile_model(config, data, steps=profile_steps)
        finally:
            torch.set_num_threads(default_threads)
    return entry


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
        for name in models:
            log(f"compute: {name} at {label}")
            out["models"][f"{name} @ {label}"] = _model_entry(
                name,
                data,
                partial_images=partial_images,
                profile_steps=profile_steps,
                thread_counts=thread_counts,
                default_threads=default_threads,
            )
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
