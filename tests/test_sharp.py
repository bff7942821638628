"""SHARP: reduction at every switch of an aggregation tree, offered only where the switches declare it."""

import pytest

from fabricsim.collectives import AllreduceRunner, available_algorithms
from fabricsim.collectives.base import GroupLayout
from fabricsim.collectives.sharp import aggregation_tree, sharp_capable
from fabricsim.errors import ConfigError, InfeasibleError
from fabricsim.hardware import ETH_400G, IB_XDR, QUANTUM_X800, SPECTRUM_X800
from fabricsim.topologies.io import build


def test_sharp_busbw_does_not_collapse_when_rails_span_several_leaves():
    # was 526.2 GB/s at 144 GPUs and 24.2 at 576 (32 unreduced flows on one leaf uplink)
    small, large = (AllreduceRunner(build("dgx-h100-ib", gpus=g)).run(2**30, "sharp").busbw for g in (144, 576))
    assert large >= 0.95 * small


@pytest.mark.parametrize("name", ["dgx-h100-ib", "gb200-nvl72-ib"])
@pytest.mark.parametrize("nbytes", [25 * 2**20, 2**30])
def test_xdr_is_never_slower_than_ndr(name, nbytes):
    # a 288-GPU data-parallel group at 25 MiB took 151.0 us on NDR and 181.1 us on XDR
    ndr = AllreduceRunner(build(name, gpus=288)).run(nbytes, "sharp").time
    xdr = AllreduceRunner(build(name, gpus=288, nic=IB_XDR, switch=QUANTUM_X800)).run(nbytes, "sharp").time
    assert xdr <= ndr * (1 + 1e-9)


def test_every_switch_forwards_one_stream_per_shard():
    runner = AllreduceRunner(build("dgx-h100-ib", gpus=576))
    sim = runner.simulation()
    from fabricsim.collectives.sharp import sharp_allreduce
    from fabricsim.collectives.protocol import CALIBRATED, PROTOCOLS

    layout = GroupLayout.of(sim.fabric, None)
    sched = sharp_allreduce(sim.fabric, layout, 2**24, PROTOCOLS["simple"], CALIBRATED)
    steps = list(sched.steps)
    src, dst, _, _ = steps[1].arrays()  # the network phase of chunk 0 (with NVLS of chunk 1)
    kind = sim.fabric.topology.graph.nodes
    names = sim.fabric.links.nodes
    from collections import Counter

    between_switches = Counter((int(u), int(v)) for u, v in zip(src, dst)
                               if kind[names[u]].get("kind") == "switch" and kind[names[v]].get("kind") == "switch")
    assert between_switches and max(between_switches.values()) == 1  # one stream per link and direction


def test_aggregation_tree_is_a_tree_reaching_the_root():
    sim = AllreduceRunner(build("dgx-h100-ib", gpus=576)).simulation()
    f = sim.fabric
    leaves = sorted({v for v in range(len(f.links.nodes)) if f.topology.graph.nodes[f.links.nodes[v]].get("role") == "leaf"})
    root = next(v for v in range(len(f.links.nodes)) if f.topology.graph.nodes[f.links.nodes[v]].get("role") == "spine")
    parent = aggregation_tree(f, leaves[:5], root, key=3)
    for leaf in leaves[:5]:
        v, hops = leaf, 0
        while parent[v] != -1:
            v, hops = parent[v], hops + 1
            assert hops < 10
        assert v == root


def test_sharp_only_where_the_switches_declare_it():
    with_sharp = build("dgx-h100-ib", gpus=16)
    without = build("dgx-h100-ib", gpus=16, sharp=False)
    assert all(d.get("sharp") is True for _, d in with_sharp.graph.nodes(data=True) if d.get("kind") == "switch")
    for topo, offered in ((with_sharp, True), (without, False)):
        runner = AllreduceRunner(topo)
        sim = runner.simulation()
        assert sharp_capable(sim.fabric) is offered
        assert ("sharp" in available_algorithms(sim.fabric, GroupLayout.of(sim.fabric, None))) is offered
    with pytest.raises(InfeasibleError, match="SHARP-capable"):
        AllreduceRunner(without).run(2**20, "sharp")
    assert AllreduceRunner(without).run(2**30, "auto").algorithm != "sharp"
    # Ethernet switches have no SHARP: not by default, refused when asked
    eth = build("dgx-h100-ib", gpus=16, nic=ETH_400G, switch=SPECTRUM_X800)
    assert not any(d.get("sharp") for _, d in eth.graph.nodes(data=True))
    with pytest.raises(ConfigError, match="SHARP"):
        build("dgx-h100-ib", gpus=16, nic=ETH_400G, switch=SPECTRUM_X800, sharp=True)
