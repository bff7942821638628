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
from typing import TYPE_CHECKING, Callable, Generator, Sequence

import numpy as np
import simpy

from fabricsim.errors import ConfigError
from fabricsim.simulator.fabric import Fabric
from fabricsim.simulator.trace import TraceRecorder
from fabricsim.topologies.base import Topology

if TYPE_CHECKING:
    from fabricsim.simulator.routing import Router

__all__ = ["Simulation", "SimulationResult", "set_capacity"]


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
    link_peak: np.ndarray | None = None  # highest load of every link (B/s), with ``peak_loads=True``

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
    trace : bool or path
        Record a timeline for :meth:`write_trace`: per step and rank slices and the busiest links'
        counters, streamed to a temporary file as the run goes (give the final path to create it beside
        it; see ``trace.TraceRecorder``).
    trace_ranks : array of int, optional
        Ranks whose GPU tracks the trace keeps (default: all).
    efficiency : dict, optional
        Usable share of line rate per link kind (see ``Fabric``).
    router : Router, optional
        Reuse the routes of an earlier simulation of the same topology.
    finish_rtol : float
        Batch flow completions within this fraction of their draining time (default 0: exact).
    peak_loads : bool
        Keep every link's highest load (B/s) over the run (``SimulationResult.link_peak``). The round
        cache then serves only launches first solved in this run, whose loads were seen.
    """

    def __init__(self, topology: Topology, *, cache: bool = True, record: str | None = "groups",
                 trace: bool | str | os.PathLike = False, efficiency: dict | None = None,
                 router: Router | None = None, finish_rtol: float = 0.0,
                 trace_ranks: str | Sequence[int] | None = None, peak_loads: bool = False) -> None:
        self.env = simpy.Environment()
        self.topology = topology
        trace = trace is not False and trace is not None
        self.fabric = Fabric(self.env, topology, cache=cache, record="flows" if trace else record,
                             efficiency=efficiency, router=router, finish_rtol=finish_rtol)
        self.tracer = None
        if trace:
            path = None if trace is True else trace
            self.tracer = TraceRecorder(self.fabric, path, ranks=trace_ranks)
            self.fabric.fluid.on_rates = self.tracer.on_rates
            self.fabric.on_group_done = self.tracer.on_group
            self.fabric.on_cached = self.tracer.on_cached
        self.peak_load = None
        if peak_loads:
            self._watch_peaks()
        self.firing = ""  # label of the timed action being run
        self._armed = 0  # timed actions not yet fired (they alone do not keep a run going)
        for t, links, label in topology.meta.get("timed_faults", ()):
            self.at(t, set_capacity(links), label)

    def _watch_peaks(self) -> None:
        """Track link loads as the fluid reports them. A cached launch reports none, but it repeats a
        launch solved earlier in this run (``keep_own_records``) alone on an idle fabric: same loads."""
        self.fabric.keep_own_records()
        peak = self.peak_load = np.zeros(len(self.fabric.links))
        chained = self.fabric.fluid.on_rates

        def on_rates(t, link_ids, loads):
            np.maximum.at(peak, link_ids, loads)
            if chained is not None:
                chained(t, link_ids, loads)
        self.fabric.fluid.on_rates = on_rates

    def at(self, t: float, action: Callable[["Simulation"], object], label: str = "") -> None:
        """Call ``action(sim)`` at simulated time ``t``, e.g. ``sim.at(1e-3, set_capacity(links, 0.0))``.

        A pending action does not keep the run going: a run whose work ends before ``t`` ends there and
        the action never fires. With ``trace=True`` the moment shows as an instant event named ``label``.
        """
        if not t >= self.env.now:
            raise ConfigError(f"cannot schedule an action at t={t!r}, before now ({self.env.now})")
        self._armed += 1

        def fire(_event):
            self._armed -= 1
            if self.tracer is not None:
                self.tracer.on_mark(self.env.now, label or "action")
            self.firing = label
            action(self)
        self.env.timeout(t - self.env.now).callbacks.append(fire)

    @property
    def pending_actions(self) -> int:
        """Timed actions (``at``) not yet fired."""
        return self._armed

    def process(self, generator: Generator) -> simpy.Process:
        return self.env.process(generator)

    def compute(self, rank: int, seconds: float, label: str = "compute") -> simpy.Event:
        """A compute delay on GPU ``rank``: an event that fires ``seconds`` from now."""
        if not seconds >= 0:
            raise ConfigError(f"compute time must be non-negative, got {seconds!r}")
        if self.tracer is not None:
            self.tracer.on_compute(rank, label, self.env.now, self.env.now + seconds)
        return self.env.timeout(seconds)

    def run(self, until: float | None = None) -> SimulationResult:
        env = self.env
        while self._armed and until is None and len(env._queue) > self._armed:
            env.step()  # timed actions pending: stop when only they are left
        if not self._armed or until is not None:
            env.run(until=until)
        link_bytes, link_busy = self.fabric.link_totals()
        links = self.fabric.links
        names = list(links.names)
        stats = dict(self.fabric.stats, solves=self.fabric.fluid.solves)
        return SimulationResult(float(self.env.now), list(self.fabric.log), names, link_bytes, link_busy,
                                links.bandwidth.copy(), stats,
                                None if self.peak_load is None else self.peak_load.copy())

    def write_trace(self, path: str | os.PathLike, *, max_links: int = 32) -> None:
        """Publish the recorded timeline as Chrome/Perfetto trace-event JSON (complete, or no file)."""
        if self.tracer is None:
            raise ConfigError("this simulation was created without trace=True")
        if not isinstance(path, (str, os.PathLike)):
            raise ConfigError(f"a trace path must be a string or a path, got {type(path).__name__}")
        try:
            self.tracer.write(path, max_links=max_links)
        except OSError as exc:
            raise ConfigError(f"{os.fspath(path)}: cannot write the trace: {exc.strerror or exc}") from None


def set_capacity(links, factor: float | None = None, label: str = ""):
    """An action for :meth:`Simulation.at`: the links carry ``factor`` of their usable rate from then on.

    ``links`` holds ``(u, v)`` node-name pairs (with ``factor``), or ``(u, v, factor)`` triples as
    ``topologies.faults.timed_faults`` makes them. A factor of 0 takes a link down; flows reroute.
    """
    links = list(links)

    def action(sim: "Simulation") -> None:
        lt = sim.fabric.links
        ids, factors = [], []
        for entry in links:
            u, v = entry[0], entry[1]
            f = entry[2] if len(entry) > 2 and factor is None else factor
            if f is None:
                raise ConfigError("set_capacity needs a factor, per link or for all")
            ids.append(lt.edge_index[(sim.fabric.router.node(u), sim.fabric.router.node(v))])
            factors.append(float(f))
        sim.fabric.set_capacity(np.asarray(ids, dtype=np.int64), np.asarray(factors), label or sim.firing)
    return action
