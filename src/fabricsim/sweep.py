"""What a sweep computes: scenarios (SweepSpec), their points, and one point's rows.

A *point* is one cluster size of one scenario: its topology is built once, and every algorithm runs on
it with one AllreduceRunner, so routes are computed once per size. A sweep may hold several scenarios
(topologies, models, layouts, fault sets side by side; ``sweep_file``). Points run on the machine's
cores or on a Dask cluster (``sweep_exec``); every finished point is journaled at once and the result
files are written from the journal in plan order (``sweep_store``), so files, tables and numbers are the
same from run to run, for any number of workers, wherever the points ran, and after a resume.

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

import json
from collections import OrderedDict
from dataclasses import asdict, dataclass, field, replace
from typing import Callable, Iterator

from fabricsim.collectives.records import COLUMNS as RECORD_COLUMNS
from fabricsim.errors import ConfigError, FabricsimError, InfeasibleError
from fabricsim.training.step import StepConfig

__all__ = ["SweepSpec", "Point", "default_sizes", "plan_sweep", "plan_points", "run_point", "compute_point",
           "run_sweep", "run_and_write", "SweepIncomplete", "STEP_COLUMNS", "MESSAGE_COLUMNS", "DEFAULT_TOPOLOGY",
           "DEFAULT_ALGORITHMS", "RACK_SIZES"]

DEFAULT_TOPOLOGY = "gb200-nvl72-ib"
DEFAULT_ALGORITHMS = ("ring", "tree", "hierarchical", "nvls")
RACK_SIZES = (72, 576, 4608)  # one NVL72, 8 racks, 64 racks
DEFAULT_CURVE = tuple(2**20 * 4**k for k in range(6))  # 1 MiB .. 1 GiB, x4

STEP_COLUMNS = ["topology", "model", "precision", "scaling", "gpus", "tp", "cp", "pp", "dp", "ep", "virtual_stages",
                "zero", "micro_batches", "algorithm", "step_time_s", "compute_time_s", "comm_time_s", "exposed_comm_s",
                "exposed_share", "tp_comm_s", "dp_comm_s", "busbw_GBps", "mfu", "tokens_per_s", "tokens", "buckets",
                "bucket_bytes", "grad_bytes", "scaling_eff",
                # the breakdown `fabricsim step` prints (critical stage; training.step.BREAKDOWN_KINDS)
                "compute_s", "pp_bubble_s", "pp_p2p_s", "tp_s", "cp_s", "ep_s", "dp_s",
                "memory_GB", "fits"]
#: Message rows share every collective command's schema (collectives.records: size_bytes, time_us, ...).
MESSAGE_COLUMNS = list(RECORD_COLUMNS)


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
    faults: tuple = ()  # fault texts (topologies.faults syntax) applied to every size's fabric
    estimate: str = "simulate"  # message mode: "analytic" uses the closed-form estimate (no simulation)
    calibration: object = None  # a Calibration (``--calibration FILE``); None: the shipped one

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
        if self.estimate not in ("simulate", "analytic") or (self.estimate == "analytic" and self.mode != "message"):
            raise ConfigError(f"estimate must be 'simulate', or 'analytic' in message mode; got {self.estimate!r}")
        from fabricsim.topologies.faults import parse_fault

        object.__setattr__(self, "faults", tuple(self.faults))
        for text in self.faults:
            parse_fault(text)
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
        if self.faults:
            out["faults"] = list(self.faults)
        if self.estimate != "simulate":
            out["estimate"] = self.estimate
        return out


#: Topologies this process built, by what they were built from: a sweep checks every size twice before it
#: runs (the CLI's plan, then the store's) and then runs them, and a size's busbw curve is a point of its
#: own; each is built once. Least recently used dropped beyond this many GPUs in all (the default sweep,
#: 8 to 8,192 GPUs, holds 21,632).
TOPOLOGY_CACHE_GPUS = 32768
_TOPOLOGIES: OrderedDict = OrderedDict()


def _build(spec: SweepSpec, gpus: int):
    """``spec``'s fabric at ``gpus`` GPUs, faults applied (built once per process; Topology is not changed
    by anything that runs on it)."""
    import os

    from fabricsim.topologies.io import PRESETS

    try:
        stamp = None if spec.topology in PRESETS else os.stat(spec.topology)
        stamp = stamp and (stamp.st_mtime_ns, stamp.st_size)  # an edited file is read again
        key = (spec.topology, stamp, gpus, tuple(sorted((k, repr(v)) for k, v in spec.topology_options.items())),
               spec.faults)
    except (OSError, TypeError):
        return _build_new(spec, gpus)
    topo = _TOPOLOGIES.get(key)
    if topo is None:
        topo = _build_new(spec, gpus)
        _TOPOLOGIES[key] = topo
        while sum(t.num_gpus for t in _TOPOLOGIES.values()) > TOPOLOGY_CACHE_GPUS and len(_TOPOLOGIES) > 1:
            _TOPOLOGIES.popitem(last=False)
    _TOPOLOGIES.move_to_end(key)
    return topo


def _build_new(spec: SweepSpec, gpus: int):
    from fabricsim.topologies.faults import apply_faults, parse_fault
    from fabricsim.topologies.io import PRESETS, resolve

    if spec.topology in PRESETS:
        topo = resolve(spec.topology, gpus=gpus, **spec.topology_options)
    else:
        topo = resolve(spec.topology, **spec.topology_options)  # a file: one fixed size
        if topo.num_gpus != gpus:
            raise InfeasibleError(f"{spec.topology} holds {topo.num_gpus} GPUs, not {gpus}: a topology file has "
                                  "one size")
    return apply_faults(topo, [parse_fault(t) for t in spec.faults]) if spec.faults else topo


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
            layout.check_model(spec.step.model.layers, getattr(spec.step.model, "experts", 0))
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
    from fabricsim.training.step import memory_columns, simulate_step, step_layout

    algorithms = spec.algorithms if algorithms is None else tuple(algorithms)
    if curve is None:
        curve = spec.mode == "step" and gpus == spec.curve_gpus
    topo = _build(spec, gpus)
    runner = AllreduceRunner(topo, **({"calibration": spec.calibration} if spec.calibration else {}))
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
                # a timed fault happens once, at its time in the step: simulate the bucket chain as it runs
                res = simulate_step(topo, replace(spec.step, algorithm=algorithm), runner=runner,
                                    engine="events" if topo.meta.get("timed_faults") else "fast")
                row = {"topology": spec.topology, "model": spec.step.model.name, "precision": spec.step.precision,
                       "scaling": spec.step.scaling, "bucket_bytes": spec.step.bucket_bytes}
                row.update(res.row())
                row.update(memory_columns(topo, spec.step))
                row["algorithm"] = algorithm if algorithm != "auto" else f"auto:{res.algorithm}"
                if spec.faults:
                    row["faults"] = " ".join(spec.faults)
                rows.append(row)
            if curve:
                curve_rows += _message_rows(spec, runner, gpus, algorithm, spec.curve_sizes, ranks)
        else:
            rows += _message_rows(spec, runner, gpus, algorithm, spec.message_sizes, None)
    return {"gpus": gpus, "rows": rows, "curve": curve_rows, "skipped": skipped}


def _message_rows(spec, runner, gpus, algorithm, sizes, ranks) -> list[dict]:
    """All-reduce rows of ``sizes`` in the collective commands' schema (records.COLUMNS); each size is
    rounded to whole float elements, as ``fabricsim allreduce`` and nccl-tests do."""
    from fabricsim.collectives.records import nccl_size, record
    from fabricsim.collectives.select import estimate_allreduce

    out = []
    for requested in sizes:
        nbytes, count = nccl_size("allreduce", int(requested), len(ranks) if ranks else gpus)
        if spec.estimate == "analytic":
            res = estimate_allreduce(runner.topology, nbytes, algorithm)
        else:
            res = runner.run(nbytes, algorithm, ranks=ranks)
        out.append(record(res, topology=spec.topology, count=count, model=spec.estimate))
        out[-1]["algorithm"] = algorithm if algorithm != "auto" else f"auto:{res.algorithm}"
        if spec.faults:
            out[-1]["faults"] = " ".join(spec.faults)
    return out


# --- points -------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Point:
    """One unit of work: every algorithm of scenario ``scenario`` at ``gpus`` GPUs (they share one runner,
    so routes are computed once per size), or, with ``curve``, that size's busbw-vs-message-size curve."""

    scenario: int
    gpus: int
    curve: bool = False

    @property
    def key(self) -> str:
        return f"{self.scenario}/{self.gpus}" + ("/curve" if self.curve else "")


def plan_points(specs) -> list[Point]:
    """Every point of the scenarios ``specs``, in the order their rows are written (each spec checked)."""
    if len({s.mode for s in specs}) > 1:
        raise ConfigError("one sweep runs step points or message points, not both")
    points = []
    for i, spec in enumerate(specs):
        points += [Point(i, g) for g in plan_sweep(spec)]
        if spec.mode == "step" and spec.curve_gpus is not None:
            points.append(Point(i, spec.curve_gpus, True))
    return points


def compute_point(spec: SweepSpec, point: Point) -> dict:
    """One point's result as plain JSON types: the same bytes wherever and whenever it runs."""
    part = run_point(spec, point.gpus, curve="only" if point.curve else False)
    return json.loads(json.dumps(part, default=_plain))


def _plain(value):
    return value.item() if hasattr(value, "item") else float(value)


def run_sweep(spec: SweepSpec, *, jobs: int | None = None, scheduler: str | None = None) -> Iterator[dict]:
    """Yield each size's result (as ``run_point``, curve included) in size order, ``jobs`` points at once.

    The numbers do not depend on ``jobs`` or ``scheduler``. Step rows get ``scaling_eff`` against the
    fastest algorithm at the smallest size. A point that fails raises SweepIncomplete.
    """
    from fabricsim.sweep_exec import execute

    points = plan_points([spec])
    done: dict[str, dict] = {}
    order = [p for p in points if not p.curve]
    baseline = None
    for point, result, error in execute([spec], points, jobs=jobs, scheduler=scheduler):
        if error is not None:
            raise SweepIncomplete(f"point {point.gpus} GPUs failed: {error}")
        done[point.key] = result
        while order and order[0].key in done and (Point(0, order[0].gpus, True) not in points
                                                  or Point(0, order[0].gpus, True).key in done):
            p = order.pop(0)
            out = dict(done[p.key])
            if Point(0, p.gpus, True) in points:
                out["curve"] = done[Point(0, p.gpus, True).key]["curve"]
            baseline = add_scaling(spec, out["rows"], baseline)
            yield out


def add_scaling(spec: SweepSpec, rows: list[dict], baseline: float | None) -> float | None:
    """Set ``scaling_eff`` on step rows against ``baseline`` (tokens/s/GPU; the first rows set it)."""
    if spec.mode != "step" or not rows:
        return baseline
    if baseline is None:
        best = max(rows, key=lambda r: r["tokens_per_s"])
        baseline = best["tokens_per_s"] / best["gpus"]
    for row in rows:
        row["scaling_eff"] = (row["tokens_per_s"] / row["gpus"]) / baseline
    return baseline


class SweepIncomplete(FabricsimError):
    """Some points of a sweep failed or did not run; the finished ones are kept (``--resume`` runs the rest)."""


def run_and_write(spec, out_dir: str, *, jobs: int | None = None, scheduler: str | None = None,
                  progress: Callable[[dict], None] | None = None, resume: bool = False):
    """Run a sweep (one SweepSpec or a list of them) into ``out_dir``; see ``sweep_store.SweepStore``.

    Every finished point is appended to the directory's journal at once; result files are written from
    the journal in plan order, so an interrupted and resumed sweep, a local one and a Dask one give the
    same files. ``resume=True`` runs only the points the journal lacks (``spec`` may be None: the plan is
    read from the directory). Raises SweepIncomplete (after writing what finished) if a point failed or
    the run was interrupted.
    """
    from fabricsim.sweep_store import run_into

    return run_into(spec, out_dir, jobs=jobs, scheduler=scheduler, progress=progress, resume=resume)


def _fmt(value):
    if isinstance(value, float):
        return repr(float(value))
    if hasattr(value, "item"):  # numpy scalar
        return repr(value.item())
    return value
