"""Trials in parallel worker processes: `mnr tune --jobs N`.

Why processes, not threads: a small CNN uses two cores poorly from one process (baseline_cnn
reaches 11 % of the matmul FLOP rate at 2 threads, 14 % at 1), and trials in threads share one
interpreter and one torch thread pool. N processes with cores / N threads each keep the cores
busy with independent trials.

How: the parent decodes the data once and copies the arrays the trials read into one block of
shared memory (`SharedData`); each worker is spawned (a forked torch runtime is unsafe), maps
that block without copying it, opens the same study in the same storage, and takes trials from a
shared ticket counter until none are left or the time is up, so that the study gets exactly
`trials` new trials. A trial in a worker is the single-process `Objective`, unchanged: child run
under the one parent run, pruning, states and reasons.

Interrupts: Ctrl-C reaches every process of the terminal's group, and a SIGTERM to the parent is
passed on to the workers; each ends its running trial at the trial's next epoch and records it
as interrupted, as one process does, and the parent waits for them before it re-raises. A
worker that dies (SIGKILL, out of memory) leaves its trial RUNNING; the parent fails that trial
and its run as soon as it sees the worker gone, and the other workers go on. A worker whose
parent is killed interrupts itself.
"""

from __future__ import annotations

import dataclasses
import multiprocessing
import os
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from multiprocessing import shared_memory
from typing import Any

import numpy as np
import optuna
from optuna.trial import FrozenTrial

from mnr.config import ExperimentConfig
from mnr.console import note
from mnr.data import TrainingData
from mnr.errors import MnrError
from mnr.tuning.spec import StudySpec

__all__ = ["SharedData", "WorkerSpec", "default_jobs", "run_workers", "threads_per_worker"]

_FIELDS = ("train_images", "train_labels", "val_images", "val_labels")
_JOIN_SECONDS = 60.0  # how long an interrupted parent waits for a worker to record its trial


def default_jobs() -> int:
    """Worker processes when `--jobs` is not given: one per core, at most 2 (see `mnr.tuning`)."""
    return max(1, min(2, os.cpu_count() or 1))


def threads_per_worker(jobs: int, threads: int | None) -> int:
    """Torch threads for each of `jobs` workers: the config's `train.threads`, else cores / jobs."""
    if threads:
        return threads
    return max(1, (os.cpu_count() or 1) // jobs)


@dataclass(frozen=True)
class SharedData:
    """Decoded data in one shared-memory block: the block's name, where each array lies in it,
    and the rest of the `TrainingData` (its arrays emptied), small enough to pickle."""

    name: str
    arrays: dict[str, tuple[int, tuple[int, ...], str]]  # field -> (offset, shape, dtype)
    template: TrainingData

    @staticmethod
    def create(data: TrainingData, *, folds: bool) -> tuple[SharedData, shared_memory.SharedMemory]:
        """Copy what trials read into a new block; the caller unlinks the block when done.

        Trials on one split read the train and validation arrays; cross-validated trials split
        the whole training folder themselves. The held-out test split is not shared: trials
        never evaluate on it.
        """
        arrays = (
            {"folder.images": data.folder.images}
            if folds
            else {name: getattr(data, name) for name in _FIELDS}
        )
        layout, offset = {}, 0
        for name, array in arrays.items():
            offset = -(-offset // 64) * 64  # aligned, as numpy and torch like their buffers
            layout[name] = (offset, tuple(array.shape), array.dtype.str)
            offset += array.nbytes
        block = shared_memory.SharedMemory(create=True, size=max(offset, 1))
        for name, array in arrays.items():
            start, shape, dtype = layout[name]
            view = np.ndarray(shape, dtype=dtype, buffer=block.buf, offset=start)
            view[...] = array
        empty = {name: getattr(data, name)[:0] for name in _FIELDS}
        template = dataclasses.replace(
            data,
            **empty,
            test_images=None,
            test_labels=None,
            test_files=None,
            folder=dataclasses.replace(data.folder, images=data.folder.images[:0]),
        )
        return SharedData(name=block.name, arrays=layout, template=template), block

    def attach(self) -> tuple[TrainingData, shared_memory.SharedMemory]:
        """The data as views into the block (no copy); keep the block open while they are used."""
        block = shared_memory.SharedMemory(name=self.name)
        views = {
            name: np.ndarray(shape, dtype=dtype, buffer=block.buf, offset=start)
            for name, (start, shape, dtype) in self.arrays.items()
        }
        folder_images = views.pop("folder.images", self.template.folder.images)
        data = dataclasses.replace(
            self.template,
            **views,
            folder=dataclasses.replace(self.template.folder, images=folder_images),
        )
        return data, block


@dataclass(frozen=True)
class WorkerSpec:
    """Everything a worker needs to rebuild the study and its objective (all picklable)."""

    config: ExperimentConfig
    study: StudySpec
    parent: str
    threads: int
    deadline: float | None  # time.time() after which no trial starts
    data: SharedData


def run_workers(
    spec: WorkerSpec,
    *,
    jobs: int,
    trials: int | None,
    study: optuna.Study,
    on_trial: Callable[[optuna.Study, FrozenTrial], None] | None,
    on_dead: Callable[[], list[int]],
) -> None:
    """Run `trials` trials (None: until the deadline) in `jobs` worker processes; wait for them.

    `on_trial` is called here, in the parent, for each trial the workers finish (the progress
    line); `on_dead` fails the trials of workers that died, and is called whenever one has.
    An interrupt stops the workers, waits for them to record their trials, and re-raises.
    """
    context = multiprocessing.get_context("spawn")
    tickets = context.Value("q", -1 if trials is None else trials)
    known = {t.number for t in study.get_trials(deepcopy=False)}
    processes = [
        context.Process(target=_work, args=(spec, tickets), name=f"mnr-tune-worker-{i}")
        for i in range(jobs)
    ]
    for process in processes:
        process.start()
    dead, failed = 0, []
    try:
        while any(p.is_alive() for p in processes):
            time.sleep(0.5)
            known = _show_finished(study, known, on_trial)
            died_now = sum(p.exitcode not in (None, 0) for p in processes)
            if died_now > dead:  # fail the dead worker's trial now, not at the end of the study
                dead = died_now
                failed += on_dead()
    except KeyboardInterrupt:
        _stop(processes)
        on_dead()
        raise
    _show_finished(study, known, on_trial)
    died = [p for p in processes if p.exitcode != 0]
    if died:
        failed += on_dead()
        codes = ", ".join(f"pid {p.pid}: exit {p.exitcode}" for p in died)
        note(
            f"{len(died)} tuning worker(s) ended abnormally ({codes})"
            + (f"; their trials {failed} were marked FAIL" if failed else "")
        )
        if len(died) == len(processes):
            raise MnrError(f"every tuning worker failed ({codes}); see the messages above")


def _show_finished(
    study: optuna.Study,
    known: set[int],
    on_trial: Callable[[optuna.Study, FrozenTrial], None] | None,
) -> set[int]:
    """Call `on_trial` for trials finished since the last look; return the numbers seen."""
    finished = [
        t
        for t in study.get_trials(deepcopy=False)
        if t.number not in known and t.state.is_finished()
    ]
    for trial in sorted(finished, key=lambda t: t.number):
        if on_trial is not None:
            on_trial(study, trial)
    return known | {t.number for t in finished}


def _stop(processes: list[Any]) -> None:
    """Pass the interrupt on (a SIGTERM reaches only the parent); wait, then kill stragglers."""
    for process in processes:
        if process.is_alive():
            os.kill(process.pid, signal.SIGTERM)
    deadline = time.monotonic() + _JOIN_SECONDS
    for process in processes:
        process.join(max(0.0, deadline - time.monotonic()))
        if process.is_alive():
            process.kill()
            process.join()


def _more_time(deadline: float | None) -> bool:
    return deadline is None or time.time() < deadline


def _claim(tickets: Any) -> bool:
    """Take one trial from the shared counter (-1: unlimited); False when none are left."""
    with tickets.get_lock():
        if tickets.value == 0:
            return False
        if tickets.value > 0:
            tickets.value -= 1
        return True


def _end_with_parent(parent: int) -> None:
    """A worker whose parent died (SIGKILL) interrupts itself rather than go on as an orphan:
    its running trial is recorded as interrupted, and it takes no new one."""
    while os.getppid() == parent:
        time.sleep(1.0)
    os.kill(os.getpid(), signal.SIGTERM)


def _work(spec: WorkerSpec, tickets: Any) -> None:
    """A worker process: rebuild the study and the objective, then run trials while tickets last."""
    import torch

    from mnr.tuning.objective import Objective
    from mnr.tuning.space import parse_search_space

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    torch.set_num_threads(spec.threads)
    threading.Thread(target=_end_with_parent, args=(os.getppid(),), daemon=True).start()
    stop = threading.Event()

    def on_signal(signum: int, frame: Any) -> None:
        stop.set()  # the trial ends at its next epoch, recorded as interrupted

    # Not a KeyboardInterrupt at once, as in one process: raised between two Optuna calls it would
    # fail a trial without saying why. The objective checks `stop` at every epoch instead.
    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    data, block = spec.data.attach()
    try:
        study = optuna.load_study(
            study_name=spec.study.name,
            storage=spec.study.open_storage(),
            sampler=spec.study.new_sampler(),
            pruner=spec.study.new_pruner(),
        )
        objective = Objective(
            config=spec.config,
            space=parse_search_space(spec.config.search),
            data=data,
            parent=spec.parent,
            study=spec.study,
            threads=spec.threads,
            stop=stop,
        )
        while not stop.is_set() and _more_time(spec.deadline) and _claim(tickets):
            study.optimize(objective, n_trials=1, catch=(Exception,))
    except KeyboardInterrupt:
        pass  # the trial is recorded as interrupted; the parent reports it
    finally:
        try:
            block.close()
        except BufferError:  # tensors still view the block; the process exits in a moment anyway
            pass
