"""The log-mel spectrogram, as librosa computes it, in numpy only.

librosa is not a dependency of mnr (it pulls in numba and a large tree); these few functions
compute what `librosa.feature.melspectrogram` followed by `librosa.power_to_db` would, with the
same mel scales (HTK and Slaney) and the same area-normalised filters.
"""

from __future__ import annotations

import functools

import numpy as np

from mnr.data.synth.config import DEFAULT_CONFIG, SynthConfig
from mnr.errors import MnrError

__all__ = ["mel_edges", "mel_spectrogram_db"]


def _hz_to_mel(f: np.ndarray, htk: bool) -> np.ndarray:
    if htk:
        return 2595.0 * np.log10(1.0 + f / 700.0)
    f = np.asarray(f, dtype=np.float64)  # Slaney: linear below 1 kHz, logarithmic above
    lin = f / (200.0 / 3)
    log = 15.0 + np.log(np.maximum(f, 1e-9) / 1000.0) / (np.log(6.4) / 27.0)
    return np.where(f >= 1000.0, log, lin)


def _mel_to_hz(m: np.ndarray, htk: bool) -> np.ndarray:
    if htk:
        return 700.0 * (10.0 ** (m / 2595.0) - 1.0)
    m = np.asarray(m, dtype=np.float64)
    return np.where(m >= 15.0, 1000.0 * np.exp((np.log(6.4) / 27.0) * (m - 15.0)), m * 200.0 / 3)


@functools.lru_cache(maxsize=8)
def _mel_filterbank(config: SynthConfig) -> tuple[np.ndarray, int]:
    """Triangular, area-normalised (Slaney "norm") mel filters, as `librosa.filters.mel` builds.

    Returns the (bins, n_mels) float32 matrix cut to the bins below `fmax`, and that bin count,
    so the matrix product skips the empty top of the spectrum.
    """
    bins = np.fft.rfftfreq(config.n_fft, 1.0 / config.sample_rate)
    lo, hi = _hz_to_mel(np.array([config.fmin, config.fmax]), config.htk)
    edges = _mel_to_hz(np.linspace(lo, hi, config.n_mels + 2), config.htk)
    widths = np.diff(edges)
    ramps = edges[:, None] - bins[None, :]
    lower = -ramps[:-2] / widths[:-1, None]
    upper = ramps[2:] / widths[1:, None]
    weights = np.maximum(0.0, np.minimum(lower, upper))
    weights *= (2.0 / (edges[2:] - edges[:-2]))[:, None]
    used = int(np.nonzero(weights.any(axis=0))[0].max()) + 1
    return np.ascontiguousarray(weights[:, :used].T, dtype=np.float32), used


@functools.lru_cache(maxsize=8)
def _window(n_fft: int) -> np.ndarray:
    """Periodic Hann window, as `scipy.signal.get_window("hann", n, fftbins=True)`."""
    return 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(n_fft) / n_fft)


def mel_spectrogram_db(audio: np.ndarray, *, config: SynthConfig = DEFAULT_CONFIG) -> np.ndarray:
    """Log-mel spectrogram (n_mels, frames) in dB, max 0 dB, floored at ``-top_db``.

    Like ``librosa.power_to_db(librosa.feature.melspectrogram(y=audio, sr=..., n_fft=...,
    hop_length=..., n_mels=..., fmin=..., fmax=..., htk=..., center=True, pad_mode="constant"),
    ref=np.max, top_db=...)``, in numpy only.
    """
    audio = np.asarray(audio, dtype=np.float64)
    if audio.ndim != 1 or audio.size == 0:
        raise MnrError(f"audio must be a non-empty 1-D array, got shape {audio.shape}")
    half = config.n_fft // 2
    padded = np.pad(audio, (half, half))
    frames = np.lib.stride_tricks.sliding_window_view(padded, config.n_fft)[:: config.hop_length]
    filters, used = _mel_filterbank(config)
    # float64 on purpose: pocketfft's float32 path is about twice as slow here.
    spectrum = np.fft.rfft(frames * _window(config.n_fft), axis=-1)[:, :used]
    power = spectrum.real**2 + spectrum.imag**2
    mel = (power.astype(np.float32) @ filters).T
    db = 10.0 * np.log10(np.maximum(mel, 1e-10))
    db -= db.max()
    return np.maximum(db, -config.top_db)


def mel_edges(config: SynthConfig) -> np.ndarray:
    """The band edges in Hz at which `librosa.display.specshow(y_axis="mel")` draws the bands:
    `n_mels` frequencies evenly spaced in mel from fmin to fmax, each band reaching halfway to
    its neighbours, the outer ones to fmin and fmax."""
    lo, hi = _hz_to_mel(np.array([config.fmin, config.fmax]), config.htk)
    centres = _mel_to_hz(np.linspace(lo, hi, config.n_mels), config.htk)
    edges = np.empty(config.n_mels + 1)
    edges[0], edges[-1] = config.fmin, config.fmax
    edges[1:-1] = (centres[:-1] + centres[1:]) / 2.0
    return edges
