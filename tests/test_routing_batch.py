"""Router.route_many's batched path gives, bit for bit, what route() gives pair by pair (_route_pairs)."""

from dataclasses import replace
from functools import lru_cache

import networkx as nx
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from fabricsim.errors import TopologyError
from fabricsim.hardware import SWITCHES
from fabricsim.simulator.routing import Router, stable_hash, _GOLDEN, _mix
from fabricsim.topologies import scale_out
from fabricsim.topologies.base import Topology
from fabricsim.topologies.io import build

PRESETS = {
    "dgx-h100-ib fat tree": lambda: build("dgx-h100-ib", gpus=96, network="fat-tree"),
    "dgx-b200-ib rail": lambda: build("dgx-b200-ib", gpus=64),
    "three tiers (8-port switches)": lambda: scale_out("dgx-h100", gpus=96, network="fat-tree",
                                                       switch=replace(SWITCHES["ib-ndr-switch"], ports=8)),
    "three tiers, planes per chip, oversubscribed": lambda: scale_out(
        "dgx-h100", gpus=64, planes="per-chip", oversubscription=2.0,
        switch=replace(SWITCHES["ib-ndr-switch"], ports=8)),
    "gb200-nvl72-ib": lambda: build("gb200-nvl72-ib", gpus=216),
    "gb200-nvl72-ib adaptive": lambda: build("gb200-nvl72-ib", gpus=216, adaptive_routing=True),
    "three tiers adaptive": lambda: scale_out("dgx-h100", gpus=96, network="fat-tree", adaptive_routing=True,
                                              switch=replace(SWITCHES["ib-ndr-switch"], ports=8)),
    "gb200-nvl72 per chip": lambda: build("gb200-nvl72", gpus=36),
    "nvl576": lambda: build("nvl576", gpus=144),
    "deep NVLink domains with NICs": lambda: _deep_domains(),
}


def _deep_domains() -> Topology:
    """Two NVLink domains whose GPUs are four NVLink hops apart (GPU, leaf chip, spine chip, leaf chip,
    GPU) and also four hops apart through their NICs and an InfiniBand switch: pairs inside a domain must
    still take NVLink alone, however short the way out of the domain is."""
    G = nx.DiGraph()

    def link(u, v, kind, bandwidth):
        for a, b in ((u, v), (v, u)):
            G.add_edge(a, b, bandwidth=bandwidth, latency=1e-7, kind=kind)
    gpus, domains = [], []
    G.add_node("ib", kind="switch")
    for d in range(2):
        G.add_node(f"spine{d}", kind="nvswitch")
        members = []
        for leaf in range(2):
            G.add_node(f"chip{d}.{leaf}", kind="nvswitch")
            link(f"chip{d}.{leaf}", f"spine{d}", "nvlink5", 2e11)
            for i in range(2):
                g = f"g{d}.{leaf}.{i}"
                G.add_node(g, kind="gpu", domain=d)
                G.add_node(f"nic-{g}", kind="nic")
                link(g, f"chip{d}.{leaf}", "nvlink5", 1e11)
                link(g, f"nic-{g}", "pcie", 5e10)
                link(f"nic-{g}", "ib", "ib", 5e10)
                members.append(g)
        gpus += members
        domains.append(members)
    return Topology(G, gpus, domains, name="deep-domains").validate()


@lru_cache(maxsize=None)
def _preset(name: str) -> Topology:
    return PRESETS[name]()


def _random_fabric(seed: int, adaptive: bool) -> Topology:
    """Switches joined at random, GPUs in NVLink domains (NVLink to each other or to an NVSwitch) with NICs
    or direct links to the switches; random bandwidths from a few values (ties) and latencies. Not
    validated: some GPUs may be cut off, which both paths must refuse alike."""
    rng = np.random.default_rng(seed)
    G = nx.DiGraph()
    bws, lats = [1e9, 2e9, 4e9], [0.0, 1e-6, 2.5e-7]

    def link(u, v, kind, both=True):
        for a, b in ((u, v), (v, u)) if both else ((u, v),):
            G.add_edge(a, b, bandwidth=float(rng.choice(bws)), latency=float(rng.choice(lats)), kind=kind)
    n_sw = int(rng.integers(2, 9))
    switches = [f"sw{i}" for i in range(n_sw)]
    for s in switches:
        G.add_node(s, kind="switch")
    for i in range(1, n_sw):  # a random tree, then extra links (several shortest paths, ECMP choices)
        link(switches[i], switches[int(rng.integers(0, i))], "eth")
    for _ in range(int(rng.integers(0, 2 * n_sw))):
        a, b = rng.choice(n_sw, 2, replace=False)
        link(switches[a], switches[b], "eth", both=bool(rng.random() < 0.9))
    gpus, domains = [], []
    for dom in range(int(rng.integers(1, 5))):
        members = [f"d{dom}/g{j}" for j in range(int(rng.integers(1, 5)))]
        for g in members:
            G.add_node(g, kind="gpu", domain=dom)
        if rng.random() < 0.5:
            nvs = f"d{dom}/nvs"
            G.add_node(nvs, kind="nvswitch")
            for g in members:
                link(g, nvs, "nvlink5")
        else:
            for a in range(len(members)):
                for b in range(a + 1, len(members)):
                    if rng.random() < 0.7:
                        link(members[a], members[b], "nvlink5")
        for g in members:
            for _ in range(int(rng.integers(0, 3))):
                sw = switches[int(rng.integers(0, n_sw))]
                if rng.random() < 0.5:
                    nic = f"{g}/nic{sw}"
                    if nic not in G:
                        G.add_node(nic, kind="nic")
                        link(g, nic, "pcie")
                        link(nic, sw, "ib-ndr")
                else:
                    link(g, sw, "eth")
        gpus += members
        domains.append(members)
    return Topology(G, gpus, domains, name=f"random{seed}", meta={"adaptive_routing": adaptive})


def _same(a, b) -> None:
    for name in ("flow", "frac", "lat", "ptr", "links"):
        x, y = getattr(a, name), getattr(b, name)
        assert x.dtype == y.dtype and x.shape == y.shape, name
        assert np.array_equal(x, y), name


def _routes_or_error(route_many, src, dst, key):
    try:
        return route_many(src, dst, key)
    except TopologyError as exc:
        return str(exc)


def _check(topology: Topology, data, *, down_share: float = 0.0, endpoints: str = "gpus") -> None:
    r = Router(topology)
    n_links = len(r.links)
    down = ()
    if down_share:
        down = data.draw(st.lists(st.integers(0, n_links - 1), max_size=max(1, int(down_share * n_links)),
                                  unique=True), label="down links")
    batched, reference = Router(topology, r.links, down=down), Router(topology, r.links, down=down)
    pool = [r.node(g) for g in topology.gpus]
    if endpoints == "any":
        pool = list(range(len(r.links.nodes)))
    pool_idx = st.integers(0, len(pool) - 1)
    # a few calls on the same router: later ones meet cached pairs, middles and first hops
    for call in range(data.draw(st.integers(1, 3), label="calls")):
        pairs = data.draw(st.lists(st.tuples(pool_idx, pool_idx).filter(lambda p: p[0] != p[1]), min_size=0,
                                   max_size=40), label="pairs")
        keys = data.draw(st.lists(st.integers(-2**63, 2**63 - 1) | st.integers(0, 3), min_size=1, max_size=4),
                         label="keys")
        src = np.array([pool[a] for a, _ in pairs for _ in keys], dtype=np.int64)
        dst = np.array([pool[b] for _, b in pairs for _ in keys], dtype=np.int64)
        key = np.array([k for _ in pairs for k in keys], dtype=np.int64)
        perm = np.random.default_rng(call).permutation(src.shape[0])
        src, dst, key = src[perm], dst[perm], key[perm]
        got = _routes_or_error(batched.route_many, src, dst, key)
        want = _routes_or_error(reference._route_pairs, src, dst, key)
        if isinstance(want, str):
            assert got == want
        else:
            assert not isinstance(got, str), got
            _same(got, want)
            # path classes ranked over the stored paths (batched) equal those ranked over every subflow
            assert np.array_equal(got.classes(), want.classes())


@pytest.mark.parametrize("name", list(PRESETS))
@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_batched_routes_match_pair_by_pair_on_presets(name, data):
    _check(_preset(name), data)


@pytest.mark.parametrize("name", ["gb200-nvl72-ib", "three tiers (8-port switches)", "gb200-nvl72-ib adaptive"])
@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_batched_routes_match_with_links_down(name, data):
    _check(_preset(name), data, down_share=0.03)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 2**32 - 1), adaptive=st.booleans(), down=st.sampled_from([0.0, 0.1]),
       endpoints=st.sampled_from(["gpus", "any"]), data=st.data())
def test_batched_routes_match_on_random_fabrics(seed, adaptive, down, endpoints, data):
    _check(_random_fabric(seed, adaptive), data, down_share=down, endpoints=endpoints)


@given(st.lists(st.integers(-2**63, 2**64 - 1), min_size=1, max_size=6))
def test_hash_steps_compose(values):
    # the batched walk hashes from the state of (src, dst) and then of the key: the same bits
    h = _GOLDEN
    for v in values:
        h = _mix(h, v)
    assert h == stable_hash(*values)


def test_bad_pairs_name_the_first_bad_pair_as_route_does():
    t = _preset("gb200-nvl72-ib")
    r = Router(t)
    g = [r.node(x) for x in t.gpus]
    src, dst = np.array([g[0], g[3], g[5]]), np.array([g[1], g[3], g[5]])
    with pytest.raises(TopologyError, match="two different endpoints"):
        r.route_many(src, dst, np.zeros(3, dtype=np.int64))
    empty = r.route_many(np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64))
    assert empty.flow.shape == (0,) and empty.ptr.tolist() == [0]


def test_a_pair_routed_under_many_keys_is_planned_once():
    # the same (src, dst) under 16 keys: one plan, a walk per key only because ECMP made a choice
    t = _preset("three tiers (8-port switches)")
    r = Router(t)
    a, b = r.node(t.gpus[0]), r.node(t.gpus[-1])
    rs = r.route_many(np.full(16, a), np.full(16, b), np.arange(16))
    plan, rids = r._pairs[a * len(r.links.nodes) + b]
    assert len(rids) == 16 and plan[0] == a and plan[1] == b
    assert len({tuple(rs.links[rs.ptr[i]:rs.ptr[i + 1]]) for i in range(16)}) > 1  # keys spread over paths


@given(st.lists(st.integers(0, 2**64 - 1), min_size=2, max_size=40))
def test_array_hash_steps_are_the_scalar_ones(values):
    from fabricsim.simulator.routing_far import mix

    half = len(values) // 2
    h, v = np.array(values[:half], dtype=np.uint64), np.array(values[half:2 * half], dtype=np.uint64)
    assert mix(h, v).tolist() == [_mix(int(a), int(b)) for a, b in zip(h.tolist(), v.tolist())]


@given(st.integers(1, 20).flatmap(lambda n: st.lists(st.lists(st.floats(0, 1e-3), min_size=n, max_size=n),
                                                     min_size=1, max_size=5)))
def test_array_path_latencies_are_the_scalar_sums(rows):
    from fabricsim.simulator.routing import _array_sum
    from fabricsim.simulator.routing_far import array_sums

    assert array_sums(np.array(rows)).tolist() == [_array_sum(r) for r in rows]


@pytest.mark.parametrize("name", ["gb200-nvl72-ib", "three tiers (8-port switches)", "dgx-h100-ib fat tree"])
def test_pairs_across_domains_take_the_array_path(name, monkeypatch):
    # the property tests above compare routing_far's routes with route()'s: make sure they reach it
    from fabricsim.simulator import routing

    covered = []

    def spy(router, s, d, key, _real=routing.route_far):
        rid, hashed = _real(router, s, d, key)
        covered.append((len(s), int((rid >= 0).sum())))
        return rid, hashed
    monkeypatch.setattr(routing, "route_far", spy)
    t = _preset(name)
    r = Router(t)
    g = np.array([r.node(x) for x in t.gpus])
    rng = np.random.default_rng(1)
    src, dst = g[rng.integers(0, len(g), 400)], g[rng.integers(0, len(g), 400)]
    src, dst = src[src != dst], dst[src != dst]
    key = rng.integers(0, 4, src.shape[0])
    _same(r.route_many(src, dst, key), Router(t, r.links)._route_pairs(src, dst, key))
    assert covered and all(n == c for n, c in covered) and sum(n for n, _ in covered) > 50


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 2**32 - 1), preset=st.sampled_from([None, "three tiers (8-port switches)",
                                                              "gb200-nvl72-ib"]), data=st.data())
def test_middle_search_over_kept_sides_is_the_bidirectional_search(seed, preset, data):
    # _search_sets reads breadth-first levels kept per side (shared by every middle with that side) and
    # must give what the one-off bidirectional search gives, distances in the same order, search after search
    t = _random_fabric(seed, False) if preset is None else _preset(preset)
    r = Router(t)
    succ_f, pred_f = r._fwd_of[id(r._succ_all)], r._fwd_of[id(r._pred_all)]
    forwarding = [i for i, f in enumerate(r._forwarding) if f]
    node_sets = st.lists(st.sampled_from(forwarding), min_size=1, max_size=3, unique=True).map(
        lambda xs: tuple(sorted(xs)))
    sides = st.sampled_from([(r._side(r.node(g), succ_f)[2], r._side(r.node(g), pred_f)[2]) for g in t.gpus])
    for _ in range(data.draw(st.integers(1, 6), label="searches")):
        xs, ys = data.draw(st.tuples(node_sets, node_sets) | sides, label="sets")
        if not xs or not ys:
            continue
        got = r._search_sets(xs, ys, succ_f, pred_f)
        want = r._meet_and_prune(dict.fromkeys(xs, 0), dict.fromkeys(ys, 0), [list(xs)], list(ys), succ_f, pred_f)
        assert (got is None) == (want is None)
        if got is not None:
            assert got[0] == want[0] and list(got[1].items()) == list(want[1].items())
            plus = r._search_sets(xs, ys, succ_f, pred_f, plus=2)  # what a middle keeps: hops to d
            assert plus[0] == want[0] and list(plus[1].items()) == [(v, k + 2) for v, k in want[1].items()]
            by_hops: dict = {}
            for v, k in plus[1].items():
                by_hops.setdefault(k, set()).add(v)
            assert {k: set(v) for k, v in plus[2].items() if v} == by_hops
