"""The fluid model's incremental re-solve against the full one, and batched completions' error bound."""

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from fabricsim.simulator import fluid
from fabricsim.simulator.fluid import FluidNetwork
from fabricsim.simulator.sharing import max_min_rates


@st.composite
def workloads(draw):
    """A random fabric (link capacities) and random flows arriving in random batches."""
    n_links = draw(st.integers(2, 12))
    caps = draw(st.lists(st.sampled_from([1.0, 2.0, 3.0, 5.0, 10.0]), min_size=n_links, max_size=n_links))
    batches = []
    t = 0.0
    for _ in range(draw(st.integers(1, 4))):
        t += draw(st.sampled_from([0.0, 0.25, 0.5, 1.5]))
        flows = []
        for _ in range(draw(st.integers(1, 8))):
            links = draw(st.lists(st.integers(0, n_links - 1), min_size=1, max_size=4, unique=True))
            flows.append((links, draw(st.sampled_from([0.0, 1.0, 2.0, 3.0, 7.0])),
                          draw(st.sampled_from([0.0, 0.1, 0.3])), draw(st.sampled_from([1.0, 1.0, 2.0]))))
        batches.append((t, flows))
    return np.asarray(caps), batches


def run(caps, batches, maintenance=(), **options):
    """Drive a FluidNetwork through the batches; returns (finish time by tag, rate snapshots by event).

    ``maintenance[i]`` (if given) is done before event i: "index" sorts every entry into the link index
    (small runs otherwise keep all entries in the unsorted tail), "compact" drops finished flows'
    slots (renumbering the rest), as large runs do on their own."""
    net = FluidNetwork(caps, **options)
    finish, snaps, tag = {}, [], 0
    pending = list(batches)
    events = 0
    while pending or net.active:
        job = maintenance[events] if events < len(maintenance) else None
        events += 1
        if job == "index":
            net._reindex()
        elif job == "compact":
            net._compact()
        t_next = pending[0][0] if pending else np.inf
        t_event = net.next_event_time()
        if t_next <= t_event:
            t, flows = pending.pop(0)
            done, _ = net.advance(t)
            for d in done.tolist():
                finish[d] = t
            # a flow due within float noise of a batch may finish at its own step in one solver and at
            # the batch in the other: the state at the batch is an instant of its own
            snaps.append((t, net.rates()))
            ptr = np.cumsum([0] + [len(f[0]) for f in flows])
            net.add(np.array([f[1] for f in flows]), t + np.array([f[2] for f in flows]), ptr,
                    np.concatenate([f[0] for f in flows]), np.arange(tag, tag + len(flows)),
                    np.array([f[3] for f in flows]))
            tag += len(flows)
            continue
        done, t = net.step()
        for d in done.tolist():
            finish[d] = t
        snaps.append((t, net.rates()))
    return finish, snaps, net


def instants(snaps):
    """Rate snapshots with events within 1e-9 (relative) of each other merged, the last state kept."""
    out = []
    for t, rates in snaps:
        if out and t <= out[-1][0] * (1 + 1e-9) + 1e-12:
            out[-1] = (out[-1][0], rates)
        else:
            out.append((t, rates))
    return out


def draining_entries(net):
    """The draining flows, their link counts and their links (entry by entry, flow after flow)."""
    flows = np.flatnonzero(net._draining)
    counts = net._f_end[flows] - net._f_start[flows]
    el = np.concatenate([net._e_link[a:b] for a, b in zip(net._f_start[flows], net._f_end[flows])] or [[]])
    return flows, counts, el.astype(np.int64)


def draining_oracle(net):
    """Max-min rates of the draining flows, solved from scratch."""
    flows, counts, el = draining_entries(net)
    ef = np.repeat(np.arange(flows.size), counts)
    return flows, max_min_rates(ef, el, net.capacity, flows.size, weight=net._weight[flows])


@pytest.fixture(params=[0.5, np.inf], ids=["all-at-once", "always-incremental"])
def all_at_once(request, monkeypatch):
    """Events whose starting flows are at least this share of the draining ones re-solve every draining
    flow; ``inf`` keeps every event on the incremental path (both must give the full solver's answer)."""
    monkeypatch.setattr(fluid, "_ALL_AT_ONCE", request.param)
    return request.param


ONE_SETTING = [HealthCheck.function_scoped_fixture]  # all_at_once is the same for every example


@settings(max_examples=100, deadline=None, suppress_health_check=ONE_SETTING)
@given(workload=workloads())
def test_incremental_solver_matches_full_solver(workload, all_at_once):
    caps, batches = workload
    fast_finish, fast_snaps, _ = run(caps, batches)
    full_finish, full_snaps, _ = run(caps, batches, incremental=False)
    assert fast_finish.keys() == full_finish.keys()
    for tag, t in full_finish.items():
        assert fast_finish[tag] == pytest.approx(t, rel=1e-9, abs=1e-12)
    # events closer than float noise may fall apart in one solver and together in the other: compare
    # the state after each instant
    fast_snaps, full_snaps = instants(fast_snaps), instants(full_snaps)
    assert len(fast_snaps) == len(full_snaps)
    for (ta, ra), (tb, rb) in zip(fast_snaps, full_snaps):
        assert ta == pytest.approx(tb, rel=1e-9, abs=1e-12)
        assert ra.keys() == rb.keys()
        for k in ra:
            assert ra[k] == pytest.approx(rb[k], rel=1e-9)


@settings(max_examples=60, deadline=None, suppress_health_check=ONE_SETTING)
@given(workload=workloads(), maintenance=st.lists(st.sampled_from([None, "index", "compact"]), max_size=40))
def test_incremental_solver_matches_full_solver_whatever_the_index_holds(workload, maintenance, all_at_once):
    """The link index (sorted part and unsorted tail) and compaction change no answer."""
    caps, batches = workload
    fast_finish, _, _ = run(caps, batches, maintenance)
    full_finish, _, _ = run(caps, batches, incremental=False)
    assert fast_finish.keys() == full_finish.keys()
    for tag, t in full_finish.items():
        assert fast_finish[tag] == pytest.approx(t, rel=1e-9, abs=1e-12)


def test_a_closed_set_is_solved_alone_and_an_open_one_reaches_its_neighbours():
    """Two flows share link 0; a third shares link 1 with the second. When the first finishes, the
    second speeds up to link 1's fair share, and the third (which shares no link with the first) slows
    down from 3 to 2: the re-solve crosses from the finished flow's links to the third's."""
    net = FluidNetwork(np.array([2.0, 4.0, 10.0]))
    net.add(np.array([1.0, 10.0, 10.0]), np.zeros(3), np.array([0, 1, 3, 5]), np.array([0, 0, 1, 1, 2]),
            np.arange(3))
    net.step()
    assert net.rates() == pytest.approx({0: 1.0, 1: 1.0, 2: 3.0})
    done, t = net.step()
    assert done.tolist() == [0] and t == pytest.approx(1.0)
    assert net.rates() == pytest.approx({1: 2.0, 2: 2.0})
    # a lone flow on its own links: a closed set of one
    net.add(np.array([5.0]), np.array([t]), np.array([0, 1]), np.array([2]), np.array([3]))
    net.step()
    assert net.rates()[3] == pytest.approx(8.0)  # link 2 carries flow 2 (2 B/s) too


def test_a_finish_re_solves_only_the_flows_it_was_the_bottleneck_of():
    """X (link 0) and Y (links 0 and 1) share link 0 (10 B/s); Y is held to 2 B/s by link 1. When X
    finishes, link 0 was not Y's bottleneck: Y keeps its rate without a re-solve, and link 0 keeps
    carrying Y (load 2, still busy) rather than going idle."""
    net = FluidNetwork(np.array([10.0, 2.0]))
    net.add(np.array([1.0, 4.0]), np.zeros(2), np.array([0, 1, 3]), np.array([0, 0, 1]), np.arange(2))
    net.step()
    assert net.rates() == pytest.approx({0: 8.0, 1: 2.0})
    solved = net.solved_flows
    done, t = net.step()
    assert done.tolist() == [0] and t == pytest.approx(1 / 8)
    assert net.solved_flows == solved  # nothing re-solved
    assert net.rates() == pytest.approx({1: 2.0})
    assert net._load[:2].tolist() == pytest.approx([2.0, 2.0])
    done, t = net.step()
    assert done.tolist() == [1] and t == pytest.approx(2.0)
    assert net.busy.tolist() == pytest.approx([2.0, 2.0])  # link 0 stayed loaded after X left


@pytest.mark.parametrize("incremental", [True, False])
def test_a_flow_that_crosses_no_link_finishes_when_it_starts(incremental):
    """A flow with an empty path (flow 1, starting at t=1 beside two long flows) has nothing to wait for:
    it finishes as it starts, on the incremental path too (it used to stay active forever there)."""
    net = FluidNetwork(np.array([1.0, 1.0]), incremental=incremental)
    net.add(np.array([5.0, 1.0, 5.0]), np.array([0.0, 1.0, 0.0]), np.array([0, 1, 1, 2]), np.array([0, 1]),
            np.arange(3))
    finish = {}
    for _ in range(10):  # bounded: a flow that never finishes must fail the test, not hang it
        done, t = net.step()
        finish.update(dict.fromkeys(done.tolist(), t))
    assert finish == pytest.approx({1: 1.0, 0: 5.0, 2: 5.0})
    assert net.active == 0


def link_loads_oracle(net):
    """Load of every link from the draining flows, summed from scratch."""
    flows, counts, el = draining_entries(net)
    rw = np.repeat(net._rate[flows] * net._weight[flows], counts)
    return np.bincount(el, weights=rw, minlength=net.n_links)


@settings(max_examples=40, deadline=None, suppress_health_check=ONE_SETTING)
@given(workload=workloads())
def test_incremental_rates_are_max_min_fair_after_every_event(workload, all_at_once):
    caps, batches = workload
    net = FluidNetwork(caps)
    tag = 0
    for t, flows in batches:
        while net.next_event_time() <= t:
            net.step()
            idx, oracle = draining_oracle(net)
            finite = np.isfinite(oracle)
            np.testing.assert_allclose(net._rate[idx][finite], oracle[finite], rtol=1e-9)
            if finite.all():
                np.testing.assert_allclose(net._load, link_loads_oracle(net), rtol=1e-9, atol=1e-12)
        net.advance(t)
        ptr = np.cumsum([0] + [len(f[0]) for f in flows])
        net.add(np.array([f[1] for f in flows]), t + np.array([f[2] for f in flows]), ptr,
                np.concatenate([f[0] for f in flows]), np.arange(tag, tag + len(flows)))
        tag += len(flows)
    while net.active:
        net.step()
        idx, oracle = draining_oracle(net)
        np.testing.assert_allclose(net._rate[idx], oracle, rtol=1e-9)
        # every link's load is its draining flows' (a link left with flows that it did not hold back
        # keeps their load; one left with none is idle)
        np.testing.assert_allclose(net._load, link_loads_oracle(net), rtol=1e-9, atol=1e-12)


@settings(max_examples=80, deadline=None)
@given(workloads(), st.sampled_from([1e-3, 1e-2]))
def test_batched_completions_stay_within_their_bound(workload, rtol):
    """With finish_rtol = r, a flow is reported at most r x its draining time before its projected
    finish, but that projection may still have grown (max-min is not monotone: a flow leaving can slow
    another down), and one flow freed early lets its neighbours finish early too: the errors of a chain
    add up. Every finish time stays within r x the run's length per early completion, plus one."""
    caps, batches = workload
    exact, _, _ = run(caps, batches)
    batched, _, _ = run(caps, batches, finish_rtol=rtol)
    assert batched.keys() == exact.keys()
    span = max(exact.values(), default=0.0)
    early = sum(batched[tag] < t - 1e-12 for tag, t in exact.items())
    for tag, t in exact.items():
        assert abs(batched[tag] - t) <= rtol * span * (early + 1) + 1e-12


def test_batching_merges_nearby_completions():
    # two flows on separate links, finishing at 1.0 and 1.0005: one event with a 1e-3 tolerance
    caps = np.array([1.0, 1.0])
    args = (np.array([1.0, 1.0005]), np.zeros(2), np.array([0, 1, 2]), np.array([0, 1]), np.array([0, 1]))
    exact, batched = FluidNetwork(caps), FluidNetwork(caps, finish_rtol=1e-3)
    for net in (exact, batched):
        net.add(*args)
        net.step()  # both start draining
    assert exact.step()[0].tolist() == [0] and batched.step()[0].tolist() == [0, 1]
    with pytest.raises(ValueError):
        FluidNetwork(caps, finish_rtol=1.5)


def test_busy_time_counts_only_loaded_spans():
    net = FluidNetwork(np.array([1.0, 1.0]))
    net.add(np.array([1.0]), np.array([0.5]), np.array([0, 1]), np.array([0]), np.array([7]))
    while net.active:
        net.step()
    assert net.now == pytest.approx(1.5)
    assert net.busy.tolist() == pytest.approx([1.0, 0.0])


def test_links_left_idle_by_an_event_are_unloaded_and_stop_counting_busy_time():
    """Flows alone on their links finishing together with one that shares a link: the re-solve covers
    the shared link's flows only, and every link the finished flows leave idle reads load 0."""
    loads = {}

    def on_rates(t, links, load):
        loads.update(zip(links.tolist(), load.tolist()))

    net = FluidNetwork(np.array([1.0, 1.0, 1.0, 2.0]), on_rates=on_rates)
    # flows 0, 1: alone on links 0 and 1; flow 2 (link 2 and 3) and flow 3 (link 3) share link 3
    net.add(np.array([1.0, 1.0, 1.0, 4.0]), np.zeros(4), np.array([0, 1, 2, 4, 5]), np.array([0, 1, 2, 3, 3]),
            np.arange(4))
    net.step()
    assert net.rates() == pytest.approx({0: 1.0, 1: 1.0, 2: 1.0, 3: 1.0})
    done, t = net.step()  # flows 0, 1, 2 finish at t = 1; flow 3 speeds up to link 3's capacity
    assert sorted(done.tolist()) == [0, 1, 2] and t == pytest.approx(1.0)
    assert net.rates() == pytest.approx({3: 2.0})
    assert loads == pytest.approx({0: 0.0, 1: 0.0, 2: 0.0, 3: 2.0})
    while net.active:
        net.step()
    assert net.now == pytest.approx(2.5)
    assert net.busy.tolist() == pytest.approx([1.0, 1.0, 1.0, 2.5])
