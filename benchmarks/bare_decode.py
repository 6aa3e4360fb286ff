"""The floor `mnr predict` is measured against: import torch, decode every PNG, make a tensor.

    python3 benchmarks/bare_decode.py FOLDER HEIGHT WIDTH

What the simplest one-process script does before it could run any model: Pillow opens each PNG,
drops alpha, resizes it to the model's input size, and the arrays are stacked into one tensor.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import torch
from PIL import Image


def main() -> None:
    folder, height, width = Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
    arrays = []
    for path in sorted(folder.glob("*.png")):
        with Image.open(path) as image:
            arrays.append(np.asarray(image.convert("RGB").resize((width, height))))
    tensor = torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2)
    print(tuple(tensor.shape))


if __name__ == "__main__":
    main()
