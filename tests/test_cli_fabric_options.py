"""Every command that builds a preset takes the same fabric options, and they reach the builder."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from fabricsim.cli.main import cli

COMMANDS = [
    ["allreduce", "--topology", "dgx-h100-ib", "-g", "16", "-b", "1M", "-e", "1M", "--quiet"],
    ["alltoall", "--topology", "dgx-h100-ib", "-g", "16", "-b", "1M", "-e", "1M", "--quiet"],
    ["step", "--topology", "dgx-h100-ib", "--gpus", "16", "--model", "llama3-8b", "--buckets", "0",
     "--no-memory-check"],
    ["sweep", "--topology", "dgx-h100-ib", "--sizes", "16", "--no-plots", "--out", "{tmp}"],
    ["topology", "info", "dgx-h100-ib", "--gpus", "16"],
]


def run(args):
    return CliRunner().invoke(cli, args)


@pytest.mark.parametrize("base", COMMANDS, ids=lambda c: c[0])
def test_a_preset_refuses_an_option_it_does_not_take_in_one_line(base, tmp_path):
    args = [a.format(tmp=tmp_path / "out") if a != "dgx-h100-ib" else "dgx-h100" for a in base]
    args = [a if a != "16" else "8" for a in args]
    res = run(args + ["--adaptive-routing"])
    assert res.exit_code == 2, res.output
    assert res.output.strip().splitlines()[-1] == ("Error: preset dgx-h100 takes no option 'adaptive_routing' "
                                                   "(it takes: gpus)")


def test_options_reach_the_scale_out_builder():
    res = run(["topology", "info", "dgx-h100-ib", "--gpus", "16", "--nic", "ib-xdr", "--switch", "ib-xdr-switch",
               "--adaptive-routing", "--no-sharp"])
    assert res.exit_code == 0, res.output
    assert "NIC per GPU     100 GB/s each way" in res.output
    network = next(line for line in res.output.splitlines() if line.startswith("network "))
    assert "adaptive_routing True" in network and "sharp False" in network
    res = run(["topology", "info", "dgx-h100-ib", "--gpus", "16", "--network-kind", "roce", "--net-latency", "2us"])
    assert "NIC traversal 2 us" in res.output, res.output


def test_adaptive_routing_spreads_what_static_ecmp_collides():
    """On a plain fat tree a ring's cross-leaf hops go through spines: static ECMP hashes some onto the same
    spine port, adaptive routing spreads every flow over all of them (measured: 104 against 142 GB/s)."""
    def busbw(flag):
        res = run(["allreduce", "--topology", "dgx-h100-ib", "-g", "256", "-b", "256M", "-e", "256M", "--quiet",
                   "--algorithm", "ring", "--protocol", "simple", "--format", "csv", "--network", "fat-tree", flag])
        assert res.exit_code == 0, res.output
        header, row = res.output.strip().splitlines()[-2:]
        return float(dict(zip(header.split(","), row.split(",")))["busbw_GBps"])
    assert busbw("--adaptive-routing") > 1.2 * busbw("--static-routing")


@pytest.mark.parametrize("bad", [["--net-latency", "2s"], ["--net-latency", "-1us"], ["--switch", "nvswitch3"],
                                 ["--nic", "warp"], ["--sharp", "--switch", "eth-800g-switch"]])
def test_bad_fabric_options_exit_2_in_one_line(bad):
    res = run(["topology", "info", "dgx-h100-ib", "--gpus", "16"] + bad)
    assert res.exit_code == 2, res.output
    assert "Error" in res.output and "Traceback" not in res.output
