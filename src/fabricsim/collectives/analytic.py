"""Closed-form alpha-beta costs and lower bounds of all-reduce: the tests' oracle and a quick estimate.

p ranks, N bytes, per-rank one-way bandwidth B (B/s), per-step latency a (s). Sources: row C093 (ring),
C094 (recursive halving-doubling, Rabenseifner), C095 (recursive doubling), C096 (bandwidth lower bound,
Patarasuk and Yuan 2009), C092 (nccl-tests' ideal time).
"""

from __future__ import annotations

import math

from fabricsim.errors import ConfigError

__all__ = ["ring_allreduce_time", "tree_allreduce_time", "rhd_allreduce_time", "recursive_doubling_time",
           "nvls_allreduce_time", "allreduce_lower_bound", "innetwork_lower_bound", "ANALYTIC"]


def _check(p: int, nbytes: float, bandwidth: float) -> None:
    if p < 1:
        raise ConfigError(f"an all-reduce needs at least one rank, got {p}")
    if nbytes < 0 or bandwidth <= 0:
        raise ConfigError("message size must be non-negative and bandwidth positive")


def ring_allreduce_time(p: int, nbytes: float, bandwidth: float, latency: float = 0.0) -> float:
    """T = 2(p-1) a + 2 (p-1)/p N/B  (reduce-scatter then all-gather, C093)."""
    _check(p, nbytes, bandwidth)
    return 2 * (p - 1) * latency + 2 * (p - 1) / p * nbytes / bandwidth


def tree_allreduce_time(p: int, nbytes: float, bandwidth: float, latency: float = 0.0, *,
                        chunks: int = 1) -> float:
    """Pipelined double binary tree on a non-blocking switch: each half in ``chunks`` chunks.

    Depth D = ceil(log2(p+1)) - 1 per tree; rounds = K + 2D - 1 (reduce up, broadcast down, overlapped);
    in a steady round a rank sends up to four half-chunks (up and two down in one tree, up in the other),
    so a round takes 2 N/(K B). Latency is paid on the 2D rounds that fill the pipeline.
    """
    _check(p, nbytes, bandwidth)
    if p == 1:
        return 0.0
    depth = max(1, math.ceil(math.log2(p + 1)) - 1)
    rounds = chunks + 2 * depth - 1
    return 2 * depth * latency + rounds * 2 * nbytes / (chunks * bandwidth)


def rhd_allreduce_time(p: int, nbytes: float, bandwidth: float, latency: float = 0.0) -> float:
    """Recursive halving reduce-scatter + recursive doubling all-gather: 2 lg p a + 2 (p-1)/p N/B (C094)."""
    _check(p, nbytes, bandwidth)
    return 2 * math.log2(p) * latency + 2 * (p - 1) / p * nbytes / bandwidth


def recursive_doubling_time(p: int, nbytes: float, bandwidth: float, latency: float = 0.0) -> float:
    """Recursive doubling: lg p a + lg p N/B (C095): best for the smallest messages."""
    _check(p, nbytes, bandwidth)
    return math.log2(p) * (latency + nbytes / bandwidth)


def nvls_allreduce_time(p: int, nbytes: float, bandwidth: float, latency: float = 0.0) -> float:
    """In-switch reduction: a + N (1 + 1/p) / B (send N, receive the reduced shard, multicast it back)."""
    _check(p, nbytes, bandwidth)
    return latency + nbytes * (1 + 1 / p) / bandwidth if p > 1 else 0.0


def allreduce_lower_bound(p: int, nbytes: float, bandwidth: float) -> float:
    """No all-reduce without in-network reduction beats 2 (p-1)/p N/B (C096)."""
    _check(p, nbytes, bandwidth)
    return 2 * (p - 1) / p * nbytes / bandwidth


def innetwork_lower_bound(p: int, nbytes: float, bandwidth: float) -> float:
    """With in-switch reduction each rank must still send and receive N once: N/B."""
    _check(p, nbytes, bandwidth)
    return nbytes / bandwidth if p > 1 else 0.0


ANALYTIC = {"ring": ring_allreduce_time, "tree": tree_allreduce_time, "rhd": rhd_allreduce_time,
            "nvls": nvls_allreduce_time}
