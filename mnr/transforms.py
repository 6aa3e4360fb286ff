"""From cached uint8 batches to model input, and spectrogram-safe augmentation.

Both work on whole batches on the training device rather than per sample: the data already sits
in memory as uint8, so one vectorised op per batch replaces thousands of per-image Python calls.
That is why these are written here instead of using torchvision's per-sample transforms.

Augmentation never flips or shifts along frequency: a spectrogram moved up one row is another
note. It shifts in time (circularly), masks time and frequency bands (SpecAugment), reshapes the
timbre (a smooth random boost or cut over frequency, where the note sounds), and jitters gain
and noise.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from mnr.config import AugmentConfig

__all__ = ["augment_batch", "to_model_input"]


def to_model_input(
    batch: torch.Tensor,
    *,
    mean: Sequence[float],
    std: Sequence[float],
    channels_last: bool = False,
) -> torch.Tensor:
    """uint8 N x 3 x H x W -> float32, scaled to 0..1 then normalised by mean and std.

    The scale and normalisation fold into one multiply-add; this is the only place that turns
    pixels into model input, for training, evaluation, prediction and serving alike.
    """
    std_t = torch.tensor(std, dtype=torch.float32, device=batch.device).view(1, -1, 1, 1)
    mean_t = torch.tensor(mean, dtype=torch.float32, device=batch.device).view(1, -1, 1, 1)
    scale = 1.0 / (255.0 * std_t)
    # One copy converts to float and, if asked, to channels_last; the multiply-add then runs in
    # place. Same values as an out-of-place addcmul and a layout copy, 2-3x faster on a CPU
    # (benchmarks/speed.py, lever "batch gather + float conversion").
    layout = torch.channels_last if channels_last else torch.preserve_format
    x = batch.to(torch.float32, memory_format=layout, copy=True)
    return torch.addcmul(-mean_t / std_t, x, scale, out=x)


def _band_masks(
    count: int,
    size: int,
    max_width: float,
    n: int,
    generator: torch.Generator,
    device: torch.device,
) -> torch.Tensor:
    """`count` x `size` boolean masks, each the union of `n` random bands of width <= max_width."""
    positions = torch.arange(size, device=device).view(1, size)
    mask = torch.zeros(count, size, dtype=torch.bool, device=device)
    limit = max(1, int(round(max_width * size)))
    for _ in range(n):
        width = torch.randint(0, limit + 1, (count, 1), generator=generator).to(device)
        start = (
            torch.rand((count, 1), generator=generator).to(device) * (size - width + 1)
        ).floor()
        mask |= (positions >= start) & (positions < start + width)
    return mask


_TIMBRE_TERMS = 6  # cosines in a timbre curve: features down to ~1/6 of the frequency axis


def _timbre_curves(
    count: int, height: int, level: float, generator: torch.Generator
) -> torch.Tensor:
    """`count` x `height` smooth random curves over frequency: a sum of cosines whose amplitudes
    fall as 1/k (broad tilts more than narrow bumps), each at most about `level`."""
    k = torch.arange(1, _TIMBRE_TERMS + 1, dtype=torch.float32)
    amplitude = (torch.rand((count, _TIMBRE_TERMS), generator=generator) * 2 - 1) * level / k
    phase = torch.rand((count, _TIMBRE_TERMS), generator=generator) * (2 * torch.pi)
    rows = torch.linspace(0.0, 1.0, height)
    waves = torch.cos(torch.pi * k.view(1, -1, 1) * rows.view(1, 1, -1) + phase.unsqueeze(-1))
    return (amplitude.unsqueeze(-1) * waves).sum(1) / 2.0


def augment_batch(
    x: torch.Tensor, config: AugmentConfig, *, generator: torch.Generator
) -> torch.Tensor:
    """Augment a normalised float batch in place where possible; random numbers come from
    `generator` (a CPU generator) so that a seeded run, and its resume, repeat exactly."""
    if not config.enabled:
        return x
    count, _, height, width = x.shape
    device = x.device
    if config.time_shift > 0:
        max_shift = int(round(config.time_shift * width))
        if max_shift > 0:
            shift = torch.randint(-max_shift, max_shift + 1, (count, 1), generator=generator).to(
                device
            )
            index = (torch.arange(width, device=device).view(1, width) - shift) % width
            x = torch.gather(x, 3, index.view(count, 1, 1, width).expand_as(x))
    if config.freq_masks > 0:
        rows = _band_masks(
            count, height, config.freq_mask_width, config.freq_masks, generator, device
        )
        x = x.masked_fill(rows.view(count, 1, height, 1), 0.0)
    if config.time_masks > 0:
        cols = _band_masks(
            count, width, config.time_mask_width, config.time_masks, generator, device
        )
        x = x.masked_fill(cols.view(count, 1, 1, width), 0.0)
    if config.timbre > 0:
        # Weighted by how far each pixel stands above its image's floor, so that the silence
        # and noise around a note stay where they were and only the note's partials change.
        floor = x.amin(dim=(1, 2, 3), keepdim=True)
        span = (x.amax(dim=(1, 2, 3), keepdim=True) - floor).clamp_min(1e-6)
        curve = _timbre_curves(count, height, config.timbre, generator).to(device)
        x = x + curve.view(count, 1, height, 1) * ((x - floor) / span)
    if config.gain > 0:
        gain = 1.0 + (torch.rand((count, 1, 1, 1), generator=generator) * 2 - 1) * config.gain
        x = x * gain.to(device)
    if config.noise > 0:
        x = x + torch.randn(x.shape, generator=generator).to(device) * config.noise
    return x
