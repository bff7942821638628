"""One row per collective run, in nccl-tests' columns: the schema every collective output shares.

nccl-tests prints, per size: size (B), count (elements), type, redop, root, time (us), algbw (GB/s),
busbw (GB/s) and #wrong (elements that failed the data check). ``record`` gives the same fields, named
with their units, at full precision, plus what a simulation adds (collective, algorithm, protocol, the
fabric and its rank count, the model). Table, CSV and JSON outputs are all written from these records,
so a column means the same thing everywhere.

Sizes follow nccl-tests' own rounding (its ``GetCollByteCount`` per test): counts are whole elements of
the data type, and the collectives that split a buffer between n ranks (reduce-scatter, all-gather,
all-to-all) use ``count // n`` elements per rank, printing ``count // n`` as the count and
``(count // n) n`` elements as the size. A requested size therefore may print smaller, exactly as
``reduce_scatter_perf -b 8 -g 8`` does.
"""

from __future__ import annotations

import math

from fabricsim.collectives.base import CollectiveResult
from fabricsim.collectives.kinds import kind as lookup
from fabricsim.errors import ConfigError

__all__ = ["COLUMNS", "DTYPES", "REDOPS", "dtype_size", "nccl_size", "record"]

COLUMNS = ("collective", "topology", "gpus", "size_bytes", "count", "type", "redop", "root", "time_us",
           "algbw_GBps", "busbw_GBps", "wrong", "algorithm", "protocol", "model")

#: nccl-tests' data types (its ``-d``) and their sizes in bytes, with common aliases.
DTYPES = {"int8": 1, "uint8": 1, "int32": 4, "uint32": 4, "int64": 8, "uint64": 8, "half": 2, "float": 4,
          "double": 8, "bfloat16": 2, "f8e4m3": 1, "f8e5m2": 1}
_DTYPE_ALIASES = {"char": "int8", "int": "int32", "float16": "half", "fp16": "half", "float32": "float",
                  "fp32": "float", "float64": "double", "fp64": "double", "bf16": "bfloat16", "fp8": "f8e4m3",
                  "e4m3": "f8e4m3", "e5m2": "f8e5m2"}
#: nccl-tests' reduction ops (its ``-o``); the op does not change a simulated time (reductions are
#: bandwidth-bound), and the data check reduces with ``sum``.
REDOPS = ("sum", "prod", "max", "min", "avg", "mulsum")


def dtype_name(name: str) -> str:
    """nccl-tests' spelling of a data type ("bf16" -> "bfloat16")."""
    key = str(name).lower()
    key = _DTYPE_ALIASES.get(key, key)
    if key not in DTYPES:
        raise ConfigError(f"unknown data type {name!r}; use one of {', '.join(DTYPES)}")
    return key


def dtype_size(name: str) -> int:
    """Bytes per element of data type ``name``."""
    return DTYPES[dtype_name(name)]


def nccl_size(kind: str, nbytes: int, ranks: int, dtype: str = "float") -> tuple[int, int]:
    """(size in bytes, count) as nccl-tests prints them for a requested size (module docstring).

    >>> nccl_size("allreduce", 8, 8), nccl_size("allgather", 1024, 8), nccl_size("reducescatter", 8, 8)
    ((8, 2), (1024, 32), (0, 0))
    """
    word = dtype_size(dtype)
    count = nbytes // word
    if lookup(kind).name in ("reducescatter", "allgather", "alltoall"):
        per_rank = count // max(ranks, 1)
        return per_rank * max(ranks, 1) * word, per_rank
    return count * word, count


def record(result: CollectiveResult, *, topology: str, count: int, dtype: str = "float", redop: str = "sum",
           root: int | None = None, wrong: int | None = None, model: str = "simulate") -> dict:
    """A CollectiveResult as one row of COLUMNS (``wrong`` None: the data were not checked)."""
    k = lookup(result.kind)
    finite = result.time > 0 and math.isfinite(result.algbw)
    return {
        "collective": k.name, "topology": topology, "gpus": result.ranks, "size_bytes": int(result.nbytes),
        "count": int(count), "type": dtype_name(dtype), "redop": redop if k.reduces else "none",
        "root": (int(root) if root is not None else 0) if k.rooted else -1,
        "time_us": float(result.time * 1e6), "algbw_GBps": float(result.algbw / 1e9) if finite else 0.0,
        "busbw_GBps": float(result.busbw / 1e9) if finite else 0.0, "wrong": wrong, "algorithm": result.algorithm,
        "protocol": result.protocol, "model": model,
    }
