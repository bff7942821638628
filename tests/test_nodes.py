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
