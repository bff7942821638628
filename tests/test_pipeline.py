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
