"""Network kinds (issue 10): InfiniBand, RoCE and a cloud fabric differ in NIC and switch latency."""

import pytest

from fabricsim.collectives import AllreduceRunner
from fabricsim.errors import ConfigError
from fabricsim.hardware import NETWORK_KINDS
from fabricsim.topologies.io import build
from fabricsim.topologies.scaleout import scale_out


def small_time(**options):
    return AllreduceRunner(build("dgx-h100-ib", gpus=16, **options)).run(8, "ring").time


def test_default_kind_follows_the_nic_and_keeps_infiniband_latencies():
    t = build("dgx-h100-ib", gpus=16)
    assert t.meta["network_kind"] == "ib"
    assert t.meta["nic_latency"] == NETWORK_KINDS["ib"].nic_latency
    assert t.meta["switch_latency"] == NETWORK_KINDS["ib"].switch_latency


def test_small_messages_across_nodes_slow_down_with_the_fabrics_latency():
    ib, roce, cloud = (small_time(network_kind=k) for k in ("ib", "roce", "cloud"))
    assert ib < roce < cloud
    slow = small_time(network_kind="cloud", net_latency=20e-6)
    # a ring crosses the network 2 (d-1) = 2 times; each crossing pays two NIC traversals more
    assert slow - cloud == pytest.approx(2 * 2 * (20e-6 - NETWORK_KINDS["cloud"].nic_latency), rel=0.05)


def test_latency_does_not_change_large_message_bandwidth():
    a = AllreduceRunner(build("dgx-h100-ib", gpus=16)).run(2**34, "ring").time
    b = AllreduceRunner(build("dgx-h100-ib", gpus=16, network_kind="cloud")).run(2**34, "ring").time
    assert b == pytest.approx(a, rel=0.01)


@pytest.mark.parametrize("options", [{"network_kind": "carrier-pigeon"}, {"net_latency": -1e-6},
                                     {"net_latency": 1.0}, {"net_latency": "fast"}])
def test_bad_network_options_are_refused(options):
    with pytest.raises(ConfigError):
        scale_out("dgx-h100", gpus=16, **options)
