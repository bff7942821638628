"""Where sweep points run: in this process, in a pool over the machine's cores, or on a Dask cluster.

``execute`` yields ``(point, result, error)`` as points finish, in any order (the store puts rows back in
plan order). A point that raises gives its error text instead of a result and the others go on. A pool
worker that dies (killed, out of memory) fails the points still in flight with that reason and stops
the run; ``fabricsim sweep --resume`` runs them again.

Local pools start their workers with ``forkserver`` (``spawn`` where that is missing): a worker then holds
no copy of the parent's open files, in particular not the sweep directory's lock, so a sweep whose main
process was killed can be resumed at once. Dask (``scheduler="tcp://host:8786"``) is optional: ``pip
install 'fabricsim[dask]'``; the workers need fabricsim installed, at the same version.
"""

from __future__ import annotations

import os
from typing import Iterator

from fabricsim.errors import ConfigError

__all__ = ["execute"]


def _work(task):
    spec, point = task
    from fabricsim.sweep import compute_point

    try:
        return compute_point(spec, point), None
    except Exception as exc:  # recorded with the point; the sweep goes on
        return None, f"{type(exc).__name__}: {exc}"


def _ordered(specs, points, jobs: int) -> list[tuple]:
    """Tasks with the ``jobs`` costliest first (no core waits for the 8,192-GPU point at the end), then the
    rest in plan order, so early rows appear while the big ones run."""
    tasks = [(specs[p.scenario], p) for p in points]

    def cost(task):
        spec, p = task
        return p.gpus * (len(spec.curve_sizes) / 2 if p.curve else 1)
    big = sorted(tasks, key=lambda t: -cost(t))[:jobs] if jobs > 1 else []
    return big + [t for t in tasks if t not in big]


def execute(specs, points, *, jobs: int | None = None, scheduler: str | None = None) -> Iterator[tuple]:
    """Run ``points`` (of scenarios ``specs``); yield ``(point, result or None, error or None)`` as each ends."""
    if not points:
        return
    if scheduler:
        yield from _dask(_ordered(specs, points, 2), scheduler)
        return
    jobs = max(1, min(jobs or os.cpu_count() or 1, len(points)))
    tasks = _ordered(specs, points, jobs)
    if jobs == 1:
        for task in tasks:
            yield (task[1], *_work(task))
        return
    yield from _pool(tasks, jobs)


def _pool(tasks, jobs: int) -> Iterator[tuple]:
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor, as_completed
    from concurrent.futures.process import BrokenProcessPool

    methods = multiprocessing.get_all_start_methods()
    ctx = multiprocessing.get_context("forkserver" if "forkserver" in methods else "spawn")
    pool = ProcessPoolExecutor(jobs, mp_context=ctx, initializer=_watch_parent, initargs=(os.getpid(),))
    try:
        futures = {pool.submit(_work, t): t[1] for t in tasks}
        broken = False
        for fut in as_completed(futures):
            point = futures[fut]
            try:
                yield (point, *fut.result())
            except BrokenProcessPool:
                broken = True
                yield point, None, "a worker process died before this point finished"
        if broken:
            return
    finally:
        _stop(pool)


def _watch_parent(pid: int) -> None:
    """Worker start-up: end this worker soon after the sweep's main process is gone (killed), instead of
    waiting forever for work that will not come."""
    import threading
    import time

    def watch():
        while True:
            time.sleep(0.5)
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                os._exit(1)
            except PermissionError:  # the pid now belongs to someone else: ours is gone
                os._exit(1)
    threading.Thread(target=watch, daemon=True, name="fabricsim-parent-watch").start()


def _stop(pool) -> None:
    """Stop a pool now: cancel what has not started and end the workers (an interrupted sweep)."""
    pool.shutdown(wait=False, cancel_futures=True)
    for proc in list((getattr(pool, "_processes", None) or {}).values()):
        if proc.is_alive():
            proc.terminate()
    for proc in list((getattr(pool, "_processes", None) or {}).values()):
        proc.join(timeout=5)


def _dask(tasks, scheduler: str) -> Iterator[tuple]:
    try:
        from distributed import Client, as_completed
    except ImportError:
        raise ConfigError("--scheduler runs points on Dask, which is not installed: pip install 'fabricsim[dask]'") \
            from None
    try:
        client = Client(scheduler, timeout="5s")
    except (OSError, TimeoutError) as exc:
        raise ConfigError(f"cannot reach the Dask scheduler at {scheduler}: {exc}") from None
    futures = []
    try:
        point_of = {}
        for i, task in enumerate(tasks):
            fut = client.submit(_work, task, pure=False, key=f"fabricsim-point-{i}-{task[1].key}")
            point_of[fut.key] = task[1]
            futures.append(fut)
        for fut in as_completed(futures):
            point = point_of[fut.key]
            try:
                yield (point, *fut.result())
            except Exception as exc:  # a lost worker or a task Dask could not run
                yield point, None, f"Dask could not run this point: {type(exc).__name__}: {exc}"
    finally:
        if futures:
            client.cancel(futures)
        client.close()
