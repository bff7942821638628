"""Several training jobs on one fabric: each job's step alone and together, and the links they share.

The model:

- **Alone.** Each job is a training step (``training.simulate_step``) on its own GPUs of the shared
  fabric, with the rest of the fabric idle: compute, TP all-reduces inside NVLink domains, and the
  bucketed data-parallel all-reduce chain overlapping backward.
- **Together.** Jobs share the fabric through their data-parallel traffic (each GPU belongs to one
  job; NVLink switches are non-blocking, so TP traffic inside a domain meets no other job). A bucket's
  all-reduce of job ``j`` is simulated with every other job all-reducing its full bucket back to back
  on the same fabric for as long as ``j``'s bucket is in flight: the steady state of jobs that
  communicate at the same time, which bucketed data parallelism does for most of backward. That
  duration replaces the alone one in ``j``'s chain, and the step is composed as ``simulate_step`` does
  (bucket ``i`` starts at max(ready_i, end_{i-1}); step = forward + max(backward, chain end)). It is an
  upper bound on the slowdown of jobs whose communication phases do not line up.
- **Shared links.** A link is shared when more than one job's bucket all-reduce crosses it alone. Its
  *offered load* is sum over jobs of (bytes the job's full bucket puts on it) / (bucket time alone x link
  capacity): above 1 the jobs together ask more than the link carries, which is where a slowdown comes
  from.

Slowdown = step together / step alone (1.0: sharing costs nothing).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

from fabricsim.collectives import AllreduceRunner, allreduce
from fabricsim.errors import ConfigError
from fabricsim.experiments.placement import place
from fabricsim.topologies.base import Topology
from fabricsim.training import rank_groups
from fabricsim.training.step import StepResult, simulate_step, step_layout

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
    name: str
    ranks: list
    alone: StepResult
    dp_groups: list  # global ranks
    algorithm: str

    @property
    def full_bucket(self) -> int:
        sizes = self.alone.bucket_sizes
        return int(sizes.max()) if len(sizes) else 0


def _background(sim, runner, groups, nbytes, algorithm, until):
    """A job all-reducing ``nbytes`` back to back until ``until`` fires (the other jobs' steady traffic)."""
    while not until.triggered:
        procs = [allreduce(sim, nbytes, ranks=g, algorithm=algorithm, protocol=runner.protocol,
                           calibration=runner.calibration) for g in groups]
        yield sim.env.all_of(procs)


def _bucket_time(runner: AllreduceRunner, job: _Plan, nbytes: int, others: list) -> tuple[float, np.ndarray]:
    """Job's all-reduce of ``nbytes`` (all its DP groups at once) while ``others`` keep reducing their full
    buckets; returns its time and the bytes it put on every link when alone (others empty)."""
    sim = runner.simulation(record=None)
    procs = [allreduce(sim, int(nbytes), ranks=g, algorithm=job.algorithm, protocol=runner.protocol,
                       calibration=runner.calibration) for g in job.dp_groups]
    done = sim.env.all_of(procs)
    for other in others:
        if other.full_bucket and other.dp_groups and len(other.dp_groups[0]) > 1:
            sim.process(_background(sim, runner, other.dp_groups, other.full_bucket, other.algorithm, done))
    res = sim.run()
    return max(p.value.time for p in procs), res.link_bytes


def run_cluster(topology: Topology, jobs: Sequence[Job], *, top_links: int = 8) -> ClusterResult:
    """Simulate ``jobs`` sharing ``topology``: each job's step alone and together (module docstring).

    Raises
    ------
    ConfigError
        No jobs, duplicate names, a bad placement.
    InfeasibleError
        The jobs do not fit, or a job's layout does not fit its GPUs (TP across domains, batch too small).
    """
    if not jobs:
        raise ConfigError("a shared cluster needs at least one job")
    names = [j.name for j in jobs]
    if len(set(names)) != len(names):
        raise ConfigError(f"job names must differ; {names}")
    placed = place(topology, [(j.gpus, j.placement) for j in jobs])
    plans = []
    for job, ranks in zip(jobs, placed):
        if not getattr(job.config, "data_parallel_only", True):
            raise ConfigError(f"job {job.name}: shared clusters model data-parallel jobs (with TP inside NVLink "
                              "domains) today; pipeline, context, expert parallelism and ZeRO are not shared yet")
        view = job_view(topology, ranks)
        alone = simulate_step(view, job.config)
        layout = job.config.layout_for(view.num_gpus) if hasattr(job.config, "layout_for") else None
        dp_groups = rank_groups(view, layout).dp if layout is not None else \
            step_layout(view, getattr(job.config, "tp", 1)).dp_groups
        groups = [[ranks[r] for r in g] for g in dp_groups]
        plans.append(_Plan(job.name, ranks, alone, groups, alone.algorithm))
    runner = AllreduceRunner(topology)
    results = []
    loads: dict[int, dict[str, float]] = {}
    for plan in plans:
        sizes = plan.alone.bucket_sizes
        alone_t, together_t = {}, {}
        if len(sizes) and len(plan.dp_groups[0]) > 1:
            for size in np.unique(sizes).tolist():
                alone_t[size], link_bytes = _bucket_time(runner, plan, size, [])
                together_t[size] = _bucket_time(runner, plan, size, [p for p in plans if p is not plan])[0]
                if size == plan.full_bucket:
                    cap = runner.simulation(record=None).fabric.capacity
                    for link in np.flatnonzero(link_bytes).tolist():
                        loads.setdefault(link, {})[plan.name] = link_bytes[link] / (alone_t[size] * cap[link])
        a = plan.alone
        step = {}
        for label, times in (("alone", alone_t), ("together", together_t)):
            if times:
                durations = np.array([times[s] for s in sizes.tolist()])
                _, end = _chain_end(a.bucket_ready, durations)
                step[label] = (max(a.forward_time + a.backward_time, float(end[-1])), float(durations.sum()))
            else:
                step[label] = (a.forward_time + a.backward_time, 0.0)
        results.append(JobResult(plan.name, plan.ranks, a, step["alone"][0], step["together"][0],
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
