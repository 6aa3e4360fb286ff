"""The speed benchmark's goals: one checker per goal, each a pure function of the results.

Each checker returns its rows of the goals table (goal, measured, target, met), none when its
section was not run; `goals` is all of them in the order the table reads. `speed.py` stores the
table in speed.json, and `speed_report.py` renders it in speed.md and the README.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from speed_harness import TARGET

__all__ = ["GOALS", "goals"]


def _throughput_goals(results: dict[str, Any]) -> list[dict[str, Any]]:
    out = []
    for tp in results.get("throughput", {}).values():
        if tp["model"] == "baseline_cnn":
            size = "x".join(map(str, tp["input_size"]))
            out.append(
                {
                    "goal": f"engine vs notebook epoch throughput, baseline_cnn at {size}",
                    "measured": f"{tp['ratio']:.2f}x",
                    "target": ">= 3x",
                    "met": tp["ratio"] >= 3,
                }
            )
    return out


def _handloop_goals(results: dict[str, Any]) -> list[dict[str, Any]]:
    """Per model: the engine's epoch throughput over a minimal hand-written loop's."""
    return [
        {
            "goal": f"engine vs a hand-written training loop, {name}"
            + (f" ({r['images']} images)" if r["images"] < r["all_images"] else ""),
            "measured": f"{r['ratio']:.2f}x ({r['engine']['images_per_second_median']:,.0f} vs "
            f"{r['handloop']['images_per_second_median']:,.0f} img/s)",
            "target": ">= 1.0x",
            "met": r["ratio"] >= 1.0,
        }
        for name, r in results.get("handloop", {}).items()
    ]


def _tracking_goals(results: dict[str, Any]) -> list[dict[str, Any]]:
    tr = results.get("tracking")
    if not tr:
        return []
    return [
        {
            "goal": "MLflow tracking overhead per epoch",
            "measured": f"{tr['overhead_percent_in_hooks']:.2f} % in hooks; {tr['overhead_percent_end_to_end']:+.1f} % wall, "
            f"{tr.get('overhead_percent_cpu', float('nan')):+.1f} % CPU end to end (noise)",
            "target": "<= 3 %",
            "met": tr["overhead_percent_in_hooks"] <= 3,
        }
    ]


def _compute_goals(results: dict[str, Any]) -> list[dict[str, Any]]:
    cp = results.get("compute")
    if not cp:
        return []
    return [
        {
            "goal": f"achieved / matmul FLOP rate, {name}",
            "measured": ", ".join(
                f"{b['percent_of_matmul']:.0f} % at {t} thread(s)"
                for t, b in r["by_threads"].items()
            ),
            "target": ">= 40 % (conv-heavy models)",
            "met": r["percent_of_matmul_best"] >= 40,
        }
        for name, r in cp["models"].items()
    ]


def _time_to_accuracy_goals(results: dict[str, Any]) -> list[dict[str, Any]]:
    """The fastest warm run that reached TARGET, counted from the command's start."""
    tta = results.get("time_to_accuracy")
    if not tta:
        return []
    best = None
    for r in tta["warm"].values():
        if r.get("reached") and (
            best is None
            or r["reached"]["seconds"] + r["startup_seconds"]
            < best["reached"]["seconds"] + best["startup_seconds"]
        ):
            best = r
    goal = f"a default config to {TARGET:.0%} val acc from a warm cache"
    if not best:
        return [
            {
                "goal": goal,
                "measured": "not reached within the caps",
                "target": "<= 120 s",
                "met": False,
            }
        ]
    secs = best["reached"]["seconds"] + best["startup_seconds"]
    return [
        {
            "goal": goal,
            "measured": f"{best['model']} {best.get('variant', '')}: {secs:.0f} s (held-out test acc {best['test_accuracy']:.4f})".replace(
                " :", ":"
            ),
            "target": "<= 120 s",
            "met": secs <= 120,
        }
    ]


def _memory_goals(results: dict[str, Any]) -> list[dict[str, Any]]:
    """The cached set's RAM cost; it comes with the time-to-accuracy section (its first warm run,
    as run_section stores it), so it is checked only when that section is in the results."""
    memory = results.get("memory")
    if not results.get("time_to_accuracy") or not memory:
        return []
    ratio = memory["dataset_bytes"] / memory["expected_uint8_bytes"]
    channels = memory.get("channels", 3)  # results from before one value channel: RGB
    return [
        {
            "goal": f"cached dataset in RAM vs N x {channels} x H x W bytes",
            "measured": f"{memory['dataset_bytes'] / 2**20:.1f} MiB = {ratio:.2f}x ({', '.join(memory['dtypes'])}; "
            f"a float32 copy would be {memory['float32_copy_would_be_bytes'] / 2**20:.1f} MiB); "
            f"training peak RSS {memory['peak_rss_bytes'] / 2**20:.0f} MiB",
            "target": "about 1x",
            "met": ratio <= 1.05,
        }
    ]


GOALS: tuple[Callable[[dict[str, Any]], list[dict[str, Any]]], ...] = (
    _throughput_goals,
    _handloop_goals,
    _tracking_goals,
    _compute_goals,
    _time_to_accuracy_goals,
    _memory_goals,
)


def goals(results: dict[str, Any]) -> list[dict[str, Any]]:
    """The goals table: each goal's measured figure, its target, and whether it was met."""
    return [goal for check in GOALS for goal in check(results)]
