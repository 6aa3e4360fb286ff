"""How the built-in dataset is rendered: one frozen settings object, validated on creation."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from mnr.errors import MnrError

__all__ = [
    "DEFAULT_CONFIG",
    "INSTRUMENT_NAMES",
    "LIBROSA_DEFAULTS",
    "STYLES",
    "SynthConfig",
    "check_instruments",
]

# The instrument families (`mnr.data.synth.instruments` plays them), in the order the built-in
# set deals them out.
INSTRUMENT_NAMES = ("piano", "epiano", "harpsichord", "organ")
STYLES = ("full", "specshow", "imshow")  # how a spectrogram is drawn; see `SynthConfig.for_style`
# librosa's defaults and the mel example of its docs: melspectrogram(y, sr=22050, n_fft=2048,
# hop_length=512, n_mels=128, fmax=8000), Slaney's mel from 0 Hz. A wider, coarser spectrogram
# than the built-in one: its lowest bands are 23 Hz apart and its window is half as long.
LIBROSA_DEFAULTS = {"fmin": 0.0, "fmax": 8000.0, "htk": False, "n_fft": 2048, "hop_length": 512}


def check_instruments(names: tuple[str, ...] | list[str]) -> tuple[str, ...]:
    """`names` as a tuple without repeats, or an `MnrError` naming an unknown family."""
    unknown = [name for name in names if name not in INSTRUMENT_NAMES]
    if unknown or not names:
        raise MnrError(
            f"instrument(s) {', '.join(unknown) or '(none)'} unknown: use one or more of "
            f"{', '.join(INSTRUMENT_NAMES)}"
        )
    return tuple(dict.fromkeys(names))


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
      style: how the spectrogram is drawn (`mnr.data.synth.drawing`): "full", the whole image
        is the plot (the built-in set); "specshow", a figure as `librosa.display.specshow`
        draws it, with axes, Hz ticks on a mel axis and a dB colorbar; "imshow", a plain
        matplotlib `imshow` of the matrix with pixel-index axes and no colorbar.
        `for_style` gives each style its usual colormap.
      width, height: 520 x 394 RGBA, the Kaggle images' size.
      colormap: any matplotlib colormap; "magma" is librosa's default for dB data, "viridis"
        matplotlib's default.
      compress_level: PNG zlib level; 1 is about twice as fast to write as 6, files ~40% larger.

    Instruments:
      instruments: the families played (`mnr.data.synth.instruments`), dealt out in turn so
        that every key gets each family equally often (to within one image); the built-in set
        plays all four, so that a model is chosen on more than one timbre.

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
    style: str = "full"
    width: int = 520
    height: int = 394
    colormap: str = "magma"
    compress_level: int = 1
    instruments: tuple[str, ...] = INSTRUMENT_NAMES
    snr_db: tuple[float, float] = (20.0, 50.0)
    reverb_probability: float = 0.6
    rt60: tuple[float, float] = (0.2, 1.0)
    hum_probability: float = 0.15

    def __post_init__(self) -> None:
        if self.style not in STYLES:
            raise MnrError(f"style {self.style!r} unknown: use one of {', '.join(STYLES)}")
        from mnr.data.colormaps import lut

        lut(self.colormap)  # an unknown colormap fails here, naming some known ones
        object.__setattr__(self, "instruments", check_instruments(list(self.instruments)))
        if not 0 <= self.fmin < self.fmax <= self.sample_rate / 2:
            raise MnrError(
                f"need 0 <= fmin < fmax <= sample_rate/2, got fmin={self.fmin}, fmax={self.fmax}, "
                f"sample_rate={self.sample_rate}"
            )
        if self.n_fft < 16 or self.hop_length < 1 or self.n_mels < 1:
            raise MnrError("n_fft must be >= 16, hop_length and n_mels >= 1")
        if self.width < 1 or self.height < 1 or self.duration <= 0:
            raise MnrError("width, height and duration must be positive")

    @classmethod
    def for_style(cls, style: str, **overrides: Any) -> SynthConfig:
        """The built-in notes drawn in `style`, each in the colormap its users get by default.

        - "full": the built-in set (magma, the whole image).
        - "specshow": `librosa.display.specshow(S_db, x_axis="time", y_axis="mel")` in magma,
          librosa's default for dB data, with a `%+2.0f dB` colorbar.
        - "imshow": `plt.imshow(S_db, origin="lower", aspect="auto")` in viridis, matplotlib's
          default.

        The spectrogram itself (mel scale, range, FFT) is the built-in set's in every style, so
        that styles differ in how they draw, not in what they show; `overrides` (colormap, fmin,
        fmax, htk, n_fft, hop_length, ...) change it, e.g. to `LIBROSA_DEFAULTS`.
        """
        if style not in STYLES:
            raise MnrError(f"style {style!r} unknown: use one of {', '.join(STYLES)}")
        colormaps = {"full": "magma", "specshow": "magma", "imshow": "viridis"}
        unknown = set(overrides) - {f.name for f in dataclasses.fields(cls)}
        if unknown:
            raise MnrError(f"unknown synth settings {sorted(unknown)}")
        given = {k: v for k, v in overrides.items() if v is not None}
        return cls(**{"colormap": colormaps[style], "style": style, **given})

    @property
    def num_samples(self) -> int:
        """Samples in one clip."""
        return int(round(self.sample_rate * self.duration))


DEFAULT_CONFIG = SynthConfig()  # the built-in set's settings
