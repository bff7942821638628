"""A timeline of a run in Chrome/Perfetto trace-event JSON (opens in ui.perfetto.dev or chrome://tracing).

One track per GPU holds its compute slices and, per flow group (one step of a collective), one slice for
the flows it sends: from the group's start to the last of that rank's flows arriving, with their bytes
and count in ``args``. Link utilisation (carried rate over capacity) appears as counter tracks for the
busiest links (most bytes carried). Times in the file are microseconds, as the format expects.

Traces scale: events are streamed to a temporary file next to the target as they happen, so memory
stays bounded however long the run; link-rate changes go to a second, binary temporary file and only
the busiest links' counters are written at the end. The file appears under its name, complete, only
when :meth:`TraceRecorder.write` finishes (write then rename); a run that fails or is interrupted leaves
no file behind. ``ranks`` restricts the GPU tracks to a selection (``--trace-ranks`` on the CLI).
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import weakref
from pathlib import Path

import numpy as np

from fabricsim.atomic_file import new_temporary, publish

__all__ = ["TraceRecorder", "parse_ranks"]

_US = 1e6
_CHUNK = 1 << 18  # link-rate samples buffered in memory before they go to the binary temporary file


def parse_ranks(text: str | None, p: int) -> np.ndarray | None:
    """Ranks from ``"0-7,64,128-135"`` (inclusive ranges); None for all. Raises ValueError on bad input.

    >>> parse_ranks("0-2,5", 8).tolist()
    [0, 1, 2, 5]
    """
    if text is None or text.strip() in ("", "all"):
        return None
    ranks = set()
    for part in text.split(","):
        part = part.strip()
        lo, _, hi = part.partition("-")
        if not lo.isdigit() or (hi and not hi.isdigit()):
            raise ValueError(f"bad rank selection {part!r}: use ranks and ranges like 0-7,64")
        a, b = int(lo), int(hi) if hi else int(lo)
        if a > b:
            raise ValueError(f"rank range {part!r} is empty: its first rank is after its last")
        if b >= p:
            raise ValueError(f"rank range {part!r} is outside 0-{p - 1}")
        ranks.update(range(a, b + 1))
    return np.array(sorted(ranks), dtype=np.int64)


def _cleanup(path: str, fh, samples) -> None:
    for f in (fh, samples):
        try:
            f.close()
        except Exception:  # pragma: no cover - closing what may already be closed
            pass
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


class TraceRecorder:
    """Streams a run's slices to a temporary file; :meth:`write` adds link counters and publishes it.

    Parameters
    ----------
    fabric : Fabric
        Node names, ranks and link capacities label the tracks.
    path : path-like, optional
        Where the trace will go (its temporary file is created beside it); default: the system's
        temporary directory, copied into place by :meth:`write`.
    ranks : array of int, optional
        GPU ranks whose tracks are written (default: all).
    """

    def __init__(self, fabric, path=None, *, ranks=None):
        self.fabric = fabric
        gi = fabric.gpu_index
        self._rank_of = np.full(len(fabric.links.nodes), -1, dtype=np.int64)
        self._rank_of[gi] = np.arange(gi.shape[0])
        self._selected = np.ones(gi.shape[0], dtype=bool)
        if ranks is not None:
            self._selected[:] = False
            self._selected[np.asarray(ranks, dtype=np.int64)] = True
        if path is not None:  # beside the output, which it replaces
            self._tmp = new_temporary(path)
        else:  # private, in the temporary directory, until write names the output (then copied beside it)
            fd, self._tmp = tempfile.mkstemp(prefix=".fabricsim-trace-", suffix=".json.tmp")
            os.close(fd)
        self._private = path is None
        self._fh = open(self._tmp, "w", encoding="utf-8")
        self._samples = tempfile.TemporaryFile()
        self._finalizer = weakref.finalize(self, _cleanup, self._tmp, self._fh, self._samples)
        self._buf_t: list = []
        self._buf_l: list = []
        self._buf_v: list = []
        self._buffered = 0
        self.events = 0
        self._mark_times: list = []  # instants (timed faults) whose changed links are always drawn
        self._fh.write('{"displayTimeUnit":"ns","traceEvents":[\n')
        self._first = True
        self._emit({"ph": "M", "name": "process_name", "pid": 0, "args": {"name": "GPUs"}})
        self._emit({"ph": "M", "name": "process_name", "pid": 1, "args": {"name": "links"}})
        names = fabric.topology.gpus
        for r in np.flatnonzero(self._selected).tolist():
            self._emit({"ph": "M", "name": "thread_name", "pid": 0, "tid": r, "args": {"name": f"rank {r} ({names[r]})"}})

    # --- streaming ----------------------------------------------------------------------------------------
    def _emit(self, event: dict) -> None:
        self._write(json.dumps(event, separators=(",", ":")))

    def _write(self, text: str) -> None:
        if not text:
            return
        self._fh.write(text if self._first else ",\n" + text)
        self._first = False

    def on_compute(self, rank: int, label: str, start: float, end: float) -> None:
        if 0 <= rank < self._selected.shape[0] and self._selected[rank]:
            self.events += 1
            self._emit({"ph": "X", "cat": "compute", "name": label, "pid": 0, "tid": rank,
                        "ts": start * _US, "dur": (end - start) * _US})

    def on_group(self, group, start: float, flow_finish: np.ndarray) -> None:
        """One slice per sending rank of the group: start to its last flow's arrival."""
        r = self._rank_of[group.src]
        keep = r >= 0
        keep[keep] = self._selected[r[keep]]
        if not keep.any():
            return
        ranks, inv = np.unique(r[keep], return_inverse=True)
        inv = inv.reshape(-1)
        end = np.full(ranks.shape[0], -np.inf)
        np.maximum.at(end, inv, flow_finish[keep])
        nbytes = np.bincount(inv, weights=group.nbytes[keep], minlength=ranks.shape[0])
        count = np.bincount(inv, minlength=ranks.shape[0])
        name = json.dumps(group.label or "send")
        ts = float(start) * _US
        self.events += ranks.shape[0]
        self._write(",\n".join(
            f'{{"ph":"X","cat":"flow","name":{name},"pid":0,"tid":{k},"ts":{ts!r},"dur":{d!r},'
            f'"args":{{"bytes":{b!r},"flows":{c}}}}}'
            for k, d, b, c in zip(ranks.tolist(), ((end - start) * _US).tolist(), nbytes.tolist(), count.tolist())))

    def on_mark(self, time: float, label: str) -> None:
        """An instant on the links track, such as a timed fault."""
        self.events += 1
        self._mark_times.append(time)
        self._emit({"ph": "i", "s": "g", "cat": "fault", "name": label, "pid": 1, "ts": time * _US})

    def on_rates(self, time: float, link_ids: np.ndarray, loads: np.ndarray) -> None:
        """Links whose carried load (B/s) changed at ``time``."""
        if link_ids.size == 0:
            return
        self._buf_t.append(np.full(link_ids.shape[0], time))
        self._buf_l.append(np.asarray(link_ids, dtype=np.int64))
        self._buf_v.append(np.asarray(loads, dtype=float))
        self._buffered += link_ids.shape[0]
        if self._buffered >= _CHUNK:
            self._spill()

    def on_cached(self, start: float, end: float, link_ids: np.ndarray, link_bytes: np.ndarray) -> None:
        """A launch served from the round cache, once it has run to its end: its links at their mean rate
        over its span (a cached launch taken back into the fluid model reports its rates as it runs)."""
        if end <= start or link_ids.size == 0:
            return
        ids, inv = np.unique(link_ids, return_inverse=True)
        rate = np.bincount(inv.reshape(-1), weights=link_bytes) / (end - start)
        self.on_rates(start, ids, rate)
        self.on_rates(end, ids, np.zeros(ids.shape[0]))

    def _spill(self) -> None:
        if not self._buffered:
            return
        block = np.empty(self._buffered, dtype=[("t", "f8"), ("l", "i8"), ("v", "f8")])
        block["t"] = np.concatenate(self._buf_t)
        block["l"] = np.concatenate(self._buf_l)
        block["v"] = np.concatenate(self._buf_v)
        self._samples.write(block.tobytes())
        self._buf_t, self._buf_l, self._buf_v, self._buffered = [], [], [], 0

    def _blocks(self):
        self._spill()
        self._samples.seek(0)
        dtype = np.dtype([("t", "f8"), ("l", "i8"), ("v", "f8")])
        while True:
            raw = self._samples.read(dtype.itemsize * _CHUNK)
            if not raw:
                return
            yield np.frombuffer(raw, dtype=dtype)

    # --- publishing ---------------------------------------------------------------------------------------
    def write(self, path, *, max_links: int = 32) -> None:
        """Add the busiest links' counters, close the JSON and move it to ``path`` (atomically)."""
        links = self.fabric.links
        n = len(links)
        load = np.zeros(n)
        since = np.zeros(n)
        carried = np.zeros(n)
        marked = np.zeros(n, dtype=bool)  # links whose rate changed at a marked instant (a timed fault)
        marks = np.asarray(self._mark_times, dtype=float)
        for block in self._blocks():
            for t, ids, v in _by_time(block):
                carried[ids] += load[ids] * (t - since[ids])
                load[ids], since[ids] = v, t
                if marks.size and np.isclose(marks, t, rtol=1e-12, atol=0.0).any():
                    marked[ids] = True
        top = [i for i in np.argsort(-carried)[:max_links].tolist() if carried[i] > 0]
        if top or marked.any():
            watch = marked.copy()
            watch[top] = True
            cap = links.bandwidth.tolist()
            for block in self._blocks():
                mine = block[watch[block["l"]]]
                self._write(",\n".join(
                    f'{{"ph":"C","name":{json.dumps(links.name(l))},"pid":1,"ts":{t * _US!r},'
                    f'"args":{{"utilisation":{round(v / cap[l], 6)!r}}}}}'
                    for t, l, v in zip(mine["t"].tolist(), mine["l"].tolist(), mine["v"].tolist())))
        self._fh.write("\n]}\n")
        self._fh.close()
        target = Path(path)
        if self._private or Path(self._tmp).resolve().parent != target.resolve().parent:
            sibling = new_temporary(target)
            shutil.copyfile(self._tmp, sibling)
            os.unlink(self._tmp)
            self._tmp = sibling
        publish(self._tmp, target)
        self._finalizer.detach()
        self._samples.close()

    def discard(self) -> None:
        """Drop the partial trace (a failed run leaves no file)."""
        self._finalizer()


def _by_time(block):
    """Groups of samples with equal time, in order: (time, link ids, loads)."""
    t = block["t"]
    bounds = np.flatnonzero(np.diff(t)) + 1
    for a, b in zip(np.r_[0, bounds].tolist(), np.r_[bounds, t.shape[0]].tolist()):
        yield float(t[a]), block["l"][a:b], block["v"][a:b]
