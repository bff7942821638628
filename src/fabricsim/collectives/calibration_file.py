"""A Calibration as a TOML file: what ``fabricsim calibrate`` writes and ``--calibration FILE`` reads.

Every key is one of the shipped calibration's parameters (protocol.py), in the project's units
(fractions of line rate, seconds)::

    source = "fitted by fabricsim calibrate on run.log (8 B-64 MiB, 24 sizes)"
    [link_efficiency]          # usable share of line rate per link kind
    nvlink4 = 0.80
    [nvls_efficiency]          # usable share of line rate of NVLS traffic
    nvlink4 = 0.76
    [nvls_fanin]               # NVLS cost per doubling of the fan-in
    nvlink5 = 0.105
    [nvls_network]             # share of the NVLS rate inside multi-node kernels (NVLS tree, SHARP)
    nvlink4 = 0.87
    [protocols.ll.step_latency]   # per-step latency, "algorithm.link class"
    "ring.nvlink" = 6.0e-7
    [protocols.ll.launch_latency] # per-collective latency, per algorithm
    ring = 6.6e-6

A file may give only some keys; the others keep the shipped values. Unknown keys, kinds outside
(0, 1] and latencies outside [0, 1 s) are refused with the file and the key named.
"""

from __future__ import annotations

import math
import tomllib
from dataclasses import replace
from pathlib import Path

from fabricsim.atomic_file import write_whole
from fabricsim.collectives.protocol import CALIBRATED, PROTOCOLS, Calibration
from fabricsim.errors import ConfigError

__all__ = ["dumps", "loads", "load", "save"]

_SHARES = ("link_efficiency", "nvls_efficiency", "nvls_fanin", "nvls_network")


def _fmt(value: float) -> str:
    return repr(float(value))


def dumps(cal: Calibration) -> str:
    """TOML text of ``cal`` at full precision (every parameter, so a file is complete on its own)."""
    lines = ["# fabricsim calibration (seconds; shares of line rate). Read with --calibration FILE."]
    if cal.source:
        lines.append(f"source = {_quote(cal.source)}")
    for table in _SHARES:
        lines += ["", f"[{table}]"] + [f"{_quote(k)} = {_fmt(v)}" for k, v in sorted(getattr(cal, table).items())]
    for name, proto in (cal.protocols or PROTOCOLS).items():
        lines += ["", f"[protocols.{name}.launch_latency]"]
        lines += [f"{_quote(a)} = {_fmt(v)}" for a, v in sorted(proto.launch_latency.items())]
        lines += ["", f"[protocols.{name}.step_latency]"]
        lines += [f"{_quote(a + '.' + c)} = {_fmt(v)}" for (a, c), v in sorted(proto.step_latency.items())]
    return "\n".join(lines) + "\n"


def _quote(text: str) -> str:
    return '"' + str(text).replace("\\", "\\\\").replace('"', '\\"').replace("\n", " ") + '"'


def loads(text: str, where: str = "<calibration>") -> Calibration:
    """The Calibration in TOML ``text``: the shipped one with the file's keys replacing its values."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{where}: not valid TOML ({exc})") from None
    unknown = set(data) - {"source", "protocols", *_SHARES}
    if unknown:
        raise ConfigError(f"{where}: unknown key {sorted(unknown)[0]!r}; use source, protocols, "
                          f"{', '.join(_SHARES)}")
    shares = {}
    for table in _SHARES:
        values = dict(getattr(CALIBRATED, table))
        given = data.get(table, {})
        if not isinstance(given, dict):
            raise ConfigError(f"{where}: [{table}] must be a table of link kind = number")
        for kind, value in given.items():
            high = 10.0 if table == "nvls_fanin" else 1.0
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) \
                    or not (0 <= value <= high if table == "nvls_fanin" else 0 < value <= high):
                raise ConfigError(f"{where}: {table}.{kind} = {value!r} is outside "
                                  f"{'[0, 10]' if table == 'nvls_fanin' else '(0, 1]'}")
            values[kind] = float(value)
        shares[table] = values
    protocols = dict(PROTOCOLS)
    given = data.get("protocols", {})
    if not isinstance(given, dict):
        raise ConfigError(f"{where}: [protocols] must hold tables named ll, ll128, simple")
    for name, tables in given.items():
        if name not in PROTOCOLS:
            raise ConfigError(f"{where}: unknown protocol {name!r}; use {', '.join(PROTOCOLS)}")
        proto = PROTOCOLS[name]
        launch, step = dict(proto.launch_latency), dict(proto.step_latency)
        for table, values in tables.items():
            if table not in ("launch_latency", "step_latency") or not isinstance(values, dict):
                raise ConfigError(f"{where}: protocols.{name}.{table} is not launch_latency or step_latency")
            for key, value in values.items():
                target = launch if table == "launch_latency" else step
                k = key if table == "launch_latency" else tuple(key.split("."))
                if k not in target:
                    raise ConfigError(f"{where}: protocols.{name}.{table} has no key {key!r}; use "
                                      f"{', '.join(sorted(x if isinstance(x, str) else '.'.join(x) for x in target))}")
                if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < 1:
                    raise ConfigError(f"{where}: protocols.{name}.{table}.{key} = {value!r} s is outside [0, 1)")
                target[k] = float(value)
        protocols[name] = replace(proto, launch_latency=launch, step_latency=step)
    source = data.get("source", where)
    return Calibration(shares["link_efficiency"], shares["nvls_efficiency"], shares["nvls_fanin"],
                       protocols=protocols, source=str(source), nvls_network=shares["nvls_network"])


def load(path) -> Calibration:
    """The Calibration in the TOML file at ``path``."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read calibration ({getattr(exc, 'strerror', None) or exc})") from None
    return loads(text, str(path))


def save(cal: Calibration, path) -> None:
    """Write ``cal`` to ``path`` whole: a temporary file beside it, renamed over it."""
    write_whole(path, dumps(cal))
