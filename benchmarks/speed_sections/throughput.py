"""Section 1: epoch throughput of mnr's engine versus the plain notebook pipeline.

Both sides get the same files, model architecture, seed, SGD step, batch size, input size and
thread count, and their epochs alternate (engine, notebook, engine, ...) so that load from other
jobs hits both alike; the ratio of medians is the figure the goals table checks.

Each side reads the images its own way: mnr's default pipeline reads the plot and, where the
colormap is known (the built-in set), one value channel read back through it, so its model has
one input channel; the notebook decodes RGB from the PNG and its model has three. That is the
comparison a user makes (mnr as it comes against the notebook as written), so the first layer
differs in its input channels and the initial weights there cannot be the same.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import partial
from pathlib import Path
from typing import Any

import notebook_pipeline
import numpy as np
import torch
from speed_harness import EngineRun, alternate, load_average, log, median, seed_config, summary

from mnr.config import ExperimentConfig
from mnr.data import resolve_data, scan_folder, stratified_split
from mnr.device import seed_everything
from mnr.training import build_model


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


def _notebook_run(
    config: ExperimentConfig, files: list[Path], labels: list[int]
) -> tuple[Any, Any, torch.optim.Optimizer]:
    """The notebook's model, loader and optimizer: the engine's architecture and seed, for three
    RGB channels (no layout), channels-first, decoding `files` from PNG on every epoch."""
    seed_everything(config.train.seed)
    nb_model = build_model(config)
    nb_optimizer = torch.optim.SGD(
        nb_model.parameters(), lr=config.optim.lr, momentum=config.optim.momentum
    )
    mean, std = nb_model.input_config.mean, nb_model.input_config.std
    dataset = notebook_pipeline.PngDataset(
        files, labels, size=tuple(config.data.input_size), mean=mean, std=std
    )
    loader = notebook_pipeline.make_loader(dataset, batch_size=config.train.batch_size)
    return nb_model, loader, nb_optimizer


def _pair_record(
    name: str,
    count: int,
    config: ExperimentConfig,
    loader: Any,
    samples: dict[str, list],
    *,
    engine_channels: str,
) -> dict[str, Any]:
    """One model's record: both sides' medians, the ratio per pair and the ratio of medians."""
    ratios = [
        n["seconds"] / e["seconds"]
        for e, n in zip(samples["engine"], samples["notebook"], strict=True)
    ]
    return {
        "model": name,
        "images": count,
        "batch_size": config.train.batch_size,
        "input_size": list(config.data.input_size),
        "threads": torch.get_num_threads(),
        "channels_last_engine": config.train.channels_last,
        "engine_channels": engine_channels,
        "notebook_channels": "rgb",
        "notebook_num_workers": loader.num_workers,
        "engine": summary(samples["engine"]),
        "notebook": summary(samples["notebook"]),
        "ratio_per_pair": ratios,
        "ratio": median([s["seconds"] for s in samples["notebook"]])
        / median([s["seconds"] for s in samples["engine"]]),
        "load_average": load_average(),
    }


def section_throughput(
    data: Any, *, models: Sequence[str], pairs: dict[str, int], limit: int | None, label: str = ""
) -> dict[str, Any]:
    """Per model, `pairs[model]` alternated (engine, notebook) epochs on the first `limit`
    training images (all when None); keys are the model names followed by `label`."""
    out: dict[str, Any] = {}
    size = list(data.input_size)
    for name in models:
        config = seed_config(name, f"data.input_size=[{size[0]},{size[1]}]")
        files, labels = train_files(config, data)
        count = limit or len(files)
        images = torch.from_numpy(data.train_images[:count])
        targets = torch.from_numpy(data.train_labels[:count])
        engine = EngineRun(config, images, targets, layout=data.layout)
        nb_model, loader, nb_optimizer = _notebook_run(config, files[:count], labels[:count])
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
        out[name + label] = r = _pair_record(
            name, count, config, loader, samples, engine_channels=data.layout.channels
        )
        log(
            f"  engine {r['engine']['images_per_second_median']:.1f} img/s, notebook "
            f"{r['notebook']['images_per_second_median']:.1f} img/s, ratio {r['ratio']:.2f}x"
        )
    return out
