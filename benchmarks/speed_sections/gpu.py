"""Section 6: training throughput on a CUDA GPU: mixed precision, and where the data lives.

Skipped, with a note saying why, where `torch.cuda.is_available()` is False. On a GPU, per model
and batch size (64 and 256), each of these runs with `train.amp` off and on:

- engine, on GPU: mnr's `train_one_epoch` over training tensors moved to the GPU once, which is
  what `fit` does on any device but the CPU;
- loop, on GPU: the loop below over the same GPU-resident tensors, so that the next two rows
  differ from it in where the data lives only;
- loop, pinned: the tensors stay in pinned CPU memory; each batch is gathered into a pinned
  buffer and copied with `non_blocking=True`, so the copy and the next gather overlap the GPU's
  work (what `DataLoader(pin_memory=True)` gives);
- loop, pageable: the tensors stay in ordinary CPU memory and each batch is copied with a plain
  `.to(device)`, which waits for the GPU to finish the work queued before it.

The loop is the engine's step otherwise: the same model, optimizer, `to_model_input`, autocast
(bfloat16 where supported, else float16 with a loss scaler, as `fit` picks) and memory format;
mnr itself is not changed to measure it. All the runs of one model and batch size alternate,
each sample being a few epochs (an epoch of the built-in set is a few tens of milliseconds on a
large GPU), and the clock stops after `torch.cuda.synchronize`.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Sequence
from typing import Any

import torch
from speed_harness import EngineRun, alternate, load_average, log, seed_config, summary
from torch import nn

from mnr.config import ExperimentConfig
from mnr.data.layout import FigureLayout
from mnr.device import seed_everything
from mnr.optim import make_optimizer
from mnr.training import build_model
from mnr.transforms import to_model_input

PLACEMENTS = ("engine, on GPU", "loop, on GPU", "loop, pinned", "loop, pageable")


def gpu_info(device: torch.device) -> dict[str, Any]:
    """The GPU the section ran on, by name, and what decides its mixed precision."""
    props = torch.cuda.get_device_properties(device)
    bf16 = torch.cuda.is_bf16_supported()
    return {
        "name": torch.cuda.get_device_name(device),
        "capability": list(torch.cuda.get_device_capability(device)),
        "memory_gib": round(props.total_memory / 2**30, 1),
        "count": torch.cuda.device_count(),
        "torch_cuda": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version(),
        "cudnn_benchmark": torch.backends.cudnn.benchmark,
        "amp_dtype": "bfloat16" if bf16 else "float16 (with GradScaler)",
    }


class CopyLoop:
    """The engine's training step, with the training tensors on the GPU, in pinned CPU memory
    (batches copied with non_blocking=True) or in pageable CPU memory (plain copies)."""

    def __init__(
        self,
        config: ExperimentConfig,
        images: torch.Tensor,
        labels: torch.Tensor,
        *,
        layout: FigureLayout | None,
        device: torch.device,
        placement: str,
    ) -> None:
        seed_everything(config.train.seed)
        self.device, self.placement = device, placement
        self.memory_format = (
            torch.channels_last if config.train.channels_last else torch.contiguous_format
        )
        model = build_model(config, layout=layout).to(device)
        self.model = model.to(memory_format=self.memory_format)
        self.mean, self.std = model.input_config.mean, model.input_config.std
        self.optimizer = make_optimizer(self.model, config)
        self.criterion = nn.CrossEntropyLoss(label_smoothing=config.train.label_smoothing)
        bf16 = torch.cuda.is_bf16_supported()
        self.amp = config.train.amp
        self.amp_dtype = torch.bfloat16 if bf16 else torch.float16
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.amp and not bf16)
        self.batch_size = config.train.batch_size
        self.generator = torch.Generator().manual_seed(config.train.seed)
        if placement == "loop, on GPU":
            self.images, self.labels = images.to(device), labels.to(device)
        elif placement == "loop, pinned":
            self.images, self.labels = images.pin_memory(), labels.pin_memory()
        elif placement == "loop, pageable":
            self.images, self.labels = images, labels
        else:
            raise ValueError(f"unknown placement {placement!r}")

    def _batch(self, index: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """This batch's uint8 images and labels, on the GPU."""
        if self.images.is_cuda:
            rows = index.to(self.device)
            return self.images.index_select(0, rows), self.labels.index_select(0, rows)
        if self.placement == "loop, pinned":
            # Fresh pinned buffers from torch's caching host allocator, which does not hand a
            # block out again before the copy reading it has finished.
            x = torch.empty(
                (len(index), *self.images.shape[1:]), dtype=self.images.dtype, pin_memory=True
            )
            y = torch.empty(len(index), dtype=self.labels.dtype, pin_memory=True)
            torch.index_select(self.images, 0, index, out=x)
            torch.index_select(self.labels, 0, index, out=y)
            return x.to(self.device, non_blocking=True), y.to(self.device, non_blocking=True)
        return (
            self.images.index_select(0, index).to(self.device),
            self.labels.index_select(0, index).to(self.device),
        )

    def epoch(self) -> dict[str, float]:
        """One shuffled pass, timed up to `torch.cuda.synchronize`."""
        self.model.train()
        started = time.perf_counter()
        count = len(self.images)
        order = torch.randperm(count, generator=self.generator)
        autocast = (
            torch.autocast(device_type="cuda", dtype=self.amp_dtype)
            if self.amp
            else contextlib.nullcontext()
        )
        for start in range(0, count, self.batch_size):
            index = order[start : start + self.batch_size]
            if len(index) < 2:
                break
            pixels, y = self._batch(index)
            x = to_model_input(
                pixels,
                mean=self.mean,
                std=self.std,
                channels_last=self.memory_format == torch.channels_last,
            )
            with autocast:
                loss = self.criterion(self.model(x), y)
            self.optimizer.zero_grad(set_to_none=True)
            self.scaler.scale(loss).backward()
            self.scaler.step(self.optimizer)
            self.scaler.update()
        torch.cuda.synchronize(self.device)
        seconds = time.perf_counter() - started
        return {"seconds": seconds, "images_per_second": count / seconds}


def _several(run: Callable[[], dict[str, float]], epochs: int, count: int) -> Callable[[], dict]:
    """One sample = `epochs` epochs in a row (a GPU epoch of this set is too short to time alone)."""

    def call() -> dict[str, float]:
        seconds = sum(run()["seconds"] for _ in range(epochs))
        return {"seconds": seconds, "images_per_second": count * epochs / seconds}

    return call


def _runs(
    config: ExperimentConfig,
    images: torch.Tensor,
    labels: torch.Tensor,
    *,
    layout: FigureLayout | None,
    device: torch.device,
) -> dict[str, Any]:
    """Every placement's epoch function for `config` (its train.amp as it is)."""
    engine = EngineRun(config, images.to(device), labels.to(device), layout=layout, device=device)
    runs: dict[str, Any] = {PLACEMENTS[0]: engine.epoch}
    for placement in PLACEMENTS[1:]:
        runs[placement] = CopyLoop(
            config, images, labels, layout=layout, device=device, placement=placement
        ).epoch
    return runs


def _table(samples: dict[str, list], batch_size: int, name: str) -> dict[str, Any]:
    """Per placement: amp off and on (medians and samples), and what amp gains."""
    rows = {}
    for placement in PLACEMENTS:
        off, on = (
            summary(samples[f"{placement}, amp off"]),
            summary(samples[f"{placement}, amp on"]),
        )
        rows[placement] = {
            "amp_off": off,
            "amp_on": on,
            "amp_speedup": on["images_per_second_median"] / off["images_per_second_median"],
        }
    resident = rows["loop, on GPU"]
    for placement in PLACEMENTS:
        for amp in ("amp_off", "amp_on"):
            rows[placement][f"{amp}_vs_loop_on_gpu"] = (
                rows[placement][amp]["images_per_second_median"]
                / resident[amp]["images_per_second_median"]
            )
    return {"model": name, "batch_size": batch_size, "rows": rows}


def section_gpu(
    data: Any,
    *,
    models: Sequence[str],
    batch_sizes: Sequence[int],
    rounds: int,
    epochs_per_sample: int,
) -> dict[str, Any]:
    """Per model and batch size, every placement with amp off and on, alternated for `rounds`
    rounds of `epochs_per_sample` epochs each; {"skipped": True, "note": ...} without CUDA."""
    if not torch.cuda.is_available():
        note = (
            f"torch.cuda.is_available() is False here (torch {torch.__version__}, built with "
            f"CUDA {torch.version.cuda or 'none'}); this section needs a CUDA GPU"
        )
        log(f"gpu: skipped: {note}")
        return {"skipped": True, "note": note}
    device = torch.device("cuda", 0)
    out: dict[str, Any] = {
        "skipped": False,
        "gpu": gpu_info(device),
        "images": len(data.train_images),
        "input_size": list(data.input_size),
        "channels": data.layout.channels,
        "epochs_per_sample": epochs_per_sample,
        "rounds": rounds,
        "models": {},
    }
    log(f"gpu: {out['gpu']['name']}, amp dtype {out['gpu']['amp_dtype']}")
    images = torch.from_numpy(data.train_images)
    labels = torch.from_numpy(data.train_labels)
    for name in models:
        for batch_size in batch_sizes:
            runs: dict[str, Callable[[], dict]] = {}
            for amp in (False, True):
                config = seed_config(
                    name,
                    "train.device=cuda",
                    f"train.batch_size={batch_size}",
                    f"train.amp={'true' if amp else 'false'}",
                )
                for placement, run in _runs(
                    config, images, labels, layout=data.layout, device=device
                ).items():
                    run()  # warm-up epoch: cuDNN plans, allocator, autocast caches
                    runs[f"{placement}, amp {'on' if amp else 'off'}"] = _several(
                        run, epochs_per_sample, len(images)
                    )
            log(f"gpu {name}, batch {batch_size}: {rounds} round(s) of {len(runs)} runs")
            samples = alternate(runs, rounds)
            key = f"{name} batch {batch_size}"
            out["models"][key] = table = _table(samples, batch_size, name)
            for placement, row in table["rows"].items():
                log(
                    f"  {placement}: amp off {row['amp_off']['images_per_second_median']:,.0f} img/s, "
                    f"amp on {row['amp_on']['images_per_second_median']:,.0f} img/s"
                )
            torch.cuda.empty_cache()
    out["load_average"] = load_average()
    return out
