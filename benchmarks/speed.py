"""Speed and memory of mnr, measured side by side with a plain notebook pipeline.

One command measures, on the built-in dataset and in one run:

1. epoch throughput of mnr's engine versus the notebook pipeline (`notebook_pipeline.py`),
   alternating their epochs so that machine noise hits both; the engine against a minimal
   hand-written loop over the same tensors; one value channel against RGB;
2. the cost of MLflow tracking per epoch (MlflowLogger + a real sqlite store) versus none;
3. FLOPs per training image, the FLOP rate mnr reaches, and the machine's dense matmul rate,
   with a profile of where the time goes;
4. wall time to 99 % validation accuracy from a cold and a warm cache, per model;
5. prediction throughput from PNG files, training's peak memory, and the cache's RAM cost;
6. on a CUDA GPU (skipped without one), mixed precision on and off and where the training
   tensors live (on the GPU, pinned, pageable);

plus the levers behind those numbers (channels_last, threads, batch gathering, per-step checks,
input size, torch.compile, inference batching), each measured before and after. Results go to
`benchmarks/results/speed.json` and `speed.md`.

    python3 benchmarks/speed.py                    # the full run: ~15 min on 2 idle cores, longer if shared
    python3 benchmarks/speed.py --quick            # a smoke test (a few minutes), to speed_quick.*
    python3 benchmarks/speed.py --only tta,resolution   # re-run sections into the existing results
    python3 benchmarks/speed.py --quick --only handloop,channels,gpu --out /tmp/speedcheck

Runs that must start cold (time to accuracy, interop threads, torch.compile) run in child
processes of this script (`--child SPEC`), so that each sees a fresh interpreter.

This file is the plan: the command line, which sections run and how big each one is in a full
or a `--quick` run. How to measure is in `speed_harness.py`, what each section measures in
`speed_sections/`, and how the results read in `speed_report.py`.
"""

from __future__ import annotations

import argparse
import datetime
import json
import sys
import time
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from speed_goals import goals  # noqa: E402
from speed_harness import CHILD_MARK, load_average, log, machine_info, matmul_gflops, seed_config  # noqa: E402
from speed_report import readme_markdown, write_markdown  # noqa: E402
from speed_sections.channels import section_channels  # noqa: E402
from speed_sections.compute import section_compute  # noqa: E402
from speed_sections.gpu import section_gpu  # noqa: E402
from speed_sections.handloop import section_handloop  # noqa: E402
from speed_sections.levers import child_steps, section_child_levers, section_levers  # noqa: E402
from speed_sections.predict import section_predict  # noqa: E402
from speed_sections.resolution import section_resolution  # noqa: E402
from speed_sections.throughput import section_throughput  # noqa: E402
from speed_sections.time_to_accuracy import child_tta, section_time_to_accuracy  # noqa: E402
from speed_sections.tracking import section_tracking  # noqa: E402

from mnr.config import resolve_config  # noqa: E402
from mnr.training import load_data  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
MODELS = ("baseline_cnn", "bn_cnn", "deep_cnn", "resnet18")
FAST_VARIANT = "train.threads=1"  # on a machine shared with other jobs, one thread is much faster
RESOLUTIONS = (
    (128, 128),
    (128, 64),
    (64, 64),
    (128, 32),
)  # (H, W) candidates for the default input size
CHILDREN = {"tta": child_tta, "steps": child_steps}  # what `--child SPEC` runs, by spec["kind"]


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    """The documented command line, plus the hidden `--child SPEC` of child processes."""
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="reduced smoke-test run (fewer epochs, subsets); writes speed_quick.*",
    )
    parser.add_argument(
        "--threads",
        type=int,
        default=None,
        help="torch intra-op threads for every measurement (default: torch's, one per core)",
    )
    parser.add_argument(
        "--only",
        default="",
        help="comma-separated sections to run: " + ",".join(SECTIONS),
    )
    parser.add_argument(
        "--out", type=Path, default=None, help="output folder (default benchmarks/results)"
    )
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    unknown = sorted(set(filter(None, args.only.split(","))) - set(SECTIONS))
    if unknown:
        parser.error(
            f"--only: no section {', '.join(unknown)}; the sections are {','.join(SECTIONS)}"
        )
    return args


def run_as_child(spec_json: str) -> int:
    """Measure what the spec asks for and print it on one line after CHILD_MARK."""
    spec = json.loads(spec_json)
    result = CHILDREN[spec["kind"]](spec)
    print(CHILD_MARK + json.dumps(result), flush=True)
    return 0


def describe_data(data: Any, load_seconds: float) -> dict[str, Any]:
    """The built-in dataset as this run saw it: split sizes, input size, where it came from."""
    return {
        "train": len(data.train_images),
        "val": len(data.val_images),
        "test": 0 if data.test_images is None else len(data.test_images),
        "input_size": list(data.input_size),
        "channels": data.layout.channels,
        "colormap": data.layout.colormap,
        "from_cache": data.from_cache,
        "load_seconds": load_seconds,
        "source": str(data.paths.train.parent),
    }


def start_results(
    json_path: Path, sections: Sequence[str], *, rerun: bool, quick: bool, threads: int
) -> tuple[dict[str, Any], bool]:
    """The results this run adds to, and whether it is a full run (it then owns the load and wall
    time figures). Re-running some sections (`--only`) updates an earlier run's results, with a
    note; with no earlier results, the sections-only run records its own load and wall time."""
    results: dict[str, Any] = {}
    if rerun and json_path.exists():
        results = json.loads(json_path.read_text())
        results.setdefault("notes", []).append(
            f"sections {', '.join(sections)} re-run on {datetime.date.today()} (load average {load_average()})"
        )
    results.update(quick=quick, machine=machine_info(threads), errors=results.get("errors", {}))
    # A re-run into a full run's results is not itself a full run.
    full_run = not rerun or "wall_seconds" not in results
    if full_run:  # a partial re-run keeps the full run's load and wall time; its note says more
        results["load_average_start"] = load_average()
    results.setdefault("notes", [])
    return results, full_run


def main(argv: Sequence[str] | None = None) -> int:
    """Run the sections asked for, saving results and report after each; 1 if any failed."""
    args = parse_args(argv)
    if args.child:
        return run_as_child(args.child)

    wall_started = time.perf_counter()
    if args.threads:
        torch.set_num_threads(args.threads)
    threads = torch.get_num_threads()
    quick = args.quick
    out = args.out or RESULTS
    out.mkdir(parents=True, exist_ok=True)
    stem = "speed_quick" if quick else "speed"
    json_path = out / f"{stem}.json"
    sections = [s for s in SECTIONS if not args.only or s in args.only.split(",")]
    results, full_run = start_results(
        json_path, sections, rerun=bool(args.only), quick=quick, threads=threads
    )
    log(
        f"machine: {results['machine']['cpu_model']}, {results['machine']['cores']} cores, "
        f"torch {torch.__version__}, {threads} threads; load average {results['load_average_start']}"
    )
    results["matmul_all"] = [matmul_gflops()["best"]]

    config = seed_config("baseline_cnn")
    started = time.perf_counter()
    data = load_data(config, progress=False)
    results["default_input_size"] = list(resolve_config().data.input_size)
    results["data"] = describe_data(data, time.perf_counter() - started)
    log(f"data: {results['data']}")

    def save() -> None:
        if full_run:
            results["load_average_end"] = load_average()
            results["wall_seconds"] = time.perf_counter() - wall_started
        results["goals"] = goals(results)
        json_path.write_text(json.dumps(results, indent=2, default=str) + "\n")
        write_markdown(results, out / f"{stem}.md")

    for section in sections:
        try:
            run_section(section, results, data, quick=quick, threads=args.threads)
            results["errors"].pop(section, None)
        except Exception:  # noqa: BLE001 - one broken section must not lose the others' results
            results["errors"][section] = traceback.format_exc()[-3000:]
            log(f"section {section} failed:\n{results['errors'][section]}")
        save()

    results["matmul_all"].append(matmul_gflops()["best"])
    save()
    if not quick and not args.out:  # the real results (a full run, or sections re-run into it)
        from readme import write_section

        write_section("speed", readme_markdown(results), heading="Speed")
    log(f"wrote {json_path} and {stem}.md in {results['wall_seconds'] / 60:.1f} min")
    for g in results["goals"]:
        log(
            f"  {g['goal']}: {g['measured']} (target {g['target']}) {'MET' if g['met'] else 'not met'}"
        )
    return 1 if results["errors"] else 0


# --------------------------------------------------------------------------------------------
# The run plan: what each section measures in a full run and in a --quick one


def _at_128x128() -> Any:
    """The built-in dataset at the seed's own 128 x 128 input size."""
    return load_data(seed_config("baseline_cnn", "data.input_size=[128,128]"), progress=False)


def _throughput(results: dict[str, Any], data: Any, *, quick: bool, threads: int | None) -> None:
    pairs = {"baseline_cnn": 1, "bn_cnn": 1} if quick else {"baseline_cnn": 3, "bn_cnn": 2}
    results["throughput"] = section_throughput(
        data, models=("baseline_cnn", "bn_cnn"), pairs=pairs, limit=512 if quick else None
    )
    if not quick and tuple(data.input_size) != (128, 128):
        # The seed's own input size too, so the ratio is not only the smaller default's doing.
        results["throughput"].update(
            section_throughput(
                _at_128x128(),
                models=("baseline_cnn",),
                pairs={"baseline_cnn": 2},
                limit=None,
                label="@128x128",
            )
        )


def _handloop(results: dict[str, Any], data: Any, *, quick: bool, threads: int | None) -> None:
    # resnet18 trains at ~100 img/s on 2 cores: a subset keeps its pairs to about a minute
    limits = {m: 256 if quick else None for m in MODELS} | {"resnet18": 128 if quick else 512}
    results["handloop"] = section_handloop(
        data, models=MODELS, pairs=1 if quick else 3, limits=limits
    )


def _channels(results: dict[str, Any], data: Any, *, quick: bool, threads: int | None) -> None:
    results["channels"] = section_channels(
        models=("bn_cnn", "deep_cnn"), pairs=1 if quick else 3, limit=512 if quick else None
    )


def _tracking(results: dict[str, Any], data: Any, *, quick: bool, threads: int | None) -> None:
    # Fits of several epochs, as real runs are: the run's one flush at the end of fit
    # (waiting for MLflow's async writer) is paid once per run, not once per epoch.
    results["tracking"] = section_tracking(
        data, pairs=1 if quick else 5, epochs=1 if quick else 5, limit=512 if quick else None
    )


def _compute(results: dict[str, Any], data: Any, *, quick: bool, threads: int | None) -> None:
    datasets = {"x".join(map(str, data.input_size)): data}
    if not quick and tuple(data.input_size) != (128, 128):
        datasets["128x128"] = _at_128x128()
    threads_now = torch.get_num_threads()
    results["compute"] = section_compute(
        datasets,
        models=MODELS,
        partial_images=128 if quick else 192,
        profile_steps=2 if quick else 3,
        thread_counts=[threads_now] if quick or threads_now == 1 else [threads_now, 1],
    )


def _levers(results: dict[str, Any], data: Any, *, quick: bool, threads: int | None) -> None:
    images = 128 if quick else 384
    results["levers"] = section_levers(data, images=images, rounds=1 if quick else 3, quick=quick)
    results["levers"] += section_child_levers(images=images, quick=quick)


def _predict(results: dict[str, Any], data: Any, *, quick: bool, threads: int | None) -> None:
    results["predict"] = section_predict(data, models=MODELS)


def _gpu(results: dict[str, Any], data: Any, *, quick: bool, threads: int | None) -> None:
    results["gpu"] = section_gpu(
        data,
        models=MODELS,
        batch_sizes=(64, 256),
        rounds=1 if quick else 3,
        epochs_per_sample=1 if quick else 5,
    )


def _tta(results: dict[str, Any], data: Any, *, quick: bool, threads: int | None) -> None:
    if quick:
        runs = [("bn_cnn", "", 60.0)]
        results["time_to_accuracy"] = section_time_to_accuracy(
            runs=runs, max_epochs=1, cold="bn_cnn", threads=threads
        )
    else:
        runs = [(m, "", 150.0) for m in MODELS] + [
            (m, FAST_VARIANT, 240.0) for m in ("bn_cnn", "deep_cnn")
        ]
        results["time_to_accuracy"] = section_time_to_accuracy(
            runs=runs, max_epochs=40, cold="reached", threads=threads
        )
    warm = results["time_to_accuracy"]["warm"]
    first = next((r for r in warm.values() if "memory" in r), None)
    if first:
        results["memory"] = {"model": first["model"], **first["memory"]}


def _resolution(results: dict[str, Any], data: Any, *, quick: bool, threads: int | None) -> None:
    if quick:  # one 150 s run per input size: not part of a smoke test
        return
    warm = results.get("time_to_accuracy", {}).get("warm", {})
    base = warm.get(f"bn_cnn {FAST_VARIANT}")
    sizes = [s for s in RESOLUTIONS if list(s) != list(data.input_size)]
    results["resolution"] = section_resolution(
        "bn_cnn", variant=FAST_VARIANT, sizes=sizes, base=base, max_epochs=40, max_seconds=150
    )


PLAN: dict[str, Callable[..., None]] = {
    "throughput": _throughput,
    "handloop": _handloop,
    "channels": _channels,
    "tracking": _tracking,
    "compute": _compute,
    "levers": _levers,
    "predict": _predict,
    "gpu": _gpu,
    "tta": _tta,
    "resolution": _resolution,
}
SECTIONS = tuple(PLAN)  # in the order they run, which --only does not change


def run_section(
    section: str, results: dict[str, Any], data: Any, *, quick: bool, threads: int | None
) -> None:
    """Run one section and store its results under its key."""
    if section in PLAN:
        PLAN[section](results, data, quick=quick, threads=threads)


if __name__ == "__main__":
    sys.exit(main())
