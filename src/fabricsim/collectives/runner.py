"""Run any collective by name: one entry point for simulations, one runner for sweeps.

``collective(sim, kind, nbytes, ...)`` starts one collective in a Simulation (concurrent collectives share
the fabric, as in a training step) and returns the SimPy process whose value is a CollectiveResult.
``CollectiveRunner`` runs collectives alone on an idle fabric, reusing routes and flow groups between
runs, and resolves ``algorithm="auto"`` by simulating every algorithm that applies (as AllreduceRunner
does for all-reduce, which it delegates to).

``nbytes`` is nccl-tests' size of the collective and busbw its factor (kinds.py); which algorithms apply
to which collective, and why the others are refused, is documented in shards.py (reduce-scatter,
all-gather), rooted.py (broadcast, reduce), alltoall.py and p2p.py.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any, Sequence, Tuple, Union

from fabricsim.collectives.alltoall import FINISH_RTOL as ALLTOALL_FINISH_RTOL, all_to_all as alltoall_schedule
from fabricsim.collectives.base import CollectiveResult, GroupLayout, Schedule, run_schedule
from fabricsim.collectives.kinds import KINDS, kind as lookup
from fabricsim.collectives.p2p import normalise_pairs, p2p_protocol, ring_shift_pairs, send_recv as p2p_schedule
from fabricsim.collectives.protocol import CALIBRATED, Calibration, choose_protocol
from fabricsim.collectives import rooted, shards
from fabricsim.collectives.select import (AllreduceRunner, available_algorithms, build_allreduce,
                                          check_size_and_channels, nothing, protocol_cost)
from fabricsim.errors import ConfigError, InfeasibleError

__all__ = ["COLLECTIVES", "available", "build", "collective", "reduce_scatter", "all_gather", "all_to_all",
           "broadcast", "reduce", "send_recv", "CollectiveRunner"]

if TYPE_CHECKING:
    from simpy.events import Process

    from fabricsim.simulator.engine import Simulation
    from fabricsim.topologies.base import Topology

#: (src, dst) ranks of one send/recv, or a list of them
Pairs = Union[Tuple[int, int], Sequence[Tuple[int, int]]]

COLLECTIVES = tuple(KINDS)


def available(fabric, layout: GroupLayout, kind: str) -> list[str]:
    """The algorithms that apply to ``kind`` on this group (what ``"auto"`` chooses among)."""
    k = lookup(kind)
    if k.name == "allreduce":
        return available_algorithms(fabric, layout)
    if k.name in ("reducescatter", "allgather"):
        algos = ["ring"]
        if layout.multi_domain and len({len(d) for d in layout.domains}) == 1:
            algos.append("hierarchical")
        if "nvls" in available_algorithms(fabric, layout):
            islands = shards.switch_islands(fabric, layout)
            if len(islands) == 1 or len({len(i) for i in islands}) == 1:
                algos.append("nvls")
        return algos
    return list(k.algorithms)


def _group(fabric, kind: str, ranks, pairs):
    """The group's layout and, for send/recv, its pairs (by default every rank sends to the next)."""
    if kind != "sendrecv":
        if pairs is not None:
            raise ConfigError(f"pairs apply to sendrecv only, not {kind}")
        return GroupLayout.of(fabric, ranks), None
    if pairs is None:
        layout = GroupLayout.of(fabric, ranks)
        return layout, ring_shift_pairs(layout.ranks)
    pairs = normalise_pairs(pairs, fabric.topology.num_gpus)
    members = sorted({r for pr in pairs for r in pr})
    if ranks is not None and not set(members) <= {int(r) for r in ranks}:
        raise ConfigError("a send/recv pair names a rank outside the given ranks")
    return GroupLayout.of(fabric, members), pairs


def build(fabric, layout: GroupLayout, kind: str, nbytes: int, algorithm: str | None = None, *,
          protocol: str = "auto", calibration: Calibration = CALIBRATED, channels: int | None = None,
          root: int | None = None, pairs: list | None = None, memo: dict | None = None) -> Schedule:
    """The schedule of one collective (``algorithm=None``: the kind's default; not ``"auto"``); ``memo``
    remembers all-reduce protocol choices (``AllreduceRunner.memo``)."""
    k = lookup(kind)
    algorithm = algorithm or k.algorithms[0]
    if algorithm == "auto":
        raise ConfigError("algorithm 'auto' is resolved by CollectiveRunner.choose before a run")
    if root is not None and not k.rooted:
        raise ConfigError(f"{k.name} has no root")
    if k.name == "allreduce":
        return build_allreduce(fabric, layout, nbytes, algorithm, protocol=protocol, calibration=calibration,
                               channels=channels, memo=memo)
    if algorithm not in k.algorithms and not (k.name in ("reducescatter", "allgather") and algorithm == "tree"):
        hint = " (NCCL runs it as grouped send/recv)" if k.name in ("alltoall", "sendrecv") else ""
        raise ConfigError(f"{k.name} has no algorithm {algorithm!r}; use one of {', '.join(k.algorithms)}{hint}")
    if k.name == "alltoall":
        return alltoall_schedule(fabric, layout, nbytes, p2p_protocol(nbytes / max(layout.p, 1), protocol))
    if k.name == "sendrecv":
        return p2p_schedule(fabric, pairs, nbytes, p2p_protocol(nbytes, protocol))
    if algorithm == "nvls":
        # NVLS runs on Simple only, as in NCCL
        proto = choose_protocol(nbytes, "simple", protocols=getattr(calibration, "protocols", None))
    else:
        # NCCL's ring/tree cost model of an all-reduce ranks the protocols the same way for its halves
        shape = "tree" if algorithm == "tree" else "ring"
        proto = choose_protocol(nbytes, protocol, cost=protocol_cost(fabric, layout, nbytes, shape),
                                protocols=getattr(calibration, "protocols", None))
    if k.name == "reducescatter":
        return shards.reduce_scatter(fabric, layout, nbytes, proto, algorithm=algorithm, calibration=calibration,
                                     channels=channels)
    if k.name == "allgather":
        return shards.all_gather(fabric, layout, nbytes, proto, algorithm=algorithm, calibration=calibration,
                                 channels=channels)
    make = rooted.broadcast if k.name == "broadcast" else rooted.reduce
    return make(fabric, layout, nbytes, proto, algorithm=algorithm, root=root, channels=channels)


def _check_data(kind: str, layout: GroupLayout, data: dict | None) -> None:
    if data is None:
        return
    missing = [r for r in layout.ranks if r not in data]
    if missing:
        raise ConfigError(f"data-carrying {kind}: no buffer for rank {missing[0]}")
    lengths = {len(data[r]) for r in layout.ranks}
    if len(lengths) > 1:
        raise ConfigError(f"data-carrying {kind}: every rank's buffer must have the same length")
    if kind == "alltoall" and lengths.pop() % layout.p:
        raise ConfigError(f"data-carrying all-to-all: the buffer length must be a multiple of {layout.p} ranks")


def collective(sim: Simulation, kind: str, nbytes: int, *, ranks: Sequence[int] | None = None,
               algorithm: str | None = None, protocol: str = "auto", calibration: Calibration = CALIBRATED,
               data: dict | None = None, root: int | None = None, pairs: Pairs | None = None,
               channels: int | None = None, groups: dict | None = None, memo: dict | None = None) -> Process:
    """Start one collective in ``sim``; returns the SimPy process, whose value is a CollectiveResult.

    Parameters
    ----------
    sim : Simulation
    kind : {"allreduce", "reducescatter", "allgather", "broadcast", "reduce", "alltoall", "sendrecv"}
    nbytes : int
        nccl-tests' size for ``kind`` (kinds.py): the full buffer for reduce-scatter and all-gather, one
        rank's send buffer for all-to-all, each pair's message for send/recv.
    ranks : sequence of int, optional
        The group (positions in ``topology.gpus``); all GPUs by default.
    algorithm : str, optional
        One of the kind's algorithms (``kinds.KINDS[kind].algorithms``); default the first ("ring" for the
        ring collectives, "pairwise" for all-to-all, "p2p" for send/recv).
    data : dict, optional
        rank -> numpy array, changed in place as the collective really would (see each kind's module).
    root : int, optional
        Broadcast and reduce: the root rank (default the group's first).
    pairs : (src, dst) or list of them, optional
        Send/recv: who sends to whom, all at once (default every rank of ``ranks`` to the next).
    groups : dict, optional
        FlowGroup cache shared between runs of equal schedules.
    """
    k = lookup(kind)
    check_size_and_channels(nbytes, channels)
    layout, pairs = _group(sim.fabric, k.name, ranks, pairs)
    _check_data(k.name, layout, data)
    if layout.p == 1 and algorithm != "auto":  # one rank: zero bytes moved, zero time, busbw reported as 0
        return sim.env.process(nothing(CollectiveResult(algorithm or k.algorithms[0], "simple", 1, nbytes, 0.0, 0,
                                                        kind=k.name)))
    schedule = build(sim.fabric, layout, k.name, nbytes, algorithm, protocol=protocol, calibration=calibration,
                     channels=channels, root=root, pairs=pairs, memo=memo)

    def body():
        start = sim.env.now
        steps = 0
        if layout.p > 1 and nbytes > 0:
            steps = yield sim.env.process(run_schedule(sim, schedule, data=data, groups=groups))
        return CollectiveResult(schedule.name, schedule.protocol.name, layout.p, nbytes, sim.env.now - start,
                                steps, kind=k.name)
    return sim.env.process(body())


def reduce_scatter(sim: Simulation, nbytes: int, **options: Any) -> Process:
    """``collective(sim, "reducescatter", nbytes, ...)``: ``nbytes`` is the full input; rank j keeps shard j."""
    return collective(sim, "reducescatter", nbytes, **options)


def all_gather(sim: Simulation, nbytes: int, **options: Any) -> Process:
    """``collective(sim, "allgather", nbytes, ...)``: ``nbytes`` is the full output; rank j gives shard j."""
    return collective(sim, "allgather", nbytes, **options)


def all_to_all(sim: Simulation, nbytes: int, **options: Any) -> Process:
    """``collective(sim, "alltoall", nbytes, ...)``: ``nbytes`` is one rank's send buffer (p blocks)."""
    return collective(sim, "alltoall", nbytes, **options)


def broadcast(sim: Simulation, nbytes: int, **options: Any) -> Process:
    """``collective(sim, "broadcast", nbytes, ...)`` from ``root`` (default the group's first rank)."""
    return collective(sim, "broadcast", nbytes, **options)


def reduce(sim: Simulation, nbytes: int, **options: Any) -> Process:
    """``collective(sim, "reduce", nbytes, ...)`` to ``root`` (default the group's first rank)."""
    return collective(sim, "reduce", nbytes, **options)


def send_recv(sim: Simulation, pairs_or_src_dst: Pairs, nbytes: int, **options: Any) -> Process:
    """Point-to-point: ``(src, dst)`` or many pairs at once (one flow group), ``nbytes`` per pair."""
    return collective(sim, "sendrecv", nbytes, pairs=pairs_or_src_dst, **options)


class CollectiveRunner:
    """Simulates single collectives of any kind on one topology, reusing its routes across runs.

    All-reduce (its runs and its ``"auto"`` choice) is delegated to an AllreduceRunner sharing the same
    routes, so both runners give identical all-reduce answers.
    """

    def __init__(self, topology: Topology, *, calibration: Calibration = CALIBRATED, protocol: str = "auto") -> None:
        self.allreduce = AllreduceRunner(topology, calibration=calibration, protocol=protocol)
        self._choice: dict = {}
        self._results: dict = {}  # runs are deterministic: an identical run alone is not simulated twice

    topology = property(lambda self: self.allreduce.topology)
    calibration = property(lambda self: self.allreduce.calibration)
    protocol = property(lambda self: self.allreduce.protocol)

    def simulation(self, **options: Any) -> Simulation:
        """A fresh Simulation of the topology that reuses the runner's routes."""
        return self.allreduce.simulation(**options)

    def available(self, kind: str, ranks: Sequence[int] | None = None) -> list[str]:
        sim = self.simulation(record=None)
        return available(sim.fabric, GroupLayout.of(sim.fabric, ranks), kind)

    def run(self, kind: str, nbytes: int, algorithm: str | None = None, *, ranks: Sequence[int] | None = None,
            root: int | None = None, pairs: Pairs | None = None, data: dict | None = None,
            trace: str | os.PathLike | None = None, channels: int | None = None,
            trace_ranks: str | Sequence[int] | None = None) -> CollectiveResult:
        """One collective alone on an idle fabric; ``trace`` writes its Perfetto timeline (GPU tracks of
        ``trace_ranks`` only, if given; a failed run leaves no file)."""
        k = lookup(kind)
        if algorithm == "auto":
            algorithm = self.choose(k.name, nbytes, ranks, root=root, pairs=pairs)
        memo = None
        if data is None and trace is None:
            memo = (k.name, nbytes, algorithm, None if ranks is None else tuple(sorted(int(r) for r in ranks)), root,
                    None if pairs is None else repr(pairs), channels)
            if memo in self._results:
                return self._results[memo]
        batching = {"finish_rtol": ALLTOALL_FINISH_RTOL} if k.name == "alltoall" else {}
        sim = self.simulation(trace=trace if trace is not None else False, record="groups" if trace else None,
                              trace_ranks=trace_ranks, **batching)
        try:
            proc = collective(sim, k.name, nbytes, ranks=ranks, algorithm=algorithm, protocol=self.protocol,
                              calibration=self.calibration, data=data, root=root, pairs=pairs, channels=channels)
            sim.run()
            if trace is not None:
                sim.write_trace(trace)
        finally:
            if sim.tracer is not None:
                sim.tracer.discard()
        if memo is not None:
            self._results[memo] = proc.value
        return proc.value

    def choose(self, kind: str, nbytes: int, ranks: Sequence[int] | None = None, *, root: int | None = None,
               pairs: Pairs | None = None) -> str:
        """The fastest algorithm that applies to this collective, size and group (simulated, remembered)."""
        k = lookup(kind)
        if k.name == "allreduce":
            return self.allreduce.choose(nbytes, ranks)
        sim = self.simulation(record=None)
        layout, _ = _group(sim.fabric, k.name, ranks, pairs)
        key = (k.name, layout.ident, nbytes, root)
        if key not in self._choice:
            algos = available(sim.fabric, layout, k.name)
            if not algos:
                raise InfeasibleError(f"no {k.name} algorithm applies to this group")
            if len(algos) == 1:
                return algos[0]
            times = {a: self.run(k.name, nbytes, a, ranks=ranks, root=root, pairs=pairs).time for a in algos}
            self._choice[key] = min(times, key=times.get)
        return self._choice[key]
