"""Section 4b: the input-size lever, time to 99 % at other input sizes with the same budget.

The candidates for the default input size, compared: the same model and config at each size,
each run a time-to-accuracy child with the same wall-time budget. The default size's own
row is the time-to-accuracy section's run of that config, when there is one.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from speed_harness import log, run_child

from speed_sections.time_to_accuracy import tta_line, tta_spec


def section_resolution(
    model: str,
    *,
    variant: str,
    sizes: Sequence[tuple[int, int]],
    base: dict[str, Any] | None,
    max_epochs: int,
    max_seconds: float,
) -> dict[str, Any]:
    """The same config at other input sizes, each with the same wall-time budget."""
    rows: dict[str, Any] = {}
    if base is not None and "input_size" in base:
        rows["x".join(map(str, base["input_size"]))] = base
    for height, width in sizes:
        log(
            f"input size lever: {model} {variant} at {height}x{width} (warm, or first build of that cache)"
        )
        spec = tta_spec(
            model,
            variant,
            max_epochs=max_epochs,
            max_seconds=max_seconds,
            extra=[f"data.input_size=[{height},{width}]"],
        )
        rows[f"{height}x{width}"] = run_child(spec, timeout=max_seconds * 3 + 300)
        log("  " + tta_line(rows[f"{height}x{width}"]))
    return {"model": model, "variant": variant, "max_seconds": max_seconds, "rows": rows}
