"""What schedule builders look up about the fabric's nodes, computed once per router and kept in it.

Schedules ask the same questions of a fabric thousands of times at scale (what kind of node is this,
how many switch hops separate these two switches, which NVLink switch chips does this GPU hang off);
asked of the networkx graph node by node, the answers cost more than the simulation. They depend only
on the topology and on which links are up, which is what a ``Router`` stands for (a fabric whose links
go down gets a new router), so they are kept in ``router.memo`` and shared by every simulation and
schedule using that router.
"""

from __future__ import annotations

import numpy as np

from fabricsim.simulator.fluid import _ranges

__all__ = ["node_kinds", "switch_distances"]


def _memo(fabric) -> dict:
    return fabric.router.memo


def node_kinds(fabric) -> np.ndarray:
    """Every node's ``kind`` attribute ("gpu", "nic", "switch", "nvswitch", ...; "" when absent), as a
    string array indexed by node index."""
    memo = _memo(fabric)
    kinds = memo.get("node-kinds")
    if kinds is None:
        nodes = fabric.topology.graph.nodes
        kinds = memo["node-kinds"] = np.array([str(nodes[n].get("kind") or "") for n in fabric.links.nodes])
    return kinds


def _switch_graph(fabric) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(network switch node indices ascending, column of every node among them or -1, CSR pointer and
    columns of each switch's successors that are switches): the switch-only part of the router's graph."""
    memo = _memo(fabric)
    hit = memo.get("switch-graph")
    if hit is None:
        switches = np.flatnonzero(node_kinds(fabric) == "switch")
        col = np.full(len(fabric.links.nodes), -1, dtype=np.int64)
        col[switches] = np.arange(switches.shape[0])
        adj = [col[np.asarray(fabric.router.successors(int(u)), dtype=np.int64)] for u in switches]
        adj = [a[a >= 0] for a in adj]
        ptr = np.zeros(len(adj) + 1, dtype=np.int64)
        np.cumsum([a.shape[0] for a in adj], out=ptr[1:])
        cols = np.concatenate(adj) if adj else np.zeros(0, dtype=np.int64)
        hit = memo["switch-graph"] = (switches, col, ptr, cols)
    return hit


def switch_distances(fabric, starts: list[int]) -> tuple[np.ndarray, np.ndarray]:
    """(network switch node indices ascending, hops from each switch of ``starts`` (rows) to each switch
    (columns) through network switches only, -1 where unreachable): one breadth-first search per start
    switch and router, level by level over the switch graph's arrays."""
    switches, col, ptr, cols = _switch_graph(fabric)
    memo = _memo(fabric).setdefault("switch-dist", {})
    # hops never exceed the switch count; kept for every leaf, so in the narrowest type that holds them
    hop_type = np.int16 if switches.shape[0] < 2**15 else np.int32
    rows = []
    for start in starts:
        dist = memo.get(start)
        if dist is None:
            dist = np.full(switches.shape[0], -1, dtype=hop_type)
            front = np.array([col[start]], dtype=np.int64)
            dist[front] = 0
            level = 0
            while front.size:
                level += 1
                nxt = cols[_ranges(ptr[front], ptr[front + 1])]
                nxt = np.unique(nxt[dist[nxt] < 0])
                dist[nxt] = level
                front = nxt
            memo[start] = dist
        rows.append(dist)
    return switches, np.stack(rows) if rows else np.zeros((0, switches.shape[0]), dtype=hop_type)
