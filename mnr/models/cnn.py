"""Small convolutional networks: the Kaggle seed and two stronger variants.

The architectures are classes; the registered variants at the bottom are one-line functions that
build them, so a new variant is one more decorated function, not a new class.

All three take float tensors N x C x H x W (C = `in_chans`: 1 for a value channel read back
through the colormap, 3 for RGB; normalised as `InputConfig` says) and return logits
N x num_classes. They use only out-of-place ops and `torch.flatten`, so they run unchanged on
`torch.channels_last` inputs.
"""

from __future__ import annotations

import torch
from torch import nn

from mnr.config import DEFAULT_INPUT_SIZE
from mnr.errors import MnrError
from mnr.models.registry import register_model

__all__ = ["BaselineCnn", "BnCnn", "DeepCnn"]


def _conv_pool_size(size: int, *, kernel: int, blocks: int) -> int:
    """Side length after `blocks` x [conv `kernel` (no padding) -> max-pool 2]."""
    for _ in range(blocks):
        size = (size - kernel + 1) // 2
    return size


def _check_fits(
    name: str, input_size: tuple[int, int], *, kernel: int, blocks: int
) -> tuple[int, int]:
    """The final feature-map (H, W), or an MnrError if the input is too small to get there."""
    h, w = (_conv_pool_size(s, kernel=kernel, blocks=blocks) for s in input_size)
    if h < 1 or w < 1:
        smallest = 1
        while _conv_pool_size(smallest, kernel=kernel, blocks=blocks) < 1:
            smallest += 1
        raise MnrError(
            f"input_size {tuple(input_size)} is too small for {name}: it needs at least "
            f"{smallest} x {smallest} pixels"
        )
    return h, w


def _no_pretrained(name: str, pretrained: bool) -> None:
    if pretrained:
        raise MnrError(
            f"{name} has no pretrained weights; drop model.pretrained=true (or use resnet18)"
        )


class BaselineCnn(nn.Module):
    """The Kaggle seed, shaped like the PyTorch CIFAR-10 tutorial network.

    Two blocks of [conv 5x5 (no padding) -> ReLU -> max-pool 2], then three linear layers
    (-> 120 -> 84 -> num_classes) with ReLU between. The first linear layer's width follows from
    `input_size`, which is why the size is an argument: this network only accepts that size.
    """

    def __init__(
        self,
        *,
        num_classes: int = 88,
        input_size: tuple[int, int] = DEFAULT_INPUT_SIZE,
        in_chans: int = 3,
        channels: tuple[int, int] = (6, 16),
        hidden: tuple[int, int] = (120, 84),
    ) -> None:
        super().__init__()
        h, w = _check_fits(type(self).__name__, input_size, kernel=5, blocks=2)
        c1, c2 = channels
        self.features = nn.Sequential(
            nn.Conv2d(in_chans, c1, kernel_size=5),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(c1, c2, kernel_size=5),
            nn.ReLU(),
            nn.MaxPool2d(2),
        )
        self.classifier = nn.Sequential(
            nn.Linear(c2 * h * w, hidden[0]),
            nn.ReLU(),
            nn.Linear(hidden[0], hidden[1]),
            nn.ReLU(),
            nn.Linear(hidden[1], num_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(self.features(x), 1))


class BnCnn(nn.Module):
    """The seed's layout made trainable: BatchNorm after each conv, dropout before the linears.

    BatchNorm lets it take a much larger learning rate than the seed, and dropout keeps the large
    first linear layer from memorising a small training set.
    """

    def __init__(
        self,
        *,
        num_classes: int = 88,
        input_size: tuple[int, int] = DEFAULT_INPUT_SIZE,
        in_chans: int = 3,
        channels: tuple[int, int] = (16, 32),
        hidden: tuple[int, int] = (120, 84),
        dropout: float = 0.3,
    ) -> None:
        super().__init__()
        if not 0.0 <= dropout < 1.0:
            raise MnrError(f"dropout must be in [0, 1), got {dropout!r}")
        h, w = _check_fits(type(self).__name__, input_size, kernel=5, blocks=2)
        c1, c2 = channels
        self.features = nn.Sequential(
            nn.Conv2d(
                in_chans, c1, kernel_size=5, bias=False
            ),  # BatchNorm's shift makes a bias redundant
            nn.BatchNorm2d(c1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(c1, c2, kernel_size=5, bias=False),
            nn.BatchNorm2d(c2),
            nn.ReLU(),
            nn.MaxPool2d(2),
        )
        self.classifier = nn.Sequential(
            nn.Dropout(dropout),
            nn.Linear(c2 * h * w, hidden[0]),
            nn.ReLU(),
            nn.Dropout(dropout),
            nn.Linear(hidden[0], hidden[1]),
            nn.ReLU(),
            nn.Linear(hidden[1], num_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(self.features(x), 1))


class DeepCnn(nn.Module):
    """A VGG-style stack of [conv 3x3 -> BN -> ReLU -> max-pool] blocks with a time-pooled head.

    Channels double each block from `width` (capped at 8 x `width`). Pooling halves frequency in
    every block and time only while there is time left to halve, so narrow inputs (the default
    128 x 16) work. The head averages over time only: a pitch is *where* the energy sits along
    frequency, and pooling frequency away too (ImageNet-style global pooling) would make the head
    guess it from texture. The remaining frequency rows (128 / 2**freq_pools) and channels feed
    one linear layer. `freq_pools` (default: every block) halves frequency in the first blocks
    only: the head then sees the pitch at a finer grain, which the bass needs, where two keys'
    partials differ by a fraction of a band.
    """

    def __init__(
        self,
        *,
        num_classes: int = 88,
        input_size: tuple[int, int] = DEFAULT_INPUT_SIZE,
        in_chans: int = 3,
        width: int = 16,
        depth: int = 5,
        dropout: float = 0.2,
        freq_pools: int | None = None,
    ) -> None:
        super().__init__()
        freq_pools = depth if freq_pools is None else freq_pools
        if not 0 <= freq_pools <= depth:
            raise MnrError(f"freq_pools must be in 0..depth ({depth}), got {freq_pools!r}")
        if width < 1:
            raise MnrError(f"width must be a positive number of channels, got {width!r}")
        if depth < 1:
            raise MnrError(f"depth must be at least 1, got {depth!r}")
        if not 0.0 <= dropout < 1.0:
            raise MnrError(f"dropout must be in [0, 1), got {dropout!r}")
        height, time = input_size
        if height < 2**freq_pools:
            raise MnrError(
                f"input_size {tuple(input_size)} is too small for DeepCnn with "
                f"freq_pools={freq_pools}: it needs at least {2**freq_pools} rows"
            )
        layers: list[nn.Module] = []
        for i in range(depth):
            out_chans = width * min(2**i, 8)
            time_pool = 2 if time >= 2 else 1
            freq_pool = 2 if i < freq_pools else 1
            layers += [
                nn.Conv2d(in_chans, out_chans, kernel_size=3, padding=1, bias=False),
                nn.BatchNorm2d(out_chans),
                nn.ReLU(),
                nn.MaxPool2d((freq_pool, time_pool)),
            ]
            in_chans, height, time = out_chans, height // freq_pool, time // time_pool
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d((height, 1))
        self.head = nn.Sequential(nn.Dropout(dropout), nn.Linear(in_chans * height, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.flatten(self.pool(self.features(x)), 1))


@register_model
def baseline_cnn(
    *,
    num_classes: int = 88,
    input_size: tuple[int, int] = DEFAULT_INPUT_SIZE,
    in_chans: int = 3,
    pretrained: bool = False,
) -> BaselineCnn:
    """The Kaggle seed: 2 x [conv5 -> ReLU -> pool], 3 linear layers (CIFAR tutorial net)."""
    _no_pretrained("baseline_cnn", pretrained)
    return BaselineCnn(num_classes=num_classes, input_size=input_size, in_chans=in_chans)


@register_model
def bn_cnn(
    *,
    num_classes: int = 88,
    input_size: tuple[int, int] = DEFAULT_INPUT_SIZE,
    in_chans: int = 3,
    pretrained: bool = False,
    dropout: float = 0.3,
) -> BnCnn:
    """The seed with BatchNorm, 16/32 channels and dropout; trains fast on a CPU."""
    _no_pretrained("bn_cnn", pretrained)
    return BnCnn(num_classes=num_classes, input_size=input_size, in_chans=in_chans, dropout=dropout)


@register_model
def deep_cnn(
    *,
    num_classes: int = 88,
    input_size: tuple[int, int] = DEFAULT_INPUT_SIZE,
    in_chans: int = 3,
    pretrained: bool = False,
    width: int = 16,
    depth: int = 5,
    dropout: float = 0.2,
    freq_pools: int | None = None,
) -> DeepCnn:
    """VGG-style [conv3 -> BN -> ReLU -> pool] x depth, pooled over time, linear head."""
    _no_pretrained("deep_cnn", pretrained)
    return DeepCnn(
        num_classes=num_classes,
        input_size=input_size,
        in_chans=in_chans,
        width=width,
        depth=depth,
        dropout=dropout,
        freq_pools=freq_pools,
    )
