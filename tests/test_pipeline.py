"""Pipeline schedules as SimPy processes: the bubble comes out of the simulated schedule."""

import pytest
from hypothesis import given, settings, strategies as st

from fabricsim.collectives import AllreduceRunner
from fabricsim.errors import ConfigError
from fabricsim.simulator.engine import Simulation
from fabricsim.topologies.io import build
from fabricsim.training.layout import Layout, rank_groups
from fabricsim.training.pipeline import PipelineSpec, schedule_ops, simulate_pipeline

TOPO = build("dgx-h100", gpus=8)


def _free(p, v, m, tf, tb):
    spec = PipelineSpec(p, v, m, [tf / v] * (p * v), [tb / v] * (p * v))
    return simulate_pipeline(Simulation(TOPO), spec)


@settings(max_examples=40, deadline=None)
@given(p=st.integers(1, 8), m=st.integers(1, 24), tf=st.floats(0.1, 3.0), tb=st.floats(0.1, 6.0))
def test_1f1b_bubble_equals_closed_form(p, m, tf, tb):
    res = _free(p, 1, m, tf, tb)
    ideal = m * (tf + tb)
    assert res.time == pytest.approx((m + p - 1) * (tf + tb), rel=1e-9)
    assert (res.time - ideal) / res.time == pytest.approx((p - 1) / (m + p - 1), rel=1e-9, abs=1e-12)


@settings(max_examples=30, deadline=None)
@given(p=st.integers(2, 6), v=st.integers(2, 4), groups=st.integers(1, 4), tf=st.floats(0.1, 3.0),
       tb=st.floats(0.1, 6.0))
def test_interleaved_bubble_equals_closed_form(p, v, groups, tf, tb):
    m = p * groups
    res = _free(p, v, m, tf, tb)
    ideal = m * (tf + tb)
    assert (res.time - ideal) / res.time == pytest.approx((p - 1) / (v * m + p - 1), rel=1e-9)


def test_every_stage_runs_every_op_once():
    for p, v, m in ((4, 1, 3), (4, 2, 8), (3, 3, 6)):
        for s in range(p):
            ops = schedule_ops(p, v, m, s)
            assert sorted(ops) == sorted([(k, c, j) for k in "FB" for c in range(v) for j in range(m)])


def test_interleaved_needs_multiple_of_stages():
    with pytest.raises(ConfigError, match="multiple of the pipeline stages"):
        PipelineSpec(4, 2, 6, [1.0] * 8, [1.0] * 8)


def test_p2p_over_the_fabric_adds_to_the_bubble_and_never_beats_free():
    topo = build("dgx-h100-ib", gpus=32)
    runner = AllreduceRunner(topo)
    g = rank_groups(topo, Layout(tp=8, pp=4))
    args = (4, 1, 8, [1e-3] * 4, [2e-3] * 4)
    free = simulate_pipeline(runner.simulation(), PipelineSpec(*args))
    slow = simulate_pipeline(runner.simulation(), PipelineSpec(*args, stage_ranks=g.stage_ranks, p2p_bytes=64e6))
    fast = simulate_pipeline(runner.simulation(), PipelineSpec(*args, stage_ranks=g.stage_ranks, p2p_bytes=64e6),
                             make_sim=runner.simulation)
    assert slow.time > free.time
    # 64 MB over a 50 GB/s NIC is at least 1.28 ms per hop, and the first micro-batch crosses 3 hops twice
    assert slow.time >= free.time + 6 * 64e6 / 50e9 * 0.99
    assert fast.time == pytest.approx(slow.time, rel=1e-9)  # the boundary shortcut is exact here
    assert len(slow.sends) == 2 * 8 * 3


@settings(max_examples=8, deadline=None)
@given(p=st.sampled_from([2, 4]), v=st.sampled_from([1, 2]), groups=st.integers(1, 2),
       mbytes=st.sampled_from([4e6, 32e6, 128e6]), tf=st.floats(2e-4, 3e-3))
def test_p2p_bracket_holds_the_flow_simulation(p, v, groups, mbytes, tf):
    """The shortcut's bracket: schedule with stand-alone sends <= schedule with flows <= all-at-once sends."""
    topo = build("dgx-h100-ib", gpus=64)
    runner = AllreduceRunner(topo)
    g = rank_groups(topo, Layout(tp=8, pp=p, dp=8 // p))
    m = p * groups
    spec = PipelineSpec(p, v, m, [tf] * (p * v), [2 * tf] * (p * v), stage_ranks=g.stage_ranks, p2p_bytes=mbytes)
    flows = simulate_pipeline(runner.simulation(), spec, p2p="flows")
    bracket = simulate_pipeline(runner.simulation(), spec, make_sim=runner.simulation, p2p="bracket")
    lo, hi = bracket.p2p_bounds
    assert hi == bracket.time
    assert lo * (1 - 1e-9) <= flows.time <= hi * (1 + 1e-9)
    auto = simulate_pipeline(runner.simulation(), spec, make_sim=runner.simulation)
    assert auto.time == pytest.approx(flows.time, rel=1e-9) or (auto.time - flows.time) <= 0.01 * auto.time


def test_unknown_p2p_mode_is_refused():
    with pytest.raises(ConfigError, match="p2p must be one of"):
        simulate_pipeline(Simulation(TOPO), PipelineSpec(2, 1, 2, [1.0] * 2, [1.0] * 2), p2p="guess")


@pytest.mark.parametrize("network", [{}, {"oversubscription": 2.0, "network": "fat-tree"}])
def test_boundary_bounds_hold_the_sends_alone_and_all_at_once(network):
    """lo <= a boundary's send alone, and its send with every boundary sending in both directions <= hi."""
    from fabricsim.training.pipeline import _boundaries, _boundary_group, boundary_times

    topo = build("dgx-h100-ib", gpus=128, **network)
    runner = AllreduceRunner(topo)
    g = rank_groups(topo, Layout(tp=8, pp=4, dp=4, virtual_stages=2))
    spec = PipelineSpec(4, 2, 4, [1e-3] * 8, [2e-3] * 8, stage_ranks=g.stage_ranks, p2p_bytes=32e6)
    times = boundary_times(runner.simulation, spec)
    sim = runner.simulation()
    together = {}
    for key in _boundaries(spec):
        group = _boundary_group(sim.fabric, spec.stage_ranks[key[0]], spec.stage_ranks[key[1]], 32e6, "x")
        alone = runner.simulation()
        alone.fabric.transfer_group(group)
        assert times.lo[key] <= alone.run().time * (1 + 1e-9)
        sim.fabric.transfer_group(group).callbacks.append(lambda _e, key=key: together.__setitem__(key, sim.env.now))
    sim.run()
    for key, t in together.items():
        assert times.lo[key] * (1 - 1e-9) <= t <= times.hi[key] * (1 + 1e-9)
