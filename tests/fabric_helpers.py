"""Small hand-built fabrics for engine tests (the topology library has the real presets)."""

import networkx as nx

from fabricsim.topologies.base import Topology


def star(n_gpus: int, bandwidth: float = 1e9, latency: float = 1e-6) -> Topology:
    """n GPUs on one switch, every GPU its own domain: GPU -> switch -> GPU paths of two links."""
    G = nx.DiGraph()
    G.add_node("sw", kind="switch")
    gpus = [f"g{i}" for i in range(n_gpus)]
    for i, g in enumerate(gpus):
        G.add_node(g, kind="gpu", domain=i)
        G.add_edge(g, "sw", bandwidth=bandwidth, latency=latency, kind="eth")
        G.add_edge("sw", g, bandwidth=bandwidth, latency=latency, kind="eth")
    return Topology(G, gpus, [[g] for g in gpus], name="star").validate()


def pair(bandwidth: float = 1e9, latency: float = 1e-6) -> Topology:
    """Two GPUs joined by one full-duplex link."""
    G = nx.DiGraph()
    G.add_nodes_from([("a", {"kind": "gpu", "domain": 0}), ("b", {"kind": "gpu", "domain": 0})])
    G.add_edge("a", "b", bandwidth=bandwidth, latency=latency, kind="nvlink5")
    G.add_edge("b", "a", bandwidth=bandwidth, latency=latency, kind="nvlink5")
    return Topology(G, ["a", "b"], [["a", "b"]], name="pair").validate()


def from_edges(gpus, switches, edges) -> Topology:
    """A topology from (u, v, bandwidth, latency) full-duplex links; each GPU its own domain."""
    G = nx.DiGraph()
    for i, g in enumerate(gpus):
        G.add_node(g, kind="gpu", domain=i)
    for s in switches:
        G.add_node(s, kind="switch")
    for u, v, bw, lat in edges:
        G.add_edge(u, v, bandwidth=bw, latency=lat, kind="eth")
        G.add_edge(v, u, bandwidth=bw, latency=lat, kind="eth")
    return Topology(G, list(gpus), [[g] for g in gpus], name="custom").validate()
