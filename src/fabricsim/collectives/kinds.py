"""The collectives fabricsim runs, in nccl-tests' vocabulary: names, the meaning of "size", busbw factors.

nccl-tests reports one size S per row (its "size" column) and derives algbw = S / t and busbw = algbw x F,
where F makes busbw comparable with a rank's link bandwidth whatever the rank count n (nccl-tests,
doc/PERFORMANCE.md; the per-test ``GetBw`` functions in src/*.cu). What S is differs per collective, and
fabricsim's ``nbytes`` follows the same convention so that a row can be read next to nccl-tests output:

============== ============================================== ==================== ==============
kind           ``nbytes`` (nccl-tests' size S)                 busbw factor F        data moved
============== ============================================== ==================== ==============
allreduce      the buffer every rank reduces (= its output)    2 (n-1)/n             all ranks
reducescatter  the full input buffer of one rank (n shards)    (n-1)/n               shard k to rank k
allgather      the full gathered output (n shards)             (n-1)/n               shard k from rank k
broadcast      the root's buffer                               1                     root to all
reduce         the buffer every rank contributes               1                     all to root
alltoall       one rank's send buffer (n blocks, one per peer) (n-1)/n               block j to rank j
sendrecv       what each sender sends                          1                     src to dst
============== ============================================== ==================== ==============

So a reduce-scatter of S bytes leaves S/n on each rank and an all-gather of S bytes starts from S/n on
each rank (nccl-tests: S = recvcount x sizeof(type) x n, resp. sendcount x ... x n). The all-to-all
block a rank sends to itself is part of S (nccl-tests counts count x n elements), as is its share of the
(n-1)/n factor. nccl-tests divides by n with integer counts; fabricsim keeps S exact and splits blocks
as evenly as bytes allow.

nccl-tests (2.24+) reports all-reduce busbw with (n-1)/(n+1) when run with ``NCCL_ALGO=NVLS``; fabricsim
keeps 2 (n-1)/n for every all-reduce algorithm, as the published figures it is checked against do.
"""

from __future__ import annotations

from dataclasses import dataclass

from fabricsim.errors import ConfigError

__all__ = ["Kind", "KINDS", "kind", "busbw_factor", "nccl_tests_binary"]


@dataclass(frozen=True)
class Kind:
    """One collective: its name, how busbw is derived, and how nccl-tests prints its rows.

    ``factor`` is F above as a function of n. ``reduces`` says whether a reduction op applies (nccl-tests
    prints "none" in the redop column otherwise); ``rooted`` whether a root applies (it prints -1
    otherwise). ``algorithms`` lists what fabricsim can run for it, the default first.
    """

    name: str
    title: str
    factor_text: str
    reduces: bool
    rooted: bool
    algorithms: tuple[str, ...]
    binary: str

    def factor(self, n: int) -> float:
        """busbw / algbw for n ranks (1 for a single rank, where nothing moves)."""
        if n <= 1:
            return 1.0
        if self.name == "allreduce":
            return 2 * (n - 1) / n
        if self.name in ("reducescatter", "allgather", "alltoall"):
            return (n - 1) / n
        return 1.0


KINDS = {k.name: k for k in (
    Kind("allreduce", "all-reduce", "2(n-1)/n", True, False,
         ("ring", "tree", "hierarchical", "nvls", "sharp"), "all_reduce_perf"),
    Kind("reducescatter", "reduce-scatter", "(n-1)/n", True, False, ("ring", "hierarchical", "nvls"),
         "reduce_scatter_perf"),
    Kind("allgather", "all-gather", "(n-1)/n", False, False, ("ring", "hierarchical", "nvls"), "all_gather_perf"),
    Kind("broadcast", "broadcast", "1", False, True, ("ring", "tree"), "broadcast_perf"),
    Kind("reduce", "reduce", "1", True, True, ("ring", "tree"), "reduce_perf"),
    Kind("alltoall", "all-to-all", "(n-1)/n", False, False, ("pairwise",), "alltoall_perf"),
    Kind("sendrecv", "send/recv", "1", False, False, ("p2p",), "sendrecv_perf"),
)}


def kind(name: str) -> Kind:
    """The Kind called ``name`` (nccl-tests' spellings with _ or - are accepted: "all_gather")."""
    key = str(name).lower().replace("_", "").replace("-", "").replace("/", "")
    key = {"alltoallv": "alltoall", "p2p": "sendrecv"}.get(key, key)
    try:
        return KINDS[key]
    except KeyError:
        raise ConfigError(f"unknown collective {name!r}; use one of {', '.join(KINDS)}") from None


def busbw_factor(name: str, n: int) -> float:
    """nccl-tests' bus-bandwidth factor of collective ``name`` on n ranks (doc/PERFORMANCE.md).

    >>> busbw_factor("allreduce", 8), busbw_factor("allgather", 8), busbw_factor("broadcast", 8)
    (1.75, 0.875, 1.0)
    """
    return kind(name).factor(n)


def nccl_tests_binary(name: str) -> str:
    """The nccl-tests program whose output a row of ``name`` matches (e.g. all_gather_perf)."""
    return kind(name).binary
