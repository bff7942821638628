"""Topology builders: counts, degrees, per-GPU bandwidth, bisection vs the published figures (Axxx rows)."""

import networkx as nx
import pytest
from hypothesis import given, settings, strategies as st

from fabricsim.errors import ConfigError, InfeasibleError, TopologyError
from fabricsim.topologies import Topology, dgx_b200, dgx_h100, gb200_nvl72, nvl576
from fabricsim.topologies.base import CutNode, tree_cut_flow

TB = 1e12
GB = 1e9


def kinds(topo, kind):
    return topo.nodes_of_kind(kind)


def test_dgx_h100_counts_lanes_and_bisection():
    t = dgx_h100()
    assert len(kinds(t, "gpu")) == 8 and len(kinds(t, "nvswitch")) == 4       # A010
    lanes = [t.graph["n0/gpu3"][f"n0/nvs{c}"]["lanes"] for c in range(4)]
    assert lanes == [5, 4, 4, 5]
    assert t.graph["n0/gpu3"]["n0/nvs0"]["bandwidth"] == 125 * GB
    for g in t.gpus:
        assert t.graph.out_degree(g) == 4
        assert t.injection_bandwidth(g) == 450 * GB                              # A007
    assert t.bisection_bandwidth() == pytest.approx(3.6 * TB)                    # A011
    assert t.bisection_bandwidth(method="maxflow") == pytest.approx(3.6 * TB)
    assert t.diameter_hops() == 2


def test_dgx_b200_aggregate_and_degrees():
    t = dgx_b200()
    assert len(kinds(t, "nvswitch")) == 2                                        # A020
    assert all(t.graph[g]["n0/nvs0"]["lanes"] == 9 for g in t.gpus)
    assert t.injection_bandwidth() == 900 * GB                                   # A005
    assert t.summary()["nvlink_aggregate_bidirectional"] == pytest.approx(14.4 * TB)  # A019


@pytest.mark.parametrize("planes", ["per-chip", "aggregate"])
def test_gb200_nvl72(planes):
    t = gb200_nvl72(planes=planes)
    s = t.summary()
    assert s["gpus"] == 72
    assert s["nvlink_per_gpu"] == 900 * GB                                       # A005
    assert s["nvlink_per_gpu_bidirectional"] == 1.8 * TB                         # A004
    assert s["nvlink_aggregate_bidirectional"] == pytest.approx(130 * TB, rel=0.005)  # A018
    assert s["lanes"]["nvlink5"] == 72 * 18                                      # A001: 18 links per GPU
    assert t.bisection_bandwidth(method="maxflow") == pytest.approx(64.8 * TB)
    assert t.diameter_hops(method="bfs") == 2
    switches = kinds(t, "nvswitch")
    if planes == "per-chip":
        assert len(switches) == 18                                               # A017
        assert sorted({t.graph.nodes[c]["tray"] for c in switches}) == list(range(9))  # A015
        assert all(t.graph.out_degree(g) == 18 for g in t.gpus)
        assert all(t.graph.in_degree(c) == 72 for c in switches)                 # 72-port chips
    else:
        assert switches == ["r0/nvs"]


def test_planes_agree_on_every_figure():
    a, b = gb200_nvl72(planes="per-chip").summary(), gb200_nvl72(planes="aggregate").summary()
    for key in ("nvlink_per_gpu", "bisection", "diameter_hops", "lanes", "nvlink_aggregate_bidirectional"):
        assert a[key] == b[key], key


@pytest.mark.parametrize("n", [1, 2, 5, 37, 71])
def test_partial_rack(n):
    t = gb200_nvl72(gpus=n)
    assert t.num_gpus == n and len(kinds(t, "nvswitch")) == 18
    assert t.gpus == [f"r0/gpu{j}" for j in range(n)]
    assert t.bisection_bandwidth() == pytest.approx(2 * (n // 2) * 900 * GB)


def test_nvl576_layout_and_bisection():
    t = nvl576()
    assert t.num_gpus == 576 and len(t.domains) == 1                            # A021
    l1 = [c for c in kinds(t, "nvswitch") if t.graph.nodes[c]["tier"] == 0]
    l2 = [c for c in kinds(t, "nvswitch") if t.graph.nodes[c]["tier"] == 1]
    assert len(l1) == 8 * 18 and len(l2) == 18 * 8
    assert sum(d["lanes"] for _, _, d in t.graph.out_edges("r3/nvs7", data=True)) == 72 + 72
    assert sum(d["lanes"] for _, _, d in t.graph.in_edges("l2/p7/nvs2", data=True)) == 72
    assert t.meta["bisection_bandwidth"] == pytest.approx(518.4 * TB)
    assert t.bisection_bandwidth(method="maxflow") == pytest.approx(518.4 * TB)
    assert t.diameter_hops() == 4 and t.diameter_hops(method="sampled") == 4
    assert any("no public vendor diagram" in a for a in t.meta["assumptions"])


@pytest.mark.parametrize("gpus", [72, 100, 144, 200])
def test_nvl576_closed_forms_match_exact(gpus):
    for planes in ("aggregate", "per-chip"):
        t = nvl576(planes=planes, gpus=gpus)
        assert t.meta["bisection_bandwidth"] == pytest.approx(t.bisection_bandwidth(method="maxflow"))
        assert t.meta["diameter_hops"] == t.diameter_hops(method="bfs")


def test_gpus_never_forward_in_bfs():
    t = dgx_h100()
    # a GPU is an endpoint: eccentricity counts GPU -> switch -> GPU only
    from fabricsim.topologies.base import _gpu_eccentricity
    assert _gpu_eccentricity(t.graph, "n0/gpu0") == 2


@pytest.mark.parametrize("builder, limit", [(dgx_h100, 8), (dgx_b200, 8), (gb200_nvl72, 72), (nvl576, 576)])
def test_refuses_bad_gpu_counts(builder, limit):
    with pytest.raises(InfeasibleError, match=f"at most {limit}"):
        builder(gpus=limit + 1)
    for bad in (0, -3):
        with pytest.raises(ConfigError, match="positive"):
            builder(gpus=bad)
    with pytest.raises(ConfigError):
        builder(gpus=2.5)


def test_refuses_unknown_planes():
    with pytest.raises(ConfigError, match="per-chip, aggregate"):
        gb200_nvl72(planes="flat")


# --- validate() ---------------------------------------------------------------------------------------------
def two_gpus(**edge):
    G = nx.DiGraph()
    G.add_node("a", kind="gpu")
    G.add_node("b", kind="gpu")
    G.add_node("s", kind="nvswitch")
    attrs = {"bandwidth": 1e9, "latency": 0.0, "kind": "nvlink5", "lanes": 1, **edge}
    for x in "ab":
        G.add_edge(x, "s", **attrs)
        G.add_edge("s", x, **attrs)
    return G


def test_validate_refusals_name_the_culprit():
    G = two_gpus()
    G.add_node("c", kind="gpu")
    with pytest.raises(TopologyError, match="'c'.*disconnected"):
        Topology(G, ["a", "b", "c"], [["a", "b", "c"]]).validate()
    with pytest.raises(TopologyError, match="misses GPU 'c'"):
        Topology(G, ["a", "b"], [["a", "b"]]).validate()
    with pytest.raises(TopologyError, match="non-positive"):
        Topology(two_gpus(bandwidth=0.0), ["a", "b"], [["a", "b"]]).validate()
    with pytest.raises(TopologyError, match="non-positive"):
        Topology(two_gpus(bandwidth=-5.0), ["a", "b"], [["a", "b"]]).validate()
    with pytest.raises(TopologyError, match="contiguous"):
        Topology(two_gpus(), ["a", "b"], [["b", "a"]]).validate()


def test_validate_refuses_gpu_transit():
    # a -- b -- c as a chain of GPUs: c is reachable only by forwarding through b
    G = nx.DiGraph()
    for n in "abc":
        G.add_node(n, kind="gpu")
    for u, v in ("ab", "bc"):
        G.add_edge(u, v, bandwidth=1e9, latency=0.0, kind="nvlink4")
        G.add_edge(v, u, bandwidth=1e9, latency=0.0, kind="nvlink4")
    with pytest.raises(TopologyError, match="'c'"):
        Topology(G, list("abc"), [list("abc")]).validate()


def test_closed_form_is_not_used_after_an_edit():
    t = gb200_nvl72()
    t.graph["r0/gpu0"]["r0/nvs0"]["bandwidth"] /= 2
    assert not t._closed_form_valid()


# --- the tree cut helper ------------------------------------------------------------------------------------
def test_tree_cut_flow_matches_low_and_caps_uplinks():
    leaves = [CutNode(send=10, recv=4, up=3, down=3), CutNode(send=0, recv=20, up=5, down=5)]
    # leaf 0 matches 4 locally, sends 3 of its 6 left up; leaf 1 can take 5 from above
    assert tree_cut_flow(CutNode(children=leaves)) == 4 + 3


@settings(max_examples=40, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 6), st.integers(0, 6), st.integers(1, 8)), min_size=1, max_size=5))
def test_tree_cut_flow_equals_networkx_maxflow(leaves):
    root = CutNode(children=[CutNode(send=s, recv=r, up=u, down=u) for s, r, u in leaves])
    H = nx.DiGraph()
    for i, (s, r, u) in enumerate(leaves):
        H.add_edge("S", i, capacity=s)
        H.add_edge(i, "T", capacity=r)
        H.add_edge(i, "root", capacity=u)
        H.add_edge("root", i, capacity=u)
    H.add_node("T")
    assert tree_cut_flow(root) == pytest.approx(nx.maximum_flow_value(H, "S", "T"))
