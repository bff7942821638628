"""Run many points (cluster size x algorithm) in parallel; CSV and JSON rows written as each point finishes.

A *point* is one cluster size: its topology is built once, and every algorithm runs on it with one
AllreduceRunner, so routes are computed once per size. Points run in a process pool over the machine's
cores; results come back in the order of the sizes (``imap``), so files, tables and numbers are the same
from run to run and for any number of workers.

Two modes:

- ``"step"``: one training step per (size, algorithm) (``training.step``), plus, optionally, a busbw curve:
  all-reduces of several message sizes at one cluster size (``curve_gpus``), for the busbw-vs-size plot.
- ``"message"``: all-reduces of the given message sizes at every cluster size, as nccl-tests reports them.

Scaling efficiency (step mode) is per-GPU throughput (tokens/s/GPU) over that of the fastest algorithm at
the smallest size of the sweep: one baseline for every line, so the lines compare with each other. Under
weak scaling it is step_time(baseline) / step_time; under strong scaling it is the usual
speedup / (size ratio).
"""

from __future__ import annotations

import csv
import json
import os
from dataclasses import asdict, dataclass, field, replace
from typing import Callable, Iterator

from fabricsim.errors import ConfigError, InfeasibleError
from fabricsim.training.step import StepConfig

__all__ = ["SweepSpec", "default_sizes", "plan_sweep", "run_point", "run_sweep", "SweepWriter", "STEP_COLUMNS",
           "MESSAGE_COLUMNS", "DEFAULT_TOPOLOGY", "DEFAULT_ALGORITHMS", "RACK_SIZES"]

DEFAULT_TOPOLOGY = "gb200-nvl72-ib"
DEFAULT_ALGORITHMS = ("ring", "tree", "hierarchical", "nvls")
RACK_SIZES = (72, 576, 4608)  # one NVL72, 8 racks, 64 racks
DEFAULT_CURVE = tuple(2**20 * 4**k for k in range(6))  # 1 MiB .. 1 GiB, x4

STEP_COLUMNS = ["topology", "model", "precision", "scaling", "gpus", "tp", "dp", "algorithm", "step_time_s",
                "compute_time_s", "comm_time_s", "exposed_comm_s", "exposed_share", "tp_comm_s", "dp_comm_s",
                "busbw_GBps", "mfu", "tokens_per_s", "tokens", "buckets", "bucket_bytes", "grad_bytes",
                "scaling_eff"]
MESSAGE_COLUMNS = ["topology", "gpus", "algorithm", "protocol", "bytes", "time_s", "algbw_GBps", "busbw_GBps"]


def default_sizes(max_gpus: int = 8192, *, min_gpus: int = 8) -> list[int]:
    """Doubling from ``min_gpus`` to ``max_gpus``, plus the rack-aligned 72, 576 and 4,608 that fit.

    >>> default_sizes(1024)
    [8, 16, 32, 64, 72, 128, 256, 512, 576, 1024]
    """
    sizes = set()
    n = min_gpus
    while n <= max_gpus:
        sizes.add(n)
        n *= 2
    sizes.update(s for s in RACK_SIZES if min_gpus <= s <= max_gpus)
    return sorted(sizes)


@dataclass(frozen=True)
class SweepSpec:
    """Everything a sweep depends on (the same spec gives the same rows).

    ``algorithms`` that a size's fabric lacks are skipped there (hierarchical needs several domains, NVLS
    NVLink switch chips); with ``strict_algorithms`` an algorithm no size can run is an error.
    """

    topology: str = DEFAULT_TOPOLOGY
    sizes: tuple = ()
    algorithms: tuple = DEFAULT_ALGORITHMS
    mode: str = "step"
    step: StepConfig | None = None
    message_sizes: tuple = (2**30,)
    curve_gpus: int | None = None  # step mode: GPUs of the busbw-vs-size curve (None: no curve)
    curve_sizes: tuple = DEFAULT_CURVE
    topology_options: dict = field(default_factory=dict)
    strict_algorithms: bool = False

    def __post_init__(self) -> None:
        if self.mode not in ("step", "message"):
            raise ConfigError(f"mode must be 'step' or 'message', got {self.mode!r}")
        if self.mode == "step" and self.step is None:
            raise ConfigError("a step sweep needs a StepConfig (the model and how it is trained)")
        if not self.sizes:
            raise ConfigError("a sweep needs at least one cluster size")
        if any(isinstance(s, bool) or not isinstance(s, int) or s < 1 for s in self.sizes):
            raise ConfigError(f"cluster sizes must be positive integers, got {list(self.sizes)}")
        if not self.algorithms:
            raise ConfigError("a sweep needs at least one algorithm")
        from fabricsim.collectives import ALGORITHMS

        for a in self.algorithms:
            if a not in ALGORITHMS:
                raise ConfigError(f"unknown algorithm {a!r}; use {', '.join(ALGORITHMS)}")

    def meta(self) -> dict:
        """What the rows were computed from (written next to them in the JSON file)."""
        out = {"topology": self.topology, "mode": self.mode, "sizes": list(self.sizes),
               "algorithms": list(self.algorithms), "topology_options": dict(self.topology_options)}
        if self.mode == "message":
            out["message_sizes"] = list(self.message_sizes)
        if self.step is not None and self.mode == "step":
            cfg = asdict(self.step)
            cfg["model"] = self.step.model.name
            out["step"] = cfg
            out["curve_gpus"] = self.curve_gpus
        return out


def _build(spec: SweepSpec, gpus: int):
    from fabricsim.topologies.io import PRESETS, resolve

    if spec.topology in PRESETS:
        return resolve(spec.topology, gpus=gpus, **spec.topology_options)
    topo = resolve(spec.topology, **spec.topology_options)  # a file: one fixed size
    if topo.num_gpus != gpus:
        raise InfeasibleError(f"{spec.topology} holds {topo.num_gpus} GPUs, not {gpus}: a topology file has one size")
    return topo


def plan_sweep(spec: SweepSpec) -> list[int]:
    """Check every size before anything runs: the fabric holds it, TP fits, the batch feeds every replica.

    Returns the sizes in the order they run. Raises the library's errors with one clear message.
    """
    from fabricsim.training.layout import rank_groups
    from fabricsim.training.step import _sequences

    sizes = sorted(set(spec.sizes))
    for gpus in sizes:
        topo = _build(spec, gpus)
        if topo.num_gpus != gpus:
            raise InfeasibleError(f"{spec.topology} cannot be sized to {gpus} GPUs (it has {topo.num_gpus})")
        if spec.mode == "step":
            layout = spec.step.layout_for(gpus)
            layout.check_model(spec.step.model.layers)
            rank_groups(topo, layout)
            _sequences(spec.step, layout.dp)
            if not spec.step.peak_flops and "gpu" not in getattr(topo, "hardware", {}):
                raise ConfigError(f"topology {spec.topology} names no GPU preset, so compute time is unknown: "
                                  "give --peak-flops or --gpu (StepConfig(peak_flops=...))")
    if spec.mode == "step" and spec.curve_gpus is not None and spec.curve_gpus not in sizes:
        raise ConfigError(f"the busbw curve's size ({spec.curve_gpus} GPUs) is not one of the sweep's sizes")
    return sizes


def run_point(spec: SweepSpec, gpus: int, algorithms=None, *, curve: bool | None = None) -> dict:
    """``algorithms`` (default: the spec's) at one size: ``{"gpus", "rows", "curve", "skipped"}`` (picklable).

    ``curve`` (default: when ``gpus`` is the spec's ``curve_gpus``) adds the busbw-vs-size rows; with
    ``curve="only"`` only those are computed.
    """
    from fabricsim.collectives import AllreduceRunner, GroupLayout, available_algorithms
    from fabricsim.training.step import simulate_step, step_layout

    algorithms = spec.algorithms if algorithms is None else tuple(algorithms)
    if curve is None:
        curve = spec.mode == "step" and gpus == spec.curve_gpus
    topo = _build(spec, gpus)
    runner = AllreduceRunner(topo)
    fabric = runner.simulation(record=None).fabric
    ranks = step_layout(topo, spec.step.tp).dp_groups[0] if spec.mode == "step" else None
    layout = GroupLayout.of(fabric, ranks)
    have = set(available_algorithms(fabric, layout)) | {"auto"}
    rows, curve_rows, skipped = [], [], []
    for algorithm in algorithms:
        if algorithm not in have:
            skipped.append(algorithm)
            continue
        if spec.mode == "step":
            if curve != "only":
                res = simulate_step(topo, replace(spec.step, algorithm=algorithm), runner=runner)
                row = {"topology": spec.topology, "model": spec.step.model.name, "precision": spec.step.precision,
                       "scaling": spec.step.scaling, "bucket_bytes": spec.step.bucket_bytes}
                row.update(res.row())
                row["algorithm"] = algorithm if algorithm != "auto" else f"auto:{res.algorithm}"
                rows.append(row)
            if curve:
                curve_rows += _message_rows(spec, runner, gpus, algorithm, spec.curve_sizes, ranks)
        else:
            rows += _message_rows(spec, runner, gpus, algorithm, spec.message_sizes, None)
    return {"gpus": gpus, "rows": rows, "curve": curve_rows, "skipped": skipped}


def _message_rows(spec, runner, gpus, algorithm, sizes, ranks) -> list[dict]:
    out = []
    for nbytes in sizes:
        res = runner.run(int(nbytes), algorithm, ranks=ranks)
        out.append({"topology": spec.topology, "gpus": len(ranks) if ranks else gpus,
                    "algorithm": algorithm if algorithm != "auto" else f"auto:{res.algorithm}",
                    "protocol": res.protocol, "bytes": int(nbytes), "time_s": res.time,
                    "algbw_GBps": res.algbw / 1e9, "busbw_GBps": res.busbw / 1e9})
    return out


def _task(args):
    spec, gpus, curve = args
    return run_point(spec, gpus, curve=curve)


def _tasks(spec: SweepSpec, sizes: list[int], jobs: int) -> list[tuple]:
    """One task per size (its algorithms share one runner, so routes are computed once per size), plus
    one for the busbw curve. The ``jobs`` costliest tasks go first so that no core waits for the 8,192-GPU
    point at the end; the rest run in size order, so rows appear in order while the big ones run.
    """
    tasks = [(spec, g, False) for g in sizes]
    if spec.mode == "step" and spec.curve_gpus is not None:
        tasks.append((spec, spec.curve_gpus, "only"))

    def cost(t):
        _, g, curve = t
        return g * (len(spec.curve_sizes) / 2 if curve else 1)
    big = sorted(tasks, key=lambda t: -cost(t))[:jobs] if jobs > 1 else []
    return big + [t for t in tasks if t not in big]


def run_sweep(spec: SweepSpec, *, jobs: int | None = None) -> Iterator[dict]:
    """Yield each size's result (as ``run_point``) in size order, computing ``jobs`` sizes at once.

    The numbers do not depend on ``jobs``. Step rows get ``scaling_eff`` against the fastest algorithm at
    the smallest size.
    """
    sizes = plan_sweep(spec)
    jobs = max(1, min(jobs or os.cpu_count() or 1, len(sizes)))
    tasks = _tasks(spec, sizes, jobs)
    with_curve = spec.mode == "step" and spec.curve_gpus is not None
    pending: dict[int, dict] = {g: {} for g in sizes}
    need = {g: 2 if with_curve and g == spec.curve_gpus else 1 for g in sizes}
    pool = None
    if jobs == 1:
        results = (((t[1], t[2]), _task(t)) for t in tasks)
    else:
        import multiprocessing

        pool = multiprocessing.get_context("fork" if os.name == "posix" else "spawn").Pool(jobs)
        asyncs = [((t[1], t[2]), pool.apply_async(_task, (t,))) for t in tasks]
        results = _as_completed(asyncs)
    baseline = None
    order = list(sizes)
    try:
        for (g, curve), part in results:
            pending[g][curve] = part
            while order and len(pending[order[0]]) == need[order[0]]:
                g0 = order.pop(0)
                parts = pending.pop(g0)
                point = dict(parts[False])
                if "only" in parts:
                    point["curve"] = parts["only"]["curve"]
                if spec.mode == "step" and point["rows"]:
                    if baseline is None:
                        best = max(point["rows"], key=lambda r: r["tokens_per_s"])
                        baseline = best["tokens_per_s"] / best["gpus"]
                    for row in point["rows"]:
                        row["scaling_eff"] = (row["tokens_per_s"] / row["gpus"]) / baseline
                yield point
    finally:
        if pool is not None:
            pool.terminate()
            pool.join()


def _as_completed(asyncs):
    """(key, value) of apply_async results as they finish (polling; re-raises a worker's exception)."""
    import time

    left = list(asyncs)
    while left:
        done = [item for item in left if item[1].ready()]
        if not done:
            time.sleep(0.02)
            continue
        for item in done:
            left.remove(item)
            yield item[0], item[1].get()


class SweepWriter:
    """CSV and JSON files in ``out_dir``, rewritten or appended as each point arrives."""

    def __init__(self, out_dir: str, spec: SweepSpec):
        self.out_dir = out_dir
        self.spec = spec
        try:
            os.makedirs(out_dir, exist_ok=True)
        except OSError as exc:
            raise ConfigError(f"cannot create output directory {out_dir!r}: {exc.strerror}") from None
        kind = spec.mode
        self.paths = {"rows": os.path.join(out_dir, f"{kind}.csv"), "json": os.path.join(out_dir, f"{kind}.json")}
        self.columns = STEP_COLUMNS if kind == "step" else MESSAGE_COLUMNS
        self.rows: list[dict] = []
        self.curve: list[dict] = []
        self.skipped: dict[int, list[str]] = {}
        self._start(self.paths["rows"], self.columns)
        if kind == "step" and spec.curve_gpus is not None:
            self.paths["curve"] = os.path.join(out_dir, "busbw.csv")
            self._start(self.paths["curve"], MESSAGE_COLUMNS)

    @staticmethod
    def _start(path: str, columns) -> None:
        with open(path, "w", newline="") as fh:
            csv.DictWriter(fh, columns).writeheader()

    @staticmethod
    def _append(path: str, columns, rows) -> None:
        with open(path, "a", newline="") as fh:
            w = csv.DictWriter(fh, columns, extrasaction="ignore")
            for row in rows:
                w.writerow({k: _fmt(row.get(k)) for k in columns})

    def add(self, point: dict) -> None:
        self.rows += point["rows"]
        self.curve += point["curve"]
        if point["skipped"]:
            self.skipped[point["gpus"]] = point["skipped"]
        self._append(self.paths["rows"], self.columns, point["rows"])
        if "curve" in self.paths:
            self._append(self.paths["curve"], MESSAGE_COLUMNS, point["curve"])
        doc = {"meta": self.spec.meta(), "rows": self.rows}
        if self.curve:
            doc["busbw_curve"] = self.curve
        tmp = self.paths["json"] + ".tmp"
        with open(tmp, "w") as fh:
            json.dump(doc, fh, indent=1, default=float)
        os.replace(tmp, self.paths["json"])


def _fmt(value):
    if isinstance(value, float):
        return repr(float(value))
    if hasattr(value, "item"):  # numpy scalar
        return repr(value.item())
    return value


def run_and_write(spec: SweepSpec, out_dir: str, *, jobs: int | None = None,
                  progress: Callable[[dict], None] | None = None) -> SweepWriter:
    """Run ``spec`` and write its files; ``progress`` is called after each point."""
    writer = SweepWriter(out_dir, spec)
    for point in run_sweep(spec, jobs=jobs):
        writer.add(point)
        if progress is not None:
            progress(point)
    return writer
