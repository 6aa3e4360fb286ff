"""Harpsichord physics: a plucked string, bright, with a quick start and a small soundboard.

A quill plucks the string near its end, so every harmonic sounds, the highest ones strongly (a
comb of notches from the pluck point, about 1/n above it); there is no hammer and no dynamics.
What sets it apart from the acoustic piano in the images:

- a thin string at low tension: inharmonicity B of 1e-5 to 2e-4, far below a piano's bass;
- an instantaneous start (0.2-0.8 ms) with a short bright click from the quill;
- one or two unison strings ("8 foot" choirs), a cent or two apart;
- a small soundboard that radiates the bass fundamentals weakly, and losses that grow with
  f^2, so the sound darkens as it decays; a damper stops it after a random hold.
"""

from __future__ import annotations

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

__all__ = ["play"]


def play(midi: int, *, rng: np.random.Generator, config: SynthConfig) -> tuple[np.ndarray, float]:
    """One harpsichord note (MIDI 21..108), dry: the clip's samples and a loudness in 0..1."""
    midi = check_key(midi)
    sr, n = config.sample_rate, config.num_samples
    velocity = rng.uniform(0.6, 1.0)  # no dynamics: only how close the microphone is
    f0 = equal_tempered(midi, mistuning(rng, sd=4.0, limit=10.0))
    b = 10.0 ** rng.uniform(-5.0, -3.7)

    order = np.arange(1, config.max_partials + 1, dtype=np.float64)
    freqs = order * f0 * np.sqrt(1.0 + b * order**2)
    keep = freqs < 0.45 * sr
    order, freqs = order[keep], freqs[keep]
    pluck = rng.uniform(0.07, 0.2)  # where the quill plucks, as a fraction of the string
    comb = 0.05 + np.abs(np.sin(np.pi * order * pluck))
    amps = comb / order ** rng.uniform(0.6, 1.2)
    knee = rng.uniform(2500.0, 6000.0)  # the quill and the case roll off the top
    amps *= 1.0 / (1.0 + (freqs / knee) ** 2)
    board_fc = rng.uniform(70.0, 130.0)
    amps *= (freqs / board_fc) ** 2 / (1.0 + (freqs / board_fc) ** 2)
    amps *= rng.lognormal(0.0, 0.25, size=freqs.size)

    t60 = 12.0 * 2.0 ** (-(midi - 21) / 20.0) * rng.uniform(0.6, 1.4)
    alpha = 6.91 / t60 + rng.uniform(0.3, 1.5) * (freqs / 1000.0) ** 2

    strings = 1 if rng.random() < 0.4 else 2
    rate_parts, amp_parts = [], []
    for detune_cents in rng.normal(0.0, 1.5, size=strings):
        phases = np.exp(1j * rng.uniform(0.0, 2 * np.pi, size=freqs.size))
        detuned = freqs * 2.0 ** (detune_cents / 1200.0)
        rate_parts.append(-alpha / sr + 2j * np.pi * detuned / sr)
        amp_parts.append(amps * phases / strings)

    onset = draw_onset(rng, sample_rate=sr)
    length = n - onset
    note = damped_sum(np.concatenate(rate_parts), np.concatenate(amp_parts), length)
    apply_attack(note, tau=rng.uniform(0.2, 0.8) / 1000.0, sample_rate=sr)
    click_len = min(length, int(0.006 * sr))
    click = rng.standard_normal(click_len) * np.exp(-np.arange(click_len) / (0.0015 * sr))
    peak = float(np.abs(note).max()) or 1.0
    note[:click_len] += click * peak * 10 ** (-rng.uniform(12.0, 24.0) / 20.0)
    apply_damper(note, off=rng.uniform(0.35, 1.3), tau=rng.uniform(0.03, 0.1), sample_rate=sr)
    return place(note, onset=onset, num_samples=n), velocity
