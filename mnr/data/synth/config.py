"""How the built-in dataset is rendered: one frozen settings object, validated on creation."""

from __future__ import annotations

from dataclasses import dataclass

from mnr.errors import MnrError

__all__ = ["DEFAULT_CONFIG", "SynthConfig"]

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
