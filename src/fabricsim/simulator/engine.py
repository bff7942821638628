"""Simulation: a SimPy environment, a fabric on a topology, and what a run produced.

GPUs are SimPy processes: generator functions that ``yield`` transfers (``sim.fabric.transfer...``) and
compute delays (``sim.compute``). ``run()`` returns a SimulationResult.

>>> import networkx as nx
>>> from fabricsim.topologies.base import Topology
>>> G = nx.DiGraph()
>>> G.add_nodes_from([("a", {"kind": "gpu", "domain": 0}), ("b", {"kind": "gpu", "domain": 0})])
>>> G.add_edge("a", "b", bandwidth=1e9, latency=1e-6, kind="nvlink5")
>>> G.add_edge("b", "a", bandwidth=1e9, latency=1e-6, kind="nvlink5")
>>> sim = Simulation(Topology(G, ["a", "b"], [["a", "b"]]))
>>> def gpu(sim):
...     yield sim.compute(0, 1e-3)
...     yield sim.fabric.transfer("a", "b", 10**6)
>>> _ = sim.process(gpu(sim))
>>> round(sim.run().time * 1e6, 3)  # 1 ms compute + 1 us latency + 1 MB at 1 GB/s
2001.0
"""

from __future__ import annotations

import os

from dataclasses import dataclass

import numpy as np
import simpy

from fabricsim.errors import ConfigError
from fabricsim.simulator.fabric import Fabric
from fabricsim.simulator.trace import TraceRecorder
from fabricsim.topologies.base import Topology

__all__ = ["Simulation", "SimulationResult"]


@dataclass(frozen=True)
class SimulationResult:
    """What a run produced.

    ``groups`` holds one row per completed flow group: (label, flows, bytes, start, finish). Link arrays
    are indexed like ``link_names``: bytes carried, seconds with any traffic, capacity (B/s one way).
    """

    time: float
    groups: list
    link_names: list
    link_bytes: np.ndarray
    link_busy: np.ndarray
    link_bandwidth: np.ndarray
    stats: dict

    def link_utilisation(self) -> np.ndarray:
        """Mean utilisation of every link over the run (bytes carried / (capacity x run time))."""
        if self.time <= 0:
            return np.zeros_like(self.link_bytes)
        return self.link_bytes / (self.link_bandwidth * self.time)

    def busiest_links(self, n: int = 5) -> list[tuple[str, float]]:
        util = self.link_utilisation()
        return [(self.link_names[i], float(util[i])) for i in np.argsort(-util)[:n]]


class Simulation:
    """A SimPy environment with a Fabric over ``topology``.

    Parameters
    ----------
    topology : Topology
    cache : bool
        Reuse timings of repeated flow patterns on an idle fabric (exact; see ``fabric``).
    record : {"groups", "flows", None}
        What the fabric keeps of each transfer (``"flows"`` for per-transfer finish times).
    trace : bool
        Record a timeline for :meth:`write_trace` (per-flow slices and link counters; slower, small runs).
    efficiency : dict, optional
        Usable share of line rate per link kind (see ``Fabric``).
    router : Router, optional
        Reuse the routes of an earlier simulation of the same topology.
    """

    def __init__(self, topology: Topology, *, cache: bool = True, record: str | None = "groups",
                 trace: bool = False, efficiency: dict | None = None, router=None):
        self.env = simpy.Environment()
        self.topology = topology
        self.tracer = TraceRecorder() if trace else None
        self.fabric = Fabric(self.env, topology, cache=cache, record="flows" if trace else record,
                             on_rates=self.tracer.on_rates if trace else None, efficiency=efficiency,
                             router=router)
        if trace:
            self.fabric.on_group_done = self._trace_group

    def process(self, generator) -> simpy.Process:
        return self.env.process(generator)

    def compute(self, rank: int, seconds: float, label: str = "compute") -> simpy.Event:
        """A compute delay on GPU ``rank``: an event that fires ``seconds`` from now."""
        if not seconds >= 0:
            raise ConfigError(f"compute time must be non-negative, got {seconds!r}")
        if self.tracer is not None:
            self.tracer.compute.append((rank, label, self.env.now, self.env.now + seconds))
        return self.env.timeout(seconds)

    def run(self, until: float | None = None) -> SimulationResult:
        self.env.run(until=until)
        link_bytes, link_busy = self.fabric.link_totals()
        links = self.fabric.links
        names = [links.name(i) for i in range(len(links))]
        stats = dict(self.fabric.stats, solves=self.fabric.fluid.solves)
        return SimulationResult(float(self.env.now), list(self.fabric.log), names, link_bytes, link_busy,
                                links.bandwidth.copy(), stats)

    def write_trace(self, path) -> None:
        """Write the recorded timeline as Chrome/Perfetto trace-event JSON."""
        if self.tracer is None:
            raise ConfigError("this simulation was created without trace=True")
        if not isinstance(path, (str, os.PathLike)):
            raise ConfigError(f"a trace path must be a string or a path, got {type(path).__name__}")
        try:
            self.tracer.write(path, self.fabric)
        except OSError as exc:
            raise ConfigError(f"{os.fspath(path)}: cannot write the trace: {exc.strerror or exc}") from None

    def _trace_group(self, group, start, flow_finish) -> None:
        self.tracer.flows.append((group, start, flow_finish))
