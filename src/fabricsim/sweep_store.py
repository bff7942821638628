"""A sweep's directory: nothing finished is lost, nothing is mixed between runs.

Files in the directory:

- ``.sweep.lock``: held (``flock``) by the sweep writing here; a second sweep on the same directory is
  refused with one line naming the holder's pid. The lock dies with its process, so a killed sweep
  leaves nothing to clean up.
- ``sweep-plan.pickle``: the scenarios (SweepSpec list), written before the first point runs, so that
  ``--resume DIR`` needs nothing else.
- ``points.jsonl``: the journal. One line per finished point, appended, flushed and fsync'd as the point
  finishes: ``{"key", "rows", "curve", "skipped"}``, or ``{"key", "error"}`` for a point that failed. A
  line cut short by a kill is dropped when the journal is next opened.
- ``step.csv`` / ``step.json`` / ``busbw.csv`` / ``busbw.json`` (or ``message.*``), ``meta.json``: written
  whole (temporary file, then rename) from the journal in plan order, after every run, complete or not;
  each JSON file is an array of rows (``pandas.read_json`` loads it), ``meta.json`` says what was swept.
  ``failed.json`` lists failed points while there are any. When every point has finished the journal is rewritten in plan order too,
  so a resumed sweep leaves the same files, byte for byte, as one that ran straight through.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import os
import pickle
import signal
import threading
from dataclasses import dataclass, field
from typing import Callable

from fabricsim.atomic_file import write_whole
from fabricsim.errors import ConfigError
from fabricsim.sweep import (MESSAGE_COLUMNS, STEP_COLUMNS, Point, SweepIncomplete, SweepSpec, _fmt, add_scaling,
                             plan_points)

__all__ = ["SweepStore", "SweepResult", "run_into", "LOCK", "PLAN", "JOURNAL"]

LOCK, PLAN, JOURNAL, FAILED = ".sweep.lock", "sweep-plan.pickle", "points.jsonl", "failed.json"


@dataclass
class SweepResult:
    """What a sweep left: rows in plan order, busbw-curve rows, skipped algorithms, files, failures."""

    rows: list = field(default_factory=list)
    curve: list = field(default_factory=list)
    skipped: dict = field(default_factory=dict)  # gpus -> algorithms a size's fabric lacks
    paths: dict = field(default_factory=dict)
    failed: dict = field(default_factory=dict)  # point key -> error
    missing: list = field(default_factory=list)  # points that did not run
    points: int = 0


class SweepStore:
    """The directory of one sweep (see the module docstring). Use as a context manager: it holds the lock."""

    def __init__(self, out_dir: str):
        self.out_dir = os.fspath(out_dir)
        try:
            os.makedirs(self.out_dir, exist_ok=True)
        except OSError as exc:
            raise ConfigError(f"cannot create output directory {self.out_dir!r}: {exc.strerror}") from None
        self._lock_fh = None

    def path(self, name: str) -> str:
        return os.path.join(self.out_dir, name)

    # --- the lock -----------------------------------------------------------------------------------------
    def __enter__(self) -> "SweepStore":
        fh = open(self.path(LOCK), "a+")
        try:
            import fcntl

            try:
                fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                fh.seek(0)
                holder = fh.read().strip() or "unknown"
                fh.close()
                raise ConfigError(f"another sweep (pid {holder}) is writing {self.out_dir}; wait for it to end or "
                                  "use another --out directory") from None
        except ImportError:  # no flock on this platform: no protection, as before
            pass
        fh.seek(0)
        fh.truncate()
        fh.write(str(os.getpid()))
        fh.flush()
        self._lock_fh = fh
        return self

    def __exit__(self, *exc) -> None:
        if self._lock_fh is not None:
            self._lock_fh.close()  # closing releases the flock
            self._lock_fh = None

    # --- plan and journal ---------------------------------------------------------------------------------
    def start(self, specs: list) -> None:
        """A fresh sweep: forget an earlier one's journal and results, then record the plan."""
        from fabricsim.plots import PLOT_FILES

        for name in os.listdir(self.out_dir):
            if name in (JOURNAL, FAILED, PLAN) or name in PLOT_FILES or name.endswith((".csv", ".json")) and \
                    name.split(".")[0] in ("step", "message", "busbw", "meta"):
                os.remove(self.path(name))
        write_whole(self.path(PLAN), pickle.dumps(list(specs)))

    def load_plan(self) -> list:
        try:
            with open(self.path(PLAN), "rb") as fh:
                specs = pickle.load(fh)
        except FileNotFoundError:
            raise ConfigError(f"{self.out_dir} holds no sweep to resume (no {PLAN})") from None
        except Exception as exc:
            raise ConfigError(f"cannot read the sweep plan in {self.out_dir}: {exc}") from None
        if not isinstance(specs, list) or not all(isinstance(s, SweepSpec) for s in specs):
            raise ConfigError(f"{self.path(PLAN)} is not a fabricsim sweep plan")
        return specs

    def read_journal(self) -> dict[str, dict]:
        """Records by point key (a later record of a key wins); a torn last line is cut off the file."""
        records: dict[str, dict] = {}
        path = self.path(JOURNAL)
        if not os.path.exists(path):
            return records
        with open(path, "rb") as fh:
            data = fh.read()
        good = 0
        for line in data.splitlines(keepends=True):
            if not line.endswith(b"\n"):
                break
            try:
                rec = json.loads(line)
            except ValueError:
                break
            records[rec["key"]] = rec
            good += len(line)
        if good < len(data):
            with open(path, "r+b") as fh:
                fh.truncate(good)
        return records

    def append(self, record: dict) -> None:
        """One journal line, on disk (fsync'd) before this returns."""
        line = json.dumps(record, separators=(",", ":"), allow_nan=True) + "\n"
        with open(self.path(JOURNAL), "a") as fh:
            fh.write(line)
            fh.flush()
            os.fsync(fh.fileno())

    def compact(self, points: list, records: dict) -> None:
        """Rewrite the journal in plan order (a finished sweep's journal is the same however it ran)."""
        text = "".join(json.dumps(records[p.key], separators=(",", ":")) + "\n" for p in points)
        _write_text(self.path(JOURNAL), text)

    # --- results ------------------------------------------------------------------------------------------
    def render(self, specs: list, points: list, records: dict) -> SweepResult:
        """Write the result files from the journal's records, in plan order; returns what they hold."""
        res = SweepResult(points=len(points))
        mode = specs[0].mode
        baselines: dict[int, float | None] = {}
        for p in points:
            rec = records.get(p.key)
            if rec is None:
                res.missing.append(p)
                continue
            if "error" in rec:
                res.failed[p.key] = rec["error"]
                continue
            if p.curve:
                res.curve += rec["curve"]
                continue
            rows = [dict(r) for r in rec["rows"]]
            baselines[p.scenario] = add_scaling(specs[p.scenario], rows, baselines.get(p.scenario))
            res.rows += rows
            if rec["skipped"]:
                res.skipped.setdefault(p.gpus, [])
                res.skipped[p.gpus] += [a for a in rec["skipped"] if a not in res.skipped[p.gpus]]
        columns = list(STEP_COLUMNS if mode == "step" else MESSAGE_COLUMNS)
        if any(s.faults for s in specs):
            columns.append("faults")
        res.paths = {"rows": self.path(f"{mode}.csv"), "json": self.path(f"{mode}.json")}
        _write_text(res.paths["rows"], _csv(columns, res.rows))
        if mode == "step" and any(s.curve_gpus is not None for s in specs):
            res.paths["curve"] = self.path("busbw.csv")
            _write_text(res.paths["curve"], _csv(MESSAGE_COLUMNS + (["faults"] if "faults" in columns else []),
                                                   res.curve))
        # JSON files are arrays of rows (pandas.read_json loads each as a frame); what was swept is in meta.json
        meta = specs[0].meta() if len(specs) == 1 else {"scenarios": [s.meta() for s in specs]}
        _write_text(res.paths["json"], json.dumps(res.rows, indent=1, default=float))
        if res.curve:
            res.paths["curve_json"] = self.path("busbw.json")
            _write_text(res.paths["curve_json"], json.dumps(res.curve, indent=1, default=float))
        res.paths["meta"] = self.path("meta.json")
        _write_text(res.paths["meta"], json.dumps(meta, indent=1, default=float))
        if res.failed:
            _write_text(self.path(FAILED), json.dumps(res.failed, indent=1))
        elif os.path.exists(self.path(FAILED)):
            os.remove(self.path(FAILED))
        return res


def _csv(columns, rows) -> str:
    buf = io.StringIO(newline="")
    w = csv.DictWriter(buf, columns, extrasaction="ignore", lineterminator="\r\n")
    w.writeheader()
    for row in rows:
        w.writerow({k: _fmt(row.get(k)) for k in columns})
    return buf.getvalue()


def run_into(spec, out_dir: str, *, jobs: int | None = None, scheduler: str | None = None,
             progress: Callable[[dict], None] | None = None, resume: bool = False) -> SweepResult:
    """``sweep.run_and_write``: run the points the directory lacks, journal each, write the results."""
    from fabricsim.sweep_exec import execute

    with SweepStore(out_dir) as store:
        if resume:
            specs = store.load_plan()
            records = store.read_journal()
        else:
            specs = list(spec) if isinstance(spec, (list, tuple)) else [spec]
            records = {}
        points = plan_points(specs)  # every point checked before anything runs or an old sweep's files go
        if not resume:
            store.start(specs)
        todo = [p for p in points if "rows" not in records.get(p.key, {}) and "curve" not in records.get(p.key, {})]
        interrupted = None
        running = None
        try:
            running = execute(specs, todo, jobs=jobs, scheduler=scheduler)
            for point, result, error in running:
                record = {"key": point.key, **result} if error is None else {"key": point.key, "error": error}
                store.append(record)
                records[point.key] = record
                if progress is not None:
                    progress(dict(record, gpus=point.gpus))
        except KeyboardInterrupt:
            interrupted = "interrupted"
        # from here a Ctrl-C is noted, not raised: the workers are stopped and the finished rows written
        # whenever it comes (it used to skip both when it fell into the workers' shutdown)
        with _sigint_noted() as late:
            if running is not None:
                running.close()  # stops the workers of an interrupted run
            records = store.read_journal()  # the journal is the truth (an interrupt may fall between write and here)
            res = store.render(specs, points, records)
            if not res.failed and not res.missing:
                store.compact(points, records)
                return res
        summary = _summary(res, interrupted or ("interrupted" if late["hit"] else None), store.out_dir)
        raise SweepIncomplete(summary)


@contextlib.contextmanager
def _sigint_noted():
    """Within the block SIGINT sets ``["hit"]`` instead of raising KeyboardInterrupt (main thread only:
    elsewhere signals reach the main thread anyway)."""
    note = {"hit": False}
    if threading.current_thread() is not threading.main_thread():
        yield note
        return

    def handler(signum, frame):
        note["hit"] = True
    previous = signal.signal(signal.SIGINT, handler)
    try:
        yield note
    finally:
        signal.signal(signal.SIGINT, previous)


def _summary(res: SweepResult, interrupted: str | None, out_dir: str) -> str:
    done = res.points - len(res.failed) - len(res.missing)
    parts = [f"sweep {interrupted or 'incomplete'}: {done} of {res.points} points done"]
    if res.failed:
        key, error = next(iter(res.failed.items()))
        first = error.strip().splitlines()[0] if error.strip() else "?"
        parts.append(f"{len(res.failed)} failed (first: point {key}: {first})")
    if res.missing:
        parts.append(f"{len(res.missing)} not run")
    return ", ".join(parts) + f"; finished rows are kept: fabricsim sweep --resume {out_dir}"


def point_of(key: str) -> Point:
    """The Point a journal key names (``"scenario/gpus"`` or ``"scenario/gpus/curve"``)."""
    parts = key.split("/")
    return Point(int(parts[0]), int(parts[1]), len(parts) > 2)


def _write_text(path: str, text: str) -> None:
    """Write a table or JSON document whole, with the newlines exactly as given (the CSVs carry CRLF)."""
    write_whole(path, text, newline="")
