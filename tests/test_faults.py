"""Faults: static ones change the Topology, timed ones change link capacities during a run."""

import json

import numpy as np
import pytest

from fabricsim.collectives import AllreduceRunner
from fabricsim.errors import ConfigError, InfeasibleError
from fabricsim.simulator import Simulation
from fabricsim.simulator.engine import set_capacity
from fabricsim.topologies.faults import Fault, apply_faults, parse_fault, parse_faults, select_links
from fabricsim.topologies.io import build

from fabric_helpers import from_edges


@pytest.fixture(scope="module")
def rack():
    return build("gb200-nvl72")


def test_parse_syntax():
    assert parse_fault("leaf3") == Fault("leaf3")
    assert parse_fault("r0/gpu5:nvlink=0.5") == Fault("r0/gpu5", 0.5, "nvlink")
    assert parse_fault("leaf0--spine1:0.25") == Fault("leaf0--spine1", 0.25)
    assert parse_fault("1ms:leaf3") == Fault("leaf3", time=1e-3)
    assert parse_fault("250us:r0/gpu1:nvlink=0.5").time == pytest.approx(250e-6)
    assert parse_fault("spine0:latency=+2us").latency == pytest.approx(2e-6)
    assert len(parse_faults(["leaf1,leaf2"], ["r0/gpu0:0.5"], ["1ms:spine0"])) == 4


@pytest.mark.parametrize("text, kw", [("leaf3:2", {}), ("leaf3:abc", {}), ("", {}), ("leaf3:0.5", {"degrade": False}),
                                      ("leaf3", {"degrade": True}), ("leaf3:latency=2us", {})])
def test_parse_refusals(text, kw):
    with pytest.raises(ConfigError):
        parse_fault(text, **kw)


def test_timed_and_static_options_do_not_mix():
    with pytest.raises(ConfigError, match="no time"):
        parse_faults(fail_at=["leaf3"])
    with pytest.raises(ConfigError, match="has a time"):
        parse_faults(fail=["1ms:leaf3"])


def test_unknown_target_and_gpu_refused(rack):
    with pytest.raises(ConfigError, match="matches no link"):
        apply_faults(rack, [parse_fault("gpu5")])
    with pytest.raises(ConfigError, match="is a rank"):
        apply_faults(rack, [parse_fault("r0/gpu5")])


def test_tray_alias_selects_two_chips(rack):
    edges = select_links(rack, parse_fault("r0/tray3"))
    assert {v if "nvs" in v else u for u, v in edges} == {"r0/nvs6", "r0/nvs7"}
    assert len(edges) == 2 * 2 * 72


def test_failed_tray_cuts_nvlink_and_busbw_by_one_ninth(rack):
    """One of nine trays fails: every GPU keeps 16 of 18 planes, busbw of a large all-reduce drops ~1/9."""
    hurt = apply_faults(rack, [parse_fault("r0/tray3")])
    for g in rack.gpus:
        assert hurt.injection_bandwidth(g) == pytest.approx(rack.injection_bandwidth(g) * 8 / 9)
    full = AllreduceRunner(rack).run(2**30, "ring").busbw
    less = AllreduceRunner(hurt).run(2**30, "ring").busbw
    assert less / full == pytest.approx(8 / 9, abs=0.02)
    assert less < full


def test_degraded_gpu_loses_planes_not_speed(rack):
    """NVLink degraded to 0.5 on one GPU: 9 whole planes gone (NCCL's view), each left at full rate."""
    hurt = apply_faults(rack, [parse_fault("r0/gpu5:nvlink=0.5")])
    out = [d for _, _, d in hurt.graph.out_edges("r0/gpu5", data=True)]
    assert len(out) == 9 and all(d["bandwidth"] == 50e9 for d in out)
    assert {v for _, v in hurt.graph.out_edges("r0/gpu5")} == {f"r0/nvs{c}" for c in range(9)}
    assert hurt.injection_bandwidth("r0/gpu4") == rack.injection_bandwidth("r0/gpu4")
    # the ring is as slow as its slowest member: about half the busbw (one protocol for both, so that only
    # the bandwidth differs)
    ratio = (AllreduceRunner(hurt, protocol="simple").run(2**30, "ring").busbw
             / AllreduceRunner(rack, protocol="simple").run(2**30, "ring").busbw)
    assert 0.5 <= ratio <= 0.56  # bandwidth halves; the per-step latencies do not, so a little above 0.5


def test_aggregate_crossbar_loses_lanes():
    topo = build("gb200-nvl72", planes="aggregate", gpus=8)
    hurt = apply_faults(topo, [parse_fault("r0/gpu0:nvlink=0.5")])
    edge = hurt.graph.edges["r0/gpu0", "r0/nvs"]
    assert edge["lanes"] == 9 and edge["bandwidth"] == pytest.approx(topo.graph.edges["r0/gpu0", "r0/nvs"]["bandwidth"] / 2)


def test_original_topology_untouched(rack):
    before = rack.graph.number_of_edges()
    apply_faults(rack, [parse_fault("r0/tray0")])
    assert rack.graph.number_of_edges() == before


@pytest.fixture(scope="module")
def rails():
    return build("dgx-h100-ib", gpus=64)


def test_failed_spine_reroutes(rails):
    """Losing a spine leaves other equal-cost spines: the all-reduce runs and nothing crosses spine0."""
    hurt = apply_faults(rails, [parse_fault("spine0")])
    assert not any("spine0" in (u, v) for u, v in hurt.graph.edges)
    res = AllreduceRunner(hurt).run(2**26, "ring")
    assert res.time > 0


def test_failed_leaf_reports_the_cut(rails):
    """A rail-optimised leaf is the only switch of its NICs: the GPUs behind it are cut off, and said so."""
    with pytest.raises(InfeasibleError, match=r"leaf0 failed cuts the group apart: 8 of 64 GPUs \(n0/gpu0"):
        apply_faults(rails, [parse_fault("leaf0")])
    # a job that does not use those GPUs still runs: its traffic never needed leaf0
    ranks = [r for r, g in enumerate(rails.gpus) if not g.endswith("/gpu0")]
    hurt = apply_faults(rails, [parse_fault("leaf0")], ranks=ranks)
    assert AllreduceRunner(hurt).run(2**24, "ring", ranks=ranks).time > 0


def test_cut_within_a_domain_is_named():
    topo = build("dgx-h100")
    with pytest.raises(InfeasibleError, match="r?n0/gpu3"):
        apply_faults(topo, [parse_fault("n0/gpu3:nvlink=0", degrade=True)])


# --- timed faults -------------------------------------------------------------------------------------------
def _send(sim, nbytes=10**9):
    def body():
        yield sim.fabric.transfer("a", "b", nbytes)
    return sim.process(body())


def _two_paths():
    """a and b joined through switch s1 (fast) or s2 (slow): shortest routes tie, ECMP picks one."""
    return from_edges(["a", "b"], ["s1", "s2"], [("a", "s1", 1e9, 0.0), ("s1", "b", 1e9, 0.0),
                                                ("a", "s2", 1e9, 0.0), ("s2", "b", 1e9, 0.0)])


def test_timed_degrade_slows_the_rest_of_the_transfer():
    """1 GB at 2 GB/s (two paths); at 0.25 s both paths fall to half: 0.5 GB left at 1 GB/s -> 0.75 s."""
    topo = _two_paths()
    sim = Simulation(topo, cache=False)
    links = [(u, v) for u, v in topo.graph.edges]
    sim.at(0.25, set_capacity(links, 0.5), "degrade")
    _send(sim)
    assert sim.run().time == pytest.approx(0.75)


def test_timed_failure_reroutes_in_flight_bytes():
    """At 0.25 s the path through s1 fails: its bytes left move to s2, which then carries both halves."""
    topo = _two_paths()
    sim = Simulation(topo, cache=False)
    sim.at(0.25, set_capacity([("a", "s1"), ("s1", "a")], 0.0), "fail s1")
    _send(sim)
    res = sim.run()
    # 0.25 s at 2 GB/s = 0.5 GB; the other 0.5 GB over one 1 GB/s path: 0.75 s
    assert res.time == pytest.approx(0.75)
    carried = dict(zip(res.link_names, res.link_bytes))
    assert carried["s1->b"] == pytest.approx(0.25e9) and carried["s2->b"] == pytest.approx(0.75e9)


def test_timed_cut_fails_with_the_fault_named():
    topo = from_edges(["a", "b"], ["s"], [("a", "s", 1e9, 0.0), ("s", "b", 1e9, 0.0)])
    sim = Simulation(topo, cache=False)
    sim.at(0.1, set_capacity([("s", "b")], 0.0), "s->b down")
    _send(sim)
    with pytest.raises(InfeasibleError, match="s->b down .* leaves no route"):
        sim.run()


def test_pending_fault_does_not_lengthen_a_run():
    topo = _two_paths()
    sim = Simulation(topo)
    sim.at(5.0, set_capacity([("a", "s1")], 0.0))
    _send(sim)
    assert sim.run().time == pytest.approx(0.5)


@pytest.fixture(scope="module")
def racks8():
    """576 GB200 GPUs (8 NVL72 racks, one link per switch chip) and their healthy 1 GiB hierarchical time."""
    topo = build("gb200-nvl72-ib", gpus=576, planes="per-chip")
    return topo, AllreduceRunner(topo).run(2**30, "hierarchical").time


def test_timed_tray_failure_on_576_gpus_shows_in_trace(tmp_path, racks8):
    """A tray of rack 0 fails halfway through a 1 GiB all-reduce on 576 GPUs: the trace marks the instant,
    and the collective completes later than without the fault (but no later than with the tray gone from
    the start). Half way, the hierarchical all-reduce is in its inter-rack ring, which crosses no tray:
    nothing in flight slows down, the all-gather inside the racks that follows does."""
    topo, base = racks8
    t_fault = base / 2
    timed = apply_faults(topo, [parse_fault(f"{t_fault}s:r0/tray3")])
    path = tmp_path / "fault.json"
    hurt = AllreduceRunner(timed).run(2**30, "hierarchical", trace=str(path)).time
    static = AllreduceRunner(apply_faults(topo, [parse_fault("r0/tray3")])).run(2**30, "hierarchical").time
    assert base < hurt < static
    events = json.loads(path.read_text())["traceEvents"]
    marks = [e for e in events if e.get("cat") == "fault"]
    assert len(marks) == 1 and marks[0]["ts"] == pytest.approx(t_fault * 1e6)
    assert "r0/tray3" in marks[0]["name"]
    assert np.isfinite(hurt)


def test_timed_tray_failure_changes_link_rates_at_that_instant(tmp_path, racks8):
    """The tray fails a quarter of the way through, during the reduce-scatter inside the racks: at that
    instant the trace's link counters change (the tray's links drop to zero and stay there), the traced
    run takes exactly as long as the untraced one, and every drawn counter integrates to the bytes its
    link carried (a launch served from the round cache and taken back into the fluid model at the fault
    leaves no stale sample behind)."""
    from fabricsim.collectives.select import allreduce

    topo, base = racks8
    t_fault = base / 4
    timed = apply_faults(topo, [parse_fault(f"{t_fault}s:r0/tray3")])
    runner = AllreduceRunner(timed)
    untraced = runner.run(2**30, "hierarchical").time
    path = tmp_path / "fault.json"
    sim = runner.simulation(trace=str(path))
    proc = allreduce(sim, 2**30, algorithm="hierarchical", calibration=runner.calibration, memo=runner.memo)
    res = sim.run()
    sim.write_trace(path)
    assert proc.value.time == pytest.approx(untraced, rel=1e-12)  # float rounding: see the round cache
    assert base < untraced
    counters: dict = {}
    for e in json.loads(path.read_text())["traceEvents"]:
        if e["ph"] == "C":
            counters.setdefault(e["name"], []).append((e["ts"], e["args"]["utilisation"]))
    at_fault = [name for name, s in counters.items() if any(ts == pytest.approx(t_fault * 1e6) for ts, _ in s)]
    tray = {f"r0/nvs{c}" for c in (6, 7)}
    on_tray = [name for name in at_fault if tray & set(name.split("->"))]
    # the tray's links drop to zero; the 16 other planes were already full, so their load stays (each flow
    # on them gets a smaller share instead)
    assert len(on_tray) == 2 * 2 * 72 and set(at_fault) == set(on_tray)
    for name in on_tray:
        assert all(u == 0 for ts, u in counters[name] if ts >= t_fault * 1e6 * (1 - 1e-12))
    cap = dict(zip(res.link_names, res.link_bandwidth))
    carried = dict(zip(res.link_names, res.link_bytes))
    for name, s in counters.items():
        s.sort(key=lambda x: x[0])
        integral = sum(u * cap[name] * (t1 - t0) / 1e6 for (t0, u), (t1, _) in zip(s, s[1:]))
        assert integral == pytest.approx(carried[name], rel=1e-4), name


@pytest.mark.parametrize("topology, gpu", [("gb200-nvl72", "r0/gpu{}"), ("dgx-h100", "n0/gpu{}")])
def test_added_latency_slows_a_ring_alike_whichever_gpu_it_strikes(topology, gpu):
    """A ring step waits for its slowest hop, so +1 ms on any one GPU's links costs every step that
    millisecond; the rings' wire latency used to be read from one hop per channel (the first), which a
    fault on another GPU never touched."""
    from fabricsim.collectives.nodes import nvlink_hops_alike

    healthy = build(topology)
    base = AllreduceRunner(healthy, protocol="ll").run(8, "ring")
    times = []
    for g in (0, 5, len(healthy.gpus) - 1):
        faulty = apply_faults(healthy, [parse_fault(gpu.format(g) + ":latency=+1ms")])
        assert not nvlink_hops_alike(Simulation(faulty).fabric)
        times.append(AllreduceRunner(faulty, protocol="ll").run(8, "ring").time)
    assert times[0] == times[1] == times[2]
    steps = 2 * (len(healthy.gpus) - 1)
    assert times[0] - base.time == pytest.approx(steps * 1e-3, rel=1e-6)


def test_a_two_tier_nvlink_domain_rings_pay_their_longest_hop():
    """On NVL576 a ring's hops inside a rack cross one switch chip and those between racks three: every
    hop is routed (not one per channel), so the rings' wire latency is the cross-rack hop's."""
    from fabricsim.collectives.base import GroupLayout
    from fabricsim.collectives.nodes import nvlink_hops_alike
    from fabricsim.collectives.ring import ring_orders, ring_wire_latency

    sim = Simulation(build("nvl576"))
    fabric = sim.fabric
    assert not nvlink_hops_alike(fabric) and nvlink_hops_alike(Simulation(build("gb200-nvl72")).fabric)
    layout = GroupLayout.of(fabric, None)
    order = np.array(ring_orders(layout, 1))
    rs = fabric.router.route_many(fabric.gpu_index[order[0]], fabric.gpu_index[np.roll(order[0], -1)],
                                  np.zeros(order.shape[1], dtype=np.int64))
    hop = np.zeros(order.shape[1])
    np.maximum.at(hop, rs.flow, rs.lat)
    assert hop.min() < hop.max()  # short and long hops both occur
    assert ring_wire_latency(fabric, [layout], 1)[0]["nvlink"] == hop.max()


@pytest.mark.parametrize("options, message", [
    ({"fail_at": ["-1ms:r0/tray3"]}, "--fail-at '-1ms:r0/tray3': cannot read time '-1ms'"),
    ({"fail_at": ["1ms:"]}, "--fail-at '1ms:' names no part after its time"),
    ({"fail_at": ["r0/tray3"]}, "--fail-at 'r0/tray3' has no time"),
    ({"degrade_at": ["-1ms:r0/gpu5:nvlink=0.5"]}, "--degrade-at '-1ms:r0/gpu5:nvlink=0.5': cannot read time"),
    ({"fail_at": ["1e999s:x"]}, "--fail-at '1e999s:x': time '1e999s' is out of range"),
    ({"fail_at": ["1:leaf3"]}, "--fail-at '1:leaf3': write its time as a number and a unit"),
    ({"fail_at": ["1.5E-3s:leaf3"]}, "--fail-at '1.5E-3s:leaf3': write its time as a number and a unit"),
    ({"fail_at": ["1ms:r0/tray3:0.5"]}, "--fail-at '1ms:r0/tray3:0.5' takes no share; use --degrade-at '1ms:r0/tray3:0.5'"),
    ({"degrade_at": ["1ms:r0/tray3"]}, "--degrade-at '1ms:r0/tray3' needs a share"),
    ({"fail": ["1ms:r0/tray3"]}, "--fail '1ms:r0/tray3' has a time"),
    ({"degrade_at": ["1ms:r0/gpu5:latency=+1us"]}, "a timed fault changes bandwidth, not latency"),
])
def test_timed_fault_options_name_themselves_and_the_problem(options, message):
    """Each part of TIME:SPEC is checked on its own; the message quotes the option and the whole spec (a
    negative time used to be read as a target and called a share, and '1ms:' as having no time)."""
    with pytest.raises(ConfigError) as info:
        parse_faults(**options)
    assert message in str(info.value)


def test_timed_fault_options_parse():
    assert parse_faults(fail_at=["2ms:r0/tray3"]) == [Fault("r0/tray3", time=2e-3)]
    assert parse_faults(fail_at=["2 ms@r0/tray3", "1.5e-3s:leaf3"]) == [Fault("r0/tray3", time=2e-3),
                                                                      Fault("leaf3", time=1.5e-3)]
    assert parse_faults(degrade_at=["1ms:r0/gpu5:nvlink=0.5", "0s:leaf3:0.25"]) == [
        Fault("r0/gpu5", 0.5, "nvlink", time=1e-3), Fault("leaf3", 0.25, time=0.0)]
