"""Writers for collective rows (records.COLUMNS): an nccl-tests table, CSV or JSON, one row at a time.

Every writer prints a row as soon as it is given one, so long sweeps show progress on stdout.

- ``table``: nccl-tests' stdout layout (the column widths of its reporter, as nccl-tests 2.20 prints): size, count, type, redop,
  root, then time/algbw/busbw/#wrong out-of-place and again in-place, so that a line can be compared
  with an ``*_perf`` line field by field (``diff``, ``paste``, ``awk '{print $8}'``). A simulation has no
  in-place difference: both halves hold the same values. Two columns follow that nccl-tests lacks: the
  algorithm and protocol that ran. Time is printed as nccl-tests does (2, 1 or 0 decimals below 100 us,
  10 ms and above); #wrong is ``N/A`` when the data were not checked.
- ``csv``: a header of COLUMNS, then rows; floats at full precision (``repr``), unchecked #wrong empty.
- ``json``: one array of records (``pandas.read_json(path)`` loads it as a frame), floats at full
  precision, unchecked #wrong ``null``; the closing bracket is written by ``close``.
"""

from __future__ import annotations

import csv
import io
import json

import click

from fabricsim.collectives.records import COLUMNS

__all__ = ["FORMATS", "make_writer", "nccl_time"]

FORMATS = ("table", "csv", "json")


def nccl_time(us: float) -> str:
    """A time in us as nccl-tests prints it: 7 wide, 2 decimals below 100, 1 below 10,000, else 0."""
    if us >= 10000.0:
        return f"{us:7.0f}"
    if us >= 100.0:
        return f"{us:7.1f}"
    return f"{us:7.2f}"


# one out-of-place or in-place half of the header: time, algbw, busbw, #wrong (nccl-tests 2.20 widths)
_HALF_NAMES = f"  {'time':>7}  {'algbw':>6}  {'busbw':>6}  {'#wrong':>6}"
_HALF_UNITS = f"  {'(us)':>7}  {'(GB/s)':>6}  {'(GB/s)':>6}  {'':>6}"


class _Table:
    def __init__(self, echo, preamble: list[str]):
        self.echo, self.preamble, self.rows = echo, preamble, []

    def row(self, r: dict) -> None:
        if not self.rows:
            for line in self.preamble:
                self.echo(f"# {line}" if line else "#")
            self.echo("#")
            self.echo(f"# {'':>10}  {'':>12}  {'':>8}  {'':>6}  {'':>6}           out-of-place"
                      "                       in-place")
            self.echo(f"# {'size':>10}  {'count':>12}  {'type':>8}  {'redop':>6}  {'root':>6}{_HALF_NAMES}{_HALF_NAMES}"
                      "  algorithm  protocol")
            self.echo(f"# {'(B)':>10}  {'(elements)':>12}  {'':>8}  {'':>6}  {'':>6}{_HALF_UNITS}{_HALF_UNITS}".rstrip())
        self.rows.append(r)
        wrong = "N/A" if r["wrong"] is None else str(r["wrong"])
        half = f"  {nccl_time(r['time_us'])}  {r['algbw_GBps']:6.2f}  {r['busbw_GBps']:6.2f}  {wrong:>6}"
        self.echo(f"{r['size_bytes']:12d}  {r['count']:12d}  {r['type']:>8}  {r['redop']:>6}  {r['root']:6d}"
                  f"{half}{half}  {r['algorithm']}  {r['protocol']}")

    def close(self) -> None:
        if not self.rows:
            return
        checked = [r["wrong"] for r in self.rows if r["wrong"] is not None]
        if checked:
            bad = sum(checked)
            self.echo(f"# Out of bounds values : {bad} {'OK' if bad == 0 else 'FAILED'}")
        avg = sum(r["busbw_GBps"] for r in self.rows) / len(self.rows)
        self.echo(f"# Avg bus bandwidth    : {avg:g} ")
        self.echo("#")


class _Csv:
    def __init__(self, echo):
        self.echo, self.started = echo, False

    def row(self, r: dict) -> None:
        if not self.started:
            self.echo(",".join(COLUMNS))
            self.started = True
        buf = io.StringIO()
        csv.writer(buf, lineterminator="").writerow(["" if r[c] is None else (repr(r[c]) if isinstance(r[c], float)
                                                     else r[c]) for c in COLUMNS])
        self.echo(buf.getvalue())

    def close(self) -> None:
        if not self.started:
            self.echo(",".join(COLUMNS))


class _Json:
    def __init__(self, echo):
        self.echo, self.n = echo, 0

    def row(self, r: dict) -> None:
        self.echo(("[" if self.n == 0 else ",") + json.dumps({c: r[c] for c in COLUMNS}))
        self.n += 1

    def close(self) -> None:
        self.echo("[]" if self.n == 0 else "]")


def make_writer(fmt: str, *, preamble: list[str] | None = None, echo=click.echo):
    """A writer with ``row(record)`` and ``close()`` for ``fmt`` in FORMATS (module docstring)."""
    if fmt == "table":
        return _Table(echo, preamble or [])
    if fmt == "csv":
        return _Csv(echo)
    if fmt == "json":
        return _Json(echo)
    raise click.BadParameter(f"unknown format {fmt!r}; use one of {', '.join(FORMATS)}")
