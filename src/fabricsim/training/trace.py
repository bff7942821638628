"""Perfetto / Chrome trace-event JSON of a simulated training step.

A pipelined step gets one track per pipeline stage (every forward and backward of every micro-batch and
chunk, with the exposed TP/CP/EP communication inside it as nested slices), one track per stage for its
data-parallel buckets (reduce-scatter or all-reduce, and ZeRO-1/2's parameter all-gathers), and one track
per stage boundary and direction for the P2P sends. A data-parallel step gets a compute track and a bucket
track. Times in microseconds, as the format expects. Output is written to a temporary file and renamed, so
a trace is never left half written.
"""

from __future__ import annotations

import json
import os
from typing import TYPE_CHECKING

from fabricsim.atomic_file import replacing
if TYPE_CHECKING:
    from fabricsim.training.step import StepResult

__all__ = ["write_step_trace"]

US = 1e6


def write_step_trace(result: StepResult, path: str | os.PathLike) -> None:
    """Write ``result``'s timeline to ``path`` (see the module docstring for the tracks)."""
    if result.pipeline is None:
        events = _dp_events(result)
    else:
        events = _pipeline_events(result)
    with replacing(path) as fh:
        json.dump({"traceEvents": events, "displayTimeUnit": "ms"}, fh)


def _meta(pid, name, tid=None):
    if tid is None:
        return {"ph": "M", "name": "process_name", "pid": pid, "args": {"name": name}}
    return {"ph": "M", "name": "thread_name", "pid": pid, "tid": tid, "args": {"name": name}}


def _slice(pid, tid, name, t0, t1, **args):
    return {"ph": "X", "pid": pid, "tid": tid, "name": name, "ts": t0 * US, "dur": max(0.0, t1 - t0) * US,
            "args": args}


def _pipeline_events(result) -> list:
    pipe, lay = result.pipeline, result.layout
    p = lay.pp
    events = [_meta(0, f"pipeline stages ({lay.describe()}, {result.gpus} GPUs)"),
              _meta(1, "data-parallel collectives"), _meta(2, "pipeline P2P sends")]
    comm = getattr(result, "chunk_comm", {}) or {}
    for s in range(p):
        events.append(_meta(0, f"stage {s} ({lay.gpus // p} GPUs in lock-step)", s))
        events.append(_meta(1, f"stage {s} gradient buckets ({result.algorithm})", s))
        for kind, k, j, t0, t1 in pipe.ops[s]:
            g = k * p + s
            events.append(_slice(0, s, f"{kind} mb{j} chunk{k}", t0, t1, micro_batch=j, chunk=k, global_chunk=g))
            t = t1
            for what, seconds in (comm.get((g, kind)) or {}).items():
                if seconds > 0:
                    events.append(_slice(0, s, f"{what} exposed", t - seconds, t, seconds=seconds))
                    t -= seconds
    for s, (sizes, ready, start, end) in enumerate(result.dp_chains):
        for i in range(len(sizes)):
            events.append(_slice(1, s, f"bucket {i}", float(start[i]), float(end[i]), bytes=int(sizes[i]),
                                 ready_us=float(ready[i]) * US))
    tids: dict = {}
    for label, t0, t1 in pipe.sends:
        tid = tids.setdefault(label, len(tids))
        events.append(_slice(2, tid, label, t0, t1))
    events += [_meta(2, f"{label}", tid) for label, tid in tids.items()]
    return events


def _dp_events(result) -> list:
    """A Perfetto / Chrome trace-event JSON of the step: compute, TP time and every bucket's all-reduce.

    One track for the GPUs' compute (all ranks do the same work), one for the data-parallel stream.
    Times in microseconds, as the format expects.
    """
    us = 1e6
    events = [{"ph": "M", "name": "process_name", "pid": 0, "args": {"name": f"training step ({result.gpus} GPUs)"}},
              {"ph": "M", "name": "thread_name", "pid": 0, "tid": 0, "args": {"name": "compute (every GPU)"}},
              {"ph": "M", "name": "thread_name", "pid": 0, "tid": 1,
               "args": {"name": f"data-parallel all-reduce ({result.algorithm}, {result.dp} ranks)"}}]

    def slice_(tid, name, t0, t1, **args):
        events.append({"ph": "X", "pid": 0, "tid": tid, "name": name, "ts": t0 * us, "dur": (t1 - t0) * us,
                       "args": args})

    slice_(0, "forward", 0.0, result.forward_time, tp_allreduce_s=result.tp_comm_time / 2)
    slice_(0, "backward", result.forward_time, result.forward_time + result.backward_time,
           tp_allreduce_s=result.tp_comm_time / 2)
    for i in range(result.buckets):
        slice_(1, f"bucket {i}", float(result.bucket_start[i]), float(result.bucket_end[i]),
               bytes=int(result.bucket_sizes[i]), ready_us=float(result.bucket_ready[i]) * us)
    return events
