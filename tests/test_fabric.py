import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from fabricsim.errors import ConfigError, TopologyError
from fabricsim.simulator import Simulation
from fabric_helpers import from_edges, pair, star


def run_groups(topology, launches, **sim_options):
    """launches: list of (start time, [(src, dst, bytes), ...]); returns (per-flow finish lists, result)."""
    sim = Simulation(topology, record="flows", **sim_options)
    finishes = [None] * len(launches)

    def launcher(i, start, flows):
        yield sim.env.timeout(start)
        g = sim.fabric.group([f[0] for f in flows], [f[1] for f in flows], [f[2] for f in flows])
        res = yield sim.fabric.transfer_group(g)
        finishes[i] = res.flow_finish.tolist()

    for i, (start, flows) in enumerate(launches):
        sim.process(launcher(i, start, flows))
    return finishes, sim.run()


def test_one_flow_one_link_is_latency_plus_bytes_over_bandwidth():
    finishes, result = run_groups(pair(bandwidth=450e9, latency=0.7e-6), [(0.0, [("a", "b", 123_456_789)])])
    assert finishes[0][0] == 0.7e-6 + 123_456_789 / 450e9
    assert result.time == finishes[0][0]


def test_k_flows_share_a_bottleneck_and_a_leaver_frees_its_share():
    # three GPUs send to g3 through the switch: its downlink (1 GB/s) is shared three ways
    topo = star(4, bandwidth=1e9, latency=0.0)
    finishes, _ = run_groups(topo, [(0.0, [("g0", "g3", 10**9), ("g1", "g3", 2 * 10**9), ("g2", "g3", 2 * 10**9)])])
    # all at 1/3 GB/s until g0 is done at 3 s; then 1/2 GB/s each: 1 GB left each -> done at 5 s
    assert finishes[0] == pytest.approx([3.0, 5.0, 5.0], rel=1e-12)


def test_latency_phase_holds_no_bandwidth():
    # g0 -> g2 over a slow-latency link, g1 -> g2 on a fast one; both cross sw -> g2 (1 GB/s)
    topo = from_edges(["g0", "g1", "g2"], ["sw"],
                      [("g0", "sw", 1e9, 1.0), ("g1", "sw", 1e9, 0.0), ("sw", "g2", 1e9, 0.0)])
    finishes, _ = run_groups(topo, [(0.0, [("g0", "g2", 10**9), ("g1", "g2", 10**9)])])
    # g1 alone for the first second (1 GB done at t=1); then g0 alone from t=1: done at t=2
    assert finishes[0] == pytest.approx([2.0, 1.0], rel=1e-12)


def test_textbook_max_min_in_the_fabric():
    # link sw->g3 (3 GB/s) shared by g0 and g1; g1 also crosses nothing else; g2->g4 via a 1 GB/s link
    topo = from_edges(["g0", "g1", "g2", "g3", "g4"], ["sw", "sx"],
                      [("g0", "sw", 9e9, 0), ("g1", "sw", 9e9, 0), ("g2", "sx", 9e9, 0),
                       ("sw", "g3", 3e9, 0), ("sx", "sw", 1e9, 0), ("sx", "g4", 9e9, 0)])
    sim = Simulation(topo)
    for s, d in [("g0", "g3"), ("g1", "g3"), ("g2", "g3")]:
        sim.fabric.transfer(s, d, 10**12)
    sim.env.run(until=1e-3)
    r = sorted(sim.fabric.fluid.rates().values())
    # g2 is held to 1 GB/s by sx->sw; g0 and g1 split the remaining 2 GB/s of sw->g3
    assert r == pytest.approx([1e9, 1e9, 1e9])


def test_cache_changes_no_answer_even_when_launches_overlap():
    topo = star(6, bandwidth=1e9, latency=1e-6)
    ring = [(f"g{i}", f"g{(i + 1) % 6}", 10**6) for i in range(6)]
    hot = [("g0", "g3", 5 * 10**5), ("g1", "g3", 10**5)]
    launches = [(0.0, ring), (0.0, hot), (0.002, ring), (0.0025, hot), (0.01, ring), (0.0103, ring),
                (0.02, ring), (0.03, ring), (0.0303, hot), (0.04, ring)]
    with_cache, r1 = run_groups(topo, launches)
    without, r2 = run_groups(topo, launches, cache=False)
    # identical up to float rounding: a cached finish is start + remembered offset
    assert sum(with_cache, []) == pytest.approx(sum(without, []), rel=1e-12)
    assert r1.time == pytest.approx(r2.time, rel=1e-12)
    assert np.array_equal(r1.link_bytes, r2.link_bytes)
    assert np.allclose(r1.link_busy, r2.link_busy, rtol=1e-12, atol=1e-18)
    # 0.02 is remembered; 0.03 hits and is replayed when `hot` arrives; 0.04 hits and runs alone
    assert r1.stats["cache_hits"] == 2 and r1.stats["replays"] == 1


def test_repeated_rounds_hit_the_cache():
    topo = star(8)
    sim = Simulation(topo)
    g = sim.fabric.group_by_rank(np.arange(8), (np.arange(8) + 1) % 8, 10**6)

    def ring(sim):
        for _ in range(50):
            yield sim.fabric.transfer_group(g)

    sim.process(ring(sim))
    res = sim.run()
    assert res.stats["cache_hits"] == 49
    assert res.time == pytest.approx(50 * (2e-6 + 1e-3), rel=1e-12)
    # every link of the ring carried 50 rounds of 1 MB
    assert res.link_bytes.max() == 50 * 10**6


def test_a_group_marked_once_is_neither_digested_nor_kept_yet_runs_as_a_kept_one():
    topo = star(8)

    def run(cache):
        sim = Simulation(topo)
        base = sim.fabric.group_by_rank(np.arange(8), (np.arange(8) + 1) % 8, np.arange(1, 9) * 10**5)
        rounds = [base.select([0, 1, 2], cache=cache), base.select(np.arange(8), cache=cache)]
        times = []

        def body(sim):
            for g in rounds + rounds:
                res = yield sim.fabric.transfer_group(g)
                times.append((res.start, res.finish))
        sim.process(body(sim))
        return sim.run(), rounds, times

    kept, kept_rounds, kept_times = run(True)
    once, once_rounds, once_times = run(False)
    assert kept.stats["cache_hits"] == 2 and once.stats["cache_hits"] == 0
    assert all(g._digest is not None for g in kept_rounds) and all(g._digest is None for g in once_rounds)
    # the same fluid runs (a cached finish is start + remembered offset: equal up to float rounding)
    assert np.allclose(once_times, kept_times, rtol=1e-12, atol=0)
    assert once.time == pytest.approx(kept.time, rel=1e-12)
    assert np.allclose(once.link_bytes, kept.link_bytes, rtol=1e-12)
    assert once.link_bytes.sum() == pytest.approx(2 * (6 + 36) * 10**5 * 2, rel=1e-12)  # two hops a flow


def test_a_selection_by_an_int32_index_keeps_it_and_runs_as_one_by_int64():
    """Pipelines pass their rounds' indices as int32 (half the memory); the selection must be the same
    group: same digest (the round cache's key), same flows, same timing and link bytes."""
    topo = star(8)

    def run(dtype):
        sim = Simulation(topo)
        base = sim.fabric.group_by_rank(np.arange(8), (np.arange(8) + 3) % 8, np.arange(1, 9) * 10**5)
        picked = base.select(np.array([6, 1, 4], dtype=dtype))

        def body(sim):
            yield sim.fabric.transfer_group(picked)
        sim.process(body(sim))
        return picked, sim.run()

    narrow, res32 = run(np.int32)
    wide, res64 = run(np.int64)
    assert narrow._index.dtype == np.int32 and wide._index.dtype == np.int64
    assert narrow.digest == wide.digest
    assert np.array_equal(narrow.src, wide.src) and np.array_equal(narrow.nbytes, wide.nbytes)
    assert res32.time == res64.time and np.array_equal(res32.link_bytes, res64.link_bytes)
    assert res32.link_bytes.sum() == pytest.approx(2 * (7 + 2 + 5) * 10**5)  # two hops a flow


def test_same_inputs_give_bit_identical_results():
    topo = star(5, bandwidth=3e9, latency=1e-7)
    flows = [("g0", "g1", 777), ("g2", "g1", 12345), ("g3", "g4", 10**7), ("g4", "g0", 99)]
    a, ra = run_groups(topo, [(0.0, flows), (1e-6, flows[:2])])
    b, rb = run_groups(topo, [(0.0, flows), (1e-6, flows[:2])])
    assert a == b and ra.time == rb.time and np.array_equal(ra.link_busy, rb.link_busy)


def test_bad_transfers_are_refused():
    sim = Simulation(star(3))
    with pytest.raises(ConfigError):
        sim.fabric.transfer("g0", "g1", -5)
    with pytest.raises(TopologyError):
        sim.fabric.transfer("g0", "nowhere", 5)
    with pytest.raises(TopologyError):
        sim.fabric.transfer("g0", "g0", 5)
    with pytest.raises(ConfigError):
        sim.fabric.group_by_rank([0], [7], 5)


@st.composite
def random_fabric(draw):
    n_gpus = draw(st.integers(2, 5))
    n_sw = draw(st.integers(1, 3))
    gpus = [f"g{i}" for i in range(n_gpus)]
    sws = [f"s{i}" for i in range(n_sw)]
    bw = st.sampled_from([1e9, 2e9, 5e9, 1e10])
    lat = st.sampled_from([0.0, 1e-6, 3e-6])
    edges = [(g, sws[draw(st.integers(0, n_sw - 1))], draw(bw), draw(lat)) for g in gpus]
    edges += [(sws[i], sws[i + 1], draw(bw), draw(lat)) for i in range(n_sw - 1)]  # a chain: connected
    topo = from_edges(gpus, sws, edges)
    flows = draw(st.lists(st.tuples(st.sampled_from(gpus), st.sampled_from(gpus),
                                    st.integers(0, 10**8), st.sampled_from([0.0, 1e-5, 1e-3])),
                          min_size=1, max_size=8).filter(lambda fs: all(f[0] != f[1] for f in fs)))
    return topo, flows


@settings(max_examples=60, deadline=None)
@given(random_fabric())
def test_invariants_on_random_fabrics(case):
    topo, flows = case
    launches = [(start, [(s, d, n)]) for s, d, n, start in flows]
    finishes, result = run_groups(topo, launches)
    assert all(f is not None for f in finishes)  # every transfer completed
    sim = Simulation(topo)
    router = sim.fabric.router
    expected_bytes = np.zeros(len(sim.fabric.links))
    for (s, d, n, start), fin in zip(flows, finishes):
        route = router.route(router.node(s), router.node(d))
        links = route.links
        expected_bytes[links] += n
        # no flow beats its path latency plus its bytes at the narrowest link of its path
        lower = start + route.latencies.min() + n / sim.fabric.links.bandwidth[links].min()
        assert fin[0] >= lower * (1 - 1e-12)
    # bytes are conserved: each link carried exactly the bytes of the flows routed over it
    assert np.allclose(result.link_bytes, expected_bytes, rtol=1e-12)
    # no link ever carried more than its bandwidth allows over the time it was busy
    assert np.all(result.link_bytes <= result.link_bandwidth * result.link_busy * (1 + 1e-9) + 1e-6)


def test_identical_flows_merge_without_changing_the_answer():
    # four equal flows g0 -> g3 (keys differ, routes do not) share the 1 GB/s downlink: 4 s each
    topo = star(4, bandwidth=1e9, latency=0.0)
    sim = Simulation(topo, record="flows")
    group = sim.fabric.group(["g0"] * 4 + ["g1"], ["g3"] * 4 + ["g2"], [10**9] * 4 + [10**9], key=[0, 1, 2, 3, 0])
    ev = sim.fabric.transfer_group(group)
    sim.run()
    rep, weight, *_ = sim.fabric._merged(group)
    assert sorted(weight.tolist()) == [1.0, 4.0]  # the four g0 -> g3 flows are one fluid flow
    assert ev.value.flow_finish.tolist() == pytest.approx([4.0] * 4 + [1.0])
