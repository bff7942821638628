"""Reading nccl-tests output (``all_reduce_perf`` and the other ``*_perf`` programs) into rows.

What a log holds, in the order nccl-tests prints it:

- anything before the first ``# nThread ...`` line is the launcher's (the shell command, MPI banners) and
  is skipped;
- ``# nThread T nGpus G minBytes ...``: the run's options; ``#  Rank  r Group g Pid p on HOST device d
  [bus] NAME``: one line per rank (older versions omit ``Group``), so a multi-node MPI run or a ``-g 8``
  run lists all its ranks; ``# Collective test starting: NAME`` (newer versions) names the collective;
- a column header (``#  size  count  type  redop  root  time  algbw  busbw  #wrong  time ...``; older
  versions have no ``root`` and say ``error`` for ``#wrong``; collectives without a reduction may have no
  ``redop``), then one row per size with an out-of-place and usually an in-place group of four:
  time (us), algbw (GB/s), busbw (GB/s), #wrong (``N/A`` when the data check is off);
- ``# Out of bounds values`` and ``# Avg bus bandwidth`` close the run. NCCL's own ``NCCL INFO``/``WARN``
  lines may be interleaved anywhere (``NCCL_DEBUG=INFO``).

A file may hold several runs (several headers). Every row is checked: the fields parse, algbw is size /
time, busbw / algbw is the collective's factor (kinds.py), and no value was wrong. Anything else is
refused with a ConfigError naming the file and the line, since a time that cannot be trusted must not
reach a fit.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from fabricsim.collectives.kinds import KINDS, kind as lookup
from fabricsim.errors import ConfigError

__all__ = ["NcclRow", "NcclRun", "parse_log", "parse_text"]

_NCCL_DEBUG = re.compile(r"\bNCCL (INFO|WARN|TRACE|ABORT)\b")
_RANK = re.compile(r"^#\s*Rank\s+(\d+)\s+(?:Group\s+\d+\s+)?Pid\s+\d+\s+on\s+(\S+)\s+device\s+(\d+)\s*(.*)$")
_THREADS = re.compile(r"nThread\s+(\d+)\s+nGpus\s+(\d+)")
_COLLECTIVE = re.compile(r"Collective test starting:\s*(\S+)")
_BINARY = re.compile(r"\b(\w+)_perf(?:_mpi)?\b")
_TAGGED = re.compile(r"^\[[\d,]+\]\S*\s+\d")
_TOLERANCE = 0.03  # relative: algbw and busbw are printed with 2 decimals, time with 3-4 digits


@dataclass(frozen=True)
class NcclRow:
    """One size of one run: out-of-place (and in-place, if printed) time in seconds."""

    size: int
    count: int
    dtype: str
    redop: str
    root: int
    time_oop: float
    time_ip: float | None
    busbw_oop: float  # bytes/s
    line: int

    @property
    def time(self) -> float:
        """The faster of out-of-place and in-place (both run the same algorithm on the same sizes)."""
        return min(t for t in (self.time_oop, self.time_ip) if t is not None)


@dataclass
class NcclRun:
    """One run of an nccl-tests program: its collective, its ranks and their hosts, its rows."""

    path: str
    collective: str | None = None
    threads: int = 1
    gpus_per_thread: int = 1
    ranks: dict = field(default_factory=dict)  # rank -> (host, device, name)
    rows: list = field(default_factory=list)
    header: tuple | None = None

    @property
    def nranks(self) -> int:
        """Ranks of the run: its ``# Rank`` lines, else threads x GPUs of one process."""
        return len(self.ranks) or self.threads * self.gpus_per_thread

    @property
    def hosts(self) -> list[str]:
        return sorted({h for h, _, _ in self.ranks.values()})

    @property
    def devices(self) -> list[str]:
        return sorted({n for _, _, n in self.ranks.values() if n})


def parse_log(path, collective: str | None = None) -> list[NcclRun]:
    """Every run in the nccl-tests log at ``path`` (ConfigError naming file and line if unreadable).

    ``collective`` names the program when the log does not (a table pasted without its command line).
    """
    p = Path(path)
    try:
        text = p.read_bytes().decode("utf-8")
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read ({exc.strerror or exc})") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not a text log (byte {exc.start} is not UTF-8)") from None
    return parse_text(text, str(path), collective)


def _fail(path: str, number: int, line: str, why: str):
    shown = line.strip()
    shown = shown if len(shown) <= 100 else shown[:97] + "..."
    raise ConfigError(f"{path}:{number}: {why}: {shown!r}")


def _header_columns(line: str) -> tuple | None:
    """The column names of a ``#  size count type ...`` header line, else None."""
    words = line.lstrip("#").split()
    if len(words) >= 6 and words[0] == "size" and words[1] == "count":
        return tuple("wrong" if w in ("#wrong", "error", "wrong") else w for w in words)
    return None


def parse_text(text: str, path: str = "<log>", collective: str | None = None) -> list[NcclRun]:
    """Every run in nccl-tests output ``text`` (``path`` names it in errors; ``collective`` as parse_log)."""
    runs: list[NcclRun] = []
    run: NcclRun | None = None
    binary = lookup(collective).binary.removesuffix("_perf") if collective else None
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or _NCCL_DEBUG.search(line):
            continue
        if run is None and not line.startswith("#"):
            if _TAGGED.match(line):
                _fail(path, number, raw, "MPI output tags ('[0]') are mixed into the rows; rerun without "
                      "--tag-output or strip them")
            if not _is_number(line.split()[0]):
                m = _BINARY.search(line)  # the launcher's command line names the program
                binary = m.group(1) if m and m.group(1).replace("_", "") in KINDS else binary
                continue
            run = _pasted(runs, path, binary)  # rows pasted without the header: ranks from busbw / algbw
        if line.startswith("#"):
            coll = _COLLECTIVE.search(line)
            if coll:  # before or after the run's header, depending on the version
                name = coll.group(1).removesuffix("_mpi").removesuffix("_perf")
                try:
                    binary = lookup(name).binary.removesuffix("_perf")
                except ConfigError:
                    _fail(path, number, raw, f"unknown collective {name!r}")
                if run is not None and not run.rows:
                    run.collective = lookup(binary).name
                continue
            threads = _THREADS.search(line)
            if threads:
                run = NcclRun(path, threads=int(threads.group(1)), gpus_per_thread=int(threads.group(2)))
                if binary:
                    run.collective = lookup(binary).name
                runs.append(run)
                continue
            if run is None:
                if _header_columns(line):
                    run = _pasted(runs, path, binary)
                    run.header = _header_columns(line)
                continue
            rank = _RANK.match(line)
            if rank:
                run.ranks[int(rank.group(1))] = (rank.group(2), int(rank.group(3)), rank.group(4).split("]")[-1].strip())
                continue
            cols = _header_columns(line)
            if cols:
                run.header = cols
            continue
        run.rows.append(_row(run, path, number, raw))
    runs = [r for r in runs if r.rows]
    if not runs:
        raise ConfigError(f"{path}: no nccl-tests result rows (expected a '# nThread ...' header and rows "
                          "of size, count, type, time, algbw, busbw)")
    for r in runs:
        _check_run(r)
    return runs


def _pasted(runs: list, path: str, binary: str | None) -> NcclRun:
    run = NcclRun(path, threads=0, collective=lookup(binary).name if binary else None)
    runs.append(run)
    return run


def _number(path, number, raw, token: str, what: str, integer: bool = False):
    try:
        value = int(token) if integer else float(token)
    except ValueError:
        _fail(path, number, raw, f"{what} {token!r} is not a{'n integer' if integer else ' number'}")
    if not integer and not (value == value and abs(value) != float("inf")):
        _fail(path, number, raw, f"{what} {token!r} is not finite")
    return value


def _row(run: NcclRun, path: str, number: int, raw: str) -> NcclRow:
    tokens = raw.split()
    if len(tokens) < 7:
        _fail(path, number, raw, "a result row has at least size, count, type, time, algbw, busbw, #wrong")
    size = _number(path, number, raw, tokens[0], "size", integer=True)
    count = _number(path, number, raw, tokens[1], "count", integer=True)
    dtype = tokens[2]
    if size < 0 or count < 0:
        _fail(path, number, raw, "size and count cannot be negative")
    rest = tokens[3:]
    redop, root = "none", -1
    if run.header:
        lead = run.header[3:run.header.index("time")] if "time" in run.header else ()
        groups = (len(run.header) - 3 - len(lead)) // 4
        if len(rest) != len(lead) + 4 * groups or groups < 1:
            _fail(path, number, raw, f"{len(tokens)} fields where the column header has {len(run.header)}")
        for name, token in zip(lead, rest):
            if name == "redop":
                redop = token
            elif name == "root":
                root = _number(path, number, raw, token, "root", integer=True)
        rest = rest[len(lead):]
    else:  # no header: a redop word, then a root if the count says so
        if rest and not _is_number(rest[0]):
            redop, rest = rest[0], rest[1:]
        if len(rest) in (5, 9):
            root, rest = _number(path, number, raw, rest[0], "root", integer=True), rest[1:]
        if len(rest) not in (4, 8):
            _fail(path, number, raw, "expected one or two groups of time, algbw, busbw, #wrong")
    groups = []
    for g in range(len(rest) // 4):
        t, alg, bus, wrong = rest[4 * g:4 * g + 4]
        time_us = _number(path, number, raw, t, "time")
        algbw = _number(path, number, raw, alg, "algbw")
        busbw = _number(path, number, raw, bus, "busbw")
        if wrong not in ("N/A", "n/a"):
            bad = _number(path, number, raw, wrong, "#wrong", integer=True)
            if bad:
                _fail(path, number, raw, f"{bad} wrong values: the run failed its data check, its times "
                      "cannot be trusted")
        if time_us <= 0 or algbw < 0 or busbw < 0:
            _fail(path, number, raw, "time must be positive and bandwidths not negative")
        if algbw >= 1.0 and size > 0 and abs(size / (time_us * 1e3) - algbw) > _TOLERANCE * algbw:
            _fail(path, number, raw, f"algbw {algbw} GB/s is not size / time ({size / (time_us * 1e3):.2f})")
        groups.append((time_us * 1e-6, algbw, busbw))
    return NcclRow(size, count, dtype, redop, root, groups[0][0], groups[1][0] if len(groups) > 1 else None,
                   groups[0][2] * 1e9, number) if groups else _fail(path, number, raw, "no time column")


def _is_number(token: str) -> bool:
    try:
        float(token)
        return True
    except ValueError:
        return False


def _check_run(run: NcclRun) -> None:
    """Infer the collective from busbw / algbw when the log does not name it, and check it when it does."""
    ratios = [(r, r.busbw_oop / (r.size / r.time_oop)) for r in run.rows if r.busbw_oop >= 1e9 and r.size > 0]
    if run.collective is None:
        if not run.nranks or not ratios:
            raise ConfigError(f"{run.path}: cannot tell which collective this is (no program name, no "
                              "'Collective test starting' line, or no header and no row with busbw >= 1 GB/s); name it with --collective")
        r = ratios[-1][1]
        n = run.nranks
        matches = [k for k in KINDS.values() if abs(k.factor(n) - r) <= _TOLERANCE * k.factor(n)]
        if not matches:
            raise ConfigError(f"{run.path}:{ratios[-1][0].line}: busbw / algbw = {r:.3f} is no collective's "
                              f"factor on {n} ranks")
        run.collective = matches[0].name  # ties (e.g. allgather / reducescatter) share factor and model
    if not run.nranks:  # a pasted table: ranks from the factor, 2(n-1)/n or (n-1)/n
        f = ratios[-1][1] / (2.0 if run.collective == "allreduce" else 1.0) if ratios else 1.0
        if run.collective in ("broadcast", "reduce", "sendrecv") or f >= 0.999 or f <= 0:
            raise ConfigError(f"{run.path}: the log has no '# nThread' header or '# Rank' lines, so its rank "
                              "count is unknown")
        run.threads, run.gpus_per_thread = 1, round(1 / (1 - f))
    n = run.nranks
    f = KINDS[run.collective].factor(n)
    for row, r in ratios:
        if abs(r - f) > _TOLERANCE * f + 0.01:
            raise ConfigError(f"{run.path}:{row.line}: busbw / algbw = {r:.3f}, but {run.collective} on {n} "
                              f"ranks has factor {f:.3f} (is the rank count {n} right?)")
