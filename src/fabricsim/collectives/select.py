"""Choosing and running an all-reduce: algorithm names, ``"auto"``, and the simulate-one-collective API.

``algorithm="auto"`` does what NCCL's tuner does, pick the fastest algorithm for this size and fabric,
but measures instead of estimating: each available algorithm is simulated alone on an idle copy of the
fabric and the fastest wins (the choice is remembered per group and size).
"""

from __future__ import annotations

from typing import Sequence

from fabricsim.collectives.base import CollectiveResult, GroupLayout, Schedule, run_schedule
from fabricsim.collectives.protocol import PROTOCOLS, Protocol
from fabricsim.collectives.hierarchical import hierarchical_allreduce
from fabricsim.collectives.nvls import nvls_allreduce, switch_islands
from fabricsim.collectives.nvls_tree import nvls_tree_allreduce
from fabricsim.collectives.protocol import CALIBRATED, Calibration, choose_protocol
from fabricsim.collectives import analytic
from fabricsim.collectives.ring import MAX_CHANNELS, ring_allreduce
from fabricsim.collectives.sharp import sharp_allreduce, sharp_capable
from fabricsim.collectives.tree import tree_allreduce
from fabricsim.errors import ConfigError, InfeasibleError

__all__ = ["ALGORITHMS", "available_algorithms", "build_allreduce", "allreduce", "AllreduceRunner", "estimate_allreduce"]

ALGORITHMS = ("ring", "tree", "hierarchical", "nvls", "sharp", "auto")


def _has_nvls(fabric, layout: GroupLayout) -> bool:
    """NVLS needs NVLink switch chips, and NCCL leaves it off for two GPUs or fewer in one island
    (src/transport/nvls.cc: ``gpuCount <= 2``)."""
    try:
        islands = switch_islands(fabric, layout)
    except InfeasibleError:
        return False
    return any(len(i) > 2 for i in islands) or (len(islands) > 1 and any(len(i) > 1 for i in islands))


def available_algorithms(fabric, layout: GroupLayout) -> list[str]:
    """Algorithms that make sense for this group: ring and tree always; hierarchical across domains;
    NVLS where the GPUs hang off NVLink switch chips; SHARP where, in addition, several switch islands
    are joined by network switches that the fabric declares SHARP-capable (``sharp=True``)."""
    algos = ["ring", "tree"]
    if layout.multi_domain:
        algos.append("hierarchical")
    if _has_nvls(fabric, layout):
        algos.append("nvls")
        if layout.multi_domain and len(switch_islands(fabric, layout)) > 1 and sharp_capable(fabric):
            algos.append("sharp")
    return algos


def _rank_bandwidths(fabric, layout: GroupLayout) -> tuple[float, float]:
    """Usable one-way bandwidth of a rank's NVLink ports and of its NIC (B/s, after efficiencies)."""
    lt = fabric.links
    node = int(fabric.gpu_index[layout.ranks[0]])
    nvl = nic = 0.0
    kinds = fabric.topology.graph.nodes
    for v in fabric.router.successors(node):
        e = lt.edge_index[(node, v)]
        if lt.kind[e].startswith("nvlink"):
            nvl += fabric.capacity[e]
        elif kinds[lt.nodes[v]].get("kind") == "nic":
            nic += min([fabric.capacity[lt.edge_index[(v, w)]] for w in fabric.router.successors(v)
                        if w != node] or [0.0])
    return nvl, nic


def protocol_cost(fabric, layout: GroupLayout, nbytes: int, algorithm: str):
    """``cost(protocol) -> s``: an alpha-beta estimate of one algorithm under each protocol, for "auto"."""
    import math

    from fabricsim.collectives.ring import default_channels

    p, nd = layout.p, len(layout.domains)
    m = max(len(d) for d in layout.domains)
    nvl, nic = _rank_bandwidths(fabric, layout)
    channels = default_channels(layout)
    bw = (nvl or nic * channels) if nd == 1 else min(nvl or math.inf, channels * nic or math.inf)
    return lambda proto: _alpha_beta(proto, algorithm, p, nd, m, bw, nbytes)


def _alpha_beta(proto: Protocol, algorithm: str, p: int, domains: int, m: int, bw: float, nbytes: float) -> float:
    """NCCL's ring or tree time model (C102, C103): launch + per-hop latencies (intra-domain hops at the
    NVLink row, inter-domain hops at the network row) + 2 (p-1)/p N over the per-rank bandwidth."""
    import math

    alg = "tree" if algorithm == "tree" else "ring"
    if alg == "tree":
        intra, inter = 2 * (m - 1), 2 * math.ceil(math.log2(domains)) if domains > 1 else 0
    else:
        inter = 2 * (domains - 1) if domains > 1 else 0
        intra = 2 * (p - 1) - inter
    lat = proto.step_latency
    return (proto.launch_latency[alg] + intra * lat[(alg, "nvlink")] + inter * lat[(alg, "net")]
            + analytic.allreduce_lower_bound(p, nbytes / proto.wire_efficiency, bw))


def build_allreduce(fabric, layout: GroupLayout, nbytes: int, algorithm: str, *, protocol: str = "auto",
                    calibration: Calibration = CALIBRATED, channels: int | None = None) -> Schedule:
    """The schedule of one all-reduce (not ``"auto"``: see AllreduceRunner).

    ``protocol="auto"`` picks, per algorithm, the protocol with the smallest alpha-beta estimate; NVLS
    runs on Simple only, as in NCCL.
    """
    if algorithm not in ALGORITHMS or algorithm == "auto":
        raise ConfigError(f"unknown algorithm {algorithm!r}; use one of {', '.join(ALGORITHMS)}")
    if algorithm in ("nvls", "sharp"):
        proto = choose_protocol(nbytes, "simple")
    else:
        proto = choose_protocol(nbytes, protocol, cost=protocol_cost(fabric, layout, nbytes, algorithm))
    if algorithm == "ring":
        return ring_allreduce(fabric, layout, nbytes, proto, channels=channels)
    if algorithm == "tree":
        return tree_allreduce(fabric, layout, nbytes, proto, channels=channels)
    if algorithm == "hierarchical":
        return hierarchical_allreduce(fabric, layout, nbytes, proto, intra="ring", inter="ring",
                                      calibration=calibration)
    if not _has_nvls(fabric, layout):
        raise InfeasibleError(f"{algorithm} needs more than two GPUs attached to the same NVLink switch chips "
                              "(NCCL never runs NVLS on two GPUs or fewer)")
    if algorithm == "sharp":
        return sharp_allreduce(fabric, layout, nbytes, proto, calibration)
    if len(switch_islands(fabric, layout)) == 1:
        return nvls_allreduce(fabric, layout, nbytes, proto, calibration)
    return nvls_tree_allreduce(fabric, layout, nbytes, proto, calibration)


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
            data: dict | None = None, trace: str | None = None, channels: int | None = None,
            trace_ranks=None) -> CollectiveResult:
        """One all-reduce alone on an idle fabric; ``trace`` writes its Perfetto timeline (only the
        GPU tracks of ``trace_ranks``, if given)."""
        if algorithm == "auto":
            algorithm = self.choose(nbytes, ranks)
        sim = self.simulation(trace=trace if trace is not None else False, record="groups" if trace else None,
                              trace_ranks=trace_ranks)
        try:
            proc = allreduce(sim, nbytes, ranks=ranks, algorithm=algorithm, protocol=self.protocol,
                             calibration=self.calibration, channels=channels, data=data)
            sim.run()
            if trace is not None:
                sim.write_trace(trace)
        finally:
            if sim.tracer is not None:
                sim.tracer.discard()  # a no-op once written; a failed run leaves no file
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


def estimate_allreduce(topology, nbytes: int, algorithm: str, *, calibration: Calibration = CALIBRATED,
                       protocol: str = "auto") -> CollectiveResult:
    """A closed-form estimate (``--model analytic``): alpha-beta costs from analytic.py with the fabric's
    per-GPU NVLink and NIC bandwidths, the calibrated efficiencies and NCCL's latency rows. No contention
    beyond the per-GPU bottleneck; all GPUs of the topology take part."""

    from fabricsim.collectives.protocol import NVLS_LATENCY

    p = topology.num_gpus
    domains = len(topology.domains)
    m = max(len(d) for d in topology.domains)
    gpu = topology.gpus[0]
    nvl_kind = next((d.get("kind") for _, _, d in topology.graph.out_edges(gpu, data=True)
                     if str(d.get("kind", "")).startswith("nvlink")), None)
    b_nvl = topology.injection_bandwidth(gpu) * calibration.link_efficiency.get(nvl_kind, 1.0)
    nic = topology.nic_bandwidth(gpu)
    b_nic = nic * max([v for k, v in calibration.link_efficiency.items() if not k.startswith("nvlink")] or [1.0])
    if protocol == "auto" and algorithm not in ("auto", "nvls"):
        # as the tuner does: the protocol with the smallest estimate
        return min((estimate_allreduce(topology, nbytes, algorithm, calibration=calibration, protocol=name)
                    for name in PROTOCOLS), key=lambda r: r.time)
    proto = choose_protocol(nbytes, "simple" if protocol == "auto" else protocol)
    channels = min(m, MAX_CHANNELS)
    if algorithm == "auto":
        options = ["ring", "tree"] + (["hierarchical"] if domains > 1 else []) + (["nvls"] if nvl_kind else [])
        results = [estimate_allreduce(topology, nbytes, a, calibration=calibration, protocol=protocol) for a in options]
        return min(results, key=lambda r: r.time)
    if p == 1 or nbytes == 0:
        return CollectiveResult(algorithm, proto.name, p, nbytes, 0.0)
    if domains > 1 and b_nic <= 0:
        raise InfeasibleError("the topology has several NVLink domains but no NICs between them")
    b_nvl = b_nvl if b_nvl > 0 else b_nic
    wire = proto.wire_efficiency
    lat = proto.step_latency
    if algorithm in ("ring", "tree"):
        bw = b_nvl if domains == 1 else min(b_nvl, channels * b_nic)
        t = _alpha_beta(proto, algorithm, p, domains, m, bw, nbytes)
    elif algorithm == "hierarchical":
        if domains == 1:
            return estimate_allreduce(topology, nbytes, "ring", calibration=calibration, protocol=protocol)
        # reduce-scatter plus all-gather inside a domain cost one ring all-reduce over its m GPUs
        intra = analytic.ring_allreduce_time(m, nbytes / wire, b_nvl, lat[("ring", "nvlink")])
        inter = analytic.ring_allreduce_time(domains, nbytes / wire / m, b_nic, lat[("ring", "net")])
        t = proto.launch_latency["ring"] + intra + inter
    elif algorithm == "nvls":
        if not nvl_kind:
            raise InfeasibleError("nvls needs NVLink switch chips")
        g = m if domains > 1 else p
        b = b_nvl / calibration.nvls_factor(nvl_kind, g)  # NVLS's usable rate, with its fan-in cost
        t = analytic.nvls_allreduce_time(g, nbytes, b, NVLS_LATENCY["nvlink"])
        if domains > 1:
            t += analytic.tree_allreduce_time(domains, nbytes / m, b_nic, NVLS_LATENCY["net"])
    else:
        raise ConfigError(f"unknown algorithm {algorithm!r}; use one of {', '.join(ALGORITHMS)}")
    return CollectiveResult(algorithm, proto.name, p, nbytes, t)
