"""Data-carrying schedules move the data their flows carry: a broken flow breaks the result.

nvls, sharp and the intra-island phases of hierarchical reduce in switches and rings whose data movement
is derived from the same flows that are timed (``base.carry``). These tests break one flow at a time
(drop it, or send it elsewhere) and check the all-reduce result turns wrong, and check that every flow's
bytes are exactly the data it carries.
"""

import numpy as np
import pytest

from fabricsim.collectives import IDEAL
from fabricsim.collectives.base import GroupLayout, element, run_schedule
from fabricsim.collectives.select import build_allreduce
from fabricsim.simulator import Simulation
from fabricsim.topologies.io import build

CASES = [("nvls", "dgx-h100", None), ("nvls", "gb200-nvl72", 6), ("sharp", "dgx-h100-ib", 16),
         ("sharp", "dgx-h100-ib", 20), ("hierarchical", "dgx-h100-ib", 20), ("nvls", "dgx-h100-ib", 16)]


def _schedule(name, gpus, algorithm, nbytes, calibration=IDEAL):
    topo = build(name, gpus=gpus) if gpus else build(name)
    sim = Simulation(topo, efficiency=calibration.link_efficiency)
    layout = GroupLayout.of(sim.fabric, None)
    sched = build_allreduce(sim.fabric, layout, nbytes, algorithm, protocol="simple", calibration=calibration)
    return sim, sched


def _run(sim, sched, data):
    sim.process(run_schedule(sim, sched, data=data))
    sim.run()


def _inputs(p, n, seed=3):
    rng = np.random.default_rng(seed)
    return {r: rng.integers(-1000, 1000, n).astype(np.int64) for r in range(p)}


def _carrying_flows(steps, n):
    """(step, flow) of every flow that carries at least one element."""
    out = []
    for k, st in enumerate(steps):
        if st.carries is None:
            continue
        for i, (_, segs) in enumerate(st.carries()):
            if any(element(b, n) > element(a, n) for _, a, b, _ in segs):
                out.append((k, i))
    return out


def _broken(steps, k, i, how):
    """The steps with flow i of step k dropped or sent to another node."""
    st = steps[k]
    arrays = [np.asarray(a).copy() for a in st.arrays()]
    payload = st.carries()
    if how == "drop":
        arrays = [np.delete(a, i) for a in arrays]
        payload = payload[:i] + payload[i + 1:]
    else:  # to another node this source sends to in the step (so that a route exists)
        others = sorted({int(v) for u, v in zip(arrays[0], arrays[1]) if u == arrays[0][i] and v != arrays[1][i]})
        if not others:
            return None
        arrays[1][i] = others[i % len(others)]
    broken = list(steps)
    st2 = type(st)(st.pattern + ("broken", k, i, how), lambda: tuple(arrays), st.latency_class, st.apply, st.label,
                   extra_latency=st.extra_latency, pipelined=st.pipelined, carries=lambda: payload)
    broken[k] = st2
    return broken


@pytest.mark.parametrize("algorithm, name, gpus", CASES)
def test_breaking_any_one_flow_breaks_the_result(algorithm, name, gpus):
    n = 997
    p = build(name, gpus=gpus).num_gpus if gpus else build(name).num_gpus
    inputs = _inputs(p, n)
    expected = sum(inputs.values())
    # intact: the schedule computes the sum on every rank
    sim, sched = _schedule(name, gpus, algorithm, n * 8)
    data = {r: a.copy() for r, a in inputs.items()}
    _run(sim, sched, data)
    assert all(np.array_equal(d, expected) for d in data.values())
    # broken: drop or misroute one carrying flow (a sample of them, every kind of step)
    _, sched = _schedule(name, gpus, algorithm, n * 8)
    steps = list(sched.steps)
    flows = _carrying_flows(steps, n)
    assert flows, "the schedule carries no data through its flows"
    rng = np.random.default_rng(0)
    picks = [flows[j] for j in sorted(rng.choice(len(flows), size=min(12, len(flows)), replace=False))]
    for k, i in picks:
        for how in ("drop", "misroute"):
            sim, sched = _schedule(name, gpus, algorithm, n * 8)
            broken = _broken(steps, k, i, how)
            if broken is None:
                continue
            sched.steps = iter(broken)
            data = {r: a.copy() for r, a in inputs.items()}
            _run(sim, sched, data)
            assert not all(np.array_equal(d, expected) for d in data.values()), \
                f"{algorithm} on {name}: {how} flow {i} of step {k} went unnoticed"


@pytest.mark.parametrize("algorithm, name, gpus", CASES)
def test_every_flow_moves_exactly_the_data_it_carries(algorithm, name, gpus):
    nbytes = 3 * 2**24 + 2**20  # several pipeline chunks, the last one partial
    _, sched = _schedule(name, gpus, algorithm, nbytes)
    checked = 0
    for st in sched.steps:
        if st.carries is None:
            continue
        sizes = np.array([sum(b - a for _, a, b, _ in segs) for _, segs in st.carries()]) * nbytes
        assert np.allclose(np.asarray(st.arrays()[2], dtype=float), sizes, rtol=1e-9, atol=1e-6)
        checked += 1
    assert checked
