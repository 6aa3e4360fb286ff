"""The instrument families the generator plays, and `render_note`: one of them, in a room.

A model chosen on one synthetic piano learns that piano's timbre, and real data is played on
others: figures of sampled electric pianos, whose bass has a few weak partials, are where every
shipped model made its mistakes (issue 19). So the built-in set mixes families that differ most
where the keys are hardest to tell apart, in the bass:

=============  ===================================  ========================================
family         partials                             in time
=============  ===================================  ========================================
piano          many, stretched; weak bass           hammer knock, double decay
               fundamental (soundboard)
epiano         3-8 harmonics; strong or weak        bell-like attack, long smooth decay,
               fundamental                          sometimes tremolo
harpsichord    many, bright, nearly harmonic        instant pluck with a click, darkens
organ          a few tempered drawbar harmonics     steady while held, stops at once
=============  ===================================  ========================================

Each family is a module with a ``play(midi, *, rng, config) -> (dry clip, velocity)``; the room
(`mnr.data.synth.sound.record`) is the same for all.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from mnr.data.synth import electric, organ, piano, plucked
from mnr.data.synth.config import (
    DEFAULT_CONFIG,
    INSTRUMENT_NAMES,
    SynthConfig,
    check_instruments,
)
from mnr.data.synth.sound import record

__all__ = ["INSTRUMENTS", "render_note"]

# family name -> its player; the order is the order in which the built-in set deals them out
INSTRUMENTS: dict[str, Callable[..., tuple[np.ndarray, float]]] = {
    "piano": piano.play,
    "epiano": electric.play,
    "harpsichord": plucked.play,
    "organ": organ.play,
}
assert tuple(INSTRUMENTS) == INSTRUMENT_NAMES  # config.py names them without importing players


def render_note(
    midi: int,
    *,
    rng: np.random.Generator,
    config: SynthConfig = DEFAULT_CONFIG,
    instrument: str = "piano",
) -> np.ndarray:
    """One note (MIDI 21..108) of `instrument` as recorded in a room: float32, peak 0.9.

    Every random choice (the player's and the room's) comes from `rng`, so the same generator
    state gives the same audio.
    """
    (instrument,) = check_instruments([instrument])
    dry, velocity = INSTRUMENTS[instrument](midi, rng=rng, config=config)
    return record(dry, velocity=velocity, rng=rng, config=config)
