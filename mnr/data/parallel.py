"""Work over many images in several processes: the one process pool mnr has.

Decoding (the cache, `mnr data check`, `mnr predict`) and rendering the built-in dataset are both
a pure function applied to thousands of files, with numpy doing the arithmetic. `process_map`
runs such a function in spawned worker processes, in order, with two settings that matter on a
small machine:

- one BLAS/OpenMP thread per worker: the matrix products are small, and N workers with N
  threads each oversubscribe the cores (OpenBLAS's pool made synthesis several times slower on
  two cores). The variables are read by each child's BLAS as it starts, so work that multiplies
  matrices (the generator) asks for spawned workers (`fresh=True`); decoding does none, and
  uses the platform's default start method (fork on Linux), which starts faster and, unlike
  spawn, does not need the caller's script to guard its top level with
  ``if __name__ == "__main__":``;
- glibc's malloc keeps freed memory in the worker's heap (`_init_worker`): each image allocates
  and frees a few MB of temporaries, and giving them back to the system after every image and
  faulting them in again cost a third of the time.

`map_images` applies a function to every image of an `ImageSet` and turns failures into
`Problem`s located at the image's truth.txt line, so that a broken folder is diagnosed in one pass.

This is hand-written rather than `concurrent.futures.ProcessPoolExecutor` alone because of the
per-child environment and the chunking of files into tasks; the pool itself is multiprocessing's.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import multiprocessing
import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from mnr.console import progress as progress_bar
from mnr.data.folder import ImageSet, Problem
from mnr.errors import MnrError

__all__ = ["ImageMap", "cpu_count", "map_images", "process_map"]

_CHUNK = 32  # images per worker task: amortises inter-process transfer
_ONE_THREAD = {name: "1" for name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")}


def cpu_count() -> int:
    """Cores this process may use (fewer than `os.cpu_count()` under a CPU affinity mask)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def _init_worker() -> None:
    """Keep freed memory in the worker's heap (glibc only; elsewhere a no-op)."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.mallopt(-3, 32 << 20)  # M_MMAP_THRESHOLD: heap, not mmap, below 32 MB
        libc.mallopt(-1, 256 << 20)  # M_TRIM_THRESHOLD: keep up to 256 MB free in the heap
    except (OSError, AttributeError):
        pass


def process_map(
    func: Callable[[Any], Any],
    items: Sequence[Any],
    *,
    workers: int | None = None,
    ordered: bool = True,
    chunksize: int | None = None,
    fresh: bool = False,
) -> Iterator[Any]:
    """Yield `func(item)` for every item, in order (or as finished), in worker processes.

    `workers=None` means one per usable core; 1 (or a single item) runs in this process. `func`
    and the items must be picklable (module-level functions, `functools.partial` of them).
    `chunksize` items go to a worker at a time (default: about 8 chunks per worker, at most 16).
    `fresh` spawns the workers (a new interpreter each, whose BLAS starts with one thread).
    """
    pool, results = _start(
        func, items, workers=workers, ordered=ordered, chunksize=chunksize, fresh=fresh
    )
    try:
        yield from results
    finally:
        if pool is not None:
            pool.terminate()  # a consumer that stops early leaves no worker behind
            pool.join()


def _start(
    func: Callable[[Any], Any],
    items: Sequence[Any],
    *,
    workers: int | None,
    ordered: bool,
    chunksize: int | None,
    fresh: bool,
) -> tuple[Any, Iterator[Any]]:
    """The pool (None in-process) and the iterator of results, the work already under way."""
    workers = max(1, min(int(workers or cpu_count()), len(items)))
    if workers == 1:  # one BLAS thread here too, so that the results match the workers' bit for bit
        return None, _in_process(func, items)
    saved = {name: os.environ.get(name) for name in _ONE_THREAD}
    os.environ.update(_ONE_THREAD)  # read by each child's BLAS as it starts
    try:
        context = multiprocessing.get_context("spawn" if fresh else None)
        pool = context.Pool(workers, initializer=_init_worker)
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
    chunk = chunksize or max(1, min(16, len(items) // (workers * 8)))
    mapper = pool.imap if ordered else pool.imap_unordered
    return pool, mapper(func, items, chunksize=chunk)  # imap hands out tasks from now on


def _in_process(func: Callable[[Any], Any], items: Sequence[Any]) -> Iterator[Any]:
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=1, user_api="blas"):
        yield from map(func, items)


@dataclass(frozen=True)
class _Failure:
    message: str


def _run_chunk(task: tuple[Callable[..., Any], list[str], list[str]]) -> list[Any]:
    """Worker: apply `func` to a chunk; a failure comes back as its message, not an exception."""
    func, paths, names = task
    out: list[Any] = []
    for path, name in zip(paths, names, strict=True):
        try:
            out.append(func(path, name=name))
        except MnrError as exc:
            out.append(_Failure(str(exc).removeprefix(f"{name}: ")))
    return out


class ImageMap:
    """`func(path, name=...)` over every image of a set, started now and collected later.

    The worker processes start and take their first chunks as soon as this is created, so the
    caller can do other work meanwhile: `mnr predict` loads torch and the model while its PNGs
    are being decoded. `collect` gathers the results in order.
    """

    def __init__(
        self, func: Callable[..., Any], image_set: ImageSet, *, workers: int | None = None
    ) -> None:
        count = len(image_set)
        paths = [str(image_set.path(i)) for i in range(count)]
        names = list(image_set.filenames)
        tasks = [
            (func, paths[i : i + _CHUNK], names[i : i + _CHUNK]) for i in range(0, count, _CHUNK)
        ]
        self.image_set = image_set
        # the workers are busy from here on
        self._pool, self._results = _start(
            _run_chunk, tasks, workers=workers, ordered=True, chunksize=1, fresh=False
        )

    def collect(
        self, *, progress: bool = True, desc: str = "decoding"
    ) -> tuple[list[Any], list[Problem]]:
        """The results in order (None where it failed) and one `Problem` per failure, located at
        the image's truth.txt line."""
        results: list[Any] = []
        problems: list[Problem] = []
        try:
            with progress_bar(total=len(self.image_set), desc=desc, disable=not progress) as bar:
                for chunk in self._results:
                    for item in chunk:
                        if isinstance(item, _Failure):
                            problems.append(self.image_set.problem_for(len(results), item.message))
                            item = None
                        results.append(item)
                    bar.update(len(chunk))
        finally:
            self.close()
        return results, problems

    def close(self) -> None:
        """Stop the workers (done by `collect`; for a caller that gives up before it)."""
        if self._pool is not None:
            self._pool.terminate()
            self._pool.join()
            self._pool = None


def map_images(
    func: Callable[..., Any],
    image_set: ImageSet,
    *,
    workers: int | None = None,
    progress: bool = True,
    desc: str = "decoding",
) -> tuple[list[Any], list[Problem]]:
    """Apply `func(path, name=...)` to every image, in parallel over processes, in order.

    Returns the results (None where it failed) and one `Problem` per failure, located at the
    image's truth.txt line, so that a broken folder is diagnosed in one pass.
    """
    return ImageMap(func, image_set, workers=workers).collect(progress=progress, desc=desc)
