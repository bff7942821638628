"""A timeline of a run in Chrome/Perfetto trace-event JSON (opens in ui.perfetto.dev or chrome://tracing).

One track per GPU holds its compute slices and the flows it sends; link utilisation (carried rate over
capacity) appears as counter tracks for the busiest links. Times in the file are microseconds, as the
trace-event format expects.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

import numpy as np

__all__ = ["TraceRecorder"]

_US = 1e6


@dataclass
class TraceRecorder:
    """Collects slices and link-rate samples during a run; ``write`` turns them into trace-event JSON."""

    compute: list = field(default_factory=list)  # (rank, label, start, end)
    flows: list = field(default_factory=list)  # (group, start, per-flow finish array)
    rates: list = field(default_factory=list)  # (time, link ids, loads)
    marks: list = field(default_factory=list)  # (time, label): instants such as a timed fault

    def on_rates(self, time: float, link_ids: np.ndarray, loads: np.ndarray) -> None:
        self.rates.append((time, link_ids.copy(), loads.copy()))

    def events(self, fabric, *, max_links: int = 32) -> list[dict]:
        """Trace events for a run on ``fabric`` (its node names and link capacities label the tracks)."""
        links = fabric.links
        rank_of = {int(node): r for r, node in enumerate(fabric.gpu_index.tolist())}
        gpu_names = fabric.topology.gpus
        events: list[dict] = [{"ph": "M", "name": "process_name", "pid": 0, "args": {"name": "GPUs"}},
                              {"ph": "M", "name": "process_name", "pid": 1, "args": {"name": "links"}}]
        for r, name in enumerate(gpu_names):
            events.append({"ph": "M", "name": "thread_name", "pid": 0, "tid": r, "args": {"name": f"rank {r} ({name})"}})
        for rank, label, start, end in self.compute:
            events.append({"ph": "X", "cat": "compute", "name": label, "pid": 0, "tid": rank,
                           "ts": start * _US, "dur": (end - start) * _US})
        for group, start, finish in self.flows:
            for s, d, nbytes, f in zip(group.src.tolist(), group.dst.tolist(), group.nbytes.tolist(), finish.tolist()):
                tid = rank_of.get(s, -1)
                dst = rank_of.get(d, links.nodes[d])
                events.append({"ph": "X", "cat": "flow", "name": f"{group.label or 'send'} -> {dst}", "pid": 0,
                               "tid": tid, "ts": start * _US, "dur": (f - start) * _US, "args": {"bytes": nbytes}})
        for t, label in self.marks:
            events.append({"ph": "i", "s": "g", "cat": "fault", "name": label, "pid": 1, "ts": t * _US})
        if self.rates:
            carried = np.zeros(len(links))
            for (t0, ids, loads), (t1, _, _) in zip(self.rates, self.rates[1:]):
                carried[ids] += loads * (t1 - t0)
            top = [i for i in np.argsort(-carried)[:max_links].tolist() if carried[i] > 0]
            for t, ids, loads in self.rates:
                util = dict.fromkeys(top, 0.0)
                for i, load in zip(ids.tolist(), loads.tolist()):
                    if i in util:
                        util[i] = load / links.bandwidth[i]
                for i, u in util.items():
                    events.append({"ph": "C", "name": links.name(i), "pid": 1, "ts": t * _US,
                                   "args": {"utilisation": round(u, 6)}})
        return events

    def write(self, path, fabric, *, max_links: int = 32) -> None:
        with open(path, "w") as fh:
            json.dump({"traceEvents": self.events(fabric, max_links=max_links), "displayTimeUnit": "ns"}, fh)
