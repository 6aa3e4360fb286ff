"""Acoustic piano physics: one note as its strings and soundboard would sound it.

A fresh machine has no Kaggle data, yet every command (train, tune, the tests) needs a labelled
set. mnr synthesises one from piano physics, so that a model trained on it has seen the
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
  the note after a random hold (keys above E6 have no damper and ring on).

The room it is recorded in is `mnr.data.synth.sound.record`, shared by every instrument.
"""

from __future__ import annotations

import math

import numpy as np

from mnr.data.synth.config import SynthConfig
from mnr.data.synth.sound import (
    apply_attack,
    apply_damper,
    check_key,
    damped_sum,
    draw_onset,
    equal_tempered,
    mistuning,
    place,
)

__all__ = ["inharmonicity", "play"]


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


def play(midi: int, *, rng: np.random.Generator, config: SynthConfig) -> tuple[np.ndarray, float]:
    """One acoustic piano note (MIDI 21..108), dry: the clip's samples and the key's velocity.

    Every random choice (loudness, onset, hold, detuning, strike point, brightness, decay)
    comes from `rng`, so the same generator state gives the same audio.
    """
    midi = check_key(midi)
    sr, n = config.sample_rate, config.num_samples
    nyquist = sr / 2.0

    velocity = rng.uniform(0.15, 1.0)  # 0 silent .. 1 fortissimo
    cents = _stretch_cents(midi) * rng.uniform(0.5, 1.5) + mistuning(rng, sd=3.0, limit=8.0)
    f0 = equal_tempered(midi, cents)
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

    onset = draw_onset(rng, sample_rate=sr)
    length = n - onset
    note = damped_sum(np.concatenate(rate_parts), np.concatenate(amp_parts), length)

    # Attack: 1-3 ms rise (faster when loud), then the hammer's knock, a burst of noise.
    tau_attack = rng.uniform(1.0, 3.0) / 1000.0 * (1.3 - 0.6 * velocity)
    apply_attack(note, tau=tau_attack, sample_rate=sr)
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
        off = rng.uniform(0.35, 1.3)
        tau_damp = rng.uniform(0.02, 0.06) * (1.0 + (_HIGHEST_DAMPED - midi) / 40.0)
        apply_damper(note, off=off, tau=tau_damp, sample_rate=sr)
    return place(note, onset=onset, num_samples=n), velocity
