"""Parse and format sizes, rates and times.

Units are fixed project-wide: seconds, bytes, bytes per second per direction. Rates use decimal prefixes
as vendors quote them (1 GB/s = 1e9 B/s); message sizes accept both binary (KiB, MiB, GiB as nccl-tests
prints them) and decimal (KB, MB, GB) spellings. A bare number is bytes. ``K``, ``M``, ``G`` alone are
binary, as in nccl-tests' ``-b 8 -e 8G``.
"""

from __future__ import annotations

import re

from fabricsim.errors import ConfigError

__all__ = [
    "KiB", "MiB", "GiB", "TiB", "KB", "MB", "GB", "TB",
    "parse_size", "parse_rate", "parse_time",
    "format_size", "format_rate", "format_time",
]

KiB, MiB, GiB, TiB = 2**10, 2**20, 2**30, 2**40
KB, MB, GB, TB = 10**3, 10**6, 10**9, 10**12

_SIZE_UNITS = {
    "": 1, "b": 1,
    "k": KiB, "kib": KiB, "m": MiB, "mib": MiB, "g": GiB, "gib": GiB, "t": TiB, "tib": TiB,
    "kb": KB, "mb": MB, "gb": GB, "tb": TB,
}
_RATE_UNITS = {
    "b/s": 1, "kb/s": 1e3, "mb/s": 1e6, "gb/s": 1e9, "tb/s": 1e12,
    # bits per second, as NICs are quoted
    "bit/s": 1 / 8, "kbit/s": 1e3 / 8, "mbit/s": 1e6 / 8, "gbit/s": 1e9 / 8, "tbit/s": 1e12 / 8,
    "gbps": 1e9 / 8, "tbps": 1e12 / 8,
}
_TIME_DIVISORS = {"s": 1.0, "ms": 1e3, "us": 1e6, "µs": 1e6, "ns": 1e9}
_NUMBER = re.compile(r"^\s*([0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?)\s*([A-Za-zµ/]*)\s*$")


def _split(text: str, what: str) -> tuple[float, str]:
    match = _NUMBER.match(str(text))
    if not match:
        raise ConfigError(f"cannot read {what} {text!r}: expected a number and a unit, e.g. '1GiB'")
    return float(match.group(1)), match.group(2)


def parse_size(text: str | int) -> int:
    """Bytes from ``"4096"``, ``"512MB"``, ``"1GiB"`` or ``"8G"`` (binary); must be positive.

    >>> parse_size("1GiB"), parse_size("512MB"), parse_size("8G")
    (1073741824, 512000000, 8589934592)
    """
    if isinstance(text, int) and not isinstance(text, bool):
        value, unit = float(text), ""
    else:
        value, unit = _split(text, "size")
    factor = _SIZE_UNITS.get(unit.lower())
    if factor is None:
        raise ConfigError(f"unknown size unit {unit!r} in {text!r}; use B, KiB, MiB, GiB, KB, MB or GB")
    nbytes = value * factor
    if nbytes != int(nbytes):
        raise ConfigError(f"size {text!r} is not a whole number of bytes")
    if nbytes <= 0:
        raise ConfigError(f"size {text!r} must be positive")
    return int(nbytes)


def parse_rate(text: str | float) -> float:
    """Bytes per second from ``"900 GB/s"``, ``"400 Gbit/s"`` or ``"400Gbps"`` (bits); must be positive.

    >>> parse_rate("900 GB/s"), parse_rate("400 Gbit/s")
    (900000000000.0, 50000000000.0)
    """
    if isinstance(text, (int, float)) and not isinstance(text, bool):
        value, unit = float(text), "b/s"
    else:
        value, unit = _split(text, "rate")
    factor = _RATE_UNITS.get(unit.lower())
    if factor is None:
        raise ConfigError(f"unknown rate unit {unit!r} in {text!r}; use B/s, GB/s, TB/s or Gbit/s")
    if value <= 0:
        raise ConfigError(f"rate {text!r} must be positive")
    return value * factor


def parse_time(text: str | float) -> float:
    """Seconds from ``"12.5 us"``, ``"3ms"`` or a bare number of seconds; must be non-negative.

    >>> parse_time("12.5us")
    1.25e-05
    """
    if isinstance(text, (int, float)) and not isinstance(text, bool):
        value, unit = float(text), "s"
    else:
        value, unit = _split(text, "time")
        unit = unit or "s"
    divisor = _TIME_DIVISORS.get(unit)
    if divisor is None:
        raise ConfigError(f"unknown time unit {unit!r} in {text!r}; use s, ms, us or ns")
    if value < 0:
        raise ConfigError(f"time {text!r} must not be negative")
    return value / divisor


def format_size(nbytes: int) -> str:
    """Binary-prefixed size, as nccl-tests prints message sizes.

    >>> format_size(8), format_size(3 * 2**20), format_size(2**30)
    ('8 B', '3 MiB', '1 GiB')
    """
    for unit, factor in (("TiB", TiB), ("GiB", GiB), ("MiB", MiB), ("KiB", KiB)):
        if nbytes >= factor:
            value = nbytes / factor
            return f"{value:.0f} {unit}" if value == int(value) else f"{value:.2f} {unit}"
    return f"{nbytes} B"


def format_rate(bytes_per_s: float) -> str:
    """Decimal-prefixed rate, as vendors quote link bandwidth.

    >>> format_rate(9e11), format_rate(1.296e14)
    ('900 GB/s', '129.6 TB/s')
    """
    for unit, factor in (("TB/s", 1e12), ("GB/s", 1e9), ("MB/s", 1e6), ("KB/s", 1e3)):
        if bytes_per_s >= factor:
            return f"{bytes_per_s / factor:.4g} {unit}"
    return f"{bytes_per_s:.4g} B/s"


def format_time(seconds: float) -> str:
    """Time with the unit that keeps the number readable.

    >>> format_time(1.25e-05), format_time(0.0315)
    ('12.5 us', '31.5 ms')
    """
    for unit, factor in (("s", 1.0), ("ms", 1e-3), ("us", 1e-6)):
        if abs(seconds) >= factor:
            return f"{seconds / factor:.4g} {unit}"
    return f"{seconds / 1e-9:.4g} ns"
