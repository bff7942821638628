"""The shared click parameter types refuse what cannot run and read units one way."""

import math

import click
import pytest
from click.testing import CliRunner

from fabricsim.cli.params import CHANNELS, FLOPS, MFU, RATE, SIZE, STEP_FACTOR, IntList, SizeList


@click.command()
@click.option("--size", type=SIZE)
@click.option("--rate", type=RATE)
@click.option("--factor", type=STEP_FACTOR)
@click.option("--mfu", type=MFU)
@click.option("--channels", type=CHANNELS)
@click.option("--flops", type=FLOPS)
@click.option("--sizes", type=SizeList())
@click.option("--gpus", type=IntList())
def probe(**kwargs):
    click.echo(repr(sorted((k, v) for k, v in kwargs.items() if v is not None)))


def run(*args):
    return CliRunner().invoke(probe, list(args))


@pytest.mark.parametrize("args, expected", [
    (("--size", "1GiB"), ("size", 2**30)),
    (("--size", "8G"), ("size", 8 * 2**30)),
    (("--rate", "400 Gb/s"), ("rate", 50e9)),
    (("--rate", "400 Gbit/s"), ("rate", 50e9)),
    (("--rate", "400 GB/s"), ("rate", 400e9)),
    (("--factor", "2"), ("factor", 2.0)),
    (("--mfu", "0.45"), ("mfu", 0.45)),
    (("--flops", "2250 TFLOPS"), ("flops", 2.25e15)),
    (("--sizes", "1M,16M"), ("sizes", (2**20, 2**24))),
    (("--gpus", "8,72"), ("gpus", (8, 72))),
])
def test_good_values_convert(args, expected):
    result = run(*args)
    assert result.exit_code == 0, result.output
    assert repr([expected]) in result.output


@pytest.mark.parametrize("args", [
    ("--size", "0"), ("--size", "1Gb"), ("--size", "1e400"), ("--size", "2PiB"),
    ("--rate", "1e-300 B/s"), ("--rate", "1e308 B/s"), ("--rate", "400 gb/s"),
    ("--factor", "1"), ("--factor", "inf"), ("--factor", "nan"), ("--factor", "1e300"),
    ("--mfu", "1e-300"), ("--mfu", "1.5"), ("--mfu", "nan"),
    ("--channels", "0"), ("--channels", "1000000"),
    ("--flops", "0"), ("--flops", "1e300"),
    ("--sizes", ""), ("--sizes", "1M,,2M"), ("--gpus", ""), ("--gpus", "8,x"), ("--gpus", "0"),
])
def test_bad_values_exit_2_naming_the_option(args):
    result = run(*args)
    assert result.exit_code == 2
    assert args[0] in result.output
    assert "Traceback" not in result.output


def test_step_factor_bound_is_finite():
    assert math.isfinite(STEP_FACTOR.maximum)


def test_channel_bound_matches_the_library():
    from fabricsim.cli.params import MAX_CHANNELS_OPTION
    from fabricsim.collectives.select import MAX_RUN_CHANNELS

    assert CHANNELS.max == MAX_CHANNELS_OPTION == MAX_RUN_CHANNELS
