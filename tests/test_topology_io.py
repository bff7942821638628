"""Presets, user graphs and files: round trips that keep kinds, bandwidths, latencies, lanes and rank order."""

import json

import networkx as nx
import pytest
from hypothesis import given, strategies as st

from fabricsim.errors import ConfigError, InfeasibleError, TopologyError
from fabricsim.topologies.io import (
    PRESETS, _rate_text, _time_text, build, from_graph, load, resolve, save,
)
from fabricsim.units import parse_rate, parse_time

ATTRS = ("bandwidth", "latency", "kind", "lanes")


def same_fabric(a, b):
    assert b.gpus == a.gpus and b.domains == a.domains
    assert dict(b.graph.nodes(data="kind")) == dict(a.graph.nodes(data="kind"))
    assert b.graph.number_of_edges() == a.graph.number_of_edges()
    for u, v, d in a.graph.edges(data=True):
        e = b.graph[u][v]
        assert {k: e[k] for k in ATTRS} == {k: d[k] for k in ATTRS}, (u, v)


def test_every_preset_builds():
    expected = {"dgx-h100": 8, "dgx-b200": 8, "gb200-nvl72": 72, "nvl576": 576,
                "dgx-h100-ib": 16, "dgx-b200-ib": 16, "gb200-nvl72-ib": 144}
    assert set(PRESETS) == set(expected)
    for name, gpus in expected.items():
        t = build(name)
        assert (t.name, t.num_gpus) == (name, gpus)


def test_build_sizes_and_refusals():
    assert build("gb200-nvl72", gpus=40).num_gpus == 40
    assert build("gb200-nvl72-ib", gpus=1000).num_gpus == 1000
    with pytest.raises(InfeasibleError, match="at most 8 GPUs"):
        build("dgx-h100", gpus=9)
    with pytest.raises(InfeasibleError, match="at most 72 GPUs"):
        build("gb200-nvl72", gpus=73)
    with pytest.raises(ConfigError, match="positive"):
        build("dgx-b200-ib", gpus=0)
    with pytest.raises(TopologyError, match="known: dgx-h100, dgx-b200"):
        build("dgx-a100")
    with pytest.raises(ConfigError, match="takes no option 'planes'"):
        build("dgx-h100", planes="aggregate")
    with pytest.raises(TopologyError, match="unknown topology"):
        resolve("nonsense")
    with pytest.raises(ConfigError, match="apply to presets"):
        resolve("some.toml", gpus=4)


@pytest.mark.parametrize("fmt", ["toml", "graphml", "json"])
@pytest.mark.parametrize("name, options", [("dgx-h100", {}), ("gb200-nvl72", {"gpus": 30}),
                                           ("dgx-h100-ib", {"gpus": 20}), ("nvl576", {"gpus": 100})])
def test_round_trip(tmp_path, fmt, name, options):
    t = build(name, **options)
    path = tmp_path / f"fabric.{fmt}"
    save(t, str(path))
    back = load(str(path))
    same_fabric(t, back)
    assert back.name == name
    # the builder's closed forms travel with the file and still describe the graph
    assert back._closed_form_valid()
    assert back.bisection_bandwidth(method="closed-form") == t.bisection_bandwidth()
    assert back.bisection_bandwidth(method="maxflow") == pytest.approx(t.bisection_bandwidth())


def test_toml_is_readable_and_edits_disable_the_closed_form(tmp_path):
    path = tmp_path / "h100.toml"
    save(build("dgx-h100"), str(path))
    text = path.read_text()
    assert 'bandwidth = "125 GB/s"' in text and 'latency = "300 ns"' in text and "lanes = 5" in text
    path.write_text(text.replace('bandwidth = "125 GB/s"', 'bandwidth = "100 GB/s"', 1))
    edited = load(str(path))
    assert not edited._closed_form_valid()
    assert edited.bisection_bandwidth() < 3.6e12


def test_dot_export(tmp_path):
    t = build("dgx-b200")
    path = tmp_path / "b200.dot"
    save(t, str(path))
    text = path.read_text()
    assert text.startswith('digraph "dgx-b200" {') and text.rstrip().endswith("}")
    assert text.count(" -> ") == t.graph.number_of_edges() // 2  # one edge per full-duplex link
    assert text.count('dir="both"') == t.graph.number_of_edges() // 2
    assert 'label="450 GB/s"' in text
    ranks = [line for line in text.splitlines() if "rank=same" in line]
    assert len(ranks) == 2 and all(f'"n0/gpu{i}";' in ranks[1] for i in range(8))  # switches, then GPUs
    with pytest.raises(ConfigError, match="export only"):
        load(str(path))


@given(st.floats(min_value=1e-3, max_value=1e16, allow_nan=False, allow_infinity=False))
def test_rate_text_parses_back_exactly(bw):
    assert parse_rate(_rate_text(bw)) == bw


@given(st.floats(min_value=0, max_value=10, allow_nan=False, allow_infinity=False))
def test_time_text_parses_back_exactly(t):
    assert parse_time(_time_text(t)) == t


# --- user graphs ---------------------------------------------------------------------------------------------
def test_from_graph_infers_nvlink_islands():
    G = nx.Graph()
    for i in range(4):
        G.add_node(f"g{i}", kind="gpu")
        G.add_node(f"nic{i}", kind="nic")
        G.add_edge(f"g{i}", f"nic{i}", bandwidth=50e9, kind="pcie")
        G.add_edge(f"nic{i}", "leaf", bandwidth=50e9, kind="ib-ndr")
    G.add_node("leaf", kind="switch", tier=0)
    G.add_node("s0", kind="nvswitch")
    G.add_node("s1", kind="nvswitch")
    # islands {g0, g2} and {g1, g3}: interleaved in node order, grouped in rank order
    for g, s in (("g0", "s0"), ("g2", "s0"), ("g1", "s1"), ("g3", "s1")):
        G.add_edge(g, s, bandwidth=450e9, kind="nvlink4")
    t = from_graph(G)
    assert t.domains == [["g0", "g2"], ["g1", "g3"]] and t.gpus == ["g0", "g2", "g1", "g3"]
    assert t.graph["g0"]["s0"]["lanes"] == 1 and t.graph["s0"]["g0"]["latency"] == 0.0
    assert t.nic_bandwidth("g0") == 50e9


def test_from_graph_merges_parallel_edges_and_alone_gpus():
    G = nx.MultiDiGraph()
    G.add_node("a", kind="gpu")
    G.add_node("b", kind="gpu")
    G.add_node("sw", kind="switch")
    for u, v in (("a", "sw"), ("sw", "a"), ("b", "sw"), ("sw", "b")):
        G.add_edge(u, v, bandwidth=25e9, kind="ib-ndr")
        G.add_edge(u, v, bandwidth=25e9, kind="ib-ndr")
    t = from_graph(G)
    assert t.graph["a"]["sw"]["bandwidth"] == 50e9 and t.graph["a"]["sw"]["lanes"] == 2
    assert t.domains == [["a"], ["b"]]


def test_from_graph_refusals():
    G = nx.Graph()
    G.add_node("a", kind="gpu")
    G.add_node("b", kind="gpu")
    G.add_node("c", kind="gpu")
    G.add_node("s", kind="nvswitch")
    G.add_edge("a", "s", bandwidth=1e9, kind="nvlink4")
    G.add_edge("b", "s", bandwidth=1e9, kind="nvlink4")
    with pytest.raises(TopologyError, match="'c'.*disconnected"):
        from_graph(G)
    G.add_edge("c", "s", bandwidth=-1.0, kind="nvlink4")
    with pytest.raises(TopologyError, match="non-positive"):
        from_graph(G)
    G["c"]["s"]["bandwidth"] = 1e9
    with pytest.raises(TopologyError, match="misses GPU 'c'"):
        from_graph(G, gpus=["a", "b"], domains=[["a", "b"]])
    G.add_node("x", kind="router")
    with pytest.raises(TopologyError, match="'x' has kind 'router'"):
        from_graph(G)


# --- malformed files ---------------------------------------------------------------------------------------
GOOD_NODES = '''nodes = [{id = "a", kind = "gpu"}, {id = "b", kind = "gpu"}, {id = "s", kind = "nvswitch"}]\n'''
GOOD_LINKS = ('links = [{a = "a", b = "s", bandwidth = "450 GB/s", kind = "nvlink4"},'
              ' {a = "b", b = "s", bandwidth = "450 GB/s", kind = "nvlink4"}]\n')


def test_minimal_toml_loads(tmp_path):
    path = tmp_path / "ok.toml"
    path.write_text('name = "two"\n' + GOOD_NODES + GOOD_LINKS)
    t = load(str(path))
    assert t.name == "two" and t.gpus == ["a", "b"] and t.domains == [["a", "b"]]
    assert t.bisection_bandwidth() == 900e9


@pytest.mark.parametrize("text, match", [
    ("nodes = [\n", "not valid TOML"),
    ("name = 'x'\n", "'nodes' must be a non-empty list"),
    (GOOD_NODES + GOOD_LINKS.replace('b = "s"', 'b = "t"', 1), "unknown node 't'"),
    (GOOD_NODES + GOOD_LINKS.replace("450 GB/s", "5 furlongs", 1), "unknown rate unit"),
    (GOOD_NODES + GOOD_LINKS.replace("450 GB/s", "0 GB/s", 1), "must be positive"),
    (GOOD_NODES + GOOD_LINKS.replace('kind = "nvlink4"}', 'kind = "nvlink4", lanes = 0}', 1), "lanes"),
    (GOOD_NODES.replace('"s", kind = "nvswitch"', '"a", kind = "nvswitch"') + GOOD_LINKS, "listed twice"),
    (GOOD_NODES.replace("nvswitch", "hub") + GOOD_LINKS, "kind 'hub'"),
    (GOOD_NODES + 'links = [{a = "a", b = "s"}]\n', "has no bandwidth"),
    # a link listed twice: the second entry used to replace the first without a word
    (GOOD_NODES + GOOD_LINKS.replace("]\n", ', {a = "s", b = "a", bandwidth = "1 GB/s", kind = "nvlink4"}]\n'),
     r"link 3 \(s - a\) repeats link 1 \(s -> a\)"),
    ("colour = 'blue'\n" + GOOD_NODES + GOOD_LINKS, "unknown top-level key 'colour'"),
])
def test_malformed_toml(tmp_path, text, match):
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=match) as info:
        load(str(path))
    message = str(info.value)
    assert str(path) in message and "\n" not in message


def test_one_way_links_both_ways_are_two_links_not_a_repeat(tmp_path):
    path = tmp_path / "oneway.toml"
    path.write_text(GOOD_NODES + 'links = [' + ", ".join(
        f'{{a = "{a}", b = "{b}", bandwidth = "{bw} GB/s", kind = "nvlink4", duplex = false}}'
        for a, b, bw in (("a", "s", 450), ("s", "a", 300), ("b", "s", 450), ("s", "b", 450))) + "]\n")
    t = load(str(path))
    assert t.graph["a"]["s"]["bandwidth"] == 450e9 and t.graph["s"]["a"]["bandwidth"] == 300e9


@pytest.mark.parametrize("directed", [True, False])
def test_json_graph_listing_an_edge_twice_is_refused_unless_a_multigraph(tmp_path, directed):
    G = nx.DiGraph() if directed else nx.Graph()
    G.add_nodes_from([("a", {"kind": "gpu"}), ("b", {"kind": "gpu"}), ("s", {"kind": "nvswitch"})])
    G.add_edges_from([("a", "s"), ("s", "a"), ("b", "s"), ("s", "b")], bandwidth=450e9, kind="nvlink4")
    data = nx.node_link_data(G, edges="edges")
    repeat = dict(data["edges"][0], bandwidth=1e9)
    if not directed:  # the same undirected edge, written the other way round
        repeat["source"], repeat["target"] = repeat["target"], repeat["source"]
    data["edges"].append(repeat)
    path = tmp_path / "dup.json"
    path.write_text(json.dumps(data))
    with pytest.raises(ConfigError, match=r"dup\.json: edge \d+ .* repeats edge 1"):
        load(str(path))
    data["multigraph"] = True  # parallel links are then meant: their bandwidths add up
    path.write_text(json.dumps(data))
    t = load(str(path))
    a, s = ("a", "s") if repeat["source"] == "a" else ("s", "a")
    assert t.graph[a][s]["bandwidth"] == 451e9


def test_disconnected_toml_names_file_and_gpu(tmp_path):
    path = tmp_path / "split.toml"
    path.write_text(GOOD_NODES.replace("]\n", ', {id = "c", kind = "gpu"}]\n') + GOOD_LINKS)
    with pytest.raises(TopologyError, match=r"split\.toml.*'c'.*disconnected"):
        load(str(path))


def test_malformed_other_files(tmp_path):
    bad_xml = tmp_path / "bad.graphml"
    bad_xml.write_text("<graphml><graph")
    with pytest.raises(ConfigError, match="bad.graphml: not a readable GraphML"):
        load(str(bad_xml))
    bad_json = tmp_path / "bad.json"
    bad_json.write_text(json.dumps({"nodes": 3}))
    with pytest.raises(ConfigError, match="bad.json: not a node-link JSON"):
        load(str(bad_json))
    with pytest.raises(ConfigError, match="cannot read"):
        load(str(tmp_path / "missing.toml"))
    with pytest.raises(ConfigError, match="cannot tell the format"):
        load(str(tmp_path / "fabric.xyz"))
