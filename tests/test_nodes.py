"""What schedule builders look up once per router (``collectives/nodes.py``) agrees with the graph itself."""

import networkx as nx
import numpy as np
import pytest

from fabricsim.collectives import AllreduceRunner
from fabricsim.collectives.nodes import node_kinds, switch_distances
from fabricsim.collectives.sharp import _first_switch, aggregation_switch
from fabricsim.topologies.io import build


@pytest.fixture(scope="module")
def fabric():
    return AllreduceRunner(build("gb200-nvl72-ib", gpus=288)).simulation(record=None).fabric


def test_node_kinds_are_the_graph_attributes(fabric):
    kinds = node_kinds(fabric)
    graph = fabric.topology.graph.nodes
    assert [str(graph[n].get("kind") or "") for n in fabric.links.nodes] == kinds.tolist()
    assert node_kinds(fabric) is kinds  # kept in the router


def test_switch_distances_are_breadth_first_hops_through_switches_only(fabric):
    kinds = node_kinds(fabric)
    names = fabric.links.nodes
    switches = [names[i] for i in np.flatnonzero(kinds == "switch")]
    graph = fabric.topology.graph.subgraph(switches)
    starts = np.flatnonzero(kinds == "switch")[::7].tolist()
    order, rows = switch_distances(fabric, starts)
    assert rows.shape == (len(starts), order.shape[0])
    for start, dist in zip(starts, rows):
        hops = nx.single_source_shortest_path_length(graph, names[start])
        assert np.array_equal(order, np.flatnonzero(kinds == "switch"))
        assert {names[s]: int(d) for s, d in zip(order.tolist(), dist.tolist()) if d >= 0} == hops
        assert (dist >= 0).sum() == len(hops)  # -1 exactly where no switch path exists


def test_aggregation_switch_minimises_the_farthest_leaf(fabric):
    kinds = node_kinds(fabric)
    names = fabric.links.nodes
    graph = fabric.topology.graph.subgraph([names[i] for i in np.flatnonzero(kinds == "switch")])
    for ranks in ([0, 72, 144, 216], [5, 77], [3, 100, 250]):
        leaves = {names[_first_switch(fabric, r)] for r in ranks}
        hops = {leaf: nx.single_source_shortest_path_length(graph, leaf) for leaf in leaves}
        worst = {s: max(h[s] for h in hops.values()) for s in graph if all(s in h for h in hops.values())}
        chosen = names[aggregation_switch(fabric, ranks, salt=1)]
        assert worst[chosen] == min(worst.values())


def test_bounded_memo_drops_the_least_recently_used():
    from fabricsim.collectives.nodes import BoundedMemo

    m = BoundedMemo(2)
    m["a"], m["b"] = 1, 2
    assert m.get("a") == 1  # "a" now the most recent
    m["c"] = 3
    assert "b" not in m and m.get("a") == 1 and m.get("c") == 3 and len(m) == 2
    assert m.get("b", "gone") == "gone"
    with pytest.raises(ValueError):
        BoundedMemo(0)


def test_router_tables_stay_bounded_over_many_layouts_and_answer_alike(fabric, monkeypatch):
    # a long-lived runner building schedules for many groups (fabricsim plan) keeps at most MEMO_SIZES
    # entries per table, and an answer computed again after being dropped is the one a fresh router gives
    from fabricsim.collectives import nodes
    from fabricsim.collectives.base import GroupLayout
    from fabricsim.collectives.nvls import _island_links, switch_islands
    from fabricsim.collectives.ring import ring_wire_latency

    sizes = {"nvls-islands": 3, "nvls-island": 3, "ring-wire": 3, "switch-dist": 3, "sharp-leaf": 5}
    monkeypatch.setattr(nodes, "MEMO_SIZES", {**nodes.MEMO_SIZES, **sizes})
    small = AllreduceRunner(build("gb200-nvl72-ib", gpus=288)).simulation(record=None).fabric
    fresh = lambda: AllreduceRunner(build("gb200-nvl72-ib", gpus=288)).simulation(record=None).fabric  # noqa: E731
    rng = np.random.default_rng(3)
    groups = [sorted(rng.choice(288, size=int(rng.integers(2, 40)), replace=False).tolist()) for _ in range(12)]
    answers = []
    for rep in range(2):  # the second pass meets dropped entries and computes them again
        got = []
        for g in groups:
            layout = GroupLayout.of(small, g)
            islands = switch_islands(small, layout)
            got.append((islands, [tuple(a.tolist()) if isinstance(a, np.ndarray) else a
                                  for a in _island_links(small, islands[0])],
                        ring_wire_latency(small, [layout], 2), aggregation_switch(small, g)))
            for name, size in sizes.items():
                assert len(small.router.memo.get(name, ())) <= size, name
        answers.append(got)
    assert answers[0] == answers[1]
    other = fresh()
    for g, (islands, links, wire, agg) in zip(groups[:3], answers[0][:3]):
        layout = GroupLayout.of(other, g)
        assert switch_islands(other, layout) == islands
        assert ring_wire_latency(other, [layout], 2) == wire and aggregation_switch(other, g) == agg


def test_tables_keyed_by_node_hold_every_node(fabric):
    # a table keyed by a switch or a GPU is bounded by the fabric itself: a fixed bound smaller than the
    # fabric's switches would recompute every answer (SHARP at 65,536 GPUs asks from 2,048 leaves, in turn)
    from fabricsim.collectives.nodes import MEMO_SIZES, memo_table

    for name in ("switch-dist", "sharp-leaf"):
        assert MEMO_SIZES[name] is None
        assert memo_table(fabric, name).size == len(fabric.links.nodes)
