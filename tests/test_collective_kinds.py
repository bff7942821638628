"""Every collective kind: data-carrying correctness, closed forms, lower bounds and refusals."""

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from fabricsim.collectives import (IDEAL, AllreduceRunner, CollectiveRunner, all_gather, all_to_all, collective,
                                   reduce_scatter, send_recv)
from fabricsim.collectives.base import GroupLayout, run_schedule
from fabricsim.collectives.kinds import KINDS, busbw_factor, kind
from fabricsim.collectives.protocol import Protocol
from fabricsim.errors import ConfigError, InfeasibleError
from fabricsim.simulator import Simulation
from fabricsim.topologies.io import build
from fabric_helpers import star

FLAT = Protocol("flat", 1.0, {"ring": 0.0, "tree": 0.0}, {("ring", "nvlink"): 0.0, ("ring", "net"): 0.0,
                                                          ("tree", "nvlink"): 0.0, ("tree", "net"): 0.0})


def expected_after(name, inputs, ranks, root=None, pairs=None):
    """What every rank's buffer must hold after collective ``name`` (None: anything goes)."""
    p, n = len(ranks), len(next(iter(inputs.values())))
    b = np.linspace(0, n, p + 1).astype(int)
    total = sum(inputs[r] for r in ranks)
    root = ranks[0] if root is None else root
    if name == "allreduce":
        return {r: total for r in ranks}
    if name == "reducescatter":  # rank at position j: shard j reduced (the rest is scratch)
        return {r: (slice(b[j], b[j + 1]), total[b[j]:b[j + 1]]) for j, r in enumerate(ranks)}
    if name == "allgather":
        full = np.concatenate([inputs[r][b[j]:b[j + 1]] for j, r in enumerate(ranks)])
        return {r: full for r in ranks}
    if name == "broadcast":
        return {r: inputs[root] for r in ranks}
    if name == "reduce":
        return {r: (total if r == root else inputs[r]) for r in ranks}
    if name == "alltoall":
        return {r: np.concatenate([inputs[s][b[i]:b[i + 1]] for s in ranks]) for i, r in enumerate(ranks)}
    if name == "sendrecv":
        out = {r: inputs[r] for r in ranks}
        out.update({d: inputs[s] for s, d in pairs})
        return out
    raise AssertionError(name)


def run_data(topo, name, algorithm, ranks, n, root=None, pairs=None, seed=0):
    rng = np.random.default_rng(seed)
    inputs = {r: rng.integers(-1000, 1000, n).astype(np.int64) for r in ranks}
    data = {r: a.copy() for r, a in inputs.items()}
    res = CollectiveRunner(topo).run(name, n * 8, algorithm, ranks=ranks, data=data, root=root, pairs=pairs)
    return inputs, data, res


def assert_data(name, inputs, data, ranks, root=None, pairs=None):
    for r, want in expected_after(name, inputs, ranks, root, pairs).items():
        got = data[r]
        if isinstance(want, tuple):
            got, want = got[want[0]], want[1]
        assert np.array_equal(got, want), f"rank {r} of {name}"


# odd group sizes on a switch, partial NVLink domains, several domains, subsets of GPUs
GROUPS = [
    ("star", 3, None), ("star", 5, None), ("star", 7, None),
    ("dgx-h100", 8, [0, 2, 3, 5, 6]), ("gb200-nvl72", 7, None),
    ("dgx-h100-ib", 24, None), ("dgx-h100-ib", 20, None), ("dgx-h100-ib", 32, [0, 8, 16, 24, 9]),
    ("nvl576", 150, list(range(0, 144, 16)) + list(range(144, 150))),
]


def topology(name, gpus):
    return star(gpus) if name == "star" else build(name, gpus=gpus)


@pytest.mark.parametrize("name, gpus, ranks", GROUPS)
@pytest.mark.parametrize("kind_name", [k for k in KINDS if k != "allreduce"])
def test_every_kind_leaves_every_rank_with_the_right_data(name, gpus, ranks, kind_name):
    topo = topology(name, gpus)
    ranks = list(range(topo.num_gpus)) if ranks is None else sorted(ranks)  # group positions: rank order
    p = len(ranks)
    n = 3 * p if kind_name == "alltoall" else 4 * p + 3  # uneven shards where the collective allows them
    runner = CollectiveRunner(topo)
    algos = runner.available(kind_name, ranks)
    assert algos, kind_name
    for algorithm in algos:
        for root in ([None, ranks[-1]] if KINDS[kind_name].rooted else [None]):
            inputs, data, res = run_data(topo, kind_name, algorithm, ranks, n, root=root, seed=p)
            pairs = list(zip(ranks, ranks[1:] + ranks[:1])) if kind_name == "sendrecv" else None
            assert_data(kind_name, inputs, data, ranks, root, pairs)
            assert res.kind == kind_name and res.ranks == p and res.time > 0


def test_send_recv_many_pairs_at_once_move_each_buffer():
    topo = build("dgx-h100-ib", gpus=32)
    pairs = [(0, 8), (8, 16), (16, 24), (1, 9), (30, 3)]  # pipeline stages, a rank both sending and receiving
    ranks = sorted({r for pr in pairs for r in pr})
    inputs, data, res = run_data(topo, "sendrecv", "p2p", ranks, 11, pairs=pairs)
    assert_data("sendrecv", inputs, data, ranks, pairs=pairs)
    assert res.ranks == len(ranks)


@pytest.mark.parametrize("p", [2, 3, 5, 8, 13])
@pytest.mark.parametrize("nbytes", [1, 4096, 10**9 + 7])
@pytest.mark.parametrize("which", ["reduce_scatter", "allgather"])
def test_contention_free_ring_halves_match_alpha_beta(p, nbytes, which):
    from fabricsim.collectives.ring import ring_allgather, ring_reduce_scatter

    topo = star(p, bandwidth=50e9, latency=0.7e-6)
    sim = Simulation(topo)
    layout = GroupLayout.of(sim.fabric, None)
    make = ring_reduce_scatter if which == "reduce_scatter" else ring_allgather
    proc = sim.process(run_schedule(sim, make(sim.fabric, layout, nbytes, FLAT)))
    sim.run()
    a = 2 * 0.7e-6  # two hops' wire latency
    assert sim.env.now == pytest.approx((p - 1) / p * nbytes / 50e9 + (p - 1) * a, rel=1e-3)
    assert proc.value == p - 1


@pytest.mark.parametrize("p", [2, 3, 7, 12])
@pytest.mark.parametrize("up", [False, True])
def test_contention_free_ring_broadcast_and_reduce_match_the_pipelined_chain(p, up):
    from fabricsim.collectives.rooted import broadcast, reduce

    topo = star(p, bandwidth=50e9, latency=0.5e-6)
    sim = Simulation(topo)
    layout = GroupLayout.of(sim.fabric, None)
    N, K = 2**28, 64
    sim.process(run_schedule(sim, (reduce if up else broadcast)(sim.fabric, layout, N, FLAT, chunks=K)))
    sim.run()
    # (p-1) hops fill the pipeline, then one chunk per round: (K + p - 2) rounds of N/K
    assert sim.env.now == pytest.approx((p - 1) * 1e-6 + (K + p - 2) * N / K / 50e9, rel=1e-6)


def test_batched_all_to_all_completions_keep_the_exact_time():
    """The runner batches an all-to-all's staggered completions (alltoall.FINISH_RTOL): far fewer re-solves,
    no flow more than 0.1% early, and the collective's time within that of the exact run."""
    from fabricsim.collectives.alltoall import FINISH_RTOL

    runner = CollectiveRunner(build("dgx-h100-ib", gpus=32))
    ranks = None  # four nodes on a rail fabric: cross-rail pairs share links, finishes are staggered
    exact = runner.simulation(record=None)
    proc = collective(exact, "alltoall", 2**22, ranks=ranks, algorithm="pairwise")
    exact.run()
    batched = runner.simulation(record=None, finish_rtol=FINISH_RTOL)
    fast = collective(batched, "alltoall", 2**22, ranks=ranks, algorithm="pairwise")
    batched.run()
    assert fast.value.time == pytest.approx(proc.value.time, rel=FINISH_RTOL)
    assert runner.run("alltoall", 2**22, "pairwise", ranks=ranks).time == fast.value.time
    assert batched.fabric.fluid.solves < exact.fabric.fluid.solves / 2


@pytest.mark.parametrize("p", [2, 3, 6, 9])
def test_all_to_all_on_a_non_blocking_switch_runs_at_its_bound(p):
    topo = star(p, bandwidth=50e9, latency=0.0)
    runner = CollectiveRunner(topo, calibration=IDEAL, protocol="simple")
    N = 2**26
    res = runner.run("alltoall", N)
    launch_and_hop = 8.4e-6 + 14e-6  # Simple's ring launch and one network step (protocol.py): on this star
    # every GPU is its own domain
    bound = (p - 1) / p * N / 50e9
    assert res.time == pytest.approx(bound + launch_and_hop, rel=1e-9)
    assert res.busbw == pytest.approx(res.algbw * (p - 1) / p)


def lower_bound(name, p, nbytes, inject):
    if name in ("reducescatter", "allgather", "alltoall"):
        return (p - 1) / p * nbytes / inject  # every rank must send (RS, A2A) or receive (AG) that much
    return nbytes / inject  # broadcast root sends N; reduce root receives N; a send/recv pair moves N


@settings(max_examples=30, deadline=None)
@given(name=st.sampled_from(["dgx-h100", "gb200-nvl72", "dgx-h100-ib"]), gpus=st.integers(2, 24),
       nbytes=st.integers(1, 2**31), kind_name=st.sampled_from([k for k in KINDS if k != "allreduce"]),
       pick=st.integers(0, 3))
def test_no_collective_beats_its_lower_bound(name, gpus, nbytes, kind_name, pick):
    limit = {"dgx-h100": 8, "gb200-nvl72": 72}.get(name)
    topo = build(name, gpus=min(gpus, limit) if limit else gpus)
    runner = CollectiveRunner(topo, calibration=IDEAL)
    algos = runner.available(kind_name)
    res = runner.run(kind_name, nbytes, algos[pick % len(algos)])
    inject = max(topo.injection_bandwidth(g, kind_prefix="") for g in topo.gpus)
    assert res.time >= lower_bound(kind_name, res.ranks, nbytes, inject) * (1 - 1e-9)


def test_busbw_factors_are_nccl_tests_ones():
    # nccl-tests doc/PERFORMANCE.md
    assert busbw_factor("allreduce", 8) == 2 * 7 / 8
    for k in ("reducescatter", "allgather", "alltoall"):
        assert busbw_factor(k, 8) == 7 / 8
    for k in ("broadcast", "reduce", "sendrecv"):
        assert busbw_factor(k, 8) == 1
    assert kind("all_gather").name == "allgather" and kind("Reduce-Scatter").name == "reducescatter"
    with pytest.raises(ConfigError):
        kind("gather")


def test_collective_runner_all_reduce_is_the_allreduce_runner():
    topo = build("dgx-h100-ib", gpus=16)
    for algorithm in ("ring", "tree", "hierarchical", "auto"):
        a = CollectiveRunner(topo).run("allreduce", 2**24, algorithm)
        b = AllreduceRunner(topo).run(2**24, algorithm)
        # equal up to float rounding: one of the two may be served from the protocol choice's own simulation
        # of it, the other simulated again with the round cache (a cached finish is start + remembered offset)
        assert a.time == pytest.approx(b.time, rel=1e-12) and a.algorithm == b.algorithm
        assert a.busbw == pytest.approx(b.busbw, rel=1e-12)


def test_auto_picks_the_fastest_available():
    runner = CollectiveRunner(build("dgx-h100-ib", gpus=16))
    for k in ("reducescatter", "allgather", "broadcast"):
        best = runner.choose(k, 2**20)
        times = {a: runner.run(k, 2**20, a).time for a in runner.available(k)}
        assert times[best] == min(times.values())
        assert runner.run(k, 2**20, "auto").time == min(times.values())


def test_halves_of_a_ring_all_reduce_add_up_to_it():
    runner = CollectiveRunner(build("dgx-h100"), protocol="simple")
    ar = runner.run("allreduce", 2**30, "ring").time
    rs = runner.run("reducescatter", 2**30, "ring").time
    ag = runner.run("allgather", 2**30, "ring").time
    launch = 8.4e-6  # paid once by the all-reduce, once by each half
    assert rs + ag == pytest.approx(ar + launch, rel=1e-6)


def test_library_wrappers_run_inside_one_simulation():
    topo = build("dgx-h100-ib", gpus=16)
    sim = CollectiveRunner(topo).simulation()
    procs = [reduce_scatter(sim, 2**24, ranks=range(8)), all_gather(sim, 2**24, ranks=range(8, 16)),
             all_to_all(sim, 2**20, ranks=[0, 8]), send_recv(sim, (3, 11), 2**20),
             collective(sim, "broadcast", 2**20, ranks=[4, 5, 12], root=12)]
    sim.run()
    assert [p.value.kind for p in procs] == ["reducescatter", "allgather", "alltoall", "sendrecv", "broadcast"]
    assert all(p.value.time > 0 for p in procs)


@pytest.mark.parametrize("call, error, needle", [
    (lambda r: r.run("reducescatter", 1024, "tree"), InfeasibleError, "NCCL has no tree"),
    (lambda r: r.run("allgather", 1024, "sharp"), ConfigError, "no algorithm 'sharp'"),
    (lambda r: r.run("alltoall", 1024, "ring"), ConfigError, "grouped send/recv"),
    (lambda r: r.run("reducescatter", 1024, "hierarchical", ranks=[0, 1, 8]), InfeasibleError, "same number"),
    (lambda r: r.run("allgather", 1024, root=3), ConfigError, "has no root"),
    (lambda r: r.run("broadcast", 1024, root=3, ranks=[0, 1]), InfeasibleError, "root 3"),
    (lambda r: r.run("sendrecv", 1024, pairs=[(2, 2)]), ConfigError, "itself"),
    (lambda r: r.run("sendrecv", 1024, pairs=[(2, 99)]), InfeasibleError, "not in the topology"),
    (lambda r: r.run("reduce", -1), ConfigError, "non-negative"),
    (lambda r: r.run("alltoall", 40, ranks=[0, 1, 2], data={0: np.zeros(5), 1: np.zeros(5), 2: np.zeros(5)}),
     ConfigError, "multiple of 3"),
    (lambda r: r.run("gather", 1024), ConfigError, "unknown collective"),
    (lambda r: CollectiveRunner(build("dgx-h100-ib", gpus=264)).run("alltoall", 1024), InfeasibleError, "up to 256"),
])
def test_bad_requests_are_refused_with_a_reason(call, error, needle):
    with pytest.raises(error, match=needle):
        call(CollectiveRunner(build("dgx-h100-ib", gpus=16)))


@pytest.mark.parametrize("name", ["dgx-h100", "gb200-nvl72"])
@pytest.mark.parametrize("kind_name", ["reducescatter", "allgather"])
def test_nvls_halves_at_line_rate_take_latency_plus_n_over_b(name, kind_name):
    # in-switch: the heavy side of every GPU moves N once, spread over its switch chips by link bandwidth
    topo = build(name)
    runner = CollectiveRunner(topo, calibration=IDEAL)
    inject = topo.injection_bandwidth(topo.gpus[0])
    for nbytes in (2**20, 2**30):
        res = runner.run(kind_name, nbytes, "nvls")
        assert res.time == pytest.approx(25e-6 + nbytes / inject, rel=1e-9)  # NVLS_LATENCY["nvlink"] + N/B


@settings(max_examples=25, deadline=None)
@given(data=st.data(), kind_name=st.sampled_from([k for k in KINDS if k != "allreduce"]),
       n=st.integers(1, 200), nbytes=st.integers(1, 2**30))
def test_random_groups_always_end_with_the_right_data(data, kind_name, n, nbytes):
    from fabricsim.collectives.check import count_wrong

    topo = build("dgx-h100-ib", gpus=24)
    ranks = sorted(data.draw(st.sets(st.integers(0, 23), min_size=2, max_size=12)))
    runner = CollectiveRunner(topo)
    algorithm = data.draw(st.sampled_from(runner.available(kind_name, ranks)))
    root = data.draw(st.sampled_from(ranks)) if KINDS[kind_name].rooted else None
    count = max(n - n % len(ranks), len(ranks)) if kind_name == "alltoall" else n
    assert count_wrong(runner, kind_name, nbytes, algorithm, ranks=ranks, root=root, count=count, seed=n) == 0
