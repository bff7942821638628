import numpy as np
from hypothesis import given, settings, strategies as st

from fabricsim.simulator.sharing import max_min_rates


def rates(flows, caps):
    """flows: list of link-id lists."""
    ef = np.array([f for f, links in enumerate(flows) for _ in links], dtype=np.int64)
    el = np.array([l for links in flows for l in links], dtype=np.int64)
    return max_min_rates(ef, el, np.asarray(caps, dtype=float), len(flows))


def test_equal_flows_split_one_bottleneck():
    assert rates([[0]] * 4, [8.0]).tolist() == [2.0] * 4


def test_textbook_two_levels():
    # link 0 (10) carries three flows, flow 2 also crosses link 1 (2): flow 2 gets 2, the others 4 each
    assert rates([[0], [0], [0, 1]], [10.0, 2.0]).tolist() == [4.0, 4.0, 2.0]


def test_textbook_line_network():
    # the classic line: flow 0 crosses links 0 and 1 (capacity 1 each), flows 1 and 2 one link each
    assert rates([[0, 1], [0], [1]], [1.0, 1.0]).tolist() == [0.5, 0.5, 0.5]
    # with link 1 at capacity 3, flow 2 takes what flow 0 cannot use there
    assert rates([[0, 1], [0], [1]], [1.0, 3.0]).tolist() == [0.5, 0.5, 2.5]


def test_weights_take_multiple_shares():
    ef = np.array([0, 1]); el = np.array([0, 0])
    r = max_min_rates(ef, el, np.array([9.0]), 2, weight=np.array([2.0, 1.0]))
    assert r.tolist() == [3.0, 3.0]


@settings(max_examples=200, deadline=None)
@given(st.data())
def test_max_min_invariants(data):
    n_links = data.draw(st.integers(1, 6))
    caps = data.draw(st.lists(st.floats(0.1, 100.0), min_size=n_links, max_size=n_links))
    flows = data.draw(st.lists(st.lists(st.integers(0, n_links - 1), min_size=1, max_size=4, unique=True),
                               min_size=1, max_size=10))
    r = rates(flows, caps)
    load = np.zeros(n_links)
    for f, links in enumerate(flows):
        assert r[f] > 0
        load[links] += r[f]
    # feasibility: no link carries more than its capacity
    assert np.all(load <= np.asarray(caps) * (1 + 1e-9))
    # max-min optimality: every flow has a saturated link on which no other flow gets more than it
    for f, links in enumerate(flows):
        assert any(load[l] >= caps[l] * (1 - 1e-9) and all(r[g] <= r[f] * (1 + 1e-9)
                   for g, other in enumerate(flows) if l in other) for l in links)
