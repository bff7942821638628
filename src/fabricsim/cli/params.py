"""Click parameter types shared by every command: sizes, rates, FLOP/s and bounded numbers.

Each type checks its value where it enters, with limits that keep a run finite and physical, and
reports a bad value as click does (exit 2, naming the option). Commands import these instead of writing
``type=float`` and checking later, so every option that takes a size, a rate or a factor refuses the
same inputs with the same words.

>>> import click
>>> SIZE.convert("1GiB", None, None), RATE.convert("400 Gb/s", None, None)
(1073741824, 50000000000.0)
>>> SizeList().convert("1M,16M", None, None)
(1048576, 16777216)
>>> BoundedFloat(0, 1, min_open=True).convert("1e-300", None, None)
1e-300
"""

from __future__ import annotations

import math
from typing import Any

import click

from fabricsim.errors import FabricsimError
from fabricsim.units import MAX_BYTES, MAX_RATE, MIN_RATE, parse_flops, parse_rate, parse_size

__all__ = [
    "Size", "SizeList", "Rate", "Flops", "BoundedFloat", "BoundedInt", "IntList",
    "SIZE", "RATE", "FLOPS", "STEP_FACTOR", "MFU", "GPUS", "CHANNELS", "OVERSUBSCRIPTION",
    "MAX_GPUS", "MAX_CHANNELS_OPTION", "MAX_STEP_FACTOR", "CalibrationFile", "calibration_option",
]

#: Largest GPU count an option accepts; each preset refuses more than it holds with its own limit.
MAX_GPUS = 2**31 - 1
#: Largest ``--channels``: the library's own bound (collectives.select.MAX_RUN_CHANNELS; a test keeps them equal).
MAX_CHANNELS_OPTION = 64
#: Largest ``--step-factor``; with at most ``MAX_SIZES`` (collectives' size series) this bounds any sweep.
MAX_STEP_FACTOR = 2.0**20


class _Parsed(click.ParamType):
    """A type whose conversion is a fabricsim parser raising ConfigError."""

    def _parse(self, value: Any) -> Any:  # pragma: no cover - overridden
        raise NotImplementedError

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        if not isinstance(value, str):
            return value
        try:
            return self._parse(value)
        except FabricsimError as exc:
            self.fail(str(exc), param, ctx)
        except click.BadParameter as exc:
            self.fail(exc.message, param, ctx)


class Size(_Parsed):
    """A message size in bytes: ``8``, ``1M`` (binary), ``1GiB``, ``512MB`` (decimal); 1 B to ``max``."""

    name = "size"

    def __init__(self, minimum: int = 1, maximum: int = MAX_BYTES) -> None:
        self.minimum, self.maximum = minimum, maximum

    def _parse(self, value: str) -> int:
        from fabricsim.units import format_size

        nbytes = parse_size(value)
        if not self.minimum <= nbytes <= self.maximum:
            raise click.BadParameter(f"{value!r} is outside {format_size(self.minimum)}..{format_size(self.maximum)}")
        return nbytes


class SizeList(_Parsed):
    """Comma-separated sizes, at least one (an empty list is refused, not read as 'the default')."""

    name = "sizes"

    def __init__(self, maximum_count: int = 1000) -> None:
        self.maximum_count = maximum_count

    def _parse(self, value: str) -> tuple[int, ...]:
        items = [v for v in value.replace(" ", "").split(",")]
        if not value.strip() or any(v == "" for v in items):
            raise click.BadParameter(f"{value!r} must be comma-separated sizes such as '1M,16M,1G'")
        if len(items) > self.maximum_count:
            raise click.BadParameter(f"at most {self.maximum_count} sizes")
        return tuple(parse_size(v) for v in items)


class Rate(_Parsed):
    """A bandwidth in B/s one way: ``900 GB/s``, ``400 Gb/s`` (bits); within 1 B/s..1 PB/s."""

    name = "rate"

    def _parse(self, value: str) -> float:
        rate = parse_rate(value)
        if not MIN_RATE <= rate <= MAX_RATE:
            raise click.BadParameter(f"{value!r} is outside the physical range 1 B/s..1 PB/s")
        return rate


class Flops(_Parsed):
    """Per-GPU peak FLOP/s: ``2.25e15``, ``2250 TFLOPS``, ``989T``; within 1 GFLOP/s..1 EFLOP/s."""

    name = "flops"

    def _parse(self, value: str) -> float:
        flops = parse_flops(value)
        if not 1e9 <= flops <= 1e18:
            raise click.BadParameter(f"{value!r} is outside 1 GFLOP/s..1 EFLOP/s")
        return flops


class BoundedFloat(click.ParamType):
    """A finite float within [min, max] (either end open if asked); refuses nan and inf, which
    click.FloatRange lets through."""

    name = "float"

    def __init__(self, minimum: float, maximum: float, *, min_open: bool = False, max_open: bool = False) -> None:
        self.minimum, self.maximum, self.min_open, self.max_open = minimum, maximum, min_open, max_open

    def describe(self) -> str:
        return (f"{'(' if self.min_open else '['}{self.minimum:g}, {self.maximum:g}{')' if self.max_open else ']'}")

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> float:
        try:
            number = float(value)
        except (TypeError, ValueError, OverflowError):
            self.fail(f"{value!r} is not a number", param, ctx)
        low_ok = number > self.minimum if self.min_open else number >= self.minimum
        high_ok = number < self.maximum if self.max_open else number <= self.maximum
        if not (math.isfinite(number) and low_ok and high_ok):
            self.fail(f"{value!r} is not in {self.describe()}", param, ctx)
        return number

    def get_metavar(self, param: click.Parameter, ctx: click.Context | None = None) -> str:
        return f"FLOAT {self.describe()}"


class BoundedInt(click.IntRange):
    """An integer within [min, max], both ends closed (click.IntRange with the project's wording)."""

    name = "integer"  # click's IntRange says "not a valid integer range" of a value such as 'x'

    def __init__(self, minimum: int, maximum: int) -> None:
        super().__init__(minimum, maximum)


class IntList(_Parsed):
    """Comma-separated integers within [min, max], at least one."""

    name = "integers"

    def __init__(self, minimum: int = 1, maximum: int = MAX_GPUS, maximum_count: int = 1000) -> None:
        self.minimum, self.maximum, self.maximum_count = minimum, maximum, maximum_count

    def _parse(self, value: str) -> tuple[int, ...]:
        items = value.replace(" ", "").split(",")
        try:
            numbers = tuple(int(v) for v in items)
        except ValueError:
            raise click.BadParameter(f"{value!r} must be comma-separated integers such as '8,72,576'") from None
        if len(numbers) > self.maximum_count:
            raise click.BadParameter(f"at most {self.maximum_count} values")
        bad = [n for n in numbers if not self.minimum <= n <= self.maximum]
        if bad:
            raise click.BadParameter(f"{bad[0]} is not in {self.minimum}..{self.maximum}")
        return numbers


SIZE = Size()
RATE = Rate()
FLOPS = Flops()
#: nccl-tests' -f: above 1, at most 2**20 (the size series also caps the count of sizes).
STEP_FACTOR = BoundedFloat(1.0, MAX_STEP_FACTOR, min_open=True)
#: Model FLOPs utilisation: a share of peak, at least 0.1% (below that the step time is meaningless).
MFU = BoundedFloat(1e-3, 1.0)
GPUS = BoundedInt(1, MAX_GPUS)
CHANNELS = BoundedInt(1, MAX_CHANNELS_OPTION)
#: Scale-out leaf down:up ratio: 0.1 (more uplinks than NICs) to 100:1.
OVERSUBSCRIPTION = BoundedFloat(0.1, 100.0)


class CalibrationFile(_Parsed):
    """A calibration TOML file (``fabricsim calibrate -o FILE`` writes one), read into a Calibration."""

    name = "file"

    def _parse(self, value: str) -> Any:
        from fabricsim.collectives.protocol import Calibration

        return Calibration.load(value)


def calibration_option(command):
    """``--calibration FILE``: the parameter the command's runners use instead of the shipped calibration."""
    return click.option("--calibration", type=CalibrationFile(), default=None,
                        help="Calibration TOML (from `fabricsim calibrate`) [default: the shipped one].")(command)
