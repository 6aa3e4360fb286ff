"""Drawbar (tonewheel) organ physics: a steady tone from a few tempered harmonics, no decay.

An organ is the opposite of a piano in time: the tone does not decay while the key is held and
stops at once when it is let go. Its spectrum is the registration the player pulled out:

- drawbars 8' (the fundamental), 4', 2 2/3', 2', 1 3/5', 1 1/3' and 1', each at a level 0-8
  (3 dB a step); the 8' is always out, at least two others too. The tonewheels are tuned to the
  tempered scale, so the "third harmonic" (2 2/3') is 19 semitones up, 2.997 f0, and 1 3/5' is
  5.04 f0, not 5;
- sometimes percussion: the second or third harmonic struck and decaying within a second;
- a key click at the start, a few ms of attack, sometimes a rotating speaker's tremolo
  (chorale ~0.8 Hz or fast ~6.5 Hz).

The sub-octave drawbars (16', 5 1/3') are left out: they sound below the key's own pitch, so a
note would carry another key's fundamental.
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

__all__ = ["DRAWBAR_SEMITONES", "play"]

DRAWBAR_SEMITONES = (0, 12, 19, 24, 28, 31, 36)  # 8', 4', 2 2/3', 2', 1 3/5', 1 1/3', 1'


def play(midi: int, *, rng: np.random.Generator, config: SynthConfig) -> tuple[np.ndarray, float]:
    """One organ note (MIDI 21..108), dry: the clip's samples and the expression pedal's level."""
    midi = check_key(midi)
    sr, n = config.sample_rate, config.num_samples
    velocity = rng.uniform(0.5, 1.0)  # no touch dynamics: the swell pedal
    f0 = equal_tempered(midi, mistuning(rng, sd=2.0, limit=6.0))

    levels = np.zeros(len(DRAWBAR_SEMITONES))
    levels[0] = rng.integers(4, 9)
    others = rng.permutation(np.arange(1, len(DRAWBAR_SEMITONES)))
    pulled = int(rng.integers(2, len(DRAWBAR_SEMITONES)))
    levels[others[:pulled]] = rng.integers(1, 9, size=pulled)
    freqs = f0 * 2.0 ** (np.array(DRAWBAR_SEMITONES) / 12.0)
    amps = np.where(levels > 0, 10.0 ** (3.0 * (levels - 8.0) / 20.0), 0.0)
    alpha = np.full(freqs.size, rng.uniform(0.0, 0.3))  # steady, but for the room's slow fade
    if rng.random() < 0.3:  # percussion on the 4' or 2 2/3' harmonic
        which = int(rng.integers(1, 3))
        amps[which] += 10.0 ** (-rng.uniform(0.0, 6.0) / 20.0)
        alpha[which] += 6.91 / rng.uniform(0.3, 1.2)
    keep = (amps > 0) & (freqs < 0.45 * sr)
    freqs, amps, alpha = freqs[keep], amps[keep], alpha[keep]
    phases = np.exp(1j * rng.uniform(0.0, 2 * np.pi, size=freqs.size))

    onset = draw_onset(rng, sample_rate=sr)
    length = n - onset
    note = damped_sum(-alpha / sr + 2j * np.pi * freqs / sr, amps * phases, length)
    apply_attack(note, tau=rng.uniform(2.0, 10.0) / 1000.0, sample_rate=sr)
    if rng.random() < 0.7:  # key click: the contacts closing
        click_len = min(length, int(0.003 * sr))
        click = rng.standard_normal(click_len) * np.exp(-np.arange(click_len) / (0.0008 * sr))
        note[:click_len] += click * amps.max() * 10 ** (-rng.uniform(6.0, 20.0) / 20.0)
    if rng.random() < 0.5:  # rotating speaker
        rate = rng.uniform(0.6, 1.0) if rng.random() < 0.5 else rng.uniform(5.5, 7.0)
        t = np.arange(length) / sr
        depth = rng.uniform(0.1, 0.4)
        note *= 1.0 - depth * (0.5 + 0.5 * np.sin(2 * np.pi * rate * t + rng.uniform(0, 2 * np.pi)))
    apply_damper(note, off=rng.uniform(0.35, 1.3), tau=rng.uniform(0.005, 0.03), sample_rate=sr)
    return place(note, onset=onset, num_samples=n), velocity
