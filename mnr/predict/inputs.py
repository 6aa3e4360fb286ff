"""Input coercion: whatever a caller or a served request holds, as uint8 pixels.

Two steps, kept apart because MLflow and JSON wrap images in several containers: `as_items`
unwraps a DataFrame column ``image``, a Series, a dict, a list or an array into the individual
images, in order; `to_pixels` turns one of them (a path, PNG bytes, a base64 string or data URL,
a nested list or a uint8 array) into 3 x H x W uint8. Whatever needs decoding or resizing goes
through `decode_png` (an array is encoded to PNG first), so an input is resized by the very same
code as a file read at training time. ``allow_paths=False`` (a served request) refuses file
paths: a client must not make the server open files.
"""

from __future__ import annotations

import base64
import binascii
import os
from functools import partial
from typing import Any

import numpy as np

from mnr.data.images import channels_last, decode_png
from mnr.data.layout import FigureLayout, full_bleed
from mnr.errors import MnrError

__all__ = ["IMAGE_COLUMN", "as_items", "to_pixels"]

IMAGE_COLUMN = "image"  # the input column of the pyfunc and of a served request


def as_items(inputs: Any) -> list[Any]:
    """The individual images of any accepted input container, in order."""
    import pandas as pd

    if isinstance(inputs, pd.DataFrame):
        if IMAGE_COLUMN in inputs.columns:
            return _cells(inputs[IMAGE_COLUMN])
        if len(inputs.columns) == 1:
            return _cells(inputs.iloc[:, 0])
        raise MnrError(
            f"expected a column named {IMAGE_COLUMN!r}, got columns {list(inputs.columns)}"
        )
    if isinstance(inputs, pd.Series):
        return _cells(inputs)
    if isinstance(inputs, dict):
        if IMAGE_COLUMN not in inputs:
            raise MnrError(f"expected the key {IMAGE_COLUMN!r}, got keys {sorted(inputs)}")
        return as_items(inputs[IMAGE_COLUMN])
    if isinstance(inputs, (str, bytes, bytearray, memoryview, os.PathLike)):
        return [inputs]
    if isinstance(inputs, np.ndarray):
        if inputs.dtype == object or inputs.dtype.kind in "SU":
            return list(inputs.ravel())
        if inputs.ndim in (2, 3):
            return [inputs]  # one image
        if inputs.ndim == 4:
            return list(inputs)  # a stack of images
        raise MnrError(
            f"an image array must be H x W, H x W x C or N x H x W x C; got shape {inputs.shape}"
        )
    if isinstance(inputs, (list, tuple)):
        return list(inputs)
    raise MnrError(
        f"cannot read images from a {type(inputs).__name__}: pass a DataFrame column {IMAGE_COLUMN!r}, "
        "a list, or an array of paths, PNG bytes, base64 strings or uint8 arrays"
    )


def _cells(column: Any) -> list[Any]:
    """A column's images. MLflow turns ``{"image": [a, b]}`` into one row holding the list
    [a, b]; a cell that is a list of paths, bytes or strings is therefore expanded in place."""
    items: list[Any] = []
    for cell in column:
        if (
            isinstance(cell, (list, tuple))
            and cell
            and all(isinstance(v, (str, bytes, os.PathLike)) for v in cell)
        ):
            items.extend(cell)
        else:
            items.append(cell)
    return items


def to_pixels(
    item: Any, *, size: tuple[int, int], layout: FigureLayout | None, name: str, allow_paths: bool
) -> np.ndarray:
    """One input as C x H x W uint8, read with `layout` like every file mnr reads (`decode_png`)."""
    decode = partial(decode_png, size=size, layout=layout)
    if isinstance(item, (bytes, bytearray, memoryview)):
        return decode(bytes(item), name=name)
    if isinstance(item, (list, tuple)):  # nested lists of pixel values, e.g. from JSON
        try:
            array = np.asarray(item)
        except ValueError:  # ragged nesting
            array = np.zeros(0)
        if array.dtype.kind not in "iu" or array.size == 0 or array.min() < 0 or array.max() > 255:
            raise MnrError(f"{name}: a nested list must hold pixel values 0..255")
        item = array.astype(np.uint8)
    if isinstance(item, np.ndarray):
        rgb = _array_rgb(item, name=name)
        return (layout or full_bleed(rgb.shape[1], rgb.shape[0])).extract(rgb, size=size, name=name)
    if isinstance(item, os.PathLike):
        if not allow_paths:
            raise MnrError(f"{name}: file paths are not accepted here; send the PNG base64-encoded")
        return decode(item)
    if isinstance(item, str):
        text = item.strip()
        if text.startswith("data:") and "," in text:  # a data URL: data:image/png;base64,....
            text = text.split(",", 1)[1]
        raw = _b64_png(text)
        if raw is not None:
            return decode(raw, name=name)
        if not allow_paths:
            raise MnrError(f"{name}: not a base64-encoded PNG (file paths are not accepted here)")
        if not os.path.isfile(text):
            raise MnrError(f"{text}: no such file, and not a base64-encoded PNG either")
        return decode(text)
    raise MnrError(
        f"{name}: a {type(item).__name__} is not an image; give a path, PNG bytes, a base64 string or a uint8 array"
    )


def _b64_png(text: str) -> bytes | None:
    """The PNG bytes a base64 string encodes, or None when it is not one (say, a path)."""
    if len(text) < 12 or not text.startswith("iVBOR"):  # "iVBOR" is base64 of the PNG signature
        return None
    text = "".join(text.split())  # `base64` wraps lines at 76 characters unless told -w0
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        return None


def _array_rgb(array: np.ndarray, *, name: str) -> np.ndarray:
    """A uint8 H x W (gray), H x W x 3 or 4, or C x H x W array as H x W x 3, as a PNG of it
    would decode (gray expanded, alpha dropped)."""
    array = channels_last(array, name=name)
    if array.ndim not in (2, 3) or (array.ndim == 3 and array.shape[-1] not in (3, 4)):
        raise MnrError(f"{name}: expected H x W x 3 or 3 x H x W uint8, got shape {array.shape}")
    if array.ndim == 2:
        return np.repeat(array[:, :, None], 3, axis=2)
    return np.ascontiguousarray(array[:, :, :3])
