"""The route-expansion memory budget never changes a run: a group expanded, dropped and expanded again
while it is being started runs as if nothing had been dropped."""

import numpy as np
import pytest

from fabricsim.errors import ConfigError
from fabricsim.simulator import Simulation

from fabric_helpers import star


@pytest.mark.parametrize("budget", [1, Simulation(star(2)).fabric.expansion_budget])
def test_selection_started_while_its_parent_is_dropped(budget):
    """A selection of a group whose own expansion dropped its parent's (a budget of one element drops
    every idle expansion): merging its flows re-expands the parent, which drops the selection's arrays;
    they are read afterwards (this raised an IndexError on dgx-h100-ib at 8,192 GPUs, tree)."""
    sim = Simulation(star(8))
    fabric = sim.fabric
    fabric.expansion_budget = budget
    parent = fabric.group_by_rank(np.arange(8), (np.arange(8) + 1) % 8, 1e6)
    child = parent.select([0, 2, 4])

    def body():
        yield fabric.transfer_group(child)
    sim.process(body())
    assert sim.run().time == pytest.approx(2e-6 + 1e6 / 1e9)  # two 1 us hops, then 1 MB at 1 GB/s


def test_a_selection_keeps_its_parent_expanded():
    """Expanding a selection never drops its parent's arrays: the next selection of the same parent (the
    next round of a pipelined tree) derives its own from them instead of routing the parent again (at
    8,192 GPUs on dgx-h100-ib a tree all-reduce spent 90% of its time re-routing and re-merging it)."""
    sim = Simulation(star(8))
    fabric = sim.fabric
    fabric.expansion_budget = 1
    parent = fabric.group_by_rank(np.arange(8), (np.arange(8) + 1) % 8, 1e6)

    def body():
        for index in ([0, 2, 4], [1, 3, 5]):
            yield fabric.transfer_group(parent.select(index))
            assert parent._merged is not None
    sim.process(body())
    assert sim.run().time == pytest.approx(2 * (2e-6 + 1e6 / 1e9))


def test_a_selection_reads_its_parent_and_routes_like_a_fresh_group():
    """A selection holds only its index: its arrays are the parent's at those positions, its digest
    follows its content (same parent and positions: same digest), a selection of a selection (whose
    subflows are no longer grouped by flow in order) routes like the same flows built afresh, and
    positions outside the parent are refused."""
    sim = Simulation(star(8))
    fabric = sim.fabric
    parent = fabric.group_by_rank(np.arange(8), (np.arange(8) + 3) % 8, np.arange(1.0, 9.0) * 1e6, key=np.arange(8))
    child = parent.select([6, 1, 4, 3])
    grandchild = child.select([2, 0])
    assert grandchild.src.tolist() == parent.src[[4, 6]].tolist()
    assert grandchild.nbytes.tolist() == [5e6, 7e6] and len(grandchild) == 2
    assert child.digest == parent.select([6, 1, 4, 3]).digest != parent.select([1, 6, 4, 3]).digest
    fresh = fabric.group_by_rank([4, 6], [7, 1], [5e6, 7e6], key=[4, 6])
    for a, b in zip(fabric.subflows(grandchild), fabric.subflows(fresh)):
        assert np.array_equal(a, b)
    with pytest.raises(ConfigError):
        parent.select([8])

    def body():
        yield fabric.transfer_group(grandchild)
        yield fabric.transfer_group(fresh)
    sim.process(body())
    durations = [finish - start for _, _, _, start, finish in sim.run().groups]
    assert durations[0] == pytest.approx(durations[1]) == pytest.approx(2e-6 + 7e6 / 1e9)
