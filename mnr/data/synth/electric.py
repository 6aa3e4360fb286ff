"""Electric piano physics (tine and reed instruments): few partials, a bell, a strong or weak bass.

A tine or reed electric piano (General MIDI's "Electric Piano 1/2") sounds nothing like an
acoustic piano in the bass, and that is where a model trained on one piano fails. What it has:

- a hammer strikes a tine (a stiff rod, "Rhodes") or a reed ("Wurlitzer"); its motion is nearly
  a sine, and the pickup's mild nonlinearity adds a few harmonics: 3 to 8 partials (4 to 10
  below C3, where the bar swings widest), exactly harmonic, falling 0-24 dB per octave (brighter
  when struck harder, and in the bass); a reed's even harmonics are weaker than its odd ones;
- the fundamental is strong, or weak (a pickup set off-centre, or a small cabinet's speaker that
  cannot move air below ~100 Hz): in the bass the key is then told only by a few weak partials;
- the bar's second bending mode, ~6.3 times the fundamental and inharmonic, rings for a few tens
  of milliseconds: the bell of the attack;
- a long, smooth decay (higher harmonics die first), sometimes the amplifier's tremolo, a felt
  damper that stops the note after a random hold.
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
    """One electric piano note (MIDI 21..108), dry: the clip's samples and the key's velocity."""
    midi = check_key(midi)
    sr, n = config.sample_rate, config.num_samples
    velocity = rng.uniform(0.15, 1.0)
    reed = rng.random() < 0.4
    f0 = equal_tempered(midi, mistuning(rng, sd=4.0, limit=10.0))

    # The pickup's harmonics: a bass tine swings widest through the pickup's field, so the bass
    # has more of them and a shallower slope (the "bark") than the treble.
    bass = midi < 48
    count = int(rng.integers(4, 11) if bass else rng.integers(3, 9))
    order = np.arange(1, count + 1, dtype=np.float64)
    freqs = order * f0
    register = 8.0 * (midi - 21) / 87.0 - 4.0  # -4 dB/octave at A0 .. +4 at C8
    slope = rng.uniform(6.0, 18.0) - 6.0 * (velocity - 0.5) + register  # harder = brighter
    level_db = -slope * np.log2(order) + rng.normal(0.0, 2.0, size=count)
    if reed:
        level_db[1::2] -= rng.uniform(4.0, 12.0)  # even harmonics weaker than odd ones
    if rng.random() < 0.5:  # weak fundamental: off-centre pickup or a small speaker
        level_db[0] -= rng.uniform(8.0, 24.0)
    if rng.random() < 0.5:  # the cabinet's speaker: a high-pass near 60-150 Hz
        fc = rng.uniform(60.0, 150.0)
        level_db += 20.0 * np.log10((freqs / fc) ** 2 / (1.0 + (freqs / fc) ** 2))
    amps = 10.0 ** (level_db / 20.0)

    # Decay: T60 from ~8 s in the bass to under a second at the top; harmonics die faster.
    t60 = 8.0 * 2.0 ** (-(midi - 21) / 24.0) * rng.uniform(0.6, 1.4)
    alpha = 6.91 / t60 * (1.0 + rng.uniform(0.3, 1.0) * (order - 1.0))

    # The bell: the bar's second mode, inharmonic, loud at once and gone in tens of ms.
    bell_ratio = rng.uniform(5.8, 7.2)
    bell = [bell_ratio * f0] if bell_ratio * f0 < 0.45 * sr else []
    bell_level = amps.max() * 10 ** (-rng.uniform(8.0, 26.0) / 20.0) * (0.3 + velocity)
    bell_alpha = 1.0 / rng.uniform(0.015, 0.12)

    keep = freqs < 0.45 * sr
    freqs, amps, alpha = freqs[keep], amps[keep], alpha[keep]
    all_freqs = np.concatenate([freqs, bell])
    all_amps = np.concatenate([amps, [bell_level] * len(bell)])
    all_alpha = np.concatenate([alpha, [bell_alpha] * len(bell)])
    phases = np.exp(1j * rng.uniform(0.0, 2 * np.pi, size=all_freqs.size))
    rates = -all_alpha / sr + 2j * np.pi * all_freqs / sr

    onset = draw_onset(rng, sample_rate=sr)
    length = n - onset
    note = damped_sum(rates, all_amps * phases, length)
    apply_attack(note, tau=rng.uniform(0.5, 3.0) / 1000.0 * (1.3 - 0.6 * velocity), sample_rate=sr)
    if rng.random() < 0.35:  # the amplifier's tremolo
        t = np.arange(length) / sr
        depth = rng.uniform(0.1, 0.5)
        note *= 1.0 - depth * (0.5 + 0.5 * np.sin(2 * np.pi * rng.uniform(3.0, 7.0) * t))
    apply_damper(note, off=rng.uniform(0.35, 1.3), tau=rng.uniform(0.01, 0.05), sample_rate=sr)
    return place(note, onset=onset, num_samples=n), velocity
