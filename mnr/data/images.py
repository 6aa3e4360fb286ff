"""Decode one PNG into the uint8 array a model sees; write PNGs.

Every path that turns a file into pixels goes through `decode_png`: the cache builder, `mnr data
check`, prediction and the served model. That is what guarantees that prediction applies exactly
the preprocessing used in training. What is taken from the image (the plot box, a value channel
read back through the colormap, the resize) is the figure layout's (`mnr.data.layout`).

Any PNG mode is read as 3-channel uint8 first: the alpha channel is dropped (not composited:
the renders are opaque), grayscale and palette images are expanded, and 16-bit samples are
scaled to 8 bits. Files are checked before they are decoded: empty, not a PNG, a header that
claims absurd dimensions (a decompression bomb) or too many bytes are refused by name.
"""

from __future__ import annotations

import io
import os
import struct
import warnings
import zlib
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image

from mnr.errors import MnrError

if TYPE_CHECKING:
    from mnr.data.layout import FigureLayout

__all__ = [
    "MAX_FILE_BYTES",
    "MAX_PIXELS",
    "ImageInfo",
    "channels_last",
    "decode_png",
    "read_rgb",
    "load_png",
    "png_bytes",
    "to_rgb_array",
]

MAX_PIXELS = 40_000_000  # ~6300 x 6300: far beyond any spectrogram render; larger is a bomb
MAX_FILE_BYTES = 64 * 1024 * 1024  # a 520 x 394 PNG is ~100-400 kB
_PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@dataclass(frozen=True)
class ImageInfo:
    """What `mnr data check` reports about one image: its size (W x H) and PNG mode."""

    width: int
    height: int
    mode: str


def _open_checked(source: str | os.PathLike | bytes, name: str) -> Image.Image:
    """Open a PNG lazily after the cheap checks that protect memory and the reader.

    The header is read first and the pixel count checked before any decoding, so a file that
    claims enormous dimensions (a decompression bomb) is refused without allocating its buffer.
    """
    if isinstance(source, bytes):
        head, size = source[:24], len(source)
        stream: io.BytesIO | str | os.PathLike = io.BytesIO(source)
    else:
        try:
            size = os.path.getsize(source)
            with open(source, "rb") as fh:
                head = fh.read(24)
        except OSError as exc:
            raise MnrError(f"{name}: cannot read the file ({exc.strerror or exc})") from None
        stream = source
    if size == 0:
        raise MnrError(f"{name}: the file is empty (0 bytes); re-copy or delete it")
    if size > MAX_FILE_BYTES:
        raise MnrError(f"{name}: {size / 1e6:.0f} MB is too large for a spectrogram PNG")
    if head[:8] != _PNG_MAGIC:
        raise MnrError(f"{name}: not a PNG file (wrong signature); convert it or remove it")
    if head[12:16] == b"IHDR" and len(head) >= 24:  # the first chunk of every PNG: its claimed size
        claimed_width, claimed_height = struct.unpack(">II", head[16:24])
        if claimed_width * claimed_height > MAX_PIXELS:
            raise MnrError(
                f"{name}: image claims {claimed_width} x {claimed_height} pixels, more than the "
                f"{MAX_PIXELS:,} allowed (absurdly large: a decompression bomb or not a spectrogram)"
            )
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(stream, formats=["PNG"])
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise MnrError(
            f"{name}: image dimensions are absurdly large (decompression bomb)"
        ) from None
    except Exception as exc:  # Pillow raises many types for a broken header
        raise MnrError(f"{name}: not a readable PNG ({exc})") from None
    width, height = image.size
    if width * height > MAX_PIXELS or width < 1 or height < 1:
        image.close()
        raise MnrError(
            f"{name}: image claims {width} x {height} pixels, more than the {MAX_PIXELS:,} "
            "allowed (a decompression bomb or not a spectrogram)"
        )
    return image


def _load(image: Image.Image, name: str) -> None:
    try:
        image.load()
    except Exception as exc:  # truncated data, bad CRC, broken zlib stream
        raise MnrError(f"{name}: the PNG is truncated or corrupt ({exc})") from None


def to_rgb_array(image: Image.Image) -> np.ndarray:
    """Any Pillow image as an H x W x 3 uint8 array (alpha dropped, 16 bits scaled to 8)."""
    mode = image.mode
    if mode in ("RGB",):
        return np.asarray(image, dtype=np.uint8)
    if mode.startswith("I") or mode == "F":
        # 16-bit (I;16*) or 32-bit integer grayscale: scale the sample range to 0..255.
        array = np.asarray(image, dtype=np.float64)
        top = 65535.0 if mode.startswith("I;16") or array.max(initial=0) > 255 else 255.0
        gray = np.clip(np.rint(array * (255.0 / top)), 0, 255).astype(np.uint8)
        return np.repeat(gray[:, :, None], 3, axis=2)
    if mode == "RGBA":
        return np.ascontiguousarray(np.asarray(image, dtype=np.uint8)[:, :, :3])
    return np.asarray(image.convert("RGB"), dtype=np.uint8)


def load_png(
    source: str | os.PathLike | bytes, *, name: str | None = None
) -> tuple[np.ndarray, str]:
    """Decode a PNG file or PNG bytes fully: an H x W x 3 uint8 array at its own size, and the
    file's PNG mode (what `mnr data check` reports).

    Raises `MnrError` naming the file for anything that is not a readable, reasonably sized PNG.
    """
    name = name or ("<bytes>" if isinstance(source, bytes) else str(source))
    with _open_checked(source, name) as image:
        _load(image, name)
        return to_rgb_array(image), image.mode


def read_rgb(source: str | os.PathLike | bytes, *, name: str | None = None) -> np.ndarray:
    """`load_png`'s pixels alone."""
    return load_png(source, name=name)[0]


def decode_png(
    source: str | os.PathLike | bytes,
    *,
    size: tuple[int, int] | None,
    layout: FigureLayout | None = None,
    name: str | None = None,
) -> np.ndarray:
    """Decode a PNG into the C x H x W uint8 array a model sees, at `size` = (H, W).

    `layout` says where the plot is and what the model reads of it (`FigureLayout.extract`: the
    plot box cropped, one value channel read back through its colormap or the RGB colours, one
    mel band per row); None means the whole image as RGB, the layout of a full-bleed render.
    `size=None` keeps the plot's own size. An image that does not fit the layout is an
    `MnrError` naming the file and the layout.
    """
    from mnr.data.layout import full_bleed

    name = name or ("<bytes>" if isinstance(source, bytes) else str(source))
    rgb = read_rgb(source, name=name)
    layout = layout or full_bleed(rgb.shape[1], rgb.shape[0])
    return layout.extract(rgb, size=size or layout.plot_size, name=name)


def channels_last(array: np.ndarray, *, name: str) -> np.ndarray:
    """A uint8 image array as H x W (gray) or H x W x C: C x H x W is transposed, a single
    channel dropped. Raises `MnrError` naming `name` for another dtype; the shape is checked by
    the caller, which knows what it accepts."""
    array = np.asarray(array)
    if array.dtype != np.uint8:
        raise MnrError(f"{name}: image arrays must be uint8 (0..255), got {array.dtype}")
    if array.ndim == 3 and array.shape[0] in (1, 3, 4) and array.shape[-1] not in (1, 3, 4):
        array = array.transpose(1, 2, 0)  # C x H x W -> H x W x C
    if array.ndim == 3 and array.shape[-1] == 1:
        array = array[:, :, 0]
    return array


def png_bytes(array: np.ndarray, *, compress_level: int = 1) -> bytes:
    """Encode a uint8 image as PNG: H x W (gray), H x W x 3 or 4, or 3 x H x W / 4 x H x W.

    The one PNG writer of mnr (the built-in dataset, test images, request payloads). Written here
    rather than with Pillow to pick each row's filter for what a spectrogram render is: a row
    that repeats the one above gets "Up" (all zeros), any other row "Sub" (each byte minus the
    one a pixel to its left, mostly zeros since a pixel repeats across several columns). At zlib
    level 1 that takes 3.6 ms for a 520 x 394 RGBA render where Pillow takes 8.4 ms, for a file
    of about the same size. Any PNG reader decodes it.
    """
    array = channels_last(array, name="png_bytes")
    if array.ndim == 2:
        array = array[:, :, None]
    if array.ndim != 3 or array.shape[-1] not in (1, 3, 4) or 0 in array.shape:
        raise MnrError(
            f"png_bytes: expected H x W, H x W x 3 or H x W x 4, got shape {array.shape}"
        )
    image = np.ascontiguousarray(array)
    height, width, channels = image.shape
    rows = image.reshape(height, width * channels)
    raw = np.empty((height, width * channels + 1), dtype=np.uint8)
    raw[:, 0] = 1  # filter type Sub
    raw[:, 1 : 1 + channels] = rows[:, :channels]
    # mod 256, as PNG wants
    np.subtract(rows[:, channels:], rows[:, :-channels], out=raw[:, 1 + channels :])
    repeats = np.zeros(height, dtype=bool)
    repeats[1:] = (rows[1:] == rows[:-1]).all(axis=1)
    raw[repeats, 0] = 2  # filter type Up: the difference to the row above, here all zeros
    raw[repeats, 1:] = 0

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        )

    colour_type = {1: 0, 3: 2, 4: 6}[channels]  # gray, RGB, RGBA
    header = struct.pack(">IIBBBBB", width, height, 8, colour_type, 0, 0, 0)  # 8 bits, no interlace
    return b"".join(
        (
            _PNG_MAGIC,
            chunk(b"IHDR", header),
            chunk(b"IDAT", zlib.compress(raw.tobytes(), compress_level)),
            chunk(b"IEND", b""),
        )
    )
