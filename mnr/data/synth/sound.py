"""What every instrument shares: summing decaying partials, the attack, the damper, and the room.

An instrument module (`piano`, `electric`, `plucked`, `organ`) decides *what* sounds: partial
frequencies, strengths and decay rates, how the note starts and stops. Turning those into samples
and putting the dry note in a room are the same physics for all of them, so they live here once.
"""

from __future__ import annotations

import math

import numpy as np

from mnr.data.synth.config import SynthConfig
from mnr.errors import MnrError
from mnr.labels import MIDI_OFFSET, NUM_KEYS

__all__ = [
    "apply_attack",
    "apply_damper",
    "check_key",
    "damped_sum",
    "draw_onset",
    "equal_tempered",
    "fast_length",
    "mistuning",
    "place",
    "record",
]


def check_key(midi: int) -> int:
    """`midi` as an int, or an `MnrError` if it is not one of the 88 keys."""
    if not MIDI_OFFSET <= int(midi) < MIDI_OFFSET + NUM_KEYS:
        raise MnrError(f"MIDI {midi} is not a piano key: use 21 (A0) .. 108 (C8)")
    return int(midi)


def equal_tempered(midi: float, cents: float = 0.0) -> float:
    """Frequency in Hz of `midi` (A4 = 69 = 440 Hz), `cents` sharp."""
    return 440.0 * 2.0 ** ((midi - 69) / 12.0 + cents / 1200.0)


def damped_sum(rates: np.ndarray, amplitudes: np.ndarray, n: int) -> np.ndarray:
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


def mistuning(rng: np.random.Generator, *, sd: float, limit: float) -> float:
    """A player's instrument out of tune by a few cents: normal with `sd`, cut at +-`limit`."""
    return float(np.clip(rng.normal(0.0, sd), -limit, limit))


def draw_onset(rng: np.random.Generator, *, sample_rate: int) -> int:
    """The sample at which a note starts in its clip: 20-200 ms in, as a recording is cut."""
    return int(rng.uniform(0.02, 0.2) * sample_rate)


def apply_attack(note: np.ndarray, *, tau: float, sample_rate: int) -> None:
    """Raise the note's start from silence with time constant `tau` seconds, in place."""
    ramp_len = min(note.size, int(10 * tau * sample_rate) + 1)
    note[:ramp_len] *= 1.0 - np.exp(-np.arange(ramp_len) / (tau * sample_rate))


def apply_damper(note: np.ndarray, *, off: float, tau: float, sample_rate: int) -> None:
    """Stop the note `off` seconds after it starts, dying away with time constant `tau`, in place."""
    start = int(off * sample_rate)
    if start < note.size:
        note[start:] *= np.exp(-np.arange(note.size - start) / (tau * sample_rate))


def place(note: np.ndarray, *, onset: int, num_samples: int) -> np.ndarray:
    """The clip of `num_samples` samples with `note` starting at sample `onset` (cut to fit)."""
    audio = np.zeros(num_samples)
    length = min(note.size, num_samples - onset)
    audio[onset : onset + length] = note[:length]
    return audio


def record(
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
    size = fast_length(n + (int((config.rt60[1] + 0.03) * sr) if reverb else 0))
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


def fast_length(n: int) -> int:
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
