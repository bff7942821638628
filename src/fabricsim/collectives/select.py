"""Choosing and running an all-reduce: algorithm names, ``"auto"``, and the simulate-one-collective API.

``algorithm="auto"`` does what NCCL's tuner does, pick the fastest algorithm for this size and fabric,
but measures instead of estimating: each available algorithm is simulated alone on an idle copy of the
fabric and the fastest wins (the choice is remembered per group and size).
"""

from __future__ import annotations

from typing import Sequence

from fabricsim.collectives.base import CollectiveResult, GroupLayout, Schedule, run_schedule
from fabricsim.collectives.hierarchical import hierarchical_allreduce
from fabricsim.collectives.nvls import nvls_allreduce, switch_islands
from fabricsim.collectives.protocol import CALIBRATED, Calibration, choose_protocol
from fabricsim.collectives.ring import ring_allreduce
from fabricsim.collectives.tree import tree_allreduce
from fabricsim.errors import ConfigError, InfeasibleError

__all__ = ["ALGORITHMS", "available_algorithms", "build_allreduce", "allreduce", "AllreduceRunner"]

ALGORITHMS = ("ring", "tree", "hierarchical", "nvls", "auto")


def _has_nvls(fabric, layout: GroupLayout) -> bool:
    try:
        islands = switch_islands(fabric, layout)
    except InfeasibleError:
        return False
    return any(len(i) > 1 for i in islands)


def available_algorithms(fabric, layout: GroupLayout) -> list[str]:
    """Algorithms that make sense for this group: ring and tree always; hierarchical across domains;
    NVLS where the GPUs hang off NVLink switch chips."""
    algos = ["ring", "tree"]
    if layout.multi_domain:
        algos.append("hierarchical")
    if _has_nvls(fabric, layout):
        algos.append("nvls")
    return algos


def build_allreduce(fabric, layout: GroupLayout, nbytes: int, algorithm: str, *, protocol: str = "auto",
                    calibration: Calibration = CALIBRATED, channels: int | None = None) -> Schedule:
    """The schedule of one all-reduce (not ``"auto"``: see AllreduceRunner)."""
    proto = choose_protocol(nbytes, protocol)
    if algorithm == "ring":
        return ring_allreduce(fabric, layout, nbytes, proto, channels=channels)
    if algorithm == "tree":
        return tree_allreduce(fabric, layout, nbytes, proto)
    if algorithm == "hierarchical":
        return hierarchical_allreduce(fabric, layout, nbytes, proto, intra="ring", inter="ring",
                                      calibration=calibration)
    if algorithm == "nvls":
        if not _has_nvls(fabric, layout):
            raise InfeasibleError("nvls needs GPUs attached to NVLink switch chips (this fabric has none)")
        if len(switch_islands(fabric, layout)) == 1:
            return nvls_allreduce(fabric, layout, nbytes, proto, calibration)
        return hierarchical_allreduce(fabric, layout, nbytes, proto, intra="nvls", inter="tree",
                                      calibration=calibration)
    raise ConfigError(f"unknown algorithm {algorithm!r}; use one of {', '.join(ALGORITHMS)}")


def allreduce(sim, nbytes: int, *, ranks: Sequence[int] | None = None, algorithm: str = "ring",
              protocol: str = "auto", calibration: Calibration = CALIBRATED, channels: int | None = None,
              data: dict | None = None, groups: dict | None = None):
    """Start an all-reduce in ``sim``; returns the SimPy process, whose value is a CollectiveResult."""
    if algorithm == "auto":
        raise ConfigError("algorithm 'auto' is resolved by AllreduceRunner.choose before a run")
    if not isinstance(nbytes, int) or nbytes < 0:
        raise ConfigError(f"message size must be a non-negative number of bytes, got {nbytes!r}")
    layout = GroupLayout.of(sim.fabric, ranks)
    schedule = build_allreduce(sim.fabric, layout, nbytes, algorithm, protocol=protocol,
                               calibration=calibration, channels=channels)

    def body():
        start = sim.env.now
        steps = 0
        if layout.p > 1 and nbytes > 0:
            steps = yield sim.env.process(run_schedule(sim, schedule, data=data, groups=groups))
        return CollectiveResult(schedule.name, schedule.protocol.name, layout.p, nbytes, sim.env.now - start, steps)
    return sim.env.process(body())


class AllreduceRunner:
    """Simulates single all-reduces on one topology, reusing its routes across runs (for sweeps)."""

    def __init__(self, topology, *, calibration: Calibration = CALIBRATED, protocol: str = "auto"):
        from fabricsim.simulator.engine import Simulation

        self.topology = topology
        self.calibration = calibration
        self.protocol = protocol
        self._Simulation = Simulation
        self._router = None
        self._choice: dict = {}

    def simulation(self, **options):
        sim = self._Simulation(self.topology, efficiency=self.calibration.link_efficiency, router=self._router,
                               **options)
        self._router = sim.fabric.router
        return sim

    def run(self, nbytes: int, algorithm: str = "ring", *, ranks: Sequence[int] | None = None,
            data: dict | None = None, trace: str | None = None, channels: int | None = None) -> CollectiveResult:
        """One all-reduce alone on an idle fabric; ``trace`` writes its Perfetto timeline."""
        if algorithm == "auto":
            algorithm = self.choose(nbytes, ranks)
        sim = self.simulation(trace=trace is not None, record="groups" if trace else None)
        proc = allreduce(sim, nbytes, ranks=ranks, algorithm=algorithm, protocol=self.protocol,
                         calibration=self.calibration, channels=channels, data=data)
        sim.run()
        if trace is not None:
            sim.write_trace(trace)
        return proc.value

    def choose(self, nbytes: int, ranks: Sequence[int] | None = None) -> str:
        """The fastest available algorithm for this size and group (simulated, remembered)."""
        sim = self.simulation(record=None)
        layout = GroupLayout.of(sim.fabric, ranks)
        key = (layout.ident, nbytes)
        if key not in self._choice:
            times = {a: self.run(nbytes, a, ranks=ranks).time for a in available_algorithms(sim.fabric, layout)}
            self._choice[key] = min(times, key=times.get)
        return self._choice[key]
