"""Scale-out fabrics: NVLink domains (8-GPU nodes or NVL72 racks) joined by an InfiniBand/Ethernet fat tree.

Layout, bottom up (node ids in quotes):

- NVLink domains as built by :mod:`fabricsim.topologies.nvlink`: DGX nodes ``"n{i}/gpu{j}"``,
  ``"n{i}/nvs{c}"``; NVL72 racks ``"r{i}/gpu{j}"`` and ``"r{i}/nvs"`` (``planes="aggregate"``, the default
  here to keep graphs small) or ``"r{i}/nvs{c}"`` (``"per-chip"``).
- One NIC per GPU, ``"n{i}/nic{j}"``: a GPU <-> NIC host link (kind ``"pcie"``, never the bottleneck:
  max(PCIe 5 x16, NIC rate)), then a NIC <-> leaf link at the NIC line rate (ConnectX-7 NDR 400 Gb/s =
  50 GB/s each way by default, A027).
- Leaves ``"leaf{n}"`` (tier 0), spines ``"spine{s}"`` (tier 1); above the two-tier limit, pods of leaves
  with their own spines ``"pod{p}/spine{s}"`` (tier 1) under core switches ``"core{c}"`` (tier 2).
  Quantum-2 switches have 64 ports at 400 Gb/s (A030); their port-to-port latency is the HDR figure of
  A031 (0.6 us), charged on every link into or out of a switch.

Sizing rules (all computed from the switch radix ``k``, the NIC and port rates and ``oversubscription``):

- a leaf takes ``d`` NICs and ``u`` uplinks, ``d`` the largest with ``d + ceil(d * r) <= k`` where
  ``r = nic rate / (oversubscription * port rate)``; the fullest leaf's ``u = ceil(used NICs * r)`` sets
  the uplink count of every leaf (k = 64, 1:1 gives 32 + 32);
- two tiers while the leaves fit one spine's ports (``leaves <= k``): ``u`` spines, one link from every
  leaf to every spine, so leaf-to-leaf traffic has ``u`` equal-cost paths;
- three tiers above that: pods of ``k/2`` leaves with ``u`` pod spines each (non-blocking above the
  leaves); pod spine ``s`` of every pod connects to core group ``s``, whose size is the smallest that fits
  the core radix. At most ``k`` pods; more is refused.

Rails (``network="rail"``, NVIDIA's rail-optimised layout): the NIC of local GPU ``j`` joins rail
``j mod 8`` on DGX nodes, and rail ``j mod 4`` on NVL72 racks (its position in its 4-GPU compute tray,
which carries 4 NICs). Each rail's NICs fill that rail's leaves in rank order, ``d`` at a time, so GPU
``j`` of nodes A and B meet at one leaf: GPU - NIC - leaf - NIC - GPU, 4 hops. ``network="fat-tree"``
fills leaves with all NICs in rank order.

Partial domains: GPUs fill domains in rank order; when ``gpus`` is not a multiple of the domain size the
last domain holds the remainder at its first GPU positions (all its NVLink switch chips present, its NICs
on the rails of those positions). Collectives see that domain's smaller NVLink group as it is.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable

from fabricsim.errors import ConfigError, InfeasibleError
from dataclasses import replace

from fabricsim.hardware import (
    B200, GB200, H100, IB_NDR, LINKS, NETWORK_KINDS, NVLINK4, NVLINK5, NVLINK5_SWITCH, NVSWITCH_GEN3,
    PCIE5_X16, QUANTUM2_NDR, SWITCHES, LinkSpec, SwitchSpec,
)
from fabricsim.topologies.base import CutNode, Topology, tree_cut_flow
from fabricsim.topologies.nvlink import (
    DGX_B200_LANES, DGX_H100_LANES, NVL72_GPUS, Domain, add_baseboard, add_nvl72, check_gpus, check_planes,
)

__all__ = ["scale_out", "DOMAINS", "NETWORKS", "SHARP_SWITCHES"]

NETWORKS = ("rail", "fat-tree")
# switch models with in-network reduction: NVIDIA Quantum-2 ("SHARPv3 in-network computing", Quantum-2
# product page) and Quantum-X800 ("SHARPv4", Quantum-X800 product page)
SHARP_SWITCHES = {"ib-ndr-switch": "SHARPv3", "ib-xdr-switch": "SHARPv4"}
_EPS = 1e-9


@dataclass(frozen=True)
class DomainKind:
    """How to build one NVLink domain of a scale-out fabric."""

    size: int
    prefix: str
    rails: int
    nvlink: LinkSpec
    hardware: dict
    add: Callable[[Domain, str, int, int, str], list[str]]


DOMAINS: dict[str, DomainKind] = {
    "dgx-h100": DomainKind(8, "n", 8, NVLINK4, {"gpu": H100, "nvlink": NVLINK4, "nvswitch": NVSWITCH_GEN3},
                           lambda dom, p, i, n, planes: add_baseboard(dom, p, i, n, H100, NVLINK4,
                                                                      NVSWITCH_GEN3, DGX_H100_LANES)),
    "dgx-b200": DomainKind(8, "n", 8, NVLINK5, {"gpu": B200, "nvlink": NVLINK5, "nvswitch": NVLINK5_SWITCH},
                           lambda dom, p, i, n, planes: add_baseboard(dom, p, i, n, B200, NVLINK5,
                                                                      NVLINK5_SWITCH, DGX_B200_LANES)),
    "gb200-nvl72": DomainKind(NVL72_GPUS, "r", 4, NVLINK5,
                              {"gpu": GB200, "nvlink": NVLINK5, "nvswitch": NVLINK5_SWITCH},
                              lambda dom, p, i, n, planes: add_nvl72(dom, p, i, n, planes)),
}


def _ceil(x: float) -> int:
    return math.ceil(x - _EPS)


def scale_out(domain: str = "dgx-h100", *, gpus: int | None = None, count: int | None = None,
              network: str = "rail", nic: LinkSpec = IB_NDR, switch: SwitchSpec = QUANTUM2_NDR,
              oversubscription: float = 1.0, planes: str = "aggregate", sharp: bool | None = None,
              network_kind: str | None = None, net_latency: float | None = None,
              adaptive_routing: bool = False) -> Topology:
    """NVLink domains joined by a two- or three-tier fat tree of InfiniBand/Ethernet switches.

    Parameters
    ----------
    domain : {"dgx-h100", "dgx-b200", "gb200-nvl72"}
        The NVLink domain: an 8-GPU node or a 72-GPU rack.
    gpus : int, optional
        Total GPUs; the last domain is partial when it is not a multiple of the domain size.
    count : int, optional
        Number of domains (default 2 when ``gpus`` is not given). Both may be given if they agree.
    network : {"rail", "fat-tree"}
        Rail-optimised leaves (GPU ``j`` of every node on rail ``j``) or NICs filling leaves in rank order.
    nic, switch : LinkSpec, SwitchSpec
        NIC line rate (the NIC <-> leaf links) and switch radix, port rate and latency; either may be
        given by its kind (``"ib-xdr"``, ``"ib-xdr-switch"``). A three-tier fat tree of k-port switches
        holds at most k * k/2 * (NICs per leaf) GPUs: 65,536 with 64-port Quantum-2 at 1:1, about a million
        with 144-port Quantum-X800 (``switch="ib-xdr-switch"``), which is how 131,072 GPUs are built.
    oversubscription : float
        Leaf down:up bandwidth ratio (1.0 = non-blocking).
    planes : {"aggregate", "per-chip"}
        NVL72 racks as one crossbar or 18 switch chips.
    sharp : bool, optional
        Whether the network switches reduce in the network (SHARP): marks every leaf, spine and core
        ``sharp=True``, which is what lets collectives offer algorithm "sharp". Default: as the switch
        model supports it (``SHARP_SWITCHES``: Quantum-2 and Quantum-X800 do, Ethernet switches do not);
        ``True`` for a switch model without SHARP is refused.
    network_kind : {"ib", "roce", "cloud"}, optional
        Latency character of the network (``hardware.NETWORK_KINDS``): NIC and switch traversal latencies.
        Default: "ib" for InfiniBand NICs, "roce" for Ethernet ones. The NICs' and switches' own latencies
        are replaced by the kind's.
    net_latency : float, optional
        One NIC traversal in seconds (GPU -> NIC or NIC -> GPU), overriding the kind's: e.g. a cloud
        fabric's measured half round trip minus its switch hops.
    adaptive_routing : bool
        Whether switches spread every flow evenly over all their next hops on shortest paths (the fluid
        limit of InfiniBand adaptive routing, ``simulator.routing`` rule 4) instead of hashing each flow
        onto one (static ECMP, the default). Stored as ``meta["adaptive_routing"]``, which the router reads.

    Returns
    -------
    Topology
        Validated; ``meta`` holds the tier sizes, the closed-form bisection and diameter.

    Raises
    ------
    ConfigError
        An unknown domain, network or planes, a non-positive count, ratio or GPU number, a NIC faster than
        the switch port.
    InfeasibleError
        More GPUs than a three-tier fat tree of this radix holds.

    Examples
    --------
    >>> t = scale_out("dgx-h100", gpus=16)
    >>> t.num_gpus, len(t.domains), t.nic_bandwidth() / 1e9, t.diameter_hops()
    (16, 2, 50.0, 6)
    """
    nic = _spec(nic, LINKS, "NIC")
    switch = _spec(switch, SWITCHES, "switch")
    kind = DOMAINS.get(domain) if isinstance(domain, str) else None
    if kind is None:
        raise ConfigError(f"unknown domain {domain!r}; known: {', '.join(DOMAINS)}")
    if network not in NETWORKS:
        raise ConfigError(f"network must be one of {', '.join(NETWORKS)}; got {network!r}")
    check_planes(planes)
    nic, switch, network_kind = _network_latencies(nic, switch, network_kind, net_latency)
    if isinstance(oversubscription, bool) or not isinstance(oversubscription, (int, float)) \
            or not oversubscription > 0 or math.isinf(oversubscription):
        raise ConfigError(f"oversubscription must be a positive number, got {oversubscription!r}")
    if nic.bandwidth > switch.port_bandwidth * (1 + _EPS):
        raise ConfigError(f"NIC {nic.kind} ({nic.bandwidth / 1e9:g} GB/s) is faster than a {switch.kind} port "
                          f"({switch.port_bandwidth / 1e9:g} GB/s); pick a faster switch")
    if sharp is None:
        sharp = switch.kind in SHARP_SWITCHES
    elif not isinstance(sharp, bool):
        raise ConfigError(f"sharp must be True or False, got {sharp!r}")
    elif sharp and switch.kind not in SHARP_SWITCHES:
        raise ConfigError(f"{switch.kind} switches do not reduce in the network (SHARP-capable: "
                          f"{', '.join(SHARP_SWITCHES)})")
    if not isinstance(adaptive_routing, bool):
        raise ConfigError(f"adaptive_routing must be True or False, got {adaptive_routing!r}")
    n_domains, total = _sizes(kind.size, gpus, count)
    k = switch.ports
    ratio = nic.bandwidth / (oversubscription * switch.port_bandwidth)
    per_leaf = max((d for d in range(1, k) if d + _ceil(d * ratio) <= k), default=0)
    if per_leaf == 0:
        raise ConfigError(f"a {k}-port switch cannot take a NIC and its uplinks at oversubscription "
                          f"{oversubscription:g}")
    if total > k * max(1, k // 2) * per_leaf:  # refuse before building anything (exact check below)
        raise InfeasibleError(f"{total} GPUs exceed what a three-tier fat tree of {k}-port switches holds "
                              f"(at most {k * max(1, k // 2) * per_leaf} GPUs, oversubscription "
                              f"{oversubscription:g}); use a higher-radix switch")

    # --- NVLink domains, NICs ---------------------------------------------------------------------------
    dom = Domain()
    host = {"bandwidth": max(PCIE5_X16.bandwidth, nic.bandwidth), "latency": nic.latency, "kind": "pcie",
            "lanes": 1}
    wire = {"bandwidth": nic.bandwidth, "latency": switch.latency, "kind": nic.kind, "lanes": 1}
    rail_nics: list[list[tuple[str, int]]] = [[] for _ in range(kind.rails)]  # (nic, rank) per rail
    rank = 0
    for i in range(n_domains):
        size = min(kind.size, total - i * kind.size)
        prefix = f"{kind.prefix}{i}"
        for j, g in enumerate(kind.add(dom, prefix, i, size, planes)):
            nic_id = f"{prefix}/nic{j}"
            dom.nodes.append((nic_id, {"kind": "nic", "domain": i, "local": j, "rail": j % kind.rails,
                                       "model": nic.kind}))
            dom.duplex(g, nic_id, host)
            rail_nics[j % kind.rails].append((nic_id, rank))
            rank += 1

    # --- leaves -----------------------------------------------------------------------------------------
    leaves: list[tuple[dict, list[tuple[str, int]]]] = []  # (attrs, [(nic, rank)])
    if network == "rail":
        groups = max(_ceil(len(r) / per_leaf) for r in rail_nics if r)
        for grp in range(groups):
            for j, rail in enumerate(rail_nics):
                members = rail[grp * per_leaf:(grp + 1) * per_leaf]
                if members:
                    leaves.append(({"rail": j, "group": grp}, members))
    else:
        everyone = sorted((m for r in rail_nics for m in r), key=lambda m: m[1])
        for grp in range(_ceil(len(everyone) / per_leaf)):
            leaves.append(({"group": grp}, everyone[grp * per_leaf:(grp + 1) * per_leaf]))
    n_leaves = len(leaves)
    leaf_ids = [f"leaf{n}" for n in range(n_leaves)]
    uplinks = _ceil(max(len(m) for _, m in leaves) * ratio) if n_leaves > 1 else 0
    trunk = {"bandwidth": switch.port_bandwidth, "latency": switch.latency, "kind": nic.kind, "lanes": 1}

    meta: dict[str, Any] = {
        "domain": domain, "domain_size": kind.size, "domains": n_domains,
        "last_domain_size": total - (n_domains - 1) * kind.size, "network": network,
        "rails": kind.rails if network == "rail" else 0, "planes": planes, "oversubscription": oversubscription,
        "radix": k, "nics_per_leaf": per_leaf, "leaves": n_leaves, "uplinks_per_leaf": uplinks, "sharp": sharp,
        "network_kind": network_kind, "nic_latency": nic.latency, "switch_latency": switch.latency,
        "adaptive_routing": adaptive_routing,
    }
    leaf_pod = [0] * n_leaves
    if n_leaves == 1:
        tiers = 1
    elif n_leaves <= k:
        tiers = 2
        spines = [f"spine{s}" for s in range(uplinks)]
        dom.nodes += [(s, {"kind": "switch", "tier": 1, "role": "spine", "model": switch.kind, "sharp": sharp}) for s in spines]
        for leaf in leaf_ids:
            for s in spines:
                dom.duplex(leaf, s, trunk)
        meta["spines"] = uplinks
    else:
        tiers = 3
        per_pod = max(1, k // 2)
        pods = _ceil(n_leaves / per_pod)
        if pods > k:
            limit = k * per_pod * per_leaf
            raise InfeasibleError(f"{total} GPUs need {n_leaves} leaves in {pods} pods, but {k}-port core "
                                  f"switches join at most {k} pods (at most {limit} GPUs with full leaves, "
                                  f"oversubscription {oversubscription:g}); use a higher-radix switch")
        up = min(per_pod, n_leaves)  # uplinks of every pod spine: as many as its leaf ports (non-blocking)
        per_group = min(c for c in range(1, up + 1) if up % c == 0 and pods * (up // c) <= k)
        core_trunk = dict(trunk, bandwidth=switch.port_bandwidth * (up // per_group), lanes=up // per_group)
        cores = {(s, c): f"core{s * per_group + c}" for s in range(uplinks) for c in range(per_group)}
        dom.nodes += [(n, {"kind": "switch", "tier": 2, "role": "core", "model": switch.kind, "group": s,
                           "sharp": sharp})
                      for (s, _), n in cores.items()]
        for p in range(pods):
            pod_spines = [f"pod{p}/spine{s}" for s in range(uplinks)]
            dom.nodes += [(n, {"kind": "switch", "tier": 1, "role": "spine", "model": switch.kind, "pod": p,
                           "sharp": sharp})
                          for n in pod_spines]
            for leaf_index in range(p * per_pod, min(n_leaves, (p + 1) * per_pod)):
                leaf_pod[leaf_index] = p
                for n in pod_spines:
                    dom.duplex(leaf_ids[leaf_index], n, trunk)
            for s, n in enumerate(pod_spines):
                for c in range(per_group):
                    dom.duplex(n, cores[s, c], core_trunk)
        meta.update(pods=pods, leaves_per_pod=per_pod, pod_spines=uplinks, cores=len(cores),
                    cores_per_group=per_group, pod_spine_uplinks=up)
    for n, (leaf, (attrs, members)) in enumerate(zip(leaf_ids, leaves)):
        extra = {"pod": leaf_pod[n]} if tiers == 3 else {}
        dom.nodes.append((leaf, {"kind": "switch", "tier": 0, "role": "leaf", "model": switch.kind,
                                 "sharp": sharp, **attrs, **extra}))
        for nic_id, _ in members:
            dom.duplex(nic_id, leaf, wire)
    meta["tiers"] = tiers

    # --- closed forms -------------------------------------------------------------------------------------
    half = total // 2
    nvlink_per_gpu = kind.nvlink.per_gpu_bandwidth
    straddle = 0.0
    if half % kind.size:  # the cut runs through one domain: its NVLink switch carries traffic across
        first_part = half % kind.size
        size = min(kind.size, total - (half // kind.size) * kind.size)
        straddle = min(first_part, size - first_part) * nvlink_per_gpu
    leaf_up = uplinks * switch.port_bandwidth
    pod_up = uplinks * meta.get("pod_spine_uplinks", 0) * switch.port_bandwidth

    def one_way(first_sends: bool) -> float:
        pods_nodes = [CutNode(up=pod_up, down=pod_up) for _ in range(meta.get("pods", 1))]
        for n, (_, members) in enumerate(leaves):
            first = sum(1 for _, r in members if r < half)
            s, d = (first, len(members) - first) if first_sends else (len(members) - first, first)
            pods_nodes[leaf_pod[n]].children.append(
                CutNode(send=s * nic.bandwidth, recv=d * nic.bandwidth, up=leaf_up, down=leaf_up))
        root = CutNode(children=pods_nodes) if tiers == 3 else pods_nodes[0]
        return straddle + tree_cut_flow(root)

    meta["bisection_bandwidth"] = one_way(True) + one_way(False)
    meta["bisection_method"] = ("tree max-flow over leaves, pods and the collapsed spine/core layers, "
                                "plus the NVLink of a domain the cut runs through")
    if total == 1:
        meta["diameter_hops"] = 0
    elif n_domains == 1:
        meta["diameter_hops"] = 2
    else:  # GPU - NIC - leaf [- spine [- core - spine] - leaf] - NIC - GPU
        meta["diameter_hops"] = {1: 4, 2: 6, 3: 8}[tiers]
    meta["assumptions"] = [
        "one NIC per GPU; the GPU-NIC host link is never the bottleneck",
        f"rails: {'local GPU index mod ' + str(kind.rails) if network == 'rail' else 'none (NICs fill leaves in rank order)'}",
        "partial last domain: the remaining GPUs at its first positions, all its NVLink switches present",
        f"network kind {network_kind}: NIC traversal {nic.latency * 1e6:g} us, switch {switch.latency * 1e6:g} us "
        "(hardware.NETWORK_KINDS), the switch latency charged on every link into or out of a switch",
    ]
    hardware = dict(kind.hardware, nic=nic, switch=switch)
    name = f"{domain}-{'ib' if nic.kind.startswith('ib') else 'eth'}"
    topo = Topology(dom.graph(), dom.gpus, dom.domains, name=name, hardware=hardware, meta=meta)
    return topo.validate().stamp()


def _spec(value: Any, known: dict, what: str) -> Any:
    """A hardware spec, or one named by its kind."""
    if isinstance(value, str):
        if value not in known:
            raise ConfigError(f"unknown {what} {value!r}; known: {', '.join(known)}")
        return known[value]
    return value


def _network_latencies(nic: LinkSpec, switch: SwitchSpec, kind: str | None,
                       net_latency: float | None) -> tuple[LinkSpec, SwitchSpec, str]:
    """The NIC and switch specs with the latencies of network ``kind`` (and ``net_latency`` for the NIC)."""
    if kind is None:
        kind = "ib" if str(nic.kind).startswith("ib") else "roce"
    spec = NETWORK_KINDS.get(kind) if isinstance(kind, str) else None
    if spec is None:
        raise ConfigError(f"network_kind must be one of {', '.join(NETWORK_KINDS)}; got {kind!r}")
    nic_latency = spec.nic_latency
    if net_latency is not None:
        if isinstance(net_latency, bool) or not isinstance(net_latency, (int, float)) \
                or not 0 <= net_latency < 1e-2 or math.isnan(net_latency):
            raise ConfigError(f"net_latency must be seconds between 0 and 10 ms, got {net_latency!r}")
        nic_latency = float(net_latency)
    return (replace(nic, latency=nic_latency, latency_source=spec.source),
            replace(switch, latency=spec.switch_latency), kind)


def _sizes(size: int, gpus: Any, count: Any) -> tuple[int, int]:
    """(number of domains, total GPUs) from the ``gpus`` and ``count`` options."""
    if count is not None:
        if isinstance(count, bool) or not isinstance(count, int) or count <= 0:
            raise ConfigError(f"count must be a positive whole number of domains, got {count!r}")
    if gpus is None:
        n_domains = 2 if count is None else count
        return n_domains, n_domains * size
    total = check_gpus(gpus, None, "")
    n_domains = _ceil(total / size)
    if count is not None and count != n_domains:
        raise ConfigError(f"gpus={total} fills {n_domains} domains of {size}, but count={count}")
    return n_domains, total
