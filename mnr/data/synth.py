"""The built-in dataset: synthetic piano notes rendered as mel-spectrogram PNGs in the Kaggle layout.

A fresh machine has no Kaggle data, yet every command (train, tune, the tests) needs a labelled
set. This module synthesises one from piano physics, so that a model trained on it has seen the
things a real piano recording shows and nothing that gives the label away for free:

- stretched (Railsback) tuning plus a few cents of random detuning, so pitch is never exact;
- stiff-string inharmonicity ``f_n = n f0 sqrt(1 + B n^2)``, with ``B`` of the two-asymptote form
  of Rigaud, David & Daudet (JASA 2013) set to typical measured values: about 5e-4 at A0, a
  minimum near 1.5e-4 around E2, 3e-4 at C4 and 2.6e-2 at C8 (each note varies by ~15%);
- one, two or three strings per key, mistuned by about a cent, which beat and give the piano's
  double decay (a fast "prompt" sound and a slow aftersound);
- partial strengths from the hammer (a dip near every 8th partial from the strike point at 1/8 of
  the string, a spectral knee that rises with loudness and register) and from the soundboard,
  which radiates poorly below about 100 Hz, so bass fundamentals are weak;
- decay that is faster in the treble and faster for higher partials (losses grow with f^2);
- a hammer knock (short noise burst plus a low body thump), a 1-3 ms attack, a damper that stops
  the note after a random hold (keys above E6 have no damper and ring on);
- a room: an exponentially decaying noise reverb, a microphone tilt, coloured background noise
  at a random SNR (worse for soft notes) and sometimes mains hum.

The spectrogram follows librosa's defaults where the Kaggle images seem to (centred Hann-window
STFT, power to dB with ``ref=max, top_db=80``, the magma colour map, low frequencies at the
bottom), and departs where the task needs it (see `SynthConfig`).

Every image draws from its own generator ``np.random.default_rng([seed, split, label, index])``,
so on a given machine the output is byte-identical whatever the number of worker processes, and
growing ``per_class`` keeps the images that were already there (under new file names).

Example::

    from mnr.data.synth import generate_dataset
    if __name__ == "__main__":  # workers are spawned processes, which re-import __main__
        root = generate_dataset("/tmp/synth", per_class=32, test_per_class=10, seed=0)
        # root/train/*.png, root/train/truth.txt, root/test/*.png, root/test_truth.txt
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import functools
import math
import multiprocessing
import os
import shutil
import struct
import uuid
import zlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from mnr.errors import MnrError
from mnr.labels import MIDI_OFFSET, NUM_KEYS

__all__ = [
    "SynthConfig",
    "DEFAULT_CONFIG",
    "SPLITS",
    "TRUTH_FILE",
    "TEST_TRUTH_FILE",
    "inharmonicity",
    "render_note",
    "mel_spectrogram_db",
    "spectrogram_image",
    "synthesize_image",
    "generate_dataset",
    "png_bytes",
]

SPLITS = {"train": 0, "test": 1}  # split name -> the number that seeds its images
TRUTH_FILE = "truth.txt"  # `filename label` per line, inside the train folder (Kaggle layout)
TEST_TRUTH_FILE = "test_truth.txt"  # the test answers, beside (never inside) the test folder
_NAME_STREAM = 0x6E616D65  # seeds the file names, apart from every image's own stream
_NAME_HEX = 12  # hex digits in a file name: 48 random bits

# Anchor colours of matplotlib's perceptual maps (11 evenly spaced samples, as in bokeh's
# palettes); a 256-entry lookup table is interpolated from them, so matplotlib is not needed.
_ANCHORS = {
    "magma": (
        "000003", "140D35", "3B0F6F", "63197F", "8C2980", "B53679",
        "DD4968", "F66E5B", "FD9F6C", "FDCD90", "FBFCBF",
    ),
    "viridis": (
        "440154", "482374", "404387", "345E8D", "29788E", "208F8C",
        "22A784", "42BE71", "79D151", "BADE27", "FDE724",
    ),
}  # fmt: skip


@dataclass(frozen=True)
class SynthConfig:
    """How notes are rendered and turned into images; the defaults make the built-in set.

    Sound:
      sample_rate: 22.05 kHz (librosa's default), which holds everything up to 11 kHz: C8's
        fundamental and second partial, and twice the highest frequency the image shows.
        44.1 kHz would double the cost and change no pixel.
      duration: 1.25 s clips: onset, decay and damper fit, and the default set (3,696 images)
        renders in about half a minute on two idle cores.
      max_partials: partials per string at most (A0 reaches ~3 kHz with 64).

    Spectrogram:
      n_fft: 4096 samples (186 ms, 5.4 Hz bins). The lowest mel bands are ~12 Hz apart, so a
        shorter window would blur them together; this one resolves the 27.5 Hz partial
        spacing of A0, which is what tells A0 from A#0 (their fundamentals share a band).
      hop_length: 256 samples (11.6 ms), 108 frames, later stretched to `width` columns.
      n_mels, fmin, fmax, htk: 128 HTK mel bands from 20 Hz to 5 kHz. The fundamentals of
        the 88 keys span 27.5-4186 Hz, so 5 kHz spends the bands where the keys are (C8 with
        its stretch lands 3 bands above B7); HTK's mel gives the bass more bands than
        Slaney's (12 Hz vs 20 Hz apart at the bottom). Together these lifted a linear
        classifier's accuracy on the lowest two octaves from 84% (8 kHz) to 95%.
      top_db: floor of the dB scale below the loudest bin, like `librosa.power_to_db(S,
        ref=np.max, top_db=80)`.

    Image:
      width, height: 520 x 394 RGBA, the Kaggle images' size; bands are stretched to rows and
        frames to columns (nearest neighbour, as an image renderer does).
      colormap: "magma" (librosa's `specshow` default for dB data) or "viridis".
      compress_level: PNG zlib level; 1 is about twice as fast to write as 6, files ~40% larger.

    Recording (each image draws its own values in these ranges):
      snr_db: background noise level below the note's RMS (less for soft notes).
      reverb_probability, rt60: how often a room reverb is added and its decay time (s).
      hum_probability: how often 50/60 Hz mains hum is added.
    """

    sample_rate: int = 22050
    duration: float = 1.25
    max_partials: int = 64
    n_fft: int = 4096
    hop_length: int = 256
    n_mels: int = 128
    fmin: float = 20.0
    fmax: float = 5000.0
    htk: bool = True
    top_db: float = 80.0
    width: int = 520
    height: int = 394
    colormap: str = "magma"
    compress_level: int = 1
    snr_db: tuple[float, float] = (20.0, 50.0)
    reverb_probability: float = 0.6
    rt60: tuple[float, float] = (0.2, 1.0)
    hum_probability: float = 0.15

    def __post_init__(self) -> None:
        if self.colormap not in _ANCHORS:
            raise MnrError(f"colormap {self.colormap!r} unknown: use one of {sorted(_ANCHORS)}")
        if not 0 < self.fmin < self.fmax <= self.sample_rate / 2:
            raise MnrError(
                f"need 0 < fmin < fmax <= sample_rate/2, got fmin={self.fmin}, fmax={self.fmax}, "
                f"sample_rate={self.sample_rate}"
            )
        if self.n_fft < 16 or self.hop_length < 1 or self.n_mels < 1:
            raise MnrError("n_fft must be >= 16, hop_length and n_mels >= 1")
        if self.width < 1 or self.height < 1 or self.duration <= 0:
            raise MnrError("width, height and duration must be positive")

    @property
    def num_samples(self) -> int:
        """Samples in one clip."""
        return int(round(self.sample_rate * self.duration))


DEFAULT_CONFIG = SynthConfig()  # the built-in set's settings


# --------------------------------------------------------------------------------------------
# Piano physics


def inharmonicity(midi: float) -> float:
    """Typical inharmonicity coefficient B of a piano key (MIDI number).

    The two-asymptote form of Rigaud, David & Daudet (JASA 2013), ``B = exp(b1 m + b0) +
    exp(t1 m + t0)``: wound bass strings get *less* stiff going up, plain treble strings get
    shorter and stiffer. The constants give typical measured values: A0 5e-4, E2 1.5e-4 (the
    minimum), C4 3.3e-4, C8 2.6e-2.
    """
    return math.exp(-0.0847 * midi - 5.82) + math.exp(0.0926 * midi - 13.64)


def _stretch_cents(midi: float) -> float:
    """Railsback stretch of a well-tuned piano: bass flat by up to ~20, treble sharp by ~30 cents."""
    if midi >= 69:
        return 30.0 * ((midi - 69.0) / 39.0) ** 3
    return -20.0 * ((69.0 - midi) / 48.0) ** 3


def _strings_per_key(midi: int) -> int:
    """Bass keys have one wound string, the tenor two, the rest three."""
    return 1 if midi < 30 else 2 if midi < 46 else 3


_HIGHEST_DAMPED = 88  # E6: keys above it have no damper


def _damped_sum(rates: np.ndarray, amplitudes: np.ndarray, n: int) -> np.ndarray:
    """``sum_p Re(a_p z_p^t)`` with ``z_p = exp(s_p)``, for t = 0..n-1, as one matrix product.

    Writing t = i K + j turns ``z^t`` into ``(z^K)^i z^j``, so the sum over components is
    ``U @ V`` with U (ceil(n/K) x P) and V (P x K), K ~ sqrt(n): a few hundred thousand complex
    multiplications instead of n P sines, which is what keeps a 190-component bass note cheap.
    """
    k = int(math.ceil(math.sqrt(n)))
    rows = int(math.ceil(n / k))
    z = np.exp(rates)
    v = np.empty((rates.size, k), dtype=np.complex128)
    v[:, 0] = 1.0
    v[:, 1:] = z[:, None]
    np.cumprod(v, axis=1, out=v)
    u = np.empty((rows, rates.size), dtype=np.complex128)
    u[0] = amplitudes
    u[1:] = np.exp(rates * k)[None, :]
    np.cumprod(u, axis=0, out=u)
    return (u.astype(np.complex64) @ v.astype(np.complex64)).real.reshape(-1)[:n]


def render_note(
    midi: int, *, rng: np.random.Generator, config: SynthConfig = DEFAULT_CONFIG
) -> np.ndarray:
    """One piano note (MIDI 21..108) as it might be recorded in a room: float32, peak 0.9.

    Every random choice (loudness, onset, hold, detuning, strike point, brightness, decay,
    room, noise) comes from `rng`, so the same generator state gives the same audio.
    """
    if not MIDI_OFFSET <= int(midi) < MIDI_OFFSET + NUM_KEYS:
        raise MnrError(f"MIDI {midi} is not a piano key: use 21 (A0) .. 108 (C8)")
    midi = int(midi)
    sr, n = config.sample_rate, config.num_samples
    nyquist = sr / 2.0

    velocity = rng.uniform(0.15, 1.0)  # 0 silent .. 1 fortissimo
    cents = _stretch_cents(midi) * rng.uniform(0.5, 1.5) + float(np.clip(rng.normal(0, 3), -8, 8))
    f0 = 440.0 * 2.0 ** ((midi - 69) / 12.0 + cents / 1200.0)
    b = inharmonicity(midi) * rng.lognormal(0.0, 0.15)

    order = np.arange(1, config.max_partials + 1, dtype=np.float64)
    freqs = order * f0 * np.sqrt(1.0 + b * order**2)
    keep = freqs < 0.9 * nyquist
    order, freqs = order[keep], freqs[keep]

    # Partial strengths (amplitude): strike point comb x hammer knee x soundboard high-pass.
    strike = rng.uniform(1 / 9, 1 / 7)
    comb = 0.12 + 0.88 * np.abs(np.sin(np.pi * order * strike))
    knee = 450.0 * 2.0 ** ((midi - 21) / 24.0 + 1.5 * (velocity - 0.6))  # louder: brighter
    rolloff = rng.uniform(10.0, 18.0)  # dB per octave above the knee
    hammer = 10.0 ** (-rolloff * np.log2(np.maximum(freqs, knee) / knee) / 20.0)
    board_fc = rng.uniform(80.0, 140.0)
    board = (freqs / board_fc) ** 2 / (1.0 + (freqs / board_fc) ** 2)
    jitter = rng.lognormal(0.0, 0.2, size=freqs.size)  # soundboard resonances
    amps = comb * hammer * board * jitter

    # Decay (nepers/s): the aftersound's T60 falls from ~25 s at A0 to ~0.9 s at C8, and
    # losses grow with f^2, so high partials die first (C8 itself within 0.3-0.7 s).
    t60 = 25.0 * 2.0 ** (-(midi - 21) / 18.0) * rng.uniform(0.7, 1.4)
    alpha = 6.91 / t60 + rng.uniform(0.1, 0.8) * (freqs / 1000.0) ** 2

    # Strings (or, for single-string keys, the string's two polarisations): the first decays
    # several times faster (the prompt sound); slight mistuning between them makes beats.
    strings = max(2, _strings_per_key(midi))
    prompt = rng.uniform(3.0, 6.0)
    weights = np.array([0.7] + [0.3 / (strings - 1)] * (strings - 1))
    detune = 2.0 ** (rng.normal(0.0, 0.8, size=strings) / 1200.0)
    speed = np.ones(strings)
    speed[0] = prompt
    rate_parts, amp_parts = [], []
    for j in range(strings):
        phases = rng.uniform(0.0, 2 * np.pi, size=freqs.size)
        rate_parts.append(-alpha * speed[j] / sr + 2j * np.pi * freqs * detune[j] / sr)
        amp_parts.append(weights[j] * amps * np.exp(1j * phases))

    # Body thump: a short low damped sinusoid excited by the hammer blow.
    thump_f, thump_tau = rng.uniform(60.0, 140.0), rng.uniform(0.015, 0.04)
    thump_level = amps.max() * 10 ** (-rng.uniform(18.0, 30.0) / 20.0) * (0.4 + velocity)
    rate_parts.append(np.array([-1.0 / (thump_tau * sr) + 2j * np.pi * thump_f / sr]))
    amp_parts.append(np.array([thump_level * np.exp(1j * rng.uniform(0, 2 * np.pi))]))

    onset = int(rng.uniform(0.02, 0.2) * sr)
    length = n - onset
    note = _damped_sum(np.concatenate(rate_parts), np.concatenate(amp_parts), length)

    # Attack: 1-3 ms rise (faster when loud), then the hammer's knock, a burst of noise.
    tau_attack = rng.uniform(1.0, 3.0) / 1000.0 * (1.3 - 0.6 * velocity)
    ramp_len = min(length, int(10 * tau_attack * sr) + 1)
    note[:ramp_len] *= 1.0 - np.exp(-np.arange(ramp_len) / (tau_attack * sr))
    knock_len = min(length, int(0.04 * sr))
    knock = rng.standard_normal(knock_len) * np.exp(
        -np.arange(knock_len) / (rng.uniform(0.002, 0.006) * sr)
    )
    width = int(rng.integers(2, 12))  # moving average: a soft felt thud or a bright click
    knock = np.convolve(knock, np.ones(width) / width, mode="same")
    peak = float(np.abs(note).max()) or 1.0
    note[:knock_len] += knock * peak * 10 ** (-rng.uniform(10.0, 22.0) / 20.0) * (0.5 + velocity)

    # Damper: the key is released after a random hold; bass dampers act more slowly.
    if midi <= _HIGHEST_DAMPED:
        off = int(rng.uniform(0.35, 1.3) * sr)
        if off < length:
            tau_damp = rng.uniform(0.02, 0.06) * (1.0 + (_HIGHEST_DAMPED - midi) / 40.0)
            note[off:] *= np.exp(-np.arange(length - off) / (tau_damp * sr))

    audio = np.zeros(n)
    audio[onset:] = note
    return _record(audio, velocity=velocity, rng=rng, config=config)


def _record(
    audio: np.ndarray, *, velocity: float, rng: np.random.Generator, config: SynthConfig
) -> np.ndarray:
    """Put a dry note in a room: reverb, microphone tilt, background noise, maybe hum."""
    sr, n = config.sample_rate, audio.size
    signal_rms = float(np.sqrt(np.mean(audio**2))) or 1.0
    if rng.random() < config.hum_probability:
        mains = 50.0 if rng.random() < 0.5 else 60.0
        t = np.arange(n) / sr
        level = signal_rms * 10 ** (-rng.uniform(30.0, 50.0) / 20.0)
        for h, gain in ((1, 1.0), (2, 0.5), (3, 0.3)):
            audio = audio + level * gain * np.sin(2 * np.pi * (mains * h * t + rng.random()))

    reverb = rng.random() < config.reverb_probability
    size = _fast_length(n + (int((config.rt60[1] + 0.03) * sr) if reverb else 0))
    spectrum = np.fft.rfft(audio, size)
    if reverb:
        rt60 = rng.uniform(*config.rt60)
        predelay = int(rng.uniform(0.005, 0.03) * sr)
        tail = np.arange(int(rt60 * sr)) / sr
        ir = rng.standard_normal(tail.size) * np.exp(-6.91 * tail / rt60)
        wet = rng.uniform(0.05, 0.5) / (float(np.sqrt(np.sum(ir**2))) or 1.0)
        room = np.fft.rfft(np.concatenate([np.zeros(predelay), ir]), size)
        spectrum += (wet * room) * spectrum

    # Microphone tilt (dB/octave around 1 kHz) and background noise between white and brown,
    # scaled to a random SNR; both are powers of frequency, so they share one log.
    log_f = np.log(np.maximum(np.fft.rfftfreq(size, 1.0 / sr), 20.0) / 1000.0)
    tilt = rng.uniform(-2.0, 2.0) * math.log(10.0) / (20.0 * math.log(2.0))
    spectrum *= np.exp(tilt * log_f)
    shape = np.exp((-rng.uniform(0.0, 2.0) / 2.0) * log_f)
    noise_rms = 2.0 * math.sqrt(float(np.dot(shape, shape))) / size  # irfft of unit complex normals
    snr = rng.uniform(*config.snr_db) + 10.0 * math.log10(velocity)  # soft notes: noisier
    shape *= signal_rms * 10 ** (-snr / 20.0) / noise_rms
    noise = rng.standard_normal((2, shape.size))
    spectrum.real += noise[0] * shape
    spectrum.imag += noise[1] * shape

    out = np.fft.irfft(spectrum, size)[:n]
    return (out * (0.9 / (float(np.abs(out).max()) or 1.0))).astype(np.float32)


# --------------------------------------------------------------------------------------------
# Spectrogram and image


def _fast_length(n: int) -> int:
    """Smallest 2^a 3^b 5^c >= n: FFT sizes with a large prime factor are several times slower."""
    best = 1 << (n - 1).bit_length()
    p5 = 1
    while p5 < best:
        p35 = p5
        while p35 < best:
            m = p35
            while m < n:
                m *= 2
            best = min(best, m)
            p35 *= 3
        p5 *= 5
    return best


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


@functools.lru_cache(maxsize=4)
def _colour_table(name: str) -> np.ndarray:
    """256 x 4 uint8 RGBA table interpolated linearly between the colour map's anchors."""
    anchors = np.array([[int(h[i : i + 2], 16) for i in (0, 2, 4)] for h in _ANCHORS[name]], float)
    x = np.linspace(0.0, 1.0, len(anchors))
    grid = np.linspace(0.0, 1.0, 256)
    rgb = np.stack([np.interp(grid, x, anchors[:, c]) for c in range(3)], axis=1)
    table = np.full((256, 4), 255, dtype=np.uint8)
    table[:, :3] = np.round(rgb).astype(np.uint8)
    return table


def spectrogram_image(mel_db: np.ndarray, *, config: SynthConfig = DEFAULT_CONFIG) -> np.ndarray:
    """Colour a dB mel spectrogram into a (height, width, 4) uint8 RGBA image.

    The dB range ``[max - top_db, max]`` maps to 0..1 and then through the colour map; the
    lowest band is the bottom row and time runs left to right, as `librosa.display.specshow`
    draws it. Bands and frames are stretched by nearest neighbour.
    """
    mel_db = np.asarray(mel_db, dtype=np.float64)
    if mel_db.ndim != 2 or mel_db.size == 0:
        raise MnrError(
            f"mel_db must be a non-empty (bands, frames) array, got shape {mel_db.shape}"
        )
    bands, frames = mel_db.shape
    level = np.clip((mel_db - mel_db.max() + config.top_db) / config.top_db, 0.0, 1.0)
    table = _colour_table(config.colormap).view(np.uint32)[:, 0]  # one gather per pixel
    small = table[np.round(level * 255).astype(np.intp)][::-1]
    rows = (np.arange(config.height) * bands) // config.height
    cols = (np.arange(config.width) * frames) // config.width
    pixels = small[rows[:, None], cols[None, :]]
    return pixels.view(np.uint8).reshape(config.height, config.width, 4)


def synthesize_image(
    label: int,
    *,
    seed: int,
    split: str,
    index: int,
    config: SynthConfig = DEFAULT_CONFIG,
) -> np.ndarray:
    """The RGBA image of sample `index` of class `label` in `split` ("train" or "test").

    Its generator is ``np.random.default_rng([seed, split, label, index])``: the image depends
    on nothing else, which is what makes generation reproducible in any order or process.
    """
    if split not in SPLITS:
        raise MnrError(f"split {split!r} unknown: use one of {sorted(SPLITS)}")
    if not 0 <= int(label) < NUM_KEYS:
        raise MnrError(f"label {label} is not a piano key: labels run 0 (A0) .. 87 (C8)")
    if int(seed) < 0 or int(index) < 0:
        raise MnrError(f"seed and index must be >= 0, got seed={seed}, index={index}")
    rng = np.random.default_rng([int(seed), SPLITS[split], int(label), int(index)])
    audio = render_note(int(label) + MIDI_OFFSET, rng=rng, config=config)
    return spectrogram_image(mel_spectrogram_db(audio, config=config), config=config)


# --------------------------------------------------------------------------------------------
# The dataset


def _write_one(job: tuple[str, int, str, int, int, SynthConfig]) -> None:
    """Render one image and write it; runs in a worker, so it returns nothing to pickle back."""
    path, label, split, index, seed, config = job
    image = synthesize_image(label, seed=seed, split=split, index=index, config=config)
    Path(path).write_bytes(png_bytes(image, compress_level=config.compress_level))


def png_bytes(image: np.ndarray, *, compress_level: int = 1) -> bytes:
    """Encode an (height, width, 4) uint8 RGBA array as a PNG file.

    Written here rather than with Pillow to pick each row's filter for what a stretched
    spectrogram is: a row that repeats the one above gets "Up" (all zeros), any other row
    "Sub" (each byte minus the one a pixel to its left, mostly zeros since a pixel repeats
    across ~5 columns). zlib level 1 then takes well under half Pillow's time for a file of
    about the same size. Any PNG reader decodes it.
    """
    image = np.ascontiguousarray(image, dtype=np.uint8)
    if image.ndim != 3 or image.shape[2] != 4:
        raise MnrError(f"expected an (height, width, 4) RGBA array, got shape {image.shape}")
    height, width = image.shape[:2]
    rows = image.reshape(height, width * 4)
    raw = np.empty((height, width * 4 + 1), dtype=np.uint8)
    raw[:, 0] = 1  # filter type Sub
    raw[:, 1:5] = rows[:, :4]
    np.subtract(rows[:, 4:], rows[:, :-4], out=raw[:, 5:])  # wraps mod 256, as PNG wants
    repeats = np.zeros(height, dtype=bool)
    repeats[1:] = (rows[1:] == rows[:-1]).all(axis=1)
    raw[repeats, 0] = 2  # filter type Up: the difference to the row above, here all zeros
    raw[repeats, 1:] = 0

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        )

    header = struct.pack(">IIBBBBB", width, height, 8, 6, 0, 0, 0)  # 8-bit RGBA, no interlace
    return b"".join(
        (
            b"\x89PNG\r\n\x1a\n",
            chunk(b"IHDR", header),
            chunk(b"IDAT", zlib.compress(raw.tobytes(), compress_level)),
            chunk(b"IEND", b""),
        )
    )


def _file_names(seed: int, count: int) -> list[str]:
    """`count` distinct random hex names from the seed alone: they say nothing of the label."""
    rng = np.random.default_rng([int(seed), _NAME_STREAM])
    names: list[str] = []
    seen: set[str] = set()
    while len(names) < count:
        name = f"{int(rng.integers(0, 16**_NAME_HEX)):0{_NAME_HEX}x}.png"
        if name not in seen:
            seen.add(name)
            names.append(name)
    return names


def _check_target(out: Path) -> None:
    for part in ("train", "test"):
        folder = out / part
        if folder.exists() and (not folder.is_dir() or any(folder.iterdir())):
            raise MnrError(
                f"{folder} already exists and is not empty: remove it or choose another folder"
            )
    if (out / TEST_TRUTH_FILE).exists():
        raise MnrError(
            f"{out / TEST_TRUTH_FILE} already exists: remove it or choose another folder"
        )


def generate_dataset(
    out: str | Path,
    *,
    per_class: int = 32,
    test_per_class: int = 10,
    seed: int = 0,
    workers: int | None = None,
    progress: bool = True,
    config: SynthConfig | None = None,
    labels: Sequence[int] | None = None,
) -> Path:
    """Write a synthetic dataset in the Kaggle layout and return its root `out`.

    Layout: ``out/train/*.png`` with ``out/train/truth.txt``, ``out/test/*.png`` with the
    answers in ``out/test_truth.txt``; each line is ``filename label`` (label 0..87). File
    names are random hex from the seed, so neither a name nor the sorted order hints at a
    label. Everything is written into ``out/.partial-*`` first and moved into place at the end
    (train/ last, since its truth.txt marks a finished set), so an interrupted or failed run
    leaves no half-written dataset behind.

    Args:
        out: dataset root; created if missing. Refused if ``train/`` or ``test/`` in it holds
            files, or ``test_truth.txt`` exists.
        per_class, test_per_class: images per class in train and test; with 0 test images
            no test/ or test_truth.txt is written.
        seed: the whole set is a function of it (and of `config` and `labels`).
        workers: processes; None means one per core this process may use, 1 renders in this
            process. Workers are spawned, so a script calling this needs the usual
            ``if __name__ == "__main__":`` guard.
        progress: show a tqdm bar.
        config: rendering settings; None means `SynthConfig()`.
        labels: generate only these classes (tests use a handful); None means all 88.

    Example::

        generate_dataset("/tmp/tiny", per_class=2, test_per_class=1, labels=[10, 40, 70])
    """
    config = config or DEFAULT_CONFIG
    if int(per_class) < 1:
        raise MnrError(f"per_class must be >= 1, got {per_class}")
    if int(test_per_class) < 0:
        raise MnrError(f"test_per_class must be >= 0, got {test_per_class}")
    if int(seed) < 0:
        raise MnrError(f"seed must be >= 0, got {seed}")
    if workers is not None and int(workers) < 1:
        raise MnrError(f"workers must be >= 1, got {workers}")
    classes = list(range(NUM_KEYS)) if labels is None else sorted({int(x) for x in labels})
    if not classes or not all(0 <= c < NUM_KEYS for c in classes):
        raise MnrError(f"labels must be a non-empty list of keys 0..87, got {labels!r}")

    out = Path(out).expanduser()
    _check_target(out)
    out.mkdir(parents=True, exist_ok=True)
    partial = out / f".partial-{uuid.uuid4().hex[:8]}"
    counts = {"train": int(per_class), "test": int(test_per_class)}
    samples = [(s, c, i) for s in SPLITS for c in classes for i in range(counts[s])]
    names = _file_names(seed, len(samples))
    jobs: list[tuple[str, int, str, int, int, SynthConfig]] = []
    truth: dict[str, list[tuple[str, int]]] = {s: [] for s in SPLITS}
    for (split, label, index), name in zip(samples, names, strict=True):
        jobs.append((str(partial / split / name), label, split, index, int(seed), config))
        truth[split].append((name, label))

    truth_files = {"train": partial / "train" / TRUTH_FILE, "test": partial / TEST_TRUTH_FILE}
    splits = [split for split in SPLITS if counts[split] > 0]  # no empty test set
    try:
        for split in splits:
            (partial / split).mkdir(parents=True)
        _run_jobs(jobs, workers=workers, progress=progress)
        for split in splits:
            lines = "".join(f"{name} {label}\n" for name, label in sorted(truth[split]))
            truth_files[split].write_bytes(lines.encode("ascii"))
        _check_target(out)  # someone may have written there meanwhile
        parts = ["test", TEST_TRUTH_FILE] if counts["test"] else []
        for part in [*parts, "train"]:  # train/truth.txt last: it marks a finished set
            target = out / part
            if target.is_dir():
                target.rmdir()  # empty, checked above
            os.replace(partial / part, target)
    finally:
        shutil.rmtree(partial, ignore_errors=True)
    return out


_ONE_THREAD = {name: "1" for name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")}


def _run_jobs(jobs: list, *, workers: int | None, progress: bool) -> None:
    """Run `_write_one` over `jobs` in `workers` processes (1: in this one) with a progress bar.

    Workers are spawned with one BLAS thread each (the matrix products here are small, and
    OpenBLAS's thread pool made them several times slower on two cores) and start with
    `_init_worker`.
    """
    workers = min(int(workers or _cpu_count()), max(1, len(jobs)))
    with tqdm(total=len(jobs), desc="synth", unit="img", disable=not progress) as bar:
        if workers == 1:
            with _one_blas_thread():
                for job in jobs:
                    _write_one(job)
                    bar.update()
            return
        saved = {name: os.environ.get(name) for name in _ONE_THREAD}
        os.environ.update(_ONE_THREAD)  # read by each child's BLAS as it starts
        try:
            pool = multiprocessing.get_context("spawn").Pool(workers, initializer=_init_worker)
        finally:
            for name, value in saved.items():
                if value is None:
                    os.environ.pop(name, None)
                else:
                    os.environ[name] = value
        with pool:
            chunk = max(1, min(16, len(jobs) // (workers * 8)))
            for _ in pool.imap_unordered(_write_one, jobs, chunksize=chunk):
                bar.update()


def _cpu_count() -> int:
    """Cores this process may use (fewer than `os.cpu_count()` under a CPU affinity mask)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def _init_worker() -> None:
    """Keep freed memory in the worker's heap (glibc only; elsewhere a no-op).

    Each image allocates and frees a few MB of temporaries; glibc's default gives them back
    to the system after every image and faults them in again, which cost a third of the time.
    """
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.mallopt(-3, 32 << 20)  # M_MMAP_THRESHOLD: heap, not mmap, below 32 MB
        libc.mallopt(-1, 256 << 20)  # M_TRIM_THRESHOLD: keep up to 256 MB free in the heap
    except (OSError, AttributeError):
        pass


@contextlib.contextmanager
def _one_blas_thread() -> Iterator[None]:
    """Limit BLAS to one thread in this process if threadpoolctl is installed (it is optional)."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        yield
        return
    with threadpool_limits(limits=1, user_api="blas"):
        yield
