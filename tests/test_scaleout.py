"""Scale-out fabrics: rails, leaves and spines, partial domains, closed forms against exact computations."""

import dataclasses

import networkx as nx
import pytest
from hypothesis import given, settings, strategies as st

from fabricsim.errors import ConfigError, InfeasibleError
from fabricsim.hardware import IB_XDR, QUANTUM2_NDR, QUANTUM_X800
from fabricsim.topologies import scale_out

GB = 1e9


def leaf_of(t, nic):
    return next(v for v in t.graph.successors(nic) if t.graph.nodes[v]["kind"] == "switch")


def test_two_dgx_nodes_rail_optimised():
    t = scale_out("dgx-h100", gpus=16)
    assert t.num_gpus == 16 and [len(d) for d in t.domains] == [8, 8]
    assert len(t.nodes_of_kind("nic")) == 16
    assert t.nic_bandwidth() == 50 * GB                         # A027: 400 Gb/s NIC
    assert t.injection_bandwidth() == 450 * GB                  # A007
    for j in range(8):                                          # GPU j of both nodes meet at rail leaf j
        assert leaf_of(t, f"n0/nic{j}") == leaf_of(t, f"n1/nic{j}")
        assert t.graph.nodes[leaf_of(t, f"n0/nic{j}")]["rail"] == j
    assert leaf_of(t, "n0/nic0") != leaf_of(t, "n0/nic1")
    assert t.diameter_hops(method="bfs") == 6                   # cross-rail: through a spine
    assert t.meta["tiers"] == 2


def test_rail_path_is_four_hops_and_gpus_do_not_forward():
    t = scale_out("dgx-b200", gpus=32)
    G = t.graph
    for nic in t.nodes_of_kind("nic"):
        assert sum(1 for v in G.successors(nic) if G.nodes[v]["kind"] == "gpu") == 1
    # forwarding subgraph plus the two end GPUs
    allowed = set(n for n, k in G.nodes(data="kind") if k != "gpu") | {"n0/gpu5", "n3/gpu5"}
    assert nx.shortest_path_length(G.subgraph(allowed), "n0/gpu5", "n3/gpu5") == 4


def test_equal_cost_paths_across_spines():
    t = scale_out("dgx-h100", gpus=256)
    paths = list(nx.all_shortest_paths(t.graph, "leaf0", "leaf1"))
    assert len(paths) == t.meta["spines"] == 32
    assert all(len(p) == 3 for p in paths)


def test_fat_tree_fills_leaves_in_rank_order():
    t = scale_out("dgx-h100", gpus=48, network="fat-tree")
    assert t.meta["nics_per_leaf"] == 32
    assert {leaf_of(t, f"n{i}/nic{j}") for i in range(4) for j in range(8)} == {"leaf0"}
    assert leaf_of(t, "n4/nic0") == "leaf1"


def test_nvl72_rails_are_compute_tray_positions():
    t = scale_out("gb200-nvl72", gpus=144)
    G = t.graph
    assert G.nodes["r0/nic5"]["rail"] == 1 and G.nodes["r1/nic71"]["rail"] == 3
    assert leaf_of(t, "r0/nic5") == leaf_of(t, "r1/nic5")
    assert t.nodes_of_kind("nvswitch") == ["r0/nvs", "r1/nvs"]   # aggregate planes by default
    assert t.injection_bandwidth() == 900 * GB


def test_partial_last_domain():
    t = scale_out("dgx-h100", gpus=20)
    assert [len(d) for d in t.domains] == [8, 8, 4]
    assert t.domains[2] == [f"n2/gpu{j}" for j in range(4)]
    assert len([c for c in t.nodes_of_kind("nvswitch") if c.startswith("n2/")]) == 4
    assert t.meta["last_domain_size"] == 4
    r = scale_out("gb200-nvl72", gpus=100, planes="per-chip")
    assert [len(d) for d in r.domains] == [72, 28]
    assert len([c for c in r.nodes_of_kind("nvswitch") if c.startswith("r1/")]) == 18


def test_count_and_gpus():
    assert scale_out("dgx-b200", count=3).num_gpus == 24
    assert scale_out("gb200-nvl72").num_gpus == 144                 # default: two domains
    assert scale_out("dgx-b200", count=3, gpus=20).num_gpus == 20
    with pytest.raises(ConfigError, match="count=2"):
        scale_out("dgx-b200", count=2, gpus=20)


def test_oversubscription_sets_leaf_ratio():
    t = scale_out("dgx-h100", gpus=1024, network="fat-tree", oversubscription=2.0)
    d, u = t.meta["nics_per_leaf"], t.meta["uplinks_per_leaf"]
    assert (d, u) == (42, 21)
    full = scale_out("dgx-h100", gpus=1024, network="fat-tree")
    assert t.bisection_bandwidth() < full.bisection_bandwidth() == pytest.approx(1024 * 50 * GB)


def test_three_tiers_above_the_radix_and_8192_gpus():
    # build time is a speed target: benchmarks/bench_engine.py prints it (no wall-clock asserts here)
    t = scale_out("dgx-b200", gpus=8192)
    assert t.meta["tiers"] == 3 and t.meta["pods"] == 8
    assert t.bisection_bandwidth() == pytest.approx(8192 * 50 * GB)  # non-blocking: half x 50 GB/s x 2
    assert t.diameter_hops() == 8
    assert scale_out("dgx-b200", gpus=2048).meta["tiers"] == 2


def test_rail_groups_can_need_more_pods_than_full_leaves():
    # 8 rails, partly filled rail leaves: 51 GPUs need 7 pods on 6-port switches (full leaves would hold 54)
    with pytest.raises(InfeasibleError, match="pods"):
        scale_out("dgx-h100", gpus=51, switch=dataclasses.replace(QUANTUM2_NDR, ports=6))


def test_faster_switch_and_nic():
    t = scale_out("gb200-nvl72", gpus=144, nic=IB_XDR, switch=QUANTUM_X800)
    assert t.nic_bandwidth() == 100 * GB                           # A028


@pytest.mark.parametrize("kwargs, error, match", [
    ({"domain": "dgx-a100"}, ConfigError, "known: dgx-h100"),
    ({"network": "torus"}, ConfigError, "rail, fat-tree"),
    ({"gpus": 0}, ConfigError, "positive"),
    ({"gpus": -8}, ConfigError, "positive"),
    ({"count": 0}, ConfigError, "count"),
    ({"oversubscription": 0}, ConfigError, "oversubscription"),
    ({"nic": IB_XDR}, ConfigError, "faster than"),
    ({"gpus": 1000, "switch": dataclasses.replace(QUANTUM2_NDR, ports=8)}, InfeasibleError, "at most 128 GPUs"),
    ({"gpus": 10**9}, InfeasibleError, "at most 65536 GPUs"),   # refused before building anything
])
def test_refusals(kwargs, error, match):
    with pytest.raises(error, match=match):
        scale_out(**kwargs)


@settings(max_examples=60, deadline=None)
@given(domain=st.sampled_from(["dgx-h100", "gb200-nvl72"]), gpus=st.integers(2, 160),
       network=st.sampled_from(["rail", "fat-tree"]), ports=st.sampled_from([6, 8, 12, 16, 64]),
       over=st.sampled_from([1.0, 1.5, 3.0]))
def test_closed_forms_equal_maxflow_and_bfs(domain, gpus, network, ports, over):
    switch = dataclasses.replace(QUANTUM2_NDR, ports=ports)
    try:
        t = scale_out(domain, gpus=gpus, network=network, switch=switch, oversubscription=over)
    except InfeasibleError:
        return
    assert t.meta["bisection_bandwidth"] == pytest.approx(t.bisection_bandwidth(method="maxflow"))
    assert t.meta["diameter_hops"] == t.diameter_hops(method="bfs")
