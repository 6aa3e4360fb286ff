"""Images/s for PNG decode versus loading from the decode-once cache, on the built-in dataset.

    python3 benchmarks/decode_speed.py [--size 128 32] [--workers N]

Writes benchmarks/results/decode_speed.json and the README's "decode" table. The decode figures
include the resize to the input size; "cache load" is one read of the cached uint8 array plus
its checksum verification (what every later training run and tuning trial pays instead).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path

from mnr.config import DEFAULT_INPUT_SIZE
from mnr.data import builtin_dataset, load_images, scan_folder

RESULTS = Path(__file__).resolve().parent / "results"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", nargs=2, type=int, default=DEFAULT_INPUT_SIZE, metavar=("H", "W"))
    parser.add_argument("--workers", type=int, default=os.cpu_count())
    args = parser.parse_args()
    size = tuple(args.size)
    image_set = scan_folder(builtin_dataset() / "train")
    count = len(image_set)
    rows = {}
    with tempfile.TemporaryDirectory() as cache:
        for label, workers in (
            ("decode, 1 process", 1),
            (f"decode, {args.workers} processes", args.workers),
        ):
            started = time.perf_counter()
            load_images(image_set, size=size, use_cache=False, workers=workers, progress=False)
            rows[label] = count / (time.perf_counter() - started)
        # build
        load_images(image_set, size=size, cache_dir=cache, workers=args.workers, progress=False)
        times = []
        for _ in range(3):
            started = time.perf_counter()
            hit = load_images(image_set, size=size, cache_dir=cache, progress=False)
            times.append(time.perf_counter() - started)
            assert hit.from_cache
        rows["cache load (best of 3)"] = count / min(times)
    result = {
        "images": count,
        "input_size": list(size),
        "cpu_count": os.cpu_count(),
        "machine": platform.processor() or platform.machine(),
        "images_per_second": {k: round(v, 1) for k, v in rows.items()},
        "cache_speedup_vs_parallel_decode": round(
            rows["cache load (best of 3)"] / rows[f"decode, {args.workers} processes"], 1
        ),
    }
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "decode_speed.json").write_text(json.dumps(result, indent=2) + "\n")
    table = [
        f"Decode-once cache, measured by `python3 benchmarks/decode_speed.py` ({os.cpu_count()} cores, load "
        f"average {os.getloadavg()[0]:.1f} at the end):",
        "",
        f"| path ({count} PNGs, {size[0]}x{size[1]}) | images/s |",
        "| --- | ---: |",
        *(f"| {label} | {value:,.0f} |" for label, value in rows.items()),
    ]
    print("\n".join(table))
    from readme import write_section

    write_section("decode", "\n".join(table))


if __name__ == "__main__":
    main()
