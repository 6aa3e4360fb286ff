"""Section 5: prediction throughput from PNG files, decode included.

The test PNGs are decoded once, in parallel (`map_images`), then each model runs
`predict_logits` over them in batches of 512 in channels_last; the report gives the rate with
and without the decode, since a user waits for both.
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from functools import partial
from typing import Any

import numpy as np
import torch
from speed_harness import load_average, log, seed_config

from mnr.data import scan_folder
from mnr.data.images import decode_png
from mnr.data.parallel import map_images
from mnr.device import seed_everything
from mnr.engine import predict_logits
from mnr.training import build_model


def section_predict(data: Any, *, models: Sequence[str], batch_size: int = 512) -> dict[str, Any]:
    """Decode the labelled test folder in parallel, with the training folder's figure layout
    (as prediction reads with the model's), then time `predict_logits` per model."""
    log("predict: parallel decode of the test PNGs + predict_logits")
    paths = data.paths
    if paths.test is None:
        return {"error": "the dataset has no labelled test folder"}
    test_set = scan_folder(paths.test, truth=paths.test_truth)
    size = tuple(data.input_size)
    started = time.perf_counter()
    decoded, problems = map_images(
        partial(decode_png, size=size, layout=data.layout), test_set, progress=False
    )
    images = np.stack(decoded)
    decode_seconds = time.perf_counter() - started
    out: dict[str, Any] = {
        "images": len(images),
        "decode_seconds": decode_seconds,
        "decode_workers": os.cpu_count(),
        "channels": data.layout.channels,
        "problems": len(problems),
        "models": {},
    }
    for name in models:
        config = seed_config(name)
        seed_everything(0)
        model = build_model(config, layout=data.layout).to(memory_format=torch.channels_last)
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
