"""Jobs simulated apart in independent blocks (simulator/blocks.py) equal one joint simulation."""

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from fabricsim.collectives import AllreduceRunner
from fabricsim.collectives.select import allreduce, concurrent_allreduce
from fabricsim.errors import ConfigError
from fabricsim.simulator.blocks import MARGIN, run_in_blocks
from fabricsim.simulator.engine import Simulation, set_capacity
from fabricsim.topologies.io import resolve
from fabricsim.training.step import step_layout

from fabric_helpers import from_edges


def two_switches(core: float, n: int = 4, edge: float = 1e9):
    """``n`` GPUs on each of two switches joined by one ``core`` B/s link (every GPU link ``edge`` B/s)."""
    left, right = [f"a{i}" for i in range(n)], [f"b{i}" for i in range(n)]
    edges = [(g, "s0", edge, 1e-6) for g in left] + [(g, "s1", edge, 1e-6) for g in right]
    return from_edges(left + right, ["s0", "s1"], edges + [("s0", "s1", core, 2e-6)])


def job(flows, rounds: int, pause: float):
    """A job: ``rounds`` times, all its flows at once, then a pause; its value is when it ended."""
    def start(sim):
        group = sim.fabric.group(*zip(*flows)) if flows else None

        def body():
            for _ in range(rounds):
                if group is not None:
                    yield sim.fabric.transfer_group(group)
                yield sim.env.timeout(pause)
            return sim.env.now
        return sim.process(body())
    return start


def joint(make, starters):
    sim = make()
    procs = [s(sim) for s in starters]
    sim.run()
    return [p.value for p in procs]


@st.composite
def jobs_on_two_switches(draw):
    n = 4
    gpus = [f"a{i}" for i in range(n)] + [f"b{i}" for i in range(n)]
    core = draw(st.sampled_from([5e8, 1e9, 2e9, 1e10]))
    specs = []
    for _ in range(draw(st.integers(2, 5))):
        pairs = draw(st.lists(st.tuples(st.sampled_from(gpus), st.sampled_from(gpus)), min_size=1, max_size=3)
                     .filter(lambda ps: all(s != d for s, d in ps)))
        flows = [(s, d, draw(st.sampled_from([10**5, 3 * 10**5, 10**6]))) for s, d in pairs]
        specs.append((flows, draw(st.integers(1, 6)), draw(st.sampled_from([0.0, 1e-5, 2e-4]))))
    return core, specs


@settings(max_examples=40, deadline=None)
@given(jobs_on_two_switches())
def test_blocks_equal_the_joint_run(case):
    core, specs = case
    topo = two_switches(core)
    router = Simulation(topo).fabric.router

    def make(**options):
        return Simulation(topo, record=None, router=router, **options)

    starters = [job(f, r, p) for f, r, p in specs]
    values, blocks, results = run_in_blocks(make, starters)
    assert values == pytest.approx(joint(make, starters), rel=1e-9)
    # each block's simulation ends with its last job (its clock and the job's own sum may differ in the last bit)
    assert max(r.time for r in results) == pytest.approx(max(values), rel=1e-12, abs=0)
    assert sorted(i for b in blocks for i in b) == list(range(len(specs)))
    # the blocks really are independent: their peak loads fit every link they share
    peaks = []
    for b in blocks:
        sim = make(peak_loads=True)
        for i in b:
            starters[i](sim)
        peaks.append(sim.run().link_peak)
    peaks = np.array(peaks)
    shared = (peaks > 0).sum(axis=0) > 1
    assert np.all(peaks.sum(axis=0)[shared] <= sim.fabric.capacity[shared] * (1 - MARGIN))


def test_jobs_that_fill_a_shared_link_are_merged_and_others_are_not():
    topo = two_switches(core=1e9)
    router = Simulation(topo).fabric.router

    def make(**options):
        return Simulation(topo, record=None, router=router, **options)

    # jobs 0 and 1 both cross the core link at full rate: they slow each other down; job 2 stays on s0
    starters = [job([("a0", "b0", 10**6)], 3, 1e-5), job([("a1", "b1", 10**6)], 3, 1e-5),
                job([("a2", "a3", 10**6)], 3, 1e-5)]
    values, blocks, _ = run_in_blocks(make, starters)
    assert blocks == [[0, 1], [2]]
    assert values == pytest.approx(joint(make, starters), rel=1e-12)
    # alone, job 0 would take half the time on the core link: the merge is what keeps the answer right
    alone, _, _ = run_in_blocks(make, starters[:1])
    assert alone[0] < 0.6 * values[0]
    # a wide core link: every job is a block of its own
    wide = two_switches(core=1e10)
    _, blocks, _ = run_in_blocks(lambda **o: Simulation(wide, record=None, **o), starters)
    assert blocks == [[0], [1], [2]]


def test_a_given_first_partition_is_only_merged():
    topo = two_switches(core=1e10)
    starters = [job([("a0", "b0", 10**6)], 2, 0.0), job([("a1", "b1", 10**6)], 2, 0.0), job([], 1, 1e-3)]
    make = lambda **o: Simulation(topo, record=None, **o)  # noqa: E731
    values, blocks, _ = run_in_blocks(make, starters, blocks=[[0, 1]])
    assert blocks == [[0, 1], [2]] and values[2] == pytest.approx(1e-3)
    with pytest.raises(ConfigError):
        run_in_blocks(make, starters, blocks=[[0, 1], [1, 2]])
    with pytest.raises(ConfigError):
        run_in_blocks(make, starters, blocks=[[0, 3]])


def test_timed_faults_and_batched_completions_fall_back_to_the_joint_run():
    topo = two_switches(core=1e10)
    topo.meta["timed_faults"] = [(5e-4, [("s0", "s1", 0.1)], "core slows down")]
    starters = [job([("a0", "b0", 10**6)], 3, 1e-5), job([("a1", "b1", 10**6)], 3, 1e-5)]
    make = lambda **o: Simulation(topo, record=None, **o)  # noqa: E731
    values, blocks, _ = run_in_blocks(make, starters)
    assert blocks == [[0, 1]] and values == joint(make, starters)  # the joint run itself: bit-identical
    plain = two_switches(core=1e10)
    batched = lambda **o: Simulation(plain, record=None, finish_rtol=1e-3, **o)  # noqa: E731
    values, blocks, _ = run_in_blocks(batched, starters)
    assert blocks == [[0, 1]] and values == joint(batched, starters)

    # a job that schedules a capacity change itself
    def saboteur(sim):
        sim.at(1e-4, set_capacity([("s0", "s1")], 0.5))
        return starters[0](sim)
    make = lambda **o: Simulation(plain, record=None, **o)  # noqa: E731
    values, blocks, _ = run_in_blocks(make, [saboteur, starters[1]])
    assert blocks == [[0, 1]] and values == joint(make, [saboteur, starters[1]])


def _joint_allreduce(runner, nbytes, groups, algorithm):
    sim = runner.simulation(record=None)
    procs = [allreduce(sim, nbytes, ranks=g, algorithm=algorithm, protocol=runner.protocol,
                       calibration=runner.calibration, memo=runner.memo) for g in groups]
    sim.run()
    return [p.value for p in procs]


@pytest.fixture(scope="module")
def nvl72_144():
    return resolve("gb200-nvl72-ib", gpus=144)


@settings(max_examples=8, deadline=None)
@given(tp=st.sampled_from([2, 4, 8]), algorithm=st.sampled_from(["ring", "tree", "hierarchical", "nvls"]),
       nbytes=st.sampled_from([2**20, 3 * 2**22 + 4]), uneven=st.booleans())
def test_concurrent_allreduce_equals_the_joint_run(nvl72_144, tp, algorithm, nbytes, uneven):
    """Data-parallel groups (and, ``uneven``, groups of different sizes) all-reducing at once."""
    groups = step_layout(nvl72_144, tp).dp_groups
    if uneven:  # move a third of the last group into the first: unequal groups, still disjoint
        cut = len(groups[-1]) // 3
        groups = [groups[0] + groups[-1][:cut]] + groups[1:-1] + [groups[-1][cut:]]
    runner = AllreduceRunner(nvl72_144)
    apart = concurrent_allreduce(runner, nbytes, groups, algorithm)
    together = _joint_allreduce(runner, nbytes, groups, algorithm)
    assert [r.time for r in apart] == pytest.approx([r.time for r in together], rel=1e-9)
    assert [(r.protocol, r.steps, r.ranks) for r in apart] == [(r.protocol, r.steps, r.ranks) for r in together]
    # the partition is remembered and tried first next time (another size splits alike or merges further)
    hint = runner.memo[("concurrent blocks", tuple(tuple(g) for g in groups))]
    assert sorted(i for b in hint for i in b) == list(range(len(groups)))
