"""What schedule builders look up about the fabric's nodes, computed once per router and kept in it.

Schedules ask the same questions of a fabric thousands of times at scale (what kind of node is this,
how many switch hops separate these two switches, which NVLink switch chips does this GPU hang off);
asked of the networkx graph node by node, the answers cost more than the simulation. They depend only
on the topology and on which links are up, which is what a ``Router`` stands for (a fabric whose links
go down gets a new router), so they are kept in ``router.memo`` and shared by every simulation and
schedule using that router. Answers per node or per group go into bounded tables (``memo_table``), since
a router lives as long as its runner; answers about the whole fabric (node kinds, the switch graph) are
one entry each.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Hashable

import numpy as np

from fabricsim.simulator.fluid import _ranges

__all__ = ["MEMO_SIZES", "BoundedMemo", "memo_table", "node_kinds", "nvlink_hops_alike", "switch_distances"]

#: Entries each per-router table (``memo_table``) keeps, least recently used dropped first. A router lives
#: as long as its runner, and ``fabricsim plan`` builds schedules for thousands of layouts on one runner:
#: the tables keyed by group (a group's answer can hold thousands of ranks) keep the groups of the last
#: few hundred layouts, those keyed by an island a few thousand small entries. ``None``: keyed by a node of
#: the fabric, so already bounded by it (one entry per node at most); a smaller bound would make a fabric
#: with more such nodes than the bound recompute every answer (SHARP at 65,536 GPUs asks for the distances
#: from 2,048 leaves shard after shard: a 1,024-entry table made it 7.5x slower).
MEMO_SIZES = {
    "nvls-islands": 256,  # group -> its switch islands (nvls.switch_islands)
    "nvls-island": 4096,  # island -> its GPUs' links to their chips (nvls._island_links)
    "ring-wire": 4096,  # (group, channels) -> its rings' wire latencies (ring.ring_wire_latency)
    "hierarchical-shards": 256,  # (group, islands) -> the per-shard groups (hierarchical.py)
    "switch-dist": None,  # start switch -> hops to every switch (switch_distances)
    "sharp-leaf": None,  # rank -> the switch behind its NIC (sharp._first_switch)
}


class BoundedMemo:
    """A mapping of at most ``size`` entries: reading or writing an entry makes it the most recent, and
    writing past ``size`` drops the least recently used one (an entry dropped is computed again)."""

    __slots__ = ("size", "_entries")

    def __init__(self, size: int) -> None:
        if size < 1:
            raise ValueError(f"a memo needs room for one entry, got size {size}")
        self.size = size
        self._entries: OrderedDict = OrderedDict()

    def get(self, key: Hashable, default=None):
        entries = self._entries
        try:
            value = entries[key]
        except KeyError:
            return default
        entries.move_to_end(key)
        return value

    def __contains__(self, key: Hashable) -> bool:
        return key in self._entries

    def __setitem__(self, key: Hashable, value) -> None:
        entries = self._entries
        entries[key] = value
        entries.move_to_end(key)
        if len(entries) > self.size:
            entries.popitem(last=False)

    def __len__(self) -> int:
        return len(self._entries)


def memo_table(fabric, name: str) -> BoundedMemo:
    """The router's table ``name`` (one of ``MEMO_SIZES``), made on first use: answers that depend only on
    the topology and the links that are up, shared by every simulation using the router."""
    memo = fabric.router.memo
    table = memo.get(name)
    if table is None:
        size = MEMO_SIZES[name]
        table = memo[name] = BoundedMemo(size if size is not None else max(1, len(fabric.links.nodes)))
    return table


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


def nvlink_hops_alike(fabric) -> bool:
    """Whether every GPU-to-GPU hop inside an NVLink domain has the same wire latency: every NVLink link
    joins a GPU to a switch chip (one tier: a hop is GPU, chip, GPU) and all NVLink links have one latency.
    A two-tier domain (NVL576), direct GPU links, or a latency fault on some GPU's links break it."""
    memo = _memo(fabric)
    alike = memo.get("nvlink-hops-alike")
    if alike is None:
        lt = fabric.links
        nvlink = np.array([k.startswith("nvlink") for k in lt.kind], dtype=bool)
        gpu = node_kinds(fabric) == "gpu"
        one_gpu_end = gpu[lt.src[nvlink]] != gpu[lt.dst[nvlink]]
        lat = lt.latency[nvlink]
        alike = memo["nvlink-hops-alike"] = bool(one_gpu_end.all()) and (lat.size == 0 or lat.min() == lat.max())
    return alike


def switch_distances(fabric, starts: list[int]) -> tuple[np.ndarray, np.ndarray]:
    """(network switch node indices ascending, hops from each switch of ``starts`` (rows) to each switch
    (columns) through network switches only, -1 where unreachable): one breadth-first search per start
    switch and router, level by level over the switch graph's arrays."""
    switches, col, ptr, cols = _switch_graph(fabric)
    memo = memo_table(fabric, "switch-dist")
    # hops never exceed the switch count; kept per start switch, so in the narrowest type that holds them
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
