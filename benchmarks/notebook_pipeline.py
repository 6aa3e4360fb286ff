"""The plain notebook pipeline that `speed.py` measures mnr against.

This is how the Kaggle seed notebook (and most PyTorch tutorials) feed a CNN: a `Dataset` that
opens and decodes every PNG each time it is indexed, converts RGBA to RGB, and applies
torchvision's per-sample `Resize((H, W))`, `ToTensor()` and `Normalize`, behind a
`DataLoader(batch_size=64, shuffle=True)` with its default `num_workers=0` (every image is decoded
in the training process, between steps). The training step is the usual one: forward, loss,
`zero_grad`, `backward`, `step`, in the default (channels-first) memory format.

It is written out here, rather than imported from mnr, so that the comparison is with code a
user would write, not with a slowed-down mnr.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path

import torch
from PIL import Image
from torch import nn
from torch.utils.data import DataLoader, Dataset
from torchvision import transforms

__all__ = ["PngDataset", "make_loader", "train_one_epoch"]


class PngDataset(Dataset):
    """(image tensor, label) pairs read from PNG files on every access."""

    def __init__(
        self,
        paths: Sequence[str | Path],
        labels: Sequence[int],
        *,
        size: tuple[int, int],
        mean: Sequence[float] = (0.5, 0.5, 0.5),
        std: Sequence[float] = (0.5, 0.5, 0.5),
    ) -> None:
        self.paths = [str(p) for p in paths]
        self.labels = [int(v) for v in labels]
        self.transform = transforms.Compose(
            [transforms.Resize(tuple(size)), transforms.ToTensor(), transforms.Normalize(mean, std)]
        )

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        image = Image.open(self.paths[index]).convert("RGB")  # RGBA -> RGB, as the notebook does
        return self.transform(image), self.labels[index]


def make_loader(dataset: PngDataset, *, batch_size: int = 64, seed: int = 0) -> DataLoader:
    """The notebook's loader: shuffled, default workers (num_workers=0, i.e. none)."""
    return DataLoader(
        dataset, batch_size=batch_size, shuffle=True, generator=torch.Generator().manual_seed(seed)
    )


def train_one_epoch(
    model: nn.Module, loader: DataLoader, optimizer: torch.optim.Optimizer
) -> dict[str, float]:
    """One epoch of the notebook loop; returns images/s, seconds, and the share spent loading."""
    criterion = nn.CrossEntropyLoss()
    model.train()
    seen, load_seconds = 0, 0.0
    started = time.perf_counter()
    batch_started = started
    for images, labels in loader:
        load_seconds += time.perf_counter() - batch_started
        outputs = model(images)
        loss = criterion(outputs, labels)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        seen += len(labels)
        batch_started = time.perf_counter()
    seconds = time.perf_counter() - started
    return {
        "seconds": seconds,
        "images": float(seen),
        "images_per_second": seen / seconds,
        "load_fraction": load_seconds / seconds,
    }
