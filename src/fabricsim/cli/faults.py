"""Fault options shared by ``allreduce``, ``step`` and ``sweep`` (syntax: ``fabricsim.topologies.faults``)."""

from __future__ import annotations

import click

__all__ = ["fault_options", "fault_texts", "with_faults"]

_HELP = {
    "fail": "Fail a part: a node (leaf3, spine*, r0/nvs5, n3/nic2), a link (A->B, A--B) or an NVLink tray or "
            "plane (r0/tray3, r0/plane5). Repeatable; globs allowed.",
    "degrade": "Degrade a part to a share of its lanes: TARGET:0.5, TARGET:nvlink=0.5 (a GPU loses whole NVLink "
               "planes, as NCCL sees it) or TARGET:latency=+2us. Repeatable.",
    "fail_at": "Timed failure during the run: TIME:TARGET (e.g. 1ms:leaf3); flows reroute or the run fails "
               "naming the cut. Repeatable.",
    "degrade_at": "Timed degradation: TIME:TARGET:SHARE (e.g. 1ms:r0/gpu5:nvlink=0.5). Repeatable.",
}


def fault_options(command):
    """Add --fail, --degrade, --fail-at and --degrade-at (each repeatable) to a click command."""
    for name in reversed(("fail", "degrade", "fail_at", "degrade_at")):
        command = click.option(f"--{name.replace('_', '-')}", name, multiple=True, metavar="SPEC",
                               help=_HELP[name])(command)
    return command


def fault_texts(fail=(), degrade=(), fail_at=(), degrade_at=()) -> tuple:
    """The options' values as one tuple of fault texts (checked now, applied per topology later)."""
    from fabricsim.topologies.faults import parse_faults

    faults = parse_faults(fail, degrade, fail_at, degrade_at)
    return tuple(_text(f) for f in faults)


def _text(fault) -> str:
    change = "" if fault.factor == 0 and not fault.kind else (
        f":latency=+{fault.latency!r}s" if fault.latency else f":{fault.kind + '=' if fault.kind else ''}{fault.factor!r}")
    when = f"{fault.time!r}s:" if fault.time is not None else ""
    return f"{when}{fault.target}{change}"


def with_faults(topology, fail=(), degrade=(), fail_at=(), degrade_at=()):
    """``topology`` with the options' faults applied (the same object when there are none)."""
    from fabricsim.topologies.faults import apply_faults, parse_faults

    faults = parse_faults(fail, degrade, fail_at, degrade_at)
    return apply_faults(topology, faults) if faults else topology
