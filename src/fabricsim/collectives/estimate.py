"""Closed-form estimates of every collective (``--model analytic``): alpha-beta, no simulation.

All-reduce is ``select.estimate_allreduce`` (cost.py's model). The other collectives follow the same
recipe with the same inputs: the group's shape (p ranks in d NVLink domains of m, per-GPU usable NVLink
bandwidth ``b_nvl`` and NIC bandwidth ``b_nic`` after the calibrated link efficiencies, C channels;
``select.group_shape``), a protocol's launch latency, its per-hop latencies a_nvl / a_net and its wire
efficiency w (payload share of the wire bytes; protocol.py, rows C098-C103). B is the flat ring's per-rank
bandwidth (``Shape.bandwidth``: NVLink in one domain, else min(b_nvl, C b_nic)). N is nccl-tests' size
(kinds.py). Each form is the contention-free time of the schedule fabricsim simulates for it:

- reduce-scatter, all-gather, ``ring`` (shards.py): launch + (p-d) a_nvl + (d-1) a_net + (p-1)/p N/(w B);
  ``hierarchical``: inside domains (m-1) a_nvl + (m-1)/m N/(w b_nvl), then across them, rail-aligned,
  (d-1) a_net + (d-1)/d (N/m)/(w b_nic); ``nvls``: one NVLS step inside each switch island,
  NVLS_LATENCY + N / B_nvls, then the hierarchical form's network part if there are several islands.
- broadcast, reduce (rooted.py): a pipeline of chunks c = min(PIPELINE_CHUNK, N/C) along the longest path
  of the tree: launch + a + sum over its hops h of (a_h + c/B_h) - max_h c/B_h (the first chunk's fill)
  + N/(w B_t), the rest streaming at the slowest rate. ``ring``: C chains (one per channel), p-d NVLink
  hops and d-1 network hops, B_t = B, tending to N/B (nccl-tests' busbw factor 1); ``tree``: one chain
  inside each domain (m-1 hops) and a binary tree across domains (ceil(log2 d) hops) whose interior GPUs
  send twice, B_t = min(b_nvl, b_nic/2) (b_nic with two domains).
- all-to-all (alltoall.py): one step of p (p-1) flows: launch + a + max((m-1)/p N / b_nvl,
  (p-m)/p N / b_nic) / w, the NVLink and NIC shares of (p-1)/p N leaving each GPU at once (a_net when
  the group spans domains).
- send/recv (p2p.py; every rank sends N to the next): launch + a + N/(w B_pair), B_pair the NIC if any
  pair crosses domains, else NVLink.

No contention beyond each GPU's own links: oversubscribed or shared links only show in a simulation.
Protocol ``auto`` takes the fastest protocol's estimate (send/recv and all-to-all: NCCL's P2P rule, LL up
to 16 KiB per pair, else Simple; NVLS: Simple).
"""

from __future__ import annotations

import math

from fabricsim.collectives.base import CollectiveResult
from fabricsim.collectives.cost import Shape
from fabricsim.collectives.kinds import kind as lookup
from fabricsim.collectives.p2p import p2p_protocol
from fabricsim.collectives.protocol import CALIBRATED, NVLS_LATENCY, PROTOCOLS, Calibration, Protocol
from fabricsim.collectives.rooted import PIPELINE_CHUNK
from fabricsim.collectives.select import estimate_allreduce, group_shape
from fabricsim.errors import ConfigError, InfeasibleError

__all__ = ["estimate"]

_ALGORITHMS = {"reducescatter": ("ring", "hierarchical", "nvls"), "allgather": ("ring", "hierarchical", "nvls"),
               "broadcast": ("ring", "tree"), "reduce": ("ring", "tree"), "alltoall": ("pairwise",),
               "sendrecv": ("p2p",)}


def _hops(proto: Protocol, algo: str, s: Shape, steps_nvl: int, steps_net: int) -> float:
    lat = proto.step_latency
    return steps_nvl * lat[(algo, "nvlink")] + steps_net * lat[(algo, "net")]


def _shards(proto: Protocol, s: Shape, n: float, algorithm: str) -> float:
    w = proto.wire_efficiency
    launch = proto.launch_latency["ring"]
    if algorithm == "ring" or (algorithm == "hierarchical" and s.domains == 1):
        return launch + _hops(proto, "ring", s, s.p - s.domains, s.domains - 1) + (s.p - 1) / s.p * n / (w * s.bandwidth)
    across = 0.0
    if s.domains > 1:
        across = (s.domains - 1) * proto.step_latency[("ring", "net")] + \
            (s.domains - 1) / s.domains * n / s.m / (w * s.b_nic)
    if algorithm == "nvls":
        return NVLS_LATENCY["nvlink"] + n / s.b_nvls + across
    inside = (s.m - 1) * proto.step_latency[("ring", "nvlink")] + (s.m - 1) / s.m * n / (w * (s.b_nvl or s.b_nic))
    return launch + inside + across


def _rooted(proto: Protocol, s: Shape, n: float, algorithm: str) -> float:
    w = proto.wire_efficiency
    lat = proto.step_latency
    b_nvl = s.b_nvl or s.b_nic
    if algorithm == "ring":
        chains, nvl_hops, net_hops, key = s.channels, s.p - s.domains, s.domains - 1, "ring"
        rate = s.bandwidth
    else:
        chains, nvl_hops, net_hops, key = 1, s.m - 1, math.ceil(math.log2(s.domains)) if s.domains > 1 else 0, "tree"
        rate = min(b_nvl, s.b_nic / (2 if s.domains > 2 else 1)) if s.domains > 1 else b_nvl
    chunk = n / chains / max(1, math.ceil(n / chains / PIPELINE_CHUNK))  # share / K, as rooted.py
    # the first chunk crosses every hop of the longest path; the rest follow at the slowest hop's pace
    slowest = max(chunk / b_nvl if nvl_hops else 0.0, chunk / s.b_nic if net_hops else 0.0)
    fill = nvl_hops * (lat[(key, "nvlink")] + chunk / b_nvl) + net_hops * (lat[(key, "net")] + chunk / (s.b_nic or 1))
    step = lat[(key, "net" if s.domains > 1 else "nvlink")]
    return proto.launch_latency[key] + step + max(fill - slowest, 0.0) + n / (w * rate)


def _p2p(proto: Protocol, s: Shape, n: float, kind: str) -> float:
    w = proto.wire_efficiency
    hop = proto.step_latency[("ring", "net" if s.domains > 1 else "nvlink")]
    if kind == "sendrecv":
        rate = s.b_nic if s.domains > 1 else (s.b_nvl or s.b_nic)
        return proto.launch_latency["ring"] + hop + n / (w * rate)
    inside = (s.m - 1) / s.p * n / (s.b_nvl or s.b_nic)
    across = (s.p - s.m) / s.p * n / s.b_nic if s.domains > 1 else 0.0
    return proto.launch_latency["ring"] + hop + max(inside, across) / w


def estimate(topology, kind: str, nbytes: int, algorithm: str = "auto", *, protocol: str = "auto",
             calibration: Calibration = CALIBRATED) -> CollectiveResult:
    """The closed-form time of collective ``kind`` of ``nbytes`` (nccl-tests' size) on every GPU of
    ``topology`` (module docstring for the formulas).

    Raises
    ------
    ConfigError
        An unknown collective, algorithm or protocol, or a negative size.
    InfeasibleError
        The algorithm does not apply to this fabric (NVLS without NVLink switches, several domains
        without NICs between them), or has no closed form (SHARP).
    """
    from fabricsim.topologies.base import Topology

    k = lookup(kind)
    if k.name == "allreduce":
        return estimate_allreduce(topology, nbytes, algorithm, calibration=calibration, protocol=protocol)
    if not isinstance(topology, Topology):
        raise ConfigError(f"estimate needs a Topology, got {type(topology).__name__}")
    if isinstance(nbytes, bool) or not isinstance(nbytes, int) or nbytes < 0:
        raise ConfigError(f"message size must be a non-negative integer of bytes, got {nbytes!r}")
    options = _ALGORITHMS[k.name]
    if algorithm == "tree" and k.name in ("reducescatter", "allgather"):
        raise InfeasibleError(f"NCCL has no tree {k.title} (its trees reduce to a root and broadcast back, an "
                              "all-reduce); use ring, nvls or hierarchical")
    if algorithm not in (*options, "auto"):
        raise ConfigError(f"{k.name} has no algorithm {algorithm!r}; use one of {', '.join(options)} or auto")
    if protocol != "auto" and protocol not in PROTOCOLS:
        raise ConfigError(f"unknown protocol {protocol!r}; use auto or one of {', '.join(PROTOCOLS)}")
    rank = {g: i for i, g in enumerate(topology.gpus)}
    shape = group_shape(topology, calibration, [[rank[g] for g in d] for d in topology.domains])
    if algorithm == "auto":
        usable = [a for a in options if _applies(a, shape)]
        results = [estimate(topology, k.name, nbytes, a, protocol=protocol, calibration=calibration) for a in usable]
        return min(results, key=lambda r: r.time)
    if not _applies(algorithm, shape):
        raise InfeasibleError(f"{k.name} {algorithm} does not apply to this fabric"
                              + (" (it needs NVLink switches)" if algorithm == "nvls" else ""))
    if k.name in ("alltoall", "sendrecv"):
        per_pair = nbytes / shape.p if k.name == "alltoall" else nbytes
        names = [p2p_protocol(per_pair, protocol).name]
    else:
        names = ["simple"] if algorithm == "nvls" else (list(PROTOCOLS) if protocol == "auto" else [protocol])
    if shape.p == 1 or nbytes == 0:
        return CollectiveResult(algorithm, names[0], shape.p, nbytes, 0.0, kind=k.name)
    if shape.domains > 1 and shape.b_nic <= 0:
        raise InfeasibleError("the topology has several NVLink domains but no NICs between them")
    cost = {"reducescatter": _shards, "allgather": _shards, "broadcast": _rooted, "reduce": _rooted}.get(k.name)
    if cost is None:
        t, name = min((_p2p(PROTOCOLS[n], shape, nbytes, k.name), n) for n in names)
    else:
        t, name = min((cost(PROTOCOLS[n], shape, nbytes, algorithm), n) for n in names)
    return CollectiveResult(algorithm, name, shape.p, nbytes, t, kind=k.name)


def _applies(algorithm: str, s: Shape) -> bool:
    if algorithm == "nvls":
        return s.b_nvls > 0
    if algorithm == "hierarchical":
        return s.domains > 1
    return True
