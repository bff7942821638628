"""Parallel layouts: validation, Megatron-Core rank order, every refusal."""

import pytest
from hypothesis import given, settings, strategies as st

from fabricsim.errors import ConfigError, InfeasibleError
from fabricsim.topologies.io import build
from fabricsim.training.layout import Layout, rank_groups


def test_defaults_and_gpus():
    lay = Layout(tp=8, pp=16, dp=64)
    assert lay.gpus == 8192 and lay.sequence_parallel and lay.order == "tp-cp-dp-pp"
    assert Layout().sequence_parallel is False
    assert Layout(tp=4, sequence_parallel=False).sequence_parallel is False
    assert Layout.for_gpus(64, tp=8, pp=2).dp == 4


@pytest.mark.parametrize("kwargs, match", [
    (dict(tp=0), "--tp must be a positive integer"),
    (dict(zero=4), "--zero must be 0, 1, 2 or 3"),
    (dict(recompute="half"), "--recompute must be one of none, selective, full"),
    (dict(dp=6, ep=4), "--ep 4 must divide dp x cp"),
    (dict(virtual_stages=2), "needs pipeline parallelism"),
    (dict(order="tp-dp-pp"), "order must list tp, cp, dp and pp"),
])
def test_refusals(kwargs, match):
    with pytest.raises(ConfigError, match=match):
        Layout(**kwargs)


def test_gpu_count_and_layers_refused():
    with pytest.raises(InfeasibleError, match="does not divide 100 GPUs"):
        Layout.for_gpus(100, tp=8)
    with pytest.raises(InfeasibleError, match="does not match the 16 GPUs"):
        rank_groups(build("dgx-h100-ib", gpus=16), Layout(tp=8, dp=4))
    with pytest.raises(InfeasibleError, match="more than the model's 4 layers"):
        Layout(pp=8).check_model(4)
    with pytest.raises(InfeasibleError, match="virtual stages 2 = 8"):
        Layout(pp=4, virtual_stages=2).check_model(5)
    Layout(pp=4, virtual_stages=2).check_model(6)  # the two end chunks may hold no block (Llama 3's split)
    with pytest.raises(InfeasibleError, match="more than the model's 6 layers"):
        Layout(pp=8).check_model(6)  # without interleaving every stage needs a block


def test_expert_parallelism_must_split_the_models_experts():
    with pytest.raises(ConfigError, match="--ep 2: the model has no experts"):
        Layout(dp=4, ep=2).check_model(32)  # a dense model: it used to change the step's groups and time
    with pytest.raises(ConfigError, match="--ep 4 must divide the model's 6 experts"):
        Layout(dp=8, ep=4).check_model(32, experts=6)
    Layout(dp=8, ep=4).check_model(32, experts=8)
    Layout(dp=8).check_model(32)  # no expert parallelism, no experts: nothing to check


def test_tp_crossing_a_domain_refused():
    with pytest.raises(InfeasibleError, match="crosses an NVLink domain"):
        rank_groups(build("gb200-nvl72-ib", gpus=576), Layout(tp=16, dp=36))
    with pytest.raises(InfeasibleError, match="larger than the NVLink domain"):
        rank_groups(build("dgx-h100-ib", gpus=16), Layout(tp=16))
    # a different order puts TP strided: refused as crossing domains
    with pytest.raises(InfeasibleError, match="crosses"):
        rank_groups(build("dgx-h100-ib", gpus=16), Layout(tp=2, dp=8, order="dp-tp-cp-pp"))


def test_megatron_order():
    g = rank_groups(build("dgx-h100-ib", gpus=16), Layout(tp=2, cp=2, pp=2, dp=2, ep=4))
    assert g.tp[:2] == [[0, 1], [2, 3]]
    assert g.cp[0] == [0, 2] and g.dp[0] == [0, 4] and g.pp[0] == [0, 8]
    assert g.ep[0] == [0, 2, 4, 6]  # carved out of cp x dp, cp fastest
    assert g.stage_ranks == [list(range(8)), list(range(8, 16))]
    assert g.coords[13] == (1, 0, 1, 1)
    h = rank_groups(build("dgx-h100-ib", gpus=16), Layout(tp=2, cp=2, pp=2, dp=2, order="tp-dp-cp-pp"))
    assert h.dp[0] == [0, 2] and h.cp[0] == [0, 4]


@settings(max_examples=40, deadline=None)
@given(st.sampled_from([1, 2, 4]), st.sampled_from([1, 2]), st.sampled_from([1, 2, 4]),
       st.permutations(["cp", "dp", "pp"]))
def test_groups_partition_ranks(tp, cp, pp, rest):
    topo = build("dgx-h100-ib", gpus=32)
    lay = Layout.for_gpus(32, tp=tp, cp=cp, pp=pp, order="-".join(["tp", *rest]))
    g = rank_groups(topo, lay)
    for kind, size in (("tp", tp), ("cp", cp), ("dp", lay.dp), ("pp", pp), ("ep", 1)):
        groups = getattr(g, kind)
        assert all(len(x) == size for x in groups)
        assert sorted(r for x in groups for r in x) == list(range(32))
    for group in g.tp:  # TP stays inside one 8-GPU node
        assert len({r // 8 for r in group}) == 1
