"""The speed benchmark's report: speed.md, the goals table and the README's Speed section.

Everything here is a pure function of the results dict that `speed.py` stores in speed.json, so
a report can be re-rendered (or its wording changed) without measuring again. `write_markdown`
is one writer per section, each returning its lines (none when its section was not run), in the
order the report reads. The goals it renders are checked in `speed_goals.py`.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from speed_harness import TARGET, median

__all__ = ["MNR_CHOICE", "readme_markdown", "verdict", "write_markdown"]

Lines = list[str]


def _fmt(value: Any, digits: int = 1) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:,.{digits}f}"
    return str(value)


def _split(profile: dict[str, Any]) -> str:
    cats = profile["categories_percent"]
    conv = cats.get("convolution", 0.0)
    linear = cats.get("matmul (linear layers)", 0.0)
    return f"{conv:.0f} / {linear:.0f} / {100 - conv - linear:.0f} %"


# --------------------------------------------------------------------------------------------
# speed.md, one writer per section


def _machine(results: dict[str, Any]) -> Lines:
    m = results["machine"]
    return [
        "# mnr speed benchmark",
        "",
        f"`python3 benchmarks/speed.py{' --quick' if results['quick'] else ''}` — generated {m['date']}; do not edit by hand.",
        "",
        "| machine | |",
        "|---|---|",
        f"| CPU | {m['cpu_model']}, {m['cores']} cores, {m['memory_gib']} GiB |",
        f"| torch | {m['torch']} (CUDA available: {m['cuda_available']}; everything below ran on the CPU, except the GPU section) |",
        f"| threads | {m['threads']} intra-op (default {m['default_threads']}), {m['interop_threads']} inter-op |",
        f"| load average | start {results['load_average_start']}, end {results['load_average_end']} (other processes share this machine: read ratios, not absolute numbers) |",
        f"| wall time of this run | {results['wall_seconds'] / 60:.1f} min |",
    ]


def _goals_table(results: dict[str, Any]) -> Lines:
    lines = ["", "## Goals", "", "| goal | measured | target | met |", "|---|---|---|---|"]
    for g in results["goals"]:
        lines.append(
            f"| {g['goal']} | {g['measured']} | {g['target']} | {'yes' if g['met'] else 'no' if g['met'] is not None else '-'} |"
        )
    return lines


def _throughput(results: dict[str, Any]) -> Lines:
    tp = results.get("throughput", {})
    if not tp:
        return []
    lines = [
        "",
        "## 1. Epoch throughput: mnr engine vs notebook pipeline",
        "",
        "Same PNG files and split, architecture, seed, SGD step, batch size, input size and thread count; epochs "
        "alternate engine, notebook, engine, notebook ... The notebook decodes each PNG with PIL every "
        "epoch (RGBA->RGB, `Resize`, `ToTensor`, `Normalize`) in a `DataLoader(batch_size=64, shuffle=True)` "
        "with the default `num_workers=0` (no worker processes); mnr gathers batches from the decode-once "
        "uint8 cache and converts them per batch. Train epochs only (no validation pass).",
        *_pipelines_note(tp),
        "",
        "| model | input (H x W) | images/epoch | engine s/epoch | engine img/s | notebook s/epoch | notebook img/s | notebook time in data loading | engine speed-up |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in tp.values():
        name = f"{r['model']} | {r['input_size'][0]}x{r['input_size'][1]}"
        load_frac = median([s["load_fraction"] for s in r["notebook"]["samples"]]) * 100
        lines.append(
            f"| {name} | {r['images']} | {_fmt(r['engine']['seconds_median'], 2)} | {_fmt(r['engine']['images_per_second_median'])} | "
            f"{_fmt(r['notebook']['seconds_median'], 2)} | {_fmt(r['notebook']['images_per_second_median'])} | {load_frac:.0f} % | "
            f"**{r['ratio']:.2f}x** (pairs: {', '.join(f'{x:.2f}' for x in r['ratio_per_pair'])}) |"
        )
    return lines


def _pipelines_note(tp: dict[str, Any]) -> Lines:
    """What each side of the engine-vs-notebook rows reads, when the engine reads a value channel."""
    if next(iter(tp.values())).get("engine_channels") != "value":
        return []
    return [
        "",
        "Each side reads the images its own way, as it comes: mnr's default pipeline crops the plot and "
        "reads one value channel back through the colormap (its model has 1 input channel; section 1c "
        "measures what that alone saves), the notebook reads the PNG as RGB (3 input channels). So the "
        "rows compare the two pipelines, and the first layers differ in input channels and initial weights.",
    ]


def _handloop(results: dict[str, Any]) -> Lines:
    hl = results.get("handloop", {})
    if not hl:
        return []
    first = next(iter(hl.values()))
    lines = [
        "",
        "### 1b. mnr's engine vs a minimal hand-written loop",
        "",
        f"The same in-memory uint8 tensors mnr trains on ({first['in_chans']} channel(s): {first['channels']}, "
        f"{first['input_size'][0]}x{first['input_size'][1]}), the same model built the same way "
        f"(`build_model(config, layout=data.layout)`, same seed, {first['memory_format']} on both sides), "
        "the seed's SGD settings, batch size and threads, and the same shuffled order. The hand loop is "
        "`randperm`, `images[index].float().div(255).sub(mean).div(std)` (the model's InputConfig), forward, "
        "`zero_grad`, `backward`, `step`, counting correct predictions; the engine is `train_one_epoch`. "
        "Epochs alternate engine, hand loop, ... after a one-batch warm-up of each; ratio = engine img/s / "
        "hand-loop img/s.",
        "",
        "| model | images/epoch | engine img/s | hand loop img/s | engine / hand loop | train acc (engine, hand loop; last epoch) |",
        "|---|---|---|---|---|---|",
    ]
    for name, r in hl.items():
        subset = f" (of {r['all_images']})" if r["images"] < r["all_images"] else ""
        accs = r["engine"]["samples"][-1]["train_acc"], r["handloop"]["samples"][-1]["train_acc"]
        lines.append(
            f"| {name} | {r['images']}{subset} | {_fmt(r['engine']['images_per_second_median'])} | "
            f"{_fmt(r['handloop']['images_per_second_median'])} | **{r['ratio']:.2f}x** "
            f"(pairs: {', '.join(f'{x:.2f}' for x in r['ratio_per_pair'])}) | {accs[0]:.3f}, {accs[1]:.3f} |"
        )
    if any(r["images"] < r["all_images"] for r in hl.values()):
        lines += [
            "",
            "Models marked (of N) ran on the first images of the split only, to keep their pairs short.",
        ]
    return lines


def _channels(results: dict[str, Any]) -> Lines:
    ch = results.get("channels")
    if not (ch and ch.get("models")):
        return []
    data = ch["data"]
    lines = [
        "",
        "### 1c. One value channel vs RGB",
        "",
        f"The built-in set read with `-s data.channels=value` (the plot's colour read back through "
        f"{data['value']['colormap']}: 1 channel) and with `-s data.channels=rgb` (3 channels), same split and "
        "input size; the same model and config trained on each, epochs alternated after a one-batch warm-up.",
        "",
        "| data | train images | train set in RAM | whole set in RAM (train + val + test) |",
        "|---|---|---|---|",
    ]
    for channels, d in data.items():
        lines.append(
            f"| {channels} | {' x '.join(map(str, d['train_shape']))} uint8 | {d['train_bytes']:,} B "
            f"({d['train_bytes'] / 2**20:.1f} MiB) | {d['dataset_bytes']:,} B ({d['dataset_bytes'] / 2**20:.1f} MiB) |"
        )
    lines += [
        "",
        f"RGB takes {ch['bytes_ratio_rgb_over_value']:.2f}x the bytes of the value channel.",
        "",
        "| model | images/epoch | value img/s | rgb img/s | value / rgb |",
        "|---|---|---|---|---|",
    ]
    for name, r in ch["models"].items():
        lines.append(
            f"| {name} | {r['images']} | {_fmt(r['value']['images_per_second_median'])} | "
            f"{_fmt(r['rgb']['images_per_second_median'])} | **{r['ratio']:.2f}x** "
            f"(pairs: {', '.join(f'{x:.2f}' for x in r['ratio_per_pair'])}) |"
        )
    return lines


def _tracking(results: dict[str, Any]) -> Lines:
    tr = results.get("tracking")
    if not tr:
        return []
    return [
        "",
        "## 2. Tracking overhead",
        "",
        f"`fit` of baseline_cnn ({tr['images']} train images + validation, {tr['epochs_per_fit']} epoch(s) per fit), alternating "
        "no callbacks with `MlflowLogger` on a real sqlite store in a temporary folder.",
        "",
        "| | wall s/epoch | CPU s/epoch (all threads) |",
        "|---|---|---|",
        f"| tracking off | {_fmt(tr['epoch_seconds_off'], 3)} | {_fmt(tr.get('cpu_seconds_off'), 3)} |",
        f"| tracking on | {_fmt(tr['epoch_seconds_on'], 3)} | {_fmt(tr.get('cpu_seconds_on'), 3)} |",
        f"| difference | {tr['overhead_percent_end_to_end']:+.2f} % | {tr.get('overhead_percent_cpu', float('nan')):+.2f} % |",
        "",
        f"Time inside `MlflowLogger`'s hooks (the training thread waits only for these): "
        f"**{tr['hook_seconds_per_epoch'] * 1e3:.2f} ms/epoch = {tr['overhead_percent_in_hooks']:.3f} %** of an "
        "epoch. The end-to-end differences are medians of alternated fits on a shared machine, where "
        "epoch-to-epoch noise is larger than the effect being measured; the CPU-time difference also counts "
        "MLflow's background writer thread.",
        "",
        f"Per-run setup (create the run, log params + config.yaml, log the dataset; first use of the store included): "
        f"{tr['run_setup_seconds']:.2f} s once, not per epoch. Metric rows logged for val_acc: {tr['metrics_logged']}.",
    ]


def _compute_rates(cp: dict[str, Any]) -> Lines:
    """The rate table: per model, FLOPs, and img/s, GFLOP/s and % of matmul per thread count."""
    threads_list = cp["thread_counts"]
    lines = [
        "",
        "## 3. Compute limit",
        "",
        "FLOPs are counted with `torch.utils.flop_counter.FlopCounterMode` over forward + backward "
        "(cross-entropy loss) of one batch of 64 in train mode, divided by 64: convolutions and matmuls, "
        "a multiply-add = 2 FLOPs; elementwise ops, pooling, batch norm and the optimizer are not counted. "
        f"The engine's rate is `train_one_epoch` over {cp['partial_images']} images after a 1-batch warm-up, "
        "with the seed's SGD step. The limit is dense float32 `torch.mm` of 2048 x 2048 (best of 3 x 2 "
        "products) at the same thread count, measured just before and just after each engine measurement "
        "(the higher of the two), because the load from other jobs drifts.",
        "",
        "| model @ input | forward MFLOP/img | train MFLOP/img | "
        + " | ".join(f"{t} thread(s): img/s, GFLOP/s, matmul GFLOP/s, **%**" for t in threads_list)
        + " | self CPU time: convolution / linear / everything else |",
        "|---|---|---|" + "---|" * len(threads_list) + "---|",
    ]
    for name, r in cp["models"].items():
        where = f"{threads_list[0]} thread(s): {_split(r['profile'])}"
        if "profile_1_thread" in r:
            where += f"; 1 thread: {_split(r['profile_1_thread'])}"
        cells = []
        for t in threads_list:
            b = r["by_threads"][str(t)]
            cells.append(
                f"{b['images_per_second']:,.0f}, {b['achieved_gflops']:.1f}, {b['matmul_gflops']:.1f}, "
                f"**{b['percent_of_matmul']:.0f} %**"
            )
        lines.append(
            f"| {name} | {r['forward_gflop_per_image'] * 1e3:,.1f} | {r['train_gflop_per_image'] * 1e3:,.1f} | "
            + " | ".join(cells)
            + f" | {where} |"
        )
    return lines


def _compute_profiles(cp: dict[str, Any]) -> Lines:
    """The top five ops of each profile (at the run's thread count, and at 1 thread if taken)."""
    threads_list = cp["thread_counts"]
    lines = [
        "",
        "Top ops by self CPU time (torch.profiler, record_shapes, over "
        f"{next(iter(cp['models'].values()))['profile']['steps']} engine steps):",
        "",
    ]
    for name, r in cp["models"].items():
        for key, label in (
            ("profile", f"{threads_list[0]} thread(s)"),
            ("profile_1_thread", "1 thread"),
        ):
            if key not in r:
                continue
            lines += [
                f"**{name}, {label}** ({r[key]['self_cpu_ms_per_step']:.0f} ms self CPU per step):",
                "",
                "| op | input shapes | % | ms/step |",
                "|---|---|---|---|",
            ]
            for op in r[key]["top_ops"][:5]:
                lines.append(
                    f"| {op['op']} | `{op['shapes']}` | {op['self_cpu_percent']:.1f} | {op['self_cpu_ms_per_step']:.1f} |"
                )
            lines.append("")
    return lines


def _compute(results: dict[str, Any]) -> Lines:
    cp = results.get("compute")
    if not cp:
        return []
    lines = _compute_rates(cp) + _compute_profiles(cp)
    if cp.get("notes"):
        lines += ["Where the time goes (models under 40 %):", ""] + [f"- {n}" for n in cp["notes"]]
    return lines


def _tta_row(name: str, kind: str, r: dict[str, Any]) -> str:
    if "error" in r:
        return f"| {name} | | {kind} | error: {r['error']} | | | | | | |"
    reached = r["reached"]
    wall = (
        f"**{reached['seconds'] + r['startup_seconds']:.1f}**"
        if reached
        else f"not reached ({r['capped']})"
    )
    return (
        f"| {name} | {Path(r['config_file']).name}: {r['optimizer']}, {r['scheduler']} | {kind} | {r['load_seconds']:.1f} | {wall} | "
        f"{reached['epoch'] if reached else r['epochs_run']} | {r['best_val_acc']:.4f} | {_fmt(r['test_accuracy'], 4)} | "
        f"{_fmt(r['train_images_per_second_median'])} | {r['memory']['peak_rss_bytes'] / 2**20:,.0f} MiB |"
    )


def _time_to_accuracy(results: dict[str, Any]) -> Lines:
    tta = results.get("time_to_accuracy")
    if not tta:
        return []
    lines = [
        "",
        f"## 4. Time to {TARGET:.0%} validation accuracy",
        "",
        f"Each run is a fresh `python3` process running `run_training` with the model's default config "
        f"(experiments/<model>.yaml) plus `train.target={TARGET}`, `train.monitor=val/acc` (it stops at the first "
        "epoch that reaches it), no tracking or checkpoints; capped by epochs and wall time without changing the "
        "configured schedule. Wall time counts from the command's start (interpreter, imports, data load or cache "
        "build) to the end of the epoch that reached the target. Cold = `MNR_CACHE_DIR` pointing at an empty "
        "folder, so every PNG is decoded first.",
        "",
        "| model | config | cache | data load s | wall s to 99 % | epochs | best val acc | held-out test acc | train img/s | peak RSS |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for kind in ("warm", "cold"):
        for name, r in tta[kind].items():
            lines.append(_tta_row(name, kind, r))
    if tta.get("note"):
        lines += ["", tta["note"]]
    return lines


def _resolution(results: dict[str, Any]) -> Lines:
    res = results.get("resolution")
    if not (res and res.get("rows")):
        return []
    lines = [
        "",
        f"### Input size ({res['model']} {res.get('variant', '')}, same config otherwise, warm cache, "
        f"{res.get('max_seconds', 150):.0f} s budget each)",
        "",
        "| input (H x W) | train s to 99 % (after data load) | epochs | best val acc | held-out test acc | train img/s |",
        "|---|---|---|---|---|---|",
    ]
    for size, r in res["rows"].items():
        if "error" in r:
            lines.append(f"| {size} | error: {r['error']} | | | | |")
            continue
        reached = r["reached"]
        secs = (
            f"{reached['seconds'] - r['load_seconds']:.1f}"
            if reached
            else f"not reached ({r['capped']})"
        )
        lines.append(
            f"| {size} | {secs} | {reached['epoch'] if reached else r['epochs_run']} | {r['best_val_acc']:.4f} | "
            f"{_fmt(r['test_accuracy'], 4)} | {_fmt(r['train_images_per_second_median'])} |"
        )
    return lines


def _predict(results: dict[str, Any]) -> Lines:
    pr = results.get("predict")
    if not (pr and "models" in pr):
        return []
    lines = [
        "",
        "## 5. Prediction and memory",
        "",
        f"{pr['images']} test PNGs decoded in parallel (`map_images(partial(decode_png, size=...))`, "
        f"{pr['decode_workers']} processes) in {pr['decode_seconds']:.2f} s, then `predict_logits` in batches of 512 "
        "(inference_mode, channels_last).",
        "",
        "| model | predict img/s (decode included) | model only img/s |",
        "|---|---|---|",
    ]
    for name, r in pr["models"].items():
        lines.append(
            f"| {name} | {r['images_per_second_with_decode']:,.0f} | {r['images_per_second_model_only']:,.0f} |"
        )
    return lines


def _memory(results: dict[str, Any]) -> Lines:
    mem = results.get("memory")
    if not mem:
        return []
    return [
        "",
        "| memory | |",
        "|---|---|",
        f"| decoded dataset in RAM (train + val + test) | {mem['dataset_bytes'] / 2**20:,.1f} MiB, dtype {', '.join(mem['dtypes'])} |",
        f"| N x {mem.get('channels', 3)} x H x W bytes | {mem['expected_uint8_bytes'] / 2**20:,.1f} MiB ({'matches' if mem['dataset_bytes'] == mem['expected_uint8_bytes'] else 'DIFFERS'}) |",
        f"| a float32 copy would be | {mem['float32_copy_would_be_bytes'] / 2**20:,.1f} MiB |",
        f"| RSS increase while loading the cached set | {mem['rss_increase_on_load_bytes'] / 2**20:,.1f} MiB |",
        f"| peak RSS of a whole training run ({mem['model']}, warm) | {mem['peak_rss_bytes'] / 2**20:,.0f} MiB |",
    ]


def _gpu(results: dict[str, Any]) -> Lines:
    gp = results.get("gpu")
    if not gp:
        return []
    lines = ["", "## 6. On a CUDA GPU: mixed precision and where the training tensors live", ""]
    if gp.get("skipped"):
        return lines + [f"Not measured: {gp['note']}."]
    g = gp["gpu"]
    lines += [
        f"**{g['name']}** (compute capability {'.'.join(map(str, g['capability']))}, {g['memory_gib']} GiB; "
        f"CUDA {g['torch_cuda']}, cuDNN {g['cudnn']}, cudnn.benchmark {g['cudnn_benchmark']}); amp = autocast "
        f"to {g['amp_dtype']}. {gp['images']} training images (read as {gp['channels']}, "
        f"{gp['input_size'][0]}x{gp['input_size'][1]}), the seed's SGD; each sample is {gp['epochs_per_sample']} "
        f"epoch(s), all runs of a model and batch size alternated for {gp['rounds']} round(s); medians. "
        "*engine, on GPU* is `train_one_epoch` over tensors moved to the GPU once (what `fit` does); the *loop* "
        "rows are the same step written in the benchmark, with the tensors on the GPU, in pinned CPU memory "
        "(each batch gathered into a pinned buffer, copied with `non_blocking=True`) or in pageable CPU memory "
        "(plain `.to(device)`). *vs loop on GPU* is img/s over the loop-on-GPU row's, at the same amp setting.",
        "",
        "| model | batch | data | amp off img/s | amp on img/s | amp speed-up | vs loop on GPU (off / on) |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in gp["models"].values():
        for placement, row in r["rows"].items():
            lines.append(
                f"| {r['model']} | {r['batch_size']} | {placement} | {row['amp_off']['images_per_second_median']:,.0f} | "
                f"{row['amp_on']['images_per_second_median']:,.0f} | {row['amp_speedup']:.2f}x | "
                f"{row['amp_off_vs_loop_on_gpu']:.2f}x / {row['amp_on_vs_loop_on_gpu']:.2f}x |"
            )
    return lines


MNR_CHOICE = {
    "channels_last": "train.channels_last=true by default",
    "intra-op threads": "train.threads unset = torch's default, one per core",
    "inter-op threads": "torch's default",
    "batch gather + float conversion": "adopted (engine.py, transforms.py)",
    "per-step isfinite(loss_sum) check (CPU)": "kept: every step on CPU, every 25 on GPU",
    "inference batch size": "predict_logits batch_size=512, train.eval_batch_size=512",
    "inference autograd mode": "predict_logits runs in torch.inference_mode",
    "torch.compile": "not used",
    "OpenMP wait policy": "not set by mnr (must be set before torch is imported)",
}  # what mnr does about each lever: the report's "what mnr does" column


def verdict(lever: dict[str, Any]) -> str:
    """Measured outcome; changes under 5 % are within this machine's run-to-run noise."""
    if lever["lever"].startswith("per-step"):
        return "negligible"
    if abs(lever["change_percent"]) < 5:
        return "no clear difference"
    return "after is faster" if lever["after_is_better"] else "before is faster"


def _levers(results: dict[str, Any]) -> Lines:
    lv = results.get("levers")
    if not lv:
        return []
    lines = [
        "",
        "## Levers",
        "",
        "Each pair is measured alternately (before, after, before, after ...); medians. Engine levers run "
        "`train_one_epoch` on a fixed subset after a warm-up epoch.",
        "",
        "| lever | model | before | after | change | verdict | what mnr does | note |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in lv:
        if "error" in r:
            lines.append(f"| {r['lever']} | {r['model']} | | | | error | {r['error']} |")
            continue
        lines.append(
            f"| {r['lever']} | {r['model']} | {r['before_label']}: {_fmt(r['before'], 2)} {r['unit']} | {r['after_label']}: {_fmt(r['after'], 2)} {r['unit']} | "
            f"{r['change_percent']:+.1f} % | {verdict(r)} | {MNR_CHOICE.get(r['lever'], '')} | {r.get('note', '')} |"
        )
    return lines


def _notes(results: dict[str, Any]) -> Lines:
    if not results.get("notes"):
        return []
    return ["", "## Notes", ""] + [f"- {n}" for n in results["notes"]]


def _errors(results: dict[str, Any]) -> Lines:
    lines: Lines = []
    for section, error in results.get("errors", {}).items():
        lines += ["", f"**Section {section} failed:**", "", "```", error.strip(), "```"]
    return lines


MARKDOWN_SECTIONS: tuple[Callable[[dict[str, Any]], Lines], ...] = (
    _machine,
    _goals_table,
    _throughput,
    _handloop,
    _channels,
    _tracking,
    _compute,
    _time_to_accuracy,
    _resolution,
    _predict,
    _memory,
    _gpu,
    _levers,
    _notes,
    _errors,
)  # the order speed.md reads in


def write_markdown(results: dict[str, Any], path: Path) -> None:
    """Write speed.md from `results`: every section that was run, then notes and errors."""
    lines = [line for writer in MARKDOWN_SECTIONS for line in writer(results)]
    path.write_text("\n".join(lines) + "\n")


# --------------------------------------------------------------------------------------------
# README


def readme_markdown(results: dict[str, Any]) -> str:
    """The README's speed section: how it was made, on what, and the goals table."""
    machine = results["machine"]
    loads = results.get("load_average_start", []), results.get("load_average_end", [])
    lines = [
        f"Measured by `python3 benchmarks/speed.py` ({results.get('wall_seconds', 0) / 60:.0f} min) on "
        f"{machine['cpu_model']} ({machine['cores']} cores, torch {machine['torch']}, CPU only), "
        f"load average {loads[0][0] if loads[0] else '?'} at the start and {loads[1][0] if loads[1] else '?'} "
        "at the end; every figure, the levers tried and the profiles are in "
        "[benchmarks/results/speed.md](benchmarks/results/speed.md).",
        *(f"Then {note}." for note in results.get("notes", []) if note.startswith("sections ")),
        "",
        "| goal | measured | target | met |",
        "|---|---|---|---|",
    ]
    for g in results.get("goals", []):
        lines.append(
            f"| {g['goal']} | {g['measured']} | {g['target']} | {'yes' if g['met'] else 'no'} |"
        )
    tp = results.get("throughput", {})
    if tp and next(iter(tp.values())).get("engine_channels") == "value":
        lines += [
            "",
            "The engine-vs-notebook rows compare the two pipelines as they come: mnr reads the plot as one "
            "value channel (read back through the colormap), the notebook reads RGB PNGs.",
        ]
    gpu = results.get("gpu")
    if gpu and not gpu.get("skipped"):
        lines += [
            "",
            f"The GPU section (mixed precision, data placement) ran on {gpu['gpu']['name']}.",
        ]
    predict = results.get("predict")
    if predict:
        rates = ", ".join(
            f"{name} {m['images_per_second_with_decode']:.0f}"
            for name, m in predict["models"].items()
        )
        lines += [
            "",
            f"Prediction from PNG files, decode included ({predict['images']} images, "
            f"{predict['decode_workers']} decode processes), images/s: {rates}.",
        ]
    return "\n".join(lines)
