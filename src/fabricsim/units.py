"""Parse and format sizes, rates and times.

Units are fixed project-wide: seconds, bytes, bytes per second per direction. Rates use decimal prefixes
as vendors quote them (1 GB/s = 1e9 B/s); message sizes accept both binary (KiB, MiB, GiB as nccl-tests
prints them) and decimal (KB, MB, GB) spellings. A bare number is bytes. ``K``, ``M``, ``G`` alone are
binary, as in nccl-tests' ``-b 8 -e 8G``.
"""

from __future__ import annotations

import math
import re

from fabricsim.errors import ConfigError

__all__ = [
    "KiB", "MiB", "GiB", "TiB", "KB", "MB", "GB", "TB",
    "MAX_BYTES", "MIN_RATE", "MAX_RATE", "MAX_IDEAL_RATE", "MAX_LATENCY",
    "parse_size", "parse_rate", "parse_flops", "parse_time",
    "format_size", "format_rate", "format_time",
]

KiB, MiB, GiB, TiB = 2**10, 2**20, 2**30, 2**40
KB, MB, GB, TB = 10**3, 10**6, 10**9, 10**12

#: Largest size ``parse_size`` accepts (1 PiB): far above any message or model, and exact in a float.
MAX_BYTES = 2**50
#: Physical range of one link's one-way bandwidth: 1 B/s to 1 PB/s (an NVL72 crossbar port is 9e11 B/s).
MIN_RATE, MAX_RATE = 1.0, 1e15
#: Fastest link a program may build to idealise "free" communication (files stay within MAX_RATE).
MAX_IDEAL_RATE = 1e30
#: Largest per-hop latency a fabric may carry (1 s; real hops are 1e-7 to 1e-5 s).
MAX_LATENCY = 1.0

# Size units are bytes, matched with case: B is a byte, b a bit (refused: a size in bits is a mistake).
# K, M, G, T alone are binary, as nccl-tests' -b/-e read them (k, m, g, t too).
_SIZE_UNITS = {
    "": 1, "B": 1,
    "K": KiB, "M": MiB, "G": GiB, "T": TiB, "k": KiB, "m": MiB, "g": GiB, "t": TiB,
    "KiB": KiB, "MiB": MiB, "GiB": GiB, "TiB": TiB,
    "KB": KB, "kB": KB, "MB": MB, "GB": GB, "TB": TB,
}
_DECIMAL = {"": 1.0, "k": 1e3, "K": 1e3, "M": 1e6, "G": 1e9, "T": 1e12, "P": 1e15}
_BINARY = {"Ki": 2.0**10, "Mi": 2.0**20, "Gi": 2.0**30, "Ti": 2.0**40, "Pi": 2.0**50}
# A rate unit: a prefix, then B/Byte (bytes) or b/bit (bits, 1/8 byte), then /s or ps: "GB/s", "Gb/s",
# "Gbit/s", "Gbps", "GiB/s". Case matters for B against b, and for M (mega) against m (milli, refused).
_RATE_UNIT = re.compile(r"^(?P<prefix>[kKMGTP]i?|)(?P<base>B|Byte|Bytes|byte|bytes|b|bit|bits)(?:/s|ps)$")
_RATE_HELP = "use B/s, GB/s, TB/s (bytes) or b/s, Gb/s, Gbit/s, Gbps (bits: 8 per byte)"
_FLOPS_UNIT = re.compile(r"^(?P<prefix>[kKMGTPE]?)(?:FLOPS|FLOP/s|flops|flop/s|FLOPs)$|^(?P<bare>[kKMGTPE]?)$")
_FLOPS_PREFIX = {"": 1.0, "k": 1e3, "K": 1e3, "M": 1e6, "G": 1e9, "T": 1e12, "P": 1e15, "E": 1e18}
_TIME_DIVISORS = {"s": 1.0, "ms": 1e3, "us": 1e6, "µs": 1e6, "ns": 1e9}
_NUMBER = re.compile(r"^\s*([0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?)\s*([A-Za-zµ/]*)\s*$")


def _split(text: object, what: str) -> tuple[float, str]:
    match = _NUMBER.match(text) if isinstance(text, str) else None
    if not match:
        raise ConfigError(f"cannot read {what} {text!r}: expected a number and a unit, e.g. '1GiB'")
    value = float(match.group(1))
    if not math.isfinite(value):
        raise ConfigError(f"{what} {text!r} is out of range")
    return value, match.group(2)


def _number(value: object, what: str) -> float | None:
    """A plain int or float as a finite float; None for anything else (bool is not a number here)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    try:
        number = float(value)
    except OverflowError:
        number = math.inf
    if not math.isfinite(number):
        raise ConfigError(f"{what} {value!r} is not a finite number")
    return number


def parse_size(text: str | int) -> int:
    """Bytes from ``"4096"``, ``"512MB"``, ``"1GiB"`` or ``"8G"`` (binary); positive, at most 1 PiB.

    Units are matched with case: ``B`` is a byte and ``b`` a bit, so ``"1Gb"`` is refused rather than
    read as a gigabyte.

    Raises
    ------
    ConfigError
        Not a number with a known unit, not a whole number of bytes, not positive, or above ``MAX_BYTES``.

    >>> parse_size("1GiB"), parse_size("512MB"), parse_size("8G")
    (1073741824, 512000000, 8589934592)
    """
    number = _number(text, "size")
    if number is not None:
        value, unit = number, ""
    else:
        value, unit = _split(text, "size")
    factor = _SIZE_UNITS.get(unit)
    if factor is None:
        if unit.endswith("b") or unit.endswith("bit"):
            raise ConfigError(f"size {text!r} is in bits (b); sizes are bytes: write B, KiB, MiB, GiB or KB, MB, GB")
        raise ConfigError(f"unknown size unit {unit!r} in {text!r}; use B, KiB, MiB, GiB, KB, MB or GB")
    nbytes = value * factor
    if nbytes <= 0:
        raise ConfigError(f"size {text!r} must be positive")
    if nbytes > MAX_BYTES:
        raise ConfigError(f"size {text!r} is above the 1 PiB limit")
    if nbytes != int(nbytes):
        raise ConfigError(f"size {text!r} is not a whole number of bytes")
    return int(nbytes)


def parse_rate(text: str | float) -> float:
    """Bytes per second from ``"900 GB/s"``, or from bits: ``"400 Gb/s"``, ``"400 Gbit/s"``, ``"400Gbps"``.

    ``B`` is a byte and ``b`` a bit, as vendors write them: a 400 Gb/s NIC moves 50 GB/s. Prefixes are
    decimal (``GiB/s`` is binary). A plain number, or a string without a unit, is B/s. Must be positive
    and finite; the physical range of a link is checked where a fabric is validated.

    Raises
    ------
    ConfigError
        Not a number with a known unit, not positive, or not finite.

    >>> parse_rate("900 GB/s"), parse_rate("400 Gb/s"), parse_rate("400 Gbit/s")
    (900000000000.0, 50000000000.0, 50000000000.0)
    """
    number = _number(text, "rate")
    if number is not None:
        value, factor = number, 1.0
    else:
        value, unit = _split(text, "rate")
        if unit == "":
            factor = 1.0
        else:
            match = _RATE_UNIT.match(unit)
            if match is None:
                raise ConfigError(f"unknown rate unit {unit!r} in {text!r}; {_RATE_HELP}")
            prefix, base = match.group("prefix"), match.group("base")
            factor = _BINARY[prefix] if prefix.endswith("i") else _DECIMAL[prefix]
            if base in ("b", "bit", "bits"):
                factor /= 8
    if value <= 0:
        raise ConfigError(f"rate {text!r} must be positive")
    rate = value * factor
    if not math.isfinite(rate) or rate == 0:
        raise ConfigError(f"rate {text!r} is out of range")
    return rate


def parse_flops(text: str | float) -> float:
    """FLOP/s from ``"2.25e15"``, ``"2250 TFLOPS"``, ``"2.25 PFLOP/s"`` or ``"2250T"``; positive and finite.

    Raises
    ------
    ConfigError
        Not a number with a known unit, not positive, or not finite.

    >>> parse_flops("2250 TFLOPS"), parse_flops("2.25e15"), parse_flops("989T")
    (2250000000000000.0, 2250000000000000.0, 989000000000000.0)
    """
    number = _number(text, "FLOP/s")
    if number is not None:
        value, factor = number, 1.0
    else:
        value, unit = _split(text, "FLOP/s")
        match = _FLOPS_UNIT.match(unit)
        if match is None:
            raise ConfigError(f"unknown FLOP/s unit {unit!r} in {text!r}; write e.g. '2250 TFLOPS' or '2.25e15'")
        factor = _FLOPS_PREFIX[match.group("prefix") or match.group("bare") or ""]
    if value <= 0 or not math.isfinite(value * factor):
        raise ConfigError(f"FLOP/s {text!r} must be positive and finite")
    return value * factor


def parse_time(text: str | float) -> float:
    """Seconds from ``"12.5 us"``, ``"3ms"`` or a bare number of seconds; non-negative and finite.

    Raises
    ------
    ConfigError
        Not a number with a known unit, negative, or not finite.

    >>> parse_time("12.5us")
    1.25e-05
    """
    number = _number(text, "time")
    if number is not None:
        value, unit = number, "s"
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
