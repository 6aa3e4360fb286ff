"""Section 1b: mnr's engine against a minimal hand-written PyTorch training loop.

The notebook comparison (section 1) is mostly about decoding; this one asks what the engine
itself costs next to the shortest loop a user would write over the same in-memory data. Both
sides get the same uint8 tensors (`data.train_images`, as mnr decoded them), the same model
built the same way (`build_model(config, layout=data.layout)`, the same seed and so the same
initial weights, the same memory format), the same optimizer settings, batch size, loss and
thread count, and even the same shuffled order (a generator seeded alike). What the hand loop
does differently is everything else the engine does per step: it gathers with `images[index]`
(the engine: `index_select`), converts with plain tensor maths (the engine: the fused
`to_model_input`), has no augmentation hook (augmentation is off on both sides), and keeps only
a count of correct predictions (the engine also sums the loss and checks that it is finite).

Epochs alternate (engine, hand loop, engine, ...) after a one-batch warm-up of each; the ratio is
engine images/s over hand-loop images/s (>= 1 means the engine is no slower).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import torch
from speed_harness import EngineRun, alternate, load_average, log, median, seed_config, summary
from torch import nn

from mnr.config import ExperimentConfig
from mnr.data.layout import FigureLayout
from mnr.device import seed_everything
from mnr.training import build_model


class HandLoop:
    """The minimal loop: randperm, `images[index]`, float/255, normalise, forward, backward, step."""

    def __init__(
        self,
        config: ExperimentConfig,
        images: torch.Tensor,
        labels: torch.Tensor,
        *,
        layout: FigureLayout | None,
    ) -> None:
        if config.optim.name != "sgd":
            raise ValueError(f"the hand loop writes SGD only, not {config.optim.name!r}")
        seed_everything(config.train.seed)
        self.model = build_model(config, layout=layout)
        self.memory_format = (
            torch.channels_last if config.train.channels_last else torch.contiguous_format
        )
        self.model = self.model.to(memory_format=self.memory_format)
        opt = config.optim
        self.optimizer = torch.optim.SGD(
            self.model.parameters(),
            lr=opt.lr,
            momentum=opt.momentum,
            nesterov=opt.nesterov,
            weight_decay=opt.weight_decay,
        )
        self.criterion = nn.CrossEntropyLoss(label_smoothing=config.train.label_smoothing)
        channels = self.model.input_config.in_chans
        self.mean = torch.tensor(self.model.input_config.mean).view(1, channels, 1, 1)
        self.std = torch.tensor(self.model.input_config.std).view(1, channels, 1, 1)
        self.batch_size = config.train.batch_size
        self.generator = torch.Generator().manual_seed(config.train.seed)
        self.images, self.labels = images, labels

    def epoch(self) -> dict[str, float]:
        """One shuffled pass over `self.images`, in the same record as `EngineRun.epoch`."""
        model, images, labels = self.model, self.images, self.labels
        model.train()
        started = time.perf_counter()
        order = torch.randperm(len(images), generator=self.generator)
        correct = seen = 0
        for start in range(0, len(images), self.batch_size):
            index = order[start : start + self.batch_size]
            if len(index) < 2:  # as the engine: a 1-image batch breaks batch norm
                break
            x = images[index].float().div(255).sub(self.mean).div(self.std)
            x = x.contiguous(memory_format=self.memory_format)
            y = labels[index]
            logits = model(x)
            loss = self.criterion(logits, y)
            self.optimizer.zero_grad()
            loss.backward()
            self.optimizer.step()
            correct += int((logits.argmax(1) == y).sum())
            seen += len(index)
        seconds = time.perf_counter() - started
        return {
            "seconds": seconds,
            "images_per_second": len(images) / seconds,
            "train_acc": correct / max(seen, 1),
        }


def _warm(run: EngineRun | HandLoop, images: torch.Tensor, labels: torch.Tensor) -> None:
    """One epoch over the first batch only (oneDNN primitives, allocator), then the full set."""
    batch = run.ctx.config.train.batch_size if isinstance(run, EngineRun) else run.batch_size
    run.images, run.labels = images[:batch], labels[:batch]
    run.epoch()
    run.images, run.labels = images, labels


def _record(
    name: str, config: ExperimentConfig, data: Any, count: int, samples: dict[str, list]
) -> dict[str, Any]:
    engine_ips = median([s["images_per_second"] for s in samples["engine"]])
    hand_ips = median([s["images_per_second"] for s in samples["handloop"]])
    return {
        "model": name,
        "images": count,
        "all_images": len(data.train_images),
        "input_size": list(data.input_size),
        "channels": data.layout.channels,
        "in_chans": data.layout.in_chans,
        "batch_size": config.train.batch_size,
        "threads": torch.get_num_threads(),
        "memory_format": "channels_last" if config.train.channels_last else "contiguous",
        "engine": summary(samples["engine"]),
        "handloop": summary(samples["handloop"]),
        "ratio_per_pair": [
            e["images_per_second"] / h["images_per_second"]
            for e, h in zip(samples["engine"], samples["handloop"], strict=True)
        ],
        "ratio": engine_ips / hand_ips,
        "load_average": load_average(),
    }


def section_handloop(
    data: Any, *, models: Sequence[str], pairs: int, limits: dict[str, int | None]
) -> dict[str, Any]:
    """Per model, `pairs` alternated (engine epoch, hand-loop epoch) on the first `limits[model]`
    training images (all when None or missing)."""
    out: dict[str, Any] = {}
    size = list(data.input_size)
    all_images = torch.from_numpy(data.train_images)
    all_labels = torch.from_numpy(data.train_labels)
    for name in models:
        config = seed_config(name, f"data.input_size=[{size[0]},{size[1]}]")
        count = min(limits.get(name) or len(all_images), len(all_images))
        images, labels = all_images[:count], all_labels[:count]
        engine = EngineRun(config, images, labels, layout=data.layout)
        hand = HandLoop(config, images, labels, layout=data.layout)
        _warm(engine, images, labels)
        _warm(hand, images, labels)
        log(f"handloop {name}: {pairs} x (engine epoch, hand-loop epoch) on {count} images")
        samples = alternate({"engine": engine.epoch, "handloop": hand.epoch}, pairs)
        out[name] = r = _record(name, config, data, count, samples)
        log(
            f"  engine {r['engine']['images_per_second_median']:.1f} img/s, hand loop "
            f"{r['handloop']['images_per_second_median']:.1f} img/s, ratio {r['ratio']:.2f}x"
        )
    return out
