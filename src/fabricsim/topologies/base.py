"""The Topology: a directed graph of the fabric plus what a simulation needs to know about it.

Graph conventions (used everywhere in fabricsim):

- node attribute ``kind``: ``"gpu"``, ``"nvswitch"``, ``"nic"`` or ``"switch"`` (scale-out leaf/spine/core);
  GPUs also carry ``domain`` (index of their NVLink domain). Switches may carry ``tier`` (0 = closest to the
  GPUs) which drawings use to layer the picture.
- edge attributes: ``bandwidth`` (B/s, one way), ``latency`` (s), ``kind`` (link kind, e.g. ``"nvlink5"``,
  ``"ib-ndr"``) and ``lanes`` (physical links merged into this edge). A full-duplex link is two directed
  edges; parallel physical links between one pair are one edge whose bandwidth is their sum.
- GPUs never forward traffic: a route's interior holds only switches and NICs.

Figures a report shows (``summary()``):

- ``bisection_bandwidth()``: the vendor convention, both directions summed across the cut that splits the
  GPUs into halves in rank order (DGX H100: 4 GPUs x 450 GB/s x 2 directions = 3.6 TB/s, row A011).
- ``diameter_hops()``: the most hops any GPU pair needs on its shortest route through forwarding nodes.

Both are computed exactly on small graphs (max-flow, BFS); builders of large fabrics also store a closed form
computed from their own parameters in ``meta``, which is used for big graphs while the graph is unchanged.
"""

from __future__ import annotations

import gc
import math
import numbers
from collections import Counter
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Hashable, Sequence

import networkx as nx

from fabricsim.errors import ConfigError, TopologyError
from fabricsim.units import MAX_IDEAL_RATE, MAX_LATENCY, MAX_RATE, MIN_RATE, format_rate

__all__ = ["Topology", "NODE_KINDS", "FORWARDING_KINDS", "CutNode", "tree_cut_flow", "format_summary"]

NODE_KINDS = ("gpu", "nvswitch", "nic", "switch")
FORWARDING_KINDS = ("nvswitch", "nic", "switch")

# Above these sizes the exact computations get slow in pure Python; a builder's closed form (in ``meta``)
# is used instead when it exists.
_MAXFLOW_EDGE_LIMIT = 60_000
_BFS_ALL_GPU_LIMIT = 256
_BFS_SAMPLE = 32


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
        self._cache: dict[str, Any] = {}

    # --- queries -----------------------------------------------------------------------------------------
    @property
    def num_gpus(self) -> int:
        return len(self.gpus)

    def domain_of(self, gpu: Hashable) -> int:
        """Index of the NVLink domain that holds ``gpu`` (TopologyError if it is not a GPU of the fabric)."""
        try:
            return self._domain_of[gpu]
        except (KeyError, TypeError):
            raise TopologyError(f"{gpu!r} is not a GPU of {self.name}") from None

    def nodes_of_kind(self, kind: str) -> list[Hashable]:
        return [n for n, k in self.graph.nodes(data="kind") if k == kind]

    def injection_bandwidth(self, gpu: Hashable | None = None, *, kind_prefix: str = "nvlink") -> float:
        """One-way bandwidth out of ``gpu`` (default: rank 0) over links whose kind starts with ``kind_prefix``."""
        gpu = self.gpus[0] if gpu is None else gpu
        return sum(d["bandwidth"] for _, _, d in self.graph.out_edges(gpu, data=True)
                   if str(d.get("kind", "")).startswith(kind_prefix))

    def nic_bandwidth(self, gpu: Hashable | None = None) -> float:
        """One-way bandwidth from ``gpu`` (default: rank 0) into the scale-out network through its NICs.

        Each NIC counts the smaller of its host link (GPU -> NIC) and its network links (NIC -> switch).
        """
        G = self.graph
        gpu = self.gpus[0] if gpu is None else gpu
        total = 0.0
        for _, nic, d in G.out_edges(gpu, data=True):
            if G.nodes[nic].get("kind") != "nic":
                continue
            onward = sum(e["bandwidth"] for _, v, e in G.out_edges(nic, data=True) if v != gpu)
            total += min(d["bandwidth"], onward)
        return total

    # --- figures -----------------------------------------------------------------------------------------
    def _fingerprint(self) -> tuple:
        """What the closed forms in ``meta`` were computed for; any edit to the graph changes it."""
        G = self.graph
        # fsum is exactly rounded, so the value does not depend on edge order (a reloaded file matches)
        return (G.number_of_nodes(), G.number_of_edges(),
                math.fsum(d.get("bandwidth", 0.0) for _, nbrs in G.adjacency() for d in nbrs.values()))

    def _closed_form_valid(self) -> bool:
        return self.meta.get("fingerprint") == list(self._fingerprint())

    def stamp(self) -> "Topology":
        """Record that ``meta``'s closed forms describe the graph as it is now (builders call this)."""
        self.meta["fingerprint"] = list(self._fingerprint())
        return self

    def bisection_bandwidth(self, *, method: str = "auto") -> float:
        """Bandwidth across the cut splitting the GPUs into halves in rank order, both directions summed (B/s).

        Parameters
        ----------
        method : {"auto", "maxflow", "closed-form"}
            ``"maxflow"`` solves max-flow first-half -> second-half and back on the graph, with GPUs as
            sources and sinks only (they never forward). ``"closed-form"`` uses the builder's formula in
            ``meta["bisection_bandwidth"]``. ``"auto"`` takes max-flow on graphs up to 60,000 edges, the
            closed form above that while the graph is unchanged since it was built, and max-flow otherwise.

        Examples
        --------
        >>> from fabricsim.topologies import dgx_h100
        >>> dgx_h100().bisection_bandwidth() / 1e12   # A011: 3.6 TB/s
        3.6
        """
        if method not in ("auto", "maxflow", "closed-form"):
            raise ConfigError(f"unknown bisection method {method!r}; use auto, maxflow or closed-form")
        if self.num_gpus < 2:
            return 0.0
        has_closed = "bisection_bandwidth" in self.meta
        if method == "closed-form" or (method == "auto" and has_closed
                                       and self.graph.number_of_edges() > _MAXFLOW_EDGE_LIMIT):
            if not has_closed:
                raise TopologyError(f"topology {self.name!r} has no closed-form bisection; use maxflow")
            if method == "closed-form" or self._closed_form_valid():
                return float(self.meta["bisection_bandwidth"])
        key = "bisection_maxflow"
        if key not in self._cache or self._cache[key][0] != self._fingerprint():
            half = self.num_gpus // 2
            first, second = self.gpus[:half], self.gpus[half:]
            value = _cut_maxflow(self.graph, first, second) + _cut_maxflow(self.graph, second, first)
            self._cache[key] = (self._fingerprint(), value)
        return self._cache[key][1]

    def diameter_hops(self, *, method: str = "auto") -> int:
        """Most hops on the shortest route between any two GPUs, passing only through forwarding nodes.

        Parameters
        ----------
        method : {"auto", "bfs", "sampled", "closed-form"}
            ``"bfs"`` runs one breadth-first search from every GPU (exact; fine up to a few hundred GPUs).
            ``"sampled"`` searches from the first and last GPU of every 8th domain and from evenly spaced
            ranks, 32 sources at most: a lower bound that is exact when the sources cover every kind of GPU
            position, as they do for the builders' regular fabrics. ``"closed-form"`` reads
            ``meta["diameter_hops"]``, which builders derive from their tier structure. ``"auto"``: BFS up to
            256 GPUs, else the closed form if the graph is unchanged since it was built, else sampled.
        """
        if method not in ("auto", "bfs", "sampled", "closed-form"):
            raise ConfigError(f"unknown diameter method {method!r}; use auto, bfs, sampled or closed-form")
        if self.num_gpus < 2:
            return 0
        if method == "closed-form" or (method == "auto" and self.num_gpus > _BFS_ALL_GPU_LIMIT
                                       and "diameter_hops" in self.meta and self._closed_form_valid()):
            if "diameter_hops" not in self.meta:
                raise TopologyError(f"topology {self.name!r} has no closed-form diameter; use bfs")
            return int(self.meta["diameter_hops"])
        if method == "bfs" or (method == "auto" and self.num_gpus <= _BFS_ALL_GPU_LIMIT):
            sources = list(self.gpus)
        else:
            sources = self._sample_sources()
        return max(_gpu_eccentricity(self.graph, s) for s in sources)

    def _sample_sources(self) -> list[Hashable]:
        picked: dict[Hashable, None] = {}
        step = max(1, len(self.domains) // 8)
        for dom in self.domains[::step] + self.domains[-1:]:
            picked[dom[0]] = None
            picked[dom[-1]] = None
        stride = max(1, self.num_gpus // _BFS_SAMPLE)
        for g in self.gpus[::stride]:
            if len(picked) >= 2 * _BFS_SAMPLE:
                break
            picked[g] = None
        return list(picked)[: 2 * _BFS_SAMPLE]

    def summary(self) -> dict[str, Any]:
        """Facts a report shows, as plain numbers (B/s one way unless a key says bidirectional)."""
        G = self.graph
        kinds = Counter(k for _, k in G.nodes(data="kind"))
        switches: Counter = Counter()
        for n, d in G.nodes(data=True):
            if d.get("kind") in ("nvswitch", "switch"):
                switches[(d["kind"], d.get("role", d["kind"]), d.get("tier", 0))] += 1
        links: Counter = Counter()
        lanes: Counter = Counter()
        for u, v, d in G.edges(data=True):
            if G.has_edge(v, u) and str(u) > str(v):
                continue  # count a full-duplex pair once
            links[d.get("kind", "")] += 1
            lanes[d.get("kind", "")] += int(d.get("lanes", 1))
        nvlink_out = self.injection_bandwidth()
        nvlink_in = sum(d["bandwidth"] for _, _, d in G.in_edges(self.gpus[0], data=True)
                        if str(d.get("kind", "")).startswith("nvlink"))
        nic_out = self.nic_bandwidth()
        ports: Counter = Counter()  # every link out of GPU 0 by kind (what a fabric without NVLink has)
        for _, _, d in G.out_edges(self.gpus[0], data=True):
            ports[str(d.get("kind", ""))] += d["bandwidth"]
        aggregate = sum(self.injection_bandwidth(g) for g in self.gpus)
        gpu = self.hardware.get("gpu") or G.nodes[self.gpus[0]].get("model")
        return {
            "name": self.name,
            "gpus": self.num_gpus,
            "gpu_model": getattr(gpu, "name", gpu),
            "domains": len(self.domains),
            "domain_sizes": sorted(Counter(len(d) for d in self.domains).items(), reverse=True),
            "nodes": dict(kinds),
            "switches": {f"{role} (tier {tier})": n for (kind, role, tier), n in sorted(switches.items())},
            "links": dict(links),
            "lanes": dict(lanes),
            "nvlink_per_gpu": nvlink_out,
            "nvlink_per_gpu_bidirectional": nvlink_out + nvlink_in,
            "gpu_ports": dict(ports),
            "nic_per_gpu": nic_out,
            "nic_per_gpu_bidirectional": 2 * nic_out,
            "nvlink_aggregate_bidirectional": 2 * aggregate,
            "bisection": self.bisection_bandwidth(),
            "diameter_hops": self.diameter_hops(),
            "network": {k: self.meta[k] for k in ("network", "tiers", "leaves", "spines", "pods", "cores",
                                                  "oversubscription", "rails", "sharp", "adaptive_routing") if k in self.meta},
            "assumptions": list(self.meta.get("assumptions", [])),
        }

    # --- checks ------------------------------------------------------------------------------------------
    def validate(self) -> "Topology":
        """Refuse what cannot be simulated, naming the node or edge at fault; returns self.

        Checked: at least one GPU; known node kinds; no self-loops; every edge's bandwidth within the
        range ``units.MIN_RATE..MAX_IDEAL_RATE`` (1 B/s..1e30 B/s: what the rate solve handles; files
        are also held to the physical range, see :meth:`check_physical`), latency within ``0..units.MAX_LATENCY``, a positive integer ``lanes`` and a text ``kind``; the rank
        order and the NVLink domains name every GPU once, domains contiguous; every GPU reaches every
        other through forwarding nodes.

        Raises
        ------
        TopologyError
            The first problem found, naming the node or edge.
        """
        G = self.graph
        if not self.gpus:
            raise TopologyError(f"topology {self.name!r} has no GPUs")
        for node, kind in G.nodes(data="kind"):
            if kind not in NODE_KINDS:
                raise TopologyError(f"node {node!r} has kind {kind!r}; expected one of {', '.join(NODE_KINDS)}")
        for u, v, d in ((u, v, d) for u, nbrs in G.adjacency() for v, d in nbrs.items()):  # G.edges, read directly
            bw, lat, lanes = d.get("bandwidth"), d.get("latency", 0.0), d.get("lanes", 1)
            # the builders' edges (plain float, float, int, str) pass without the slower abstract checks
            if (bw.__class__ is float and MIN_RATE <= bw <= MAX_IDEAL_RATE and lat.__class__ is float
                    and 0 <= lat <= MAX_LATENCY and lanes.__class__ is int and lanes >= 1
                    and d.get("kind", "").__class__ is str and u != v):
                continue
            if u == v:
                raise TopologyError(f"node {u!r} has a link to itself (self-loops carry nothing; remove it)")
            if isinstance(bw, bool) or not isinstance(bw, numbers.Real) or not bw > 0 or bw != bw \
                    or bw == float("inf"):
                raise TopologyError(f"edge {u!r} -> {v!r} has non-positive or missing bandwidth {bw!r}")
            if not MIN_RATE <= bw <= MAX_IDEAL_RATE:
                raise TopologyError(f"edge {u!r} -> {v!r} has bandwidth {bw!r} B/s, outside 1 B/s..1e30 B/s "
                                    "(bandwidth is in B/s one way)")
            if isinstance(lat, bool) or not isinstance(lat, numbers.Real) or not 0 <= lat <= MAX_LATENCY:
                raise TopologyError(f"edge {u!r} -> {v!r} has invalid latency {lat!r} (seconds, 0..{MAX_LATENCY:g})")
            if isinstance(lanes, bool) or not isinstance(lanes, numbers.Integral) or lanes < 1:
                raise TopologyError(f"edge {u!r} -> {v!r} has lanes {lanes!r}; expected a positive integer")
            if not isinstance(d.get("kind", ""), str):
                raise TopologyError(f"edge {u!r} -> {v!r} has kind {d['kind']!r}; expected text such as 'nvlink4'")
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
        if in_domains != list(self.gpus):
            raise TopologyError("each NVLink domain's GPUs must be contiguous and in rank order "
                                "(list the domains in rank order)")
        self._check_connected()
        return self

    def check_physical(self) -> "Topology":
        """Refuse a link outside the physical range 1 B/s..1 PB/s (``units.MIN_RATE..MAX_RATE``); returns self.

        :meth:`validate` admits up to 1e30 B/s so that programs may idealise a link as "infinitely" fast;
        a fabric read from a file is held to this range, where a typo in a unit (bits for bytes, a
        missing prefix) lands outside it.

        Raises
        ------
        TopologyError
            The first edge outside the range.
        """
        for u, v, bw in self.graph.edges(data="bandwidth"):
            if not MIN_RATE <= bw <= MAX_RATE:
                raise TopologyError(f"edge {u!r} -> {v!r} has bandwidth {bw!r} B/s, outside the physical range "
                                    "1 B/s..1 PB/s (bandwidth is in B/s one way: write e.g. '400 Gb/s' or '50 GB/s')")
        return self

    def _check_connected(self) -> None:
        """Every GPU must reach every other GPU through forwarding nodes only (GPUs do not forward)."""
        G = self.graph
        start = self.gpus[0]
        for neighbours, phrase in ((G.successors, "from"), (G.predecessors, "to")):  # the graph is directed
            reached = _reach_through_switches(G, start, neighbours)
            for g in self.gpus:
                if g not in reached:
                    raise TopologyError(f"GPU {g!r} has no path {phrase} GPU {start!r}: the fabric is disconnected")


def _reach_through_switches(G: nx.DiGraph, start: Hashable, neighbours) -> set:
    """Nodes reached from ``start`` along ``neighbours``, passing through non-GPU nodes only."""
    kind = dict(G.nodes(data="kind"))
    reached = {start}
    frontier = [start]
    while frontier:
        nxt = []
        for u in frontier:
            for v in neighbours(u):
                if v not in reached:
                    reached.add(v)
                    if kind[v] != "gpu":
                        nxt.append(v)
        frontier = nxt
    return reached


def format_summary(s: dict[str, Any]) -> list[str]:
    """Lines of text for a :meth:`Topology.summary` (what ``fabricsim topology info`` prints)."""
    def rate(x: float) -> str:
        return f"{x / 1e15:.4g} PB/s" if x >= 1e15 else format_rate(x)

    sizes = " + ".join(f"{count} x {size}" if count > 1 else f"{size}" for size, count in s["domain_sizes"])
    plural = "s" if s["domains"] > 1 else ""
    nodes = s["nodes"]
    lines = [
        f"topology        {s['name']}",
        f"GPUs            {s['gpus']} {s['gpu_model'] or ''}".rstrip()
        + f" in {s['domains']} NVLink domain{plural} ({sizes} GPUs)",
        f"switches        {nodes.get('nvswitch', 0)} NVLink, {nodes.get('switch', 0)} network"
        + (f" (and {nodes['nic']} NICs)" if nodes.get("nic") else ""),
    ]
    lines += [f"  {role:<24}{count}" for role, count in s["switches"].items()]
    lines.append("links           physical links (lanes) by kind, full duplex; graph edges in brackets")
    lines += [f"  {kind or '?':<24}{s['lanes'][kind]} [{s['links'][kind]}]" for kind in sorted(s["links"])]
    if s["nvlink_per_gpu"]:
        lines.append(f"NVLink per GPU  {rate(s['nvlink_per_gpu'])} each way, "
                     f"{rate(s['nvlink_per_gpu_bidirectional'])} bidirectional")
    else:
        ports = s.get("gpu_ports") or {}
        lines.append("NVLink per GPU  none" + ("; GPU links " + ", ".join(
            f"{rate(bw)} each way ({kind or '?'})" for kind, bw in sorted(ports.items())) if ports else ""))
    if s["nic_per_gpu"]:
        lines.append(f"NIC per GPU     {rate(s['nic_per_gpu'])} each way, "
                     f"{rate(s['nic_per_gpu_bidirectional'])} bidirectional")
    else:
        lines.append("NIC per GPU     none")
    if s["nvlink_aggregate_bidirectional"]:
        lines.append(f"NVLink total    {rate(s['nvlink_aggregate_bidirectional'])} "
                     "(all GPUs, bidirectional)")
    lines.append(f"bisection       {rate(s['bisection'])} (GPUs split in rank halves, both directions)"
                 if s["bisection"] else "bisection       none (one GPU)")
    lines.append(f"diameter        {s['diameter_hops']} hops (GPU to GPU, shortest route)")
    if s["network"]:
        lines.append("network         " + ", ".join(f"{k} {v}" for k, v in s["network"].items()))
    lines += [f"assumption      {a}" for a in s["assumptions"]]
    return lines


@contextmanager
def paused_gc():
    """Cyclic garbage collection off for a block that allocates many small acyclic containers (graphs,
    adjacency lists, routes): each collection would scan every object alive, the whole topology graph
    included, and building a large fabric or its routes triggers hundreds of them. Reference counting still
    frees everything; the collector's previous state is restored."""
    was = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was:
            gc.enable()


# --- computations ------------------------------------------------------------------------------------------
_SOURCE, _SINK = ("__fabricsim_source__",), ("__fabricsim_sink__",)


def _cut_maxflow(G: nx.DiGraph, senders: Sequence[Hashable], receivers: Sequence[Hashable]) -> float:
    """Max one-way flow from ``senders`` to ``receivers`` (GPUs) when GPUs only send or receive.

    Every sender is merged into one source and every receiver into one sink: a GPU has unlimited data, so
    merging loses nothing, and dropping the edges into senders and out of receivers forbids GPU transit.
    """
    send, recv = set(senders), set(receivers)
    H = nx.DiGraph()
    for u, v, bw in G.edges(data="bandwidth"):
        u_gpu = G.nodes[u].get("kind") == "gpu"
        v_gpu = G.nodes[v].get("kind") == "gpu"
        if u_gpu and u not in send:
            continue
        if v_gpu and v not in recv:
            continue
        a = _SOURCE if u_gpu else u
        b = _SINK if v_gpu else v
        if H.has_edge(a, b):
            H[a][b]["capacity"] += bw
        else:
            H.add_edge(a, b, capacity=bw)
    if _SOURCE not in H or _SINK not in H:
        return 0.0
    return float(nx.maximum_flow_value(H, _SOURCE, _SINK))


def _gpu_eccentricity(G: nx.DiGraph, source: Hashable) -> int:
    """Hops from ``source`` to the farthest GPU it reaches, expanding only through non-GPU nodes."""
    dist = {source: 0}
    frontier = [source]
    far = 0
    depth = 0
    while frontier:
        depth += 1
        nxt = []
        for u in frontier:
            for v in G.successors(u):
                if v in dist:
                    continue
                dist[v] = depth
                if G.nodes[v].get("kind") == "gpu":
                    far = depth
                else:
                    nxt.append(v)
        frontier = nxt
    return far


@dataclass
class CutNode:
    """One switch (or switch layer) of a tree-shaped fabric, for :func:`tree_cut_flow`.

    ``send`` and ``recv`` are the bandwidths (B/s) of the sending and receiving GPUs attached directly;
    ``up`` and ``down`` the capacity of the links to the parent (ignored at the root).
    """

    send: float = 0.0
    recv: float = 0.0
    up: float = 0.0
    down: float = 0.0
    children: list["CutNode"] = field(default_factory=list)


def tree_cut_flow(root: CutNode) -> float:
    """Max flow from senders to receivers in a tree whose internal nodes are non-blocking.

    Matching senders with receivers as low in the tree as possible is optimal: traffic kept inside a
    subtree uses no capacity above it. Builders of folded-Clos fabrics (leaf/spine/core, NVLink switch
    tiers) describe their fabric as such a tree, collapsing each fully-connected switch layer into one
    node, which preserves max-flow when every lower switch spreads its uplinks evenly over the layer.
    """

    def capped(node: CutNode) -> tuple[float, float, float]:
        matched, supply, demand = 0.0, node.send, node.recv
        for child in node.children:
            m, s, d = capped(child)
            matched += m
            supply += min(s, child.up)
            demand += min(d, child.down)
        local = min(supply, demand)
        return matched + local, supply - local, demand - local

    total, _, _ = capped(root)
    return total
