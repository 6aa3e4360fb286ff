"""Section 1c: training on one value channel against training on RGB.

mnr reads the plot of each figure and, when its colormap is known, the one value the colour
stands for (read back through the colormap) instead of the three colour channels. This section
measures what that saves: the same model and config trained on the same split, once from
`data.channels=value` and once from `data.channels=rgb`, epochs alternated after a one-batch
warm-up of each; and what the decoded set takes in RAM each way (`images.nbytes`). Only the
first layer sees the difference (1 or 3 input channels), so the saving is largest where that
layer is a large share of the work.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import torch
from speed_harness import EngineRun, alternate, load_average, log, median, seed_config, summary

from mnr.training import load_data

CHANNELS = ("value", "rgb")


def _load(channels: str) -> tuple[Any, float]:
    """The built-in set read as `channels` at the default input size, and the load's seconds."""
    started = time.perf_counter()
    data = load_data(seed_config("bn_cnn", f"data.channels={channels}"), progress=False)
    if data.layout.channels != channels:
        raise RuntimeError(f"asked for data.channels={channels}, got {data.layout.channels}")
    return data, time.perf_counter() - started


def _describe(data: Any, load_seconds: float) -> dict[str, Any]:
    arrays = [data.train_images, data.val_images] + (
        [data.test_images] if data.test_images is not None else []
    )
    return {
        "in_chans": data.layout.in_chans,
        "colormap": data.layout.colormap,
        "train_shape": list(data.train_images.shape),
        "train_bytes": int(data.train_images.nbytes),
        "dataset_bytes": int(sum(a.nbytes for a in arrays)),
        "from_cache": data.from_cache,
        "load_seconds": load_seconds,
    }


def section_channels(*, models: Sequence[str], pairs: int, limit: int | None) -> dict[str, Any]:
    """Per model, `pairs` alternated (value epoch, rgb epoch) on the first `limit` training images
    (all when None); plus each set's size in RAM."""
    sets = {}
    out: dict[str, Any] = {"data": {}, "models": {}}
    for channels in CHANNELS:
        sets[channels], seconds = _load(channels)
        out["data"][channels] = _describe(sets[channels], seconds)
    value, rgb = sets["value"], sets["rgb"]
    if not (value.train_labels == rgb.train_labels).all():
        raise RuntimeError("the value and rgb sets do not have the same training split")
    out["bytes_ratio_rgb_over_value"] = (
        out["data"]["rgb"]["dataset_bytes"] / out["data"]["value"]["dataset_bytes"]
    )
    count = min(limit or len(value.train_images), len(value.train_images))
    size = list(value.input_size)
    for name in models:
        config = seed_config(name, f"data.input_size=[{size[0]},{size[1]}]")
        runs = {}
        for channels, data in sets.items():
            images = torch.from_numpy(data.train_images[:count])
            labels = torch.from_numpy(data.train_labels[:count])
            batch = config.train.batch_size
            run = EngineRun(config, images[:batch], labels[:batch], layout=data.layout)
            run.epoch()  # warm-up on one batch
            run.images, run.labels = images, labels
            runs[channels] = run
        log(f"channels {name}: {pairs} x (value epoch, rgb epoch) on {count} images")
        samples = alternate({c: run.epoch for c, run in runs.items()}, pairs)
        value_ips = median([s["images_per_second"] for s in samples["value"]])
        rgb_ips = median([s["images_per_second"] for s in samples["rgb"]])
        out["models"][name] = {
            "model": name,
            "images": count,
            "input_size": size,
            "batch_size": config.train.batch_size,
            "threads": torch.get_num_threads(),
            "value": summary(samples["value"]),
            "rgb": summary(samples["rgb"]),
            "ratio_per_pair": [
                v["images_per_second"] / r["images_per_second"]
                for v, r in zip(samples["value"], samples["rgb"], strict=True)
            ],
            "ratio": value_ips / rgb_ips,
            "load_average": load_average(),
        }
        log(
            f"  value {value_ips:.1f} img/s, rgb {rgb_ips:.1f} img/s, ratio {value_ips / rgb_ips:.2f}x"
        )
    return out
