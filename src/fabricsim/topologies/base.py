"""The Topology: a directed graph of the fabric plus what a simulation needs to know about it.

Graph conventions (used everywhere in fabricsim):

- node attribute ``kind``: ``"gpu"``, ``"nvswitch"``, ``"nic"`` or ``"switch"`` (scale-out leaf/spine/core);
  GPUs also carry ``domain`` (index of their NVLink domain). Switches may carry ``tier`` (0 = closest to the
  GPUs) which drawings use to layer the picture.
- edge attributes: ``bandwidth`` (B/s, one way), ``latency`` (s), ``kind`` (link kind, e.g. ``"nvlink5"``,
  ``"ib-ndr"``) and ``lanes`` (physical links merged into this edge). A full-duplex link is two directed
  edges; parallel physical links between one pair are one edge whose bandwidth is their sum.
- GPUs never forward traffic: a route's interior holds only switches and NICs.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Hashable

import networkx as nx

from fabricsim.errors import TopologyError

__all__ = ["Topology", "NODE_KINDS", "FORWARDING_KINDS"]

NODE_KINDS = ("gpu", "nvswitch", "nic", "switch")
FORWARDING_KINDS = ("nvswitch", "nic", "switch")


@dataclass
class Topology:
    """A fabric: ``graph`` (networkx DiGraph), ``gpus`` in rank order, and ``domains`` (NVLink islands).

    ``domains`` is a list of lists of GPU nodes, each in rank order; ranks of one domain are contiguous
    in ``gpus``. ``hardware`` names the presets used (``gpu``, ``nvlink``, ``nic``, ...), and ``meta`` holds
    builder facts a report may show (for instance the assumed tier layout of an NVL576).
    """

    graph: nx.DiGraph
    gpus: list[Hashable]
    domains: list[list[Hashable]]
    name: str = "custom"
    hardware: dict[str, Any] = field(default_factory=dict)
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self._domain_of = {g: i for i, dom in enumerate(self.domains) for g in dom}

    # --- queries -----------------------------------------------------------------------------------------
    @property
    def num_gpus(self) -> int:
        return len(self.gpus)

    def domain_of(self, gpu: Hashable) -> int:
        """Index of the NVLink domain that holds ``gpu``."""
        return self._domain_of[gpu]

    def nodes_of_kind(self, kind: str) -> list[Hashable]:
        return [n for n, k in self.graph.nodes(data="kind") if k == kind]

    def injection_bandwidth(self, gpu: Hashable | None = None, *, kind_prefix: str = "nvlink") -> float:
        """One-way bandwidth out of ``gpu`` (default: rank 0) over links whose kind starts with ``kind_prefix``."""
        gpu = self.gpus[0] if gpu is None else gpu
        return sum(d["bandwidth"] for _, _, d in self.graph.out_edges(gpu, data=True)
                   if str(d.get("kind", "")).startswith(kind_prefix))

    # --- checks ------------------------------------------------------------------------------------------
    def validate(self) -> "Topology":
        """Refuse what cannot be simulated, naming the node or edge at fault; returns self."""
        G = self.graph
        if not self.gpus:
            raise TopologyError(f"topology {self.name!r} has no GPUs")
        for node, kind in G.nodes(data="kind"):
            if kind not in NODE_KINDS:
                raise TopologyError(f"node {node!r} has kind {kind!r}; expected one of {', '.join(NODE_KINDS)}")
        for u, v, d in G.edges(data=True):
            bw, lat = d.get("bandwidth"), d.get("latency", 0.0)
            if not isinstance(bw, (int, float)) or not bw > 0 or bw != bw or bw == float("inf"):
                raise TopologyError(f"edge {u!r} -> {v!r} has non-positive or missing bandwidth {bw!r}")
            if not isinstance(lat, (int, float)) or not lat >= 0 or lat == float("inf"):
                raise TopologyError(f"edge {u!r} -> {v!r} has invalid latency {lat!r}")
        gpu_nodes = {n for n, k in G.nodes(data="kind") if k == "gpu"}
        seen: set = set()
        for g in self.gpus:
            if g not in gpu_nodes:
                raise TopologyError(f"rank order names {g!r}, which is not a GPU node of the graph")
            if g in seen:
                raise TopologyError(f"rank order names GPU {g!r} twice")
            seen.add(g)
        missing = gpu_nodes - seen
        if missing:
            raise TopologyError(f"rank order misses GPU {sorted(map(str, missing))[0]!r} "
                                f"({len(missing)} GPUs in all)")
        in_domains = [g for dom in self.domains for g in dom]
        if sorted(map(str, in_domains)) != sorted(map(str, self.gpus)):
            raise TopologyError("NVLink domains must hold every GPU exactly once")
        self._check_connected()
        return self

    def _check_connected(self) -> None:
        """Every GPU must reach every other GPU through forwarding nodes only (GPUs do not forward)."""
        G = self.graph
        start = self.gpus[0]
        reached = {start}
        frontier = [start]
        while frontier:
            nxt = []
            for u in frontier:
                for v in G.successors(u):
                    if v in reached:
                        continue
                    reached.add(v)
                    if G.nodes[v].get("kind") != "gpu":
                        nxt.append(v)
            frontier = nxt
        for g in self.gpus:
            if g not in reached:
                raise TopologyError(f"GPU {g!r} has no path from GPU {start!r}: the fabric is disconnected")
        # and back: every GPU must reach the start (the graph is directed)
        R = G.reverse(copy=False)
        reached = {start}
        frontier = [start]
        while frontier:
            nxt = []
            for u in frontier:
                for v in R.successors(u):
                    if v in reached:
                        continue
                    reached.add(v)
                    if G.nodes[v].get("kind") != "gpu":
                        nxt.append(v)
            frontier = nxt
        for g in self.gpus:
            if g not in reached:
                raise TopologyError(f"GPU {g!r} has no path to GPU {start!r}: the fabric is disconnected")
