import pytest
from hypothesis import given, strategies as st

from fabricsim.errors import ConfigError
from fabricsim.units import GiB, format_size, format_time, parse_rate, parse_size, parse_time


@pytest.mark.parametrize("text, expected", [
    ("4096", 4096), ("1GiB", GiB), ("512MB", 512_000_000), ("8G", 8 * GiB), ("1 MiB", 2**20), (64, 64),
])
def test_parse_size_accepts_binary_and_decimal(text, expected):
    assert parse_size(text) == expected


@pytest.mark.parametrize("bad", ["0", "-5", "1.5", "12 parsecs", "", "GiB", True])
def test_parse_size_refuses_bad_input(bad):
    with pytest.raises(ConfigError):
        parse_size(bad)


def test_rates_are_bytes_per_second_one_way():
    assert parse_rate("900 GB/s") == 900e9
    assert parse_rate("400 Gbit/s") == 50e9
    assert parse_rate("400Gbps") == 50e9
    with pytest.raises(ConfigError):
        parse_rate("0 GB/s")
    with pytest.raises(ConfigError):
        parse_rate("5 furlongs")


def test_parse_time():
    assert parse_time("12.5us") == pytest.approx(12.5e-6)
    assert parse_time("3ms") == pytest.approx(3e-3)
    assert parse_time(2) == 2.0
    with pytest.raises(ConfigError):
        parse_time("-1s")


@given(st.integers(min_value=1, max_value=2**50))
def test_format_size_round_trips_whole_units(n):
    text = format_size(n)
    if "." not in text:
        assert parse_size(text.replace(" ", "")) == n


def test_format_time_picks_readable_unit():
    assert format_time(12.5e-6) == "12.5 us"
    assert format_time(0.0315) == "31.5 ms"
