"""Several training jobs on one fabric: each job's step alone and together, and the links they share.

The model:

- **Alone.** Each job is a training step (``training.simulate_step``) on its own GPUs of the shared
  fabric, with the rest of the fabric idle: any ``tp x cp x pp x dp (x ep)`` layout with ZeRO 0 to 2,
  its compute, TP/CP/EP communication, pipeline and gradient buckets as ``simulate_step`` times them.
- **Together.** Jobs share the fabric through their gradient reduction: the bucketed all-reduce (or,
  with ZeRO-1/2, reduce-scatter) of every data-parallel group (dp x cp ranks of equal TP and pipeline
  coordinates), which runs overlapping backward for most of it and crosses the scale-out network.
  A bucket of job ``j`` is simulated with every other job reducing its full bucket back to back on the
  same fabric for as long as ``j``'s bucket is in flight: the steady state of jobs that communicate at
  the same time. That duration replaces the alone one in each of ``j``'s bucket chains (one per pipeline
  stage), and the step is composed as ``simulate_step`` does (bucket ``i`` starts at
  max(ready_i, end_{i-1}); step = max(forward + backward, or the pipeline's end; the chains' ends)). It
  is an upper bound on the gradient traffic's slowdown when the jobs' phases do not line up.
- **Not shared.** Traffic inside a job's step keeps its alone timing: TP stays inside NVLink domains,
  whose switches are non-blocking, so it meets no other job; a pipeline's activations, CP's ring shifts,
  EP's all-to-alls and ZeRO-1/2's parameter all-gathers at the start of the step are also timed alone,
  so where they cross links another job loads, their share of the slowdown is not counted (a lower
  bound on it). ZeRO-3 is refused: its parameter gathers sit inside every layer's compute, and
  re-timing them under sharing would mean re-running the pipeline with other jobs' traffic.
- **Shared links.** A link is shared when more than one job's full-bucket gradient collective crosses
  it alone. Its *offered load* is sum over jobs of (bytes the job's full bucket puts on it) / (bucket
  time alone x link capacity): above 1 the jobs together ask more than the link carries, which is where
  a slowdown comes from.

Slowdown = step together / step alone (1.0: sharing costs nothing).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

from fabricsim.collectives import AllreduceRunner, collective
from fabricsim.errors import ConfigError
from fabricsim.experiments.placement import place
from fabricsim.topologies.base import Topology
from fabricsim.training import rank_groups
from fabricsim.training.step import StepResult, simulate_step

__all__ = ["Job", "JobResult", "ClusterResult", "run_cluster", "format_cluster", "job_view"]


@dataclass(frozen=True)
class Job:
    """One job: its step (a ``StepConfig``: model, layout, algorithm, batch...), size and placement.

    ``placement`` is ``"packed"``, ``"scattered"`` or explicit ranks (a list, or ``"0-71,144-215"``).
    """

    name: str
    config: object
    gpus: int | None = None
    placement: object = "packed"


@dataclass
class JobResult:
    """A job's ranks and step time alone and together (seconds)."""

    name: str
    ranks: list
    alone: StepResult
    step_alone: float
    step_together: float
    dp_alone: float  # sum of bucket all-reduce times
    dp_together: float
    bucket_alone: dict = field(default_factory=dict)  # bucket size -> seconds
    bucket_together: dict = field(default_factory=dict)

    @property
    def slowdown(self) -> float:
        return self.step_together / self.step_alone if self.step_alone > 0 else 1.0


@dataclass
class ClusterResult:
    """Every job's result and the links more than one job uses, most loaded first."""

    topology: str
    gpus: int
    jobs: list
    shared_links: list  # (link name, offered load, {job: load})

    def job(self, name: str) -> JobResult:
        return next(j for j in self.jobs if j.name == name)


def job_view(topology: Topology, ranks: Sequence[int]) -> Topology:
    """The fabric as one job sees it: the whole graph, with only the job's GPUs as ranks (in rank order)."""
    gpus = [topology.gpus[r] for r in sorted(ranks)]
    chosen = set(gpus)
    domains = [d for d in ([g for g in dom if g in chosen] for dom in topology.domains) if d]
    return Topology(topology.graph, gpus, domains, name=topology.name, hardware=topology.hardware,
                    meta=topology.meta)


def _chain_end(ready: np.ndarray, durations: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(start, end) of buckets run one at a time in order, bucket i not before ready_i."""
    csum = np.cumsum(durations)
    end = csum + np.maximum.accumulate(ready - (csum - durations))
    return end - durations, end


@dataclass
class _Plan:
    """What of a job meets the other jobs: its gradient collective (``kind`` over ``dp_groups``, global
    ranks) issued as bucket chains (one per pipeline stage: sizes and ready times), after ``base``."""

    name: str
    ranks: list
    alone: StepResult
    dp_groups: list
    algorithm: str
    kind: str  # "allreduce", or "reducescatter" (ZeRO-1/2)
    chains: list  # (sizes, ready) per chain
    base: float  # the step without its gradient chains: forward + backward, or the pipeline's end

    @property
    def full_bucket(self) -> int:
        return max((int(sizes.max()) for sizes, _ in self.chains if len(sizes)), default=0)

    @property
    def reduces(self) -> bool:
        return bool(self.full_bucket) and bool(self.dp_groups) and len(self.dp_groups[0]) > 1


def _dp_cp_groups(groups) -> list:
    """Ranks with equal TP and PP coordinates: the gradient-reduction group (dp x cp) of a full layout."""
    by: dict = {}
    for r, (t, _c, _d, s) in enumerate(groups.coords):
        by.setdefault((t, s), []).append(r)
    return [sorted(v) for _, v in sorted(by.items())]


def _plan(topology: Topology, job: Job, ranks: list) -> _Plan:
    """Simulate ``job`` alone on its GPUs and describe the gradient traffic it shares (module docstring)."""
    config = job.config
    if getattr(config, "zero", 0) == 3:
        raise ConfigError(f"job {job.name}: ZeRO-3 gathers parameters inside every layer's forward and backward, "
                          "which a shared cluster does not re-time under sharing; use zero = 0, 1 or 2")
    view = job_view(topology, ranks)
    alone = simulate_step(view, config)
    order = sorted(ranks)  # the view's rank r is the job's r-th lowest global rank
    local = _dp_cp_groups(rank_groups(view, config.layout_for(view.num_gpus)))  # the DP groups when cp = pp = 1
    if config.data_parallel_only:
        chains = [(alone.bucket_sizes, alone.bucket_ready)]
        kind, base = "allreduce", alone.forward_time + alone.backward_time
    else:
        chains = [(sizes, ready) for sizes, ready, _, _ in alone.dp_chains]
        kind = "allreduce" if config.zero == 0 else "reducescatter"
        base = alone.pipeline.time
    groups = [[order[r] for r in g] for g in local]
    return _Plan(job.name, order, alone, groups, alone.algorithm, kind, chains, base)


def _reduce(sim, runner, plan: _Plan, nbytes: int) -> list:
    """``plan``'s gradient collective of ``nbytes`` on every one of its groups at once (processes)."""
    algorithm = plan.algorithm if plan.kind == "allreduce" else None
    return [collective(sim, plan.kind, int(nbytes), ranks=g, algorithm=algorithm, protocol=runner.protocol,
                       calibration=runner.calibration, memo=runner.memo) for g in plan.dp_groups]


def _background(sim, runner, plan: _Plan, until):
    """A job reducing its full bucket back to back until ``until`` fires (the other jobs' steady traffic)."""
    while not until.triggered:
        yield sim.env.all_of(_reduce(sim, runner, plan, plan.full_bucket))


def _bucket_time(runner: AllreduceRunner, job: _Plan, nbytes: int, others: list) -> tuple[float, np.ndarray]:
    """Job's gradient collective of ``nbytes`` (all its groups at once) while ``others`` keep reducing their
    full buckets; returns its time and the bytes it put on every link when alone (others empty)."""
    sim = runner.simulation(record=None)
    procs = _reduce(sim, runner, job, nbytes)
    done = sim.env.all_of(procs)
    for other in others:
        if other.reduces:
            sim.process(_background(sim, runner, other, done))
    res = sim.run()
    return max(p.value.time for p in procs), res.link_bytes


def run_cluster(topology: Topology, jobs: Sequence[Job], *, top_links: int = 8) -> ClusterResult:
    """Simulate ``jobs`` sharing ``topology``: each job's step alone and together (module docstring).

    Raises
    ------
    ConfigError
        No jobs, duplicate names, a bad placement, a ZeRO-3 job.
    InfeasibleError
        The jobs do not fit, or a job's layout does not fit its GPUs (TP across domains, batch too small).
    """
    if not jobs:
        raise ConfigError("a shared cluster needs at least one job")
    names = [j.name for j in jobs]
    if len(set(names)) != len(names):
        raise ConfigError(f"job names must differ; {names}")
    placed = place(topology, [(j.gpus, j.placement) for j in jobs])
    plans = [_plan(topology, job, ranks) for job, ranks in zip(jobs, placed)]
    runner = AllreduceRunner(topology)
    results = []
    loads: dict[int, dict[str, float]] = {}
    for plan in plans:
        alone_t, together_t = {}, {}
        if plan.reduces:
            sizes = np.unique(np.concatenate([s for s, _ in plan.chains])).tolist()
            for size in sizes:
                alone_t[size], link_bytes = _bucket_time(runner, plan, size, [])
                together_t[size] = _bucket_time(runner, plan, size, [p for p in plans if p is not plan])[0]
                if size == plan.full_bucket:
                    cap = runner.simulation(record=None).fabric.capacity
                    for link in np.flatnonzero(link_bytes).tolist():
                        loads.setdefault(link, {})[plan.name] = link_bytes[link] / (alone_t[size] * cap[link])
        step = {}
        for label, times in (("alone", alone_t), ("together", together_t)):
            end_step, comm = plan.base, 0.0
            for sizes, ready in plan.chains if times else ():
                if len(sizes):
                    durations = np.array([times[s] for s in sizes.tolist()])
                    end_step = max(end_step, float(_chain_end(np.asarray(ready), durations)[1][-1]))
                    comm += float(durations.sum())
            step[label] = (end_step, comm)
        results.append(JobResult(plan.name, plan.ranks, plan.alone, step["alone"][0], step["together"][0],
                                 step["alone"][1], step["together"][1], alone_t, together_t))
    link_name = runner.simulation(record=None).fabric.links.name
    shared = [(link_name(link), sum(by_job.values()), by_job) for link, by_job in loads.items() if len(by_job) > 1]
    shared.sort(key=lambda s: -s[1])
    return ClusterResult(topology.name, topology.num_gpus, results, shared[:top_links])


def format_cluster(result: ClusterResult) -> list[str]:
    """The report ``fabricsim cluster`` prints."""
    from fabricsim.units import format_time

    lines = [f"shared cluster: {result.topology}, {result.gpus} GPUs, {len(result.jobs)} jobs", "",
             f"{'job':<12}{'GPUs':>6}  {'ranks':<16}{'algorithm':<14}{'step alone':>12}{'together':>12}"
             f"{'slowdown':>10}{'DP comm alone':>15}{'together':>11}"]
    for j in result.jobs:
        span = f"{j.ranks[0]}..{j.ranks[-1]}" if j.ranks else "-"
        lines.append(f"{j.name:<12}{len(j.ranks):>6}  {span:<16}{j.alone.algorithm:<14}{format_time(j.step_alone):>12}"
                     f"{format_time(j.step_together):>12}{j.slowdown:>9.3f}x{format_time(j.dp_alone):>15}"
                     f"{format_time(j.dp_together):>11}")
    lines.append("")
    if result.shared_links:
        lines.append("links shared by several jobs, by offered load (sum over jobs of bucket bytes / bucket time "
                     "alone / capacity; above 1 they ask more than the link carries):")
        for name, load, by_job in result.shared_links:
            parts = ", ".join(f"{k} {v:.2f}" for k, v in by_job.items())
            lines.append(f"  {name:<36}{load:>6.2f}  ({parts})")
    else:
        lines.append("no link carries more than one job's data-parallel traffic")
    return lines
