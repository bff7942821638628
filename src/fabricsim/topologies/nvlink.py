"""NVLink domains: DGX H100 and DGX B200 nodes, the GB200 NVL72 rack, and an NVL576 of eight racks.

Every builder returns a validated :class:`~fabricsim.topologies.base.Topology`. Bandwidths are one way
(B/s); vendors quote NVLink as the bidirectional sum (DESIGN.md, "Units"):

- NVLink 4 (Hopper): 18 links x 25 GB/s = 450 GB/s each way, "900 GB/s" bidirectional per GPU (A007).
- NVLink 5 (Blackwell): 18 links x 50 GB/s = 900 GB/s each way, "1.8 TB/s" bidirectional (A001, A003-A005).

Node ids are readable strings: ``"n0/gpu3"`` and ``"n0/nvs1"`` in a DGX node, ``"r0/gpu17"`` and
``"r0/nvs5"`` in a rack (``"r0/nvs"`` for a rack collapsed to one crossbar), ``"l2/p3/nvs5"`` for the
second NVLink switch tier of an NVL576 (plane 3, chip 5). Parallel links from a GPU to one switch chip
are one directed edge each way whose bandwidth is ``lanes`` x the per-link rate. Row ids (A0xx) name the
source of each figure in ``shared/reference/published_figures.csv``.
"""

from __future__ import annotations

import math
from typing import Any

import networkx as nx

from fabricsim.errors import ConfigError, InfeasibleError
from fabricsim.hardware import (
    B200, GB200, H100, NVLINK4, NVLINK5, NVLINK5_SWITCH, NVSWITCH_GEN3, GPU, LinkSpec, SwitchSpec,
)
from fabricsim.topologies.base import CutNode, Topology, paused_gc, tree_cut_flow

__all__ = ["dgx_h100", "dgx_b200", "gb200_nvl72", "nvl576", "PLANES"]

PLANES = ("per-chip", "aggregate")

# HGX H100 baseboard: each GPU's 18 NVLink4 links go 5/4/4/5 to the four NVSwitch gen3 chips (A010: 4 chips;
# 5+4+4+5 = 18 links, A007).
DGX_H100_LANES = (5, 4, 4, 5)
# HGX B200 baseboard: two NVLink5 switch chips, 9 links from every GPU to each (A020: 8 x 18 = 144 links
# over 72-port chips).
DGX_B200_LANES = (9, 9)
NVL72_GPUS = 72          # A015-A018
NVL72_CHIPS = 18         # A017: 9 trays x 2 chips
NVL72_TRAYS = 9          # A015
GPUS_PER_COMPUTE_TRAY = 4
NVL576_RACKS = 8         # A021: at most 576 GPUs in one NVLink domain
NVL576_L2_PER_PLANE = 8


# --- shared pieces -----------------------------------------------------------------------------------------
def check_gpus(gpus: Any, limit: int | None, what: str) -> int:
    """``gpus`` as a positive int, at most ``limit``; ConfigError or InfeasibleError otherwise."""
    if isinstance(gpus, bool) or not isinstance(gpus, int):
        raise ConfigError(f"gpus must be a positive whole number, got {gpus!r}")
    if gpus <= 0:
        raise ConfigError(f"gpus must be positive, got {gpus}")
    if limit is not None and gpus > limit:
        raise InfeasibleError(f"{what} holds at most {limit} GPUs, asked for {gpus}")
    return gpus


def check_planes(planes: str) -> str:
    if planes not in PLANES:
        raise ConfigError(f"planes must be one of {', '.join(PLANES)}; got {planes!r}")
    return planes


def link(spec: LinkSpec, lanes: int, *, bandwidth: float | None = None) -> dict[str, Any]:
    """Edge attributes for ``lanes`` parallel links of kind ``spec`` (one direction)."""
    return {"bandwidth": spec.bandwidth * lanes if bandwidth is None else bandwidth,
            "latency": spec.latency, "kind": spec.kind, "lanes": lanes}


class Domain:
    """Node and edge lists of one NVLink domain, filled by the ``add_*`` functions below."""

    def __init__(self) -> None:
        self.nodes: list[tuple[str, dict]] = []
        self.edges: list[tuple[str, str, dict]] = []
        self.gpus: list[str] = []
        self.domains: list[list[str]] = []

    def duplex(self, a: str, b: str, attrs: dict) -> None:
        self.edges.append((a, b, attrs))
        self.edges.append((b, a, attrs))

    def graph(self) -> nx.DiGraph:
        G = nx.DiGraph()
        with paused_gc():  # a 65,536-GPU fabric is ~1.5 million small dicts
            G.add_nodes_from(self.nodes)
            G.add_edges_from(self.edges)
        return G


def add_baseboard(dom: Domain, prefix: str, domain: int, n: int, gpu: GPU, spec: LinkSpec,
                  switch: SwitchSpec, lanes: tuple[int, ...]) -> list[str]:
    """An 8-GPU baseboard (``n`` <= 8 GPUs populated): every GPU to every chip with ``lanes[c]`` links."""
    gpus = [f"{prefix}/gpu{j}" for j in range(n)]
    chips = [f"{prefix}/nvs{c}" for c in range(len(lanes))]
    dom.nodes += [(g, {"kind": "gpu", "domain": domain, "local": j, "model": gpu.name})
                  for j, g in enumerate(gpus)]
    dom.nodes += [(c, {"kind": "nvswitch", "tier": 0, "model": switch.kind, "role": switch.kind})
                  for c in chips]
    attrs = [link(spec, k) for k in lanes]
    for g in gpus:
        for c, a in zip(chips, attrs):
            dom.duplex(g, c, a)
    dom.gpus += gpus
    dom.domains.append(gpus)
    return gpus


def add_nvl72(dom: Domain, prefix: str, domain: int, n: int, planes: str, *, extra: dict | None = None,
              own_domain: bool = True) -> list[str]:
    """One NVL72 rack with ``n`` GPUs (the first ``n`` compute-tray positions) on its 18 switch chips.

    ``extra`` attributes go on every node of the rack; ``own_domain=False`` leaves the GPUs out of
    ``dom.domains`` (for an NVL576, whose racks share one domain).
    """
    extra = extra or {}
    gpus = [f"{prefix}/gpu{j}" for j in range(n)]
    dom.nodes += [(g, {"kind": "gpu", "domain": domain, "local": j, "model": GB200.name,
                       "compute_tray": j // GPUS_PER_COMPUTE_TRAY, **extra}) for j, g in enumerate(gpus)]
    if planes == "per-chip":
        chips = [f"{prefix}/nvs{c}" for c in range(NVL72_CHIPS)]
        dom.nodes += [(c, {"kind": "nvswitch", "tier": 0, "model": NVLINK5_SWITCH.kind, "role": "nvl72-l1",
                           "tray": i // 2, "plane": i, **extra}) for i, c in enumerate(chips)]
        one = link(NVLINK5, 1)
        for g in gpus:
            for c in chips:
                dom.duplex(g, c, one)
    else:
        xbar = f"{prefix}/nvs"
        dom.nodes.append((xbar, {"kind": "nvswitch", "tier": 0, "model": NVLINK5_SWITCH.kind,
                                 "role": "nvl72-crossbar", "chips": NVL72_CHIPS, **extra}))
        all_planes = link(NVLINK5, NVL72_CHIPS)
        for g in gpus:
            dom.duplex(g, xbar, all_planes)
    dom.gpus += gpus
    if own_domain:
        dom.domains.append(gpus)
    return gpus


def single_domain_cut(n: int, per_gpu: float) -> float:
    """Bisection (both directions) of one non-blocking NVLink domain of ``n`` GPUs split in rank halves."""
    half = n // 2
    return 2 * min(half, n - half) * per_gpu


def finish(dom: Domain, name: str, hardware: dict, meta: dict) -> Topology:
    topo = Topology(dom.graph(), dom.gpus, dom.domains, name=name, hardware=hardware, meta=meta)
    return topo.validate().stamp()


# --- builders ----------------------------------------------------------------------------------------------
def dgx_h100(*, gpus: int | None = None) -> Topology:
    """A DGX H100 / HGX H100 node: 8 H100 on 4 NVSwitch gen3 chips.

    Each GPU's 18 NVLink4 links (25 GB/s each way) go 5/4/4/5 to the four chips, as on the baseboard
    (A010), so a GPU injects 450 GB/s each way, 900 GB/s bidirectional (A007). Bisection, both
    directions: 4 GPUs x 450 GB/s x 2 = 3.6 TB/s (A011).

    Parameters
    ----------
    gpus : int, optional
        Populate only the first ``gpus`` (1-8) GPU positions; the four chips stay.

    Raises
    ------
    ConfigError
        ``gpus`` is not a positive integer.
    InfeasibleError
        ``gpus`` > 8.

    Examples
    --------
    >>> t = dgx_h100()
    >>> t.num_gpus, len(t.nodes_of_kind("nvswitch")), t.injection_bandwidth() / 1e9
    (8, 4, 450.0)
    """
    return _dgx_node("dgx-h100", "a DGX H100 node", gpus, H100, NVLINK4, NVSWITCH_GEN3, DGX_H100_LANES)


def dgx_b200(*, gpus: int | None = None) -> Topology:
    """A DGX B200 / HGX B200 node: 8 B200 on 2 NVLink5 switch chips.

    Each GPU has 9 NVLink5 links (50 GB/s each way) to each chip (A020): 900 GB/s each way, 1.8 TB/s
    bidirectional per GPU (A004, A005), 14.4 TB/s aggregate over 8 GPUs (A019).

    Parameters
    ----------
    gpus : int, optional
        Populate only the first ``gpus`` (1-8) GPU positions.

    Examples
    --------
    >>> t = dgx_b200()
    >>> t.injection_bandwidth() / 1e9, t.bisection_bandwidth() / 1e12
    (900.0, 7.2)
    """
    return _dgx_node("dgx-b200", "a DGX B200 node", gpus, B200, NVLINK5, NVLINK5_SWITCH, DGX_B200_LANES)


def _dgx_node(name: str, what: str, gpus: int | None, gpu: GPU, link: LinkSpec, switch: SwitchSpec,
              lanes: tuple[int, ...]) -> Topology:
    """An 8-GPU baseboard: every GPU wired to every switch chip with ``lanes[i]`` links to chip i."""
    n = 8 if gpus is None else check_gpus(gpus, 8, what)
    dom = Domain()
    add_baseboard(dom, "n0", 0, n, gpu, link, switch, lanes)
    per_gpu = link.bandwidth * sum(lanes)
    meta = {"bisection_bandwidth": single_domain_cut(n, per_gpu), "diameter_hops": 2 if n > 1 else 0,
            "bisection_method": "non-blocking NVSwitch: min(half) x per-GPU NVLink x 2 directions",
            "lanes_per_chip": list(lanes)}
    return finish(dom, name, {"gpu": gpu, "nvlink": link, "nvswitch": switch}, meta)


def gb200_nvl72(*, planes: str = "per-chip", gpus: int | None = None) -> Topology:
    """A GB200 NVL72 rack: 72 GPUs, 18 NVLink5 switch chips in 9 switch trays, one link per GPU per chip.

    Each GPU has one NVLink5 link (50 GB/s each way) to each of the 18 chips (A001, A003, A017): 900 GB/s
    each way, 1.8 TB/s bidirectional (A004), 72 x 1.8 = 129.6 TB/s aggregate ("130 TB/s", A018). The 18
    chips are independent planes; chip ``c`` sits in switch tray ``c // 2`` (A015, A016).

    Parameters
    ----------
    planes : {"per-chip", "aggregate"}
        ``"per-chip"`` keeps the 18 chips (so a tray can be failed); ``"aggregate"`` collapses them into one
        non-blocking crossbar ``"r0/nvs"`` with the same 900 GB/s per GPU, for smaller graphs.
    gpus : int, optional
        Populate only the first ``gpus`` (1-72) GPU positions: a partial rack, all chips present.

    Examples
    --------
    >>> t = gb200_nvl72()
    >>> t.num_gpus, len(t.nodes_of_kind("nvswitch")), t.injection_bandwidth() / 1e9
    (72, 18, 900.0)
    """
    check_planes(planes)
    n = NVL72_GPUS if gpus is None else check_gpus(gpus, NVL72_GPUS, "a GB200 NVL72 rack")
    dom = Domain()
    add_nvl72(dom, "r0", 0, n, planes)
    per_gpu = NVLINK5.per_gpu_bandwidth
    meta = {"planes": planes, "bisection_bandwidth": single_domain_cut(n, per_gpu),
            "diameter_hops": 2 if n > 1 else 0,
            "bisection_method": "non-blocking NVLink switch: min(half) x 900 GB/s x 2 directions"}
    return finish(dom, "gb200-nvl72", {"gpu": GB200, "nvlink": NVLINK5, "nvswitch": NVLINK5_SWITCH}, meta)


def nvl576(*, planes: str = "per-chip", gpus: int | None = None) -> Topology:
    """Eight GB200 NVL72 racks joined by a second NVLink switch tier into one 576-GPU NVLink domain (A021).

    No vendor diagram of the second tier is public. Assumed layout, per plane ``k`` (one of the 18 chip
    positions of a rack): a two-level non-blocking fat tree. Each rack's L1 element of plane ``k`` has 72
    GPU-facing ports and 72 uplinks; 8 L2 chips per plane (``"l2/p{k}/nvs{m}"``), 9 links from every L1 to
    every L2 (8 racks x 9 = 72 ports per L2 chip). Note the L1 element then needs 144 ports, twice a
    72-port NVLink5 switch chip (A013, A016): the model is the logical fabric, not a chip count.

    Resulting figures: 900 GB/s each way per GPU (A005); every rack has 18 x 72 x 50 GB/s = 64.8 TB/s each
    way into the L2 tier, as much as its GPUs inject, so the domain is non-blocking and its bisection is
    288 GPUs x 900 GB/s x 2 directions = 518.4 TB/s (computed from the tree in ``meta``). Longest route:
    GPU -> L1 -> L2 -> L1 -> GPU, 4 hops.

    Parameters
    ----------
    planes : {"per-chip", "aggregate"}
        ``"aggregate"`` models one crossbar per rack (``"r{i}/nvs"``) and one L2 crossbar (``"l2/nvs"``)
        with the same bandwidths.
    gpus : int, optional
        Build only the first ``gpus`` (1-576): whole racks of 72, the last one partial; L2 tier unchanged.
    """
    check_planes(planes)
    limit = NVL576_RACKS * NVL72_GPUS
    n = limit if gpus is None else check_gpus(gpus, limit, "an NVL576 domain")
    racks = math.ceil(n / NVL72_GPUS)
    uplinks_per_l1 = NVL72_GPUS  # as many uplinks as GPU ports: non-blocking
    links_l1_l2 = uplinks_per_l1 // NVL576_L2_PER_PLANE  # 9
    dom = Domain()
    for r in range(racks):
        size = min(NVL72_GPUS, n - r * NVL72_GPUS)
        add_nvl72(dom, f"r{r}", 0, size, planes, extra={"rack": r}, own_domain=False)
    dom.domains = [list(dom.gpus)]
    if planes == "per-chip":
        l2 = {(k, m): f"l2/p{k}/nvs{m}" for k in range(NVL72_CHIPS) for m in range(NVL576_L2_PER_PLANE)}
        dom.nodes += [(node, {"kind": "nvswitch", "tier": 1, "model": NVLINK5_SWITCH.kind, "role": "nvl576-l2",
                              "plane": k}) for (k, m), node in l2.items()]
        trunk = link(NVLINK5, links_l1_l2)
        for r in range(racks):
            for k in range(NVL72_CHIPS):
                for m in range(NVL576_L2_PER_PLANE):
                    dom.duplex(f"r{r}/nvs{k}", l2[k, m], trunk)
    else:
        dom.nodes.append(("l2/nvs", {"kind": "nvswitch", "tier": 1, "model": NVLINK5_SWITCH.kind,
                                     "role": "nvl576-l2-crossbar", "chips": NVL72_CHIPS * NVL576_L2_PER_PLANE}))
        trunk = link(NVLINK5, NVL72_CHIPS * uplinks_per_l1)
        for r in range(racks):
            dom.duplex(f"r{r}/nvs", "l2/nvs", trunk)

    # Bisection from the tree: per plane, racks hang under the L2 layer (collapsed: every L1 reaches every
    # L2 with equal lanes), each rack's GPUs on the two sides of the rank-halves cut attached to its L1.
    half = n // 2
    rack_up = uplinks_per_l1 * NVLINK5.bandwidth  # per plane, each way

    def one_way(first_sends: bool) -> float:
        root = CutNode()
        for r in range(racks):
            lo, hi = r * NVL72_GPUS, min(n, (r + 1) * NVL72_GPUS)
            in_first = max(0, min(hi, half) - lo)
            in_second = (hi - lo) - in_first
            s, d = (in_first, in_second) if first_sends else (in_second, in_first)
            root.children.append(CutNode(send=s * NVLINK5.bandwidth, recv=d * NVLINK5.bandwidth,
                                         up=rack_up, down=rack_up))
        return NVL72_CHIPS * tree_cut_flow(root)

    bisection = one_way(True) + one_way(False)
    meta = {
        "planes": planes, "racks": racks,
        "bisection_bandwidth": bisection,
        "bisection_method": "tree max-flow per plane (L1 per rack under a non-blocking L2 layer) x 18 planes",
        "diameter_hops": 0 if n == 1 else (2 if racks == 1 else 4),
        "l2_chips_per_plane": NVL576_L2_PER_PLANE, "links_l1_to_each_l2": links_l1_l2,
        "l1_ports": NVL72_GPUS + uplinks_per_l1,
        "assumptions": [
            "NVL576 second tier: per plane a two-level non-blocking fat tree (no public vendor diagram): "
            "each rack's L1 of plane k has 72 GPU ports + 72 uplinks, 8 L2 chips per plane, "
            "9 links from every L1 to every L2",
            "the L1 element needs 144 ports, twice a 72-port NVLink5 switch chip (A013, A016)",
            f"bisection {bisection / 1e12:.1f} TB/s both directions: non-blocking, half the GPUs x 900 GB/s x 2",
        ],
    }
    return finish(dom, "nvl576", {"gpu": GB200, "nvlink": NVLINK5, "nvswitch": NVLINK5_SWITCH}, meta)
