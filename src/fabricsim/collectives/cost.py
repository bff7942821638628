"""One closed-form cost model per all-reduce algorithm, NCCL-tuner style.

Used twice: ``--model analytic`` (``select.estimate_allreduce``) prints it, and ``protocol="auto"``
ranks the protocols with it before simulating them (``select``), so that the likely winner is simulated
first and the others only while their lower bound can still beat it.

Shape of a group: p ranks in d NVLink domains of at most m GPUs; usable one-way bandwidth per GPU over
NVLink ``b_nvl`` and through its NICs ``b_nic`` (after the calibrated link efficiencies); C channels.
A protocol contributes its launch latency, per-hop latencies (NVLink or network row) and its wire
efficiency w (payload share of the wire bytes). With a = per-hop latency (rows C098-C103):

- ring: launch + (2(p-1) - 2(d-1)) a_nvl + 2(d-1) a_net + 2 (p-1)/p N/w / B, B = b_nvl in one domain,
  else min(b_nvl, C b_nic) (C rail-aligned channels, one NIC each);
- tree (NCCL's double binary tree, chains inside domains): launch + 2(m-1) a_nvl + 2 ceil(log2 d) a_net
  + (2 N/w + (F-1) c) / B: in a steady pipeline round a GPU sends a chunk up and one down in each of
  the two trees, 2 N in all (NCCL prices tree at algbw = busbw / 2, C103); F = 2(m-1) + 2 ceil(log2 d)
  rounds fill the pipeline, each moving about one chunk of c = C min(CHUNK_TARGET, N/(2C)) bytes
  through the busiest GPU;
- hierarchical: a ring all-reduce over the m GPUs of a domain (its reduce-scatter and all-gather) at
  the intra protocol, plus a ring over the d domains of N/m per GPU on the NIC at the inter protocol;
  each level takes its own protocol;
- nvls: NVLS_LATENCY + N (1 + 1/m) / B_nvls inside a switch island, plus a tree across islands of N/m
  per GPU on the NIC (NCCL's NVLS tree); Simple only.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from fabricsim.collectives import analytic
from fabricsim.collectives.protocol import NVLS_LATENCY, Protocol
from fabricsim.collectives.tree import CHUNK_TARGET

__all__ = ["Shape", "ring_cost", "tree_cost", "hierarchical_cost", "nvls_cost"]


@dataclass(frozen=True)
class Shape:
    """What the cost model knows of a group: sizes, per-GPU usable bandwidths, channels."""

    p: int
    domains: int
    m: int
    b_nvl: float
    b_nic: float
    channels: int
    b_nvls: float = 0.0

    @property
    def bandwidth(self) -> float:
        """Per-rank bandwidth of a flat ring or tree: NVLink in one domain, else the NICs can cap it."""
        if self.domains == 1:
            return self.b_nvl or self.b_nic * self.channels
        return min(self.b_nvl or math.inf, self.channels * self.b_nic or math.inf)


def ring_cost(proto: Protocol, s: Shape, nbytes: float) -> float:
    inter = 2 * (s.domains - 1) if s.domains > 1 else 0
    intra = 2 * (s.p - 1) - inter
    lat = proto.step_latency
    return (proto.launch_latency["ring"] + intra * lat[("ring", "nvlink")] + inter * lat[("ring", "net")]
            + analytic.allreduce_lower_bound(s.p, nbytes / proto.wire_efficiency, s.bandwidth))


def tree_cost(proto: Protocol, s: Shape, nbytes: float) -> float:
    if s.p == 1:
        return 0.0
    intra = 2 * (s.m - 1)
    inter = 2 * math.ceil(math.log2(s.domains)) if s.domains > 1 else 0
    lat = proto.step_latency
    wire = nbytes / proto.wire_efficiency
    chunk = s.channels * min(CHUNK_TARGET, wire / (2 * s.channels))
    fill = max(intra + inter, 1)
    return (proto.launch_latency["tree"] + intra * lat[("tree", "nvlink")] + inter * lat[("tree", "net")]
            + (2 * wire + (fill - 1) * chunk) / s.bandwidth)


def hierarchical_cost(intra: Protocol, inter: Protocol, s: Shape, nbytes: float) -> float:
    if s.domains == 1:
        return ring_cost(intra, s, nbytes)
    t = intra.launch_latency["ring"]
    t += analytic.ring_allreduce_time(s.m, nbytes / intra.wire_efficiency, s.b_nvl or s.b_nic,
                                      intra.step_latency[("ring", "nvlink")])
    t += analytic.ring_allreduce_time(s.domains, nbytes / inter.wire_efficiency / s.m, s.b_nic,
                                      inter.step_latency[("ring", "net")])
    return t


def nvls_cost(s: Shape, nbytes: float) -> float:
    t = analytic.nvls_allreduce_time(s.m if s.domains > 1 else s.p, nbytes, s.b_nvls, NVLS_LATENCY["nvlink"])
    if s.domains > 1:
        t += analytic.tree_allreduce_time(s.domains, nbytes / s.m, s.b_nic, NVLS_LATENCY["net"])
    return t
