"""NVLS at scale (issue 10): fan-in cost, NCCL's pipeline stage, NVLS tree across islands, two-GPU refusal."""

import math

import pytest
from hypothesis import given, settings, strategies as st

from fabricsim.collectives import CALIBRATED, IDEAL, AllreduceRunner, available_algorithms
from fabricsim.collectives.base import GroupLayout
from fabricsim.collectives.protocol import (LINK_EFFICIENCY, NVLS_CHUNK, NVLS_FANIN, Calibration, nvls_channels,
                                            nvls_chunk, nvls_stage_bytes)
from fabricsim.errors import InfeasibleError
from fabricsim.topologies.io import build

GiB = 2**30


@given(fanin=st.integers(0, 1024))
def test_fanin_factor_is_one_without_fanin_and_grows_with_the_group(fanin):
    cal = CALIBRATED
    assert IDEAL.nvls_factor("nvlink5", fanin) == 1.0
    f = cal.nvls_factor("nvlink5", fanin)
    base = cal.nvls_factor("nvlink5", 0)
    if fanin <= 1:
        assert f == base
    else:
        assert f == pytest.approx(base * (1 + NVLS_FANIN["nvlink5"] * math.log2(fanin) / (1 + 1 / fanin)))
        assert cal.nvls_factor("nvlink5", fanin + 1) >= f


def test_stage_bytes_are_ncclS_loop():
    # NCCL src/transport/nvls.cc: 16 CTAs on Hopper, 24 on Blackwell in one NVLink domain, 32 across nodes;
    # 128 KiB per head and step
    assert nvls_stage_bytes("nvlink4", 8) == 16 * 2**20
    assert nvls_stage_bytes("nvlink5", 8) == 24 * 2**20
    assert nvls_stage_bytes("nvlink5", 72) == 216 * 2**20
    assert nvls_channels("nvlink5", multi_node=True) == 32


def test_nvls_tree_chunk_follows_nccl_rules():
    # NCCL src/enqueue.cc: NVLSTree chunks shrink from 512 KiB as the message gets smaller
    racks = 32 * 72  # two NVL72 racks: 32 channels x 72 heads
    assert nvls_chunk(512 * 2**20, racks, tree=True) == 64 * 2**10
    assert nvls_chunk(GiB, racks, tree=True) == 64 * 2**10
    assert nvls_chunk(4 * GiB, racks, tree=True) == 128 * 2**10
    assert nvls_chunk(16 * GiB, racks, tree=True) == 256 * 2**10
    assert nvls_chunk(4 * GiB, 16 * 8, tree=True) == 512 * 2**10  # DGX H100 nodes: 16 channels x 8 heads
    assert nvls_chunk(4 * GiB, racks) == NVLS_CHUNK  # one island keeps 128 KiB (see protocol.py)
    assert nvls_stage_bytes("nvlink5", 72, multi_node=True, nbytes=GiB, tree=True) == racks * 64 * 2**10


@given(a=st.integers(1, 64 * GiB), b=st.integers(1, 64 * GiB), ops=st.integers(1, 4096))
def test_nvls_tree_chunk_never_shrinks_for_a_larger_message(a, b, ops):
    lo, hi = sorted((a, b))
    assert 32 * 2**10 <= nvls_chunk(lo, ops, tree=True) <= nvls_chunk(hi, ops, tree=True) <= 512 * 2**10


def test_nvls_closed_form_on_one_island_with_ideal_calibration():
    """T = a + N (1 + 1/p) / B + one stage of fill: the run sits between the steady-state form and it plus
    a stage (both phases of one stage in turn)."""
    topo = build("dgx-b200")
    res = AllreduceRunner(topo, calibration=IDEAL).run(8 * GiB, "nvls")
    B, p, N = 900e9, 8, 8 * GiB
    steady = N * (1 + 1 / p) / B
    stage = nvls_stage_bytes("nvlink5", p)
    assert steady < res.time <= steady + 25e-6 + stage / B * 1.01


def test_full_nvl72_stays_near_the_8_gpu_figure():
    """The fan-in cost keeps 72 GPUs near 8 (issue 10); a link-traffic-only model grows 2(p-1)/(p+1)."""
    big = AllreduceRunner(build("gb200-nvl72")).run(8 * GiB, "nvls").busbw
    small = AllreduceRunner(build("dgx-b200")).run(8 * GiB, "nvls").busbw
    link_only = Calibration(LINK_EFFICIENCY, CALIBRATED.nvls_efficiency, {})
    naive = AllreduceRunner(build("gb200-nvl72"), calibration=link_only).run(8 * GiB, "nvls").busbw
    assert 0.9 < big / small < 1.05
    assert naive > big * 1.15


def test_two_racks_with_an_nvls_tree_reach_nearly_one_rack():
    one = AllreduceRunner(build("gb200-nvl72")).run(16 * GiB, "nvls")
    two = AllreduceRunner(build("gb200-nvl72-ib", gpus=144)).run(16 * GiB, "nvls")
    assert two.algorithm == "nvls-tree"
    assert 0.9 < two.busbw / one.busbw < 1.05


@settings(max_examples=6, deadline=None)
@given(nodes=st.integers(2, 6), nbytes=st.integers(2**20, 2**31))
def test_nvls_tree_never_beats_the_in_network_bound_of_its_islands(nodes, nbytes):
    topo = build("dgx-h100-ib", gpus=8 * nodes)
    res = AllreduceRunner(topo, calibration=IDEAL).run(nbytes, "nvls")
    assert res.time >= nbytes / 450e9  # each GPU sends and receives N once over its NVLink ports


def test_nvls_tree_network_share_halves_beyond_two_islands():
    """Across more than two islands an inner tree node forwards to two children: NIC traffic 2N/m, so 64 H100
    reach the tree's network bound 2 x 63/64 x 4 NICs x 48.5 GB/s (CoreWeave rows)."""
    res = AllreduceRunner(build("dgx-h100-ib", gpus=64)).run(8 * GiB, "nvls")
    bound = 2 * 63 / 64 * 4 * 48.5e9
    assert res.busbw <= bound * 1.001 and res.busbw > bound * 0.95


def test_nvls_needs_more_than_two_gpus_in_an_island():
    runner = AllreduceRunner(build("dgx-h100", gpus=2))
    layout = GroupLayout.of(runner.simulation().fabric, None)
    assert "nvls" not in available_algorithms(runner.simulation().fabric, layout)
    with pytest.raises(InfeasibleError, match="more than two GPUs"):
        runner.run(2**20, "nvls")
    assert "nvls" in available_algorithms(AllreduceRunner(build("dgx-h100", gpus=3)).simulation().fabric,
                                          GroupLayout.of(AllreduceRunner(build("dgx-h100", gpus=3))
                                                         .simulation().fabric, None))


def test_multi_node_nvls_share_is_hopper_only_and_round_trips():
    from fabricsim.collectives.calibration_file import dumps, loads
    from fabricsim.collectives.protocol import NVLS_NETWORK_EFFICIENCY

    one = CALIBRATED.nvls_factor("nvlink4", 8)
    assert CALIBRATED.nvls_factor("nvlink4", 8, network=True) == pytest.approx(one / NVLS_NETWORK_EFFICIENCY["nvlink4"])
    assert CALIBRATED.nvls_factor("nvlink5", 72, network=True) == CALIBRATED.nvls_factor("nvlink5", 72)
    assert IDEAL.nvls_factor("nvlink4", 8, network=True) == 1.0
    assert loads(dumps(CALIBRATED)).nvls_network == CALIBRATED.nvls_network


def test_hopper_nvls_tree_is_slower_by_the_multi_node_share_and_one_node_is_not():
    """Two DGX H100 nodes are NVLS-bound (the network carries N/8 per GPU): busbw scales by the share;
    one node (the one-node kernel) does not move."""
    two = build("dgx-h100-ib", gpus=16, sharp=False)
    share = CALIBRATED.nvls_network["nvlink4"]
    without = Calibration(CALIBRATED.link_efficiency, CALIBRATED.nvls_efficiency, CALIBRATED.nvls_fanin)
    a = AllreduceRunner(two, calibration=CALIBRATED).run(8 * GiB, "nvls").busbw
    b = AllreduceRunner(two, calibration=without).run(8 * GiB, "nvls").busbw
    assert a / b == pytest.approx(share, rel=0.02)
    one = build("dgx-h100")
    assert AllreduceRunner(one, calibration=CALIBRATED).run(8 * GiB, "nvls").busbw == pytest.approx(
        AllreduceRunner(one, calibration=without).run(8 * GiB, "nvls").busbw)
