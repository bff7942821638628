"""Adaptive routing (scale_out(adaptive_routing=True)): every shortest path carries an equal share of a flow."""

import numpy as np
import pytest

from fabricsim.collectives import CALIBRATED, AllreduceRunner
from fabricsim.errors import ConfigError
from fabricsim.simulator.routing import Router
from fabricsim.topologies import scale_out
from fabricsim.topologies.io import build


def _cross_leaf_route(adaptive: bool):
    # 4 DGX nodes on a plain fat tree: NICs fill leaves in rank order, 32 per leaf, so node 0 and node 3
    # sit on different leaves and their traffic climbs to the spines
    t = scale_out("dgx-h100", gpus=80, network="fat-tree", adaptive_routing=adaptive)
    r = Router(t)
    src, dst = r.node("n0/gpu0"), r.node("n9/gpu0")
    return t, r, r.route(src, dst, key=7)


def test_adaptive_route_spreads_evenly_over_every_spine():
    t, r, route = _cross_leaf_route(True)
    spines = t.meta["uplinks_per_leaf"]
    assert t.meta["adaptive_routing"] is True
    assert route.fractions.shape[0] == spines > 1
    assert np.allclose(route.fractions, 1 / spines) and route.fractions.sum() == pytest.approx(1.0)
    lt = r.links
    firsts = {lt.nodes[lt.dst[p[2]]] for p in route.paths}  # GPU -> NIC -> leaf -> spine: the spine hop
    assert len(firsts) == spines
    # the same route for every flow key: nothing is hashed
    assert r.route(r.node("n0/gpu0"), r.node("n9/gpu0"), key=99) is route


def test_static_ecmp_keeps_one_path_per_flow():
    t, _, route = _cross_leaf_route(False)
    assert t.meta["adaptive_routing"] is False
    assert route.fractions.shape[0] == 1


def test_adaptive_routing_never_slows_a_collision_prone_ring():
    # a ring across racks whose inter-rack hops cross leaves: static ECMP may put two on one spine link,
    # even spreading cannot do worse on a non-blocking fat tree
    times = {}
    for ar in (False, True):
        runner = AllreduceRunner(build("gb200-nvl72-ib", gpus=288, adaptive_routing=ar), calibration=CALIBRATED)
        times[ar] = runner.run(1 << 30, "ring").time
    assert times[True] <= times[False] * (1 + 1e-9)


def test_adaptive_routing_must_be_a_bool():
    with pytest.raises(ConfigError, match="adaptive_routing"):
        scale_out("dgx-h100", gpus=16, adaptive_routing="yes")
