"""Point-to-point transfers: many send/recv pairs posted at once, as one flow group.

NCCL runs the sends and receives posted between ``ncclGroupStart`` and ``ncclGroupEnd`` concurrently, so a
group of pairs (pipeline stages passing activations, an all-to-all's blocks) is one step here: every pair's
bytes start together and share the fabric max-min fairly. The step pays the protocol's launch latency and
one hop of its ring step latency (intra-domain or network, the larger if the pairs cross domains).
Contention-free, one pair: T = launch + a + N/B (nccl-tests' sendrecv busbw factor is 1).

Protocol: ``"auto"`` uses LL up to ``P2P_LL_THRESHOLD`` bytes per pair and Simple above, as NCCL does
(its ``NCCL_P2P_LL_THRESHOLD`` default, 16 KiB; NCCL documentation, environment variables).
"""

from __future__ import annotations

import hashlib
from typing import Sequence

import numpy as np

from fabricsim.collectives.base import Schedule, Step
from fabricsim.collectives.protocol import Protocol, choose_protocol
from fabricsim.errors import ConfigError, InfeasibleError

__all__ = ["P2P_LL_THRESHOLD", "normalise_pairs", "ring_shift_pairs", "p2p_protocol", "exchange", "send_recv"]

P2P_LL_THRESHOLD = 16 * 2**10


def normalise_pairs(pairs_or_src_dst, p_all: int) -> list[tuple[int, int]]:
    """``(src, dst)`` or a sequence of such pairs, checked: ranks in the topology, no rank sending to itself."""
    if isinstance(pairs_or_src_dst, tuple) and len(pairs_or_src_dst) == 2 and \
            all(isinstance(x, (int, np.integer)) for x in pairs_or_src_dst):
        pairs_or_src_dst = [pairs_or_src_dst]
    try:
        pairs = [(int(s), int(d)) for s, d in pairs_or_src_dst]
    except (TypeError, ValueError):
        raise ConfigError("send/recv takes (src, dst) or a list of (src, dst) pairs of ranks") from None
    if not pairs:
        raise ConfigError("send/recv needs at least one (src, dst) pair")
    for s, d in pairs:
        if s == d:
            raise ConfigError(f"rank {s} sends to itself: a send/recv pair needs two ranks")
        for r in (s, d):
            if not 0 <= r < p_all:
                raise InfeasibleError(f"rank {r} is not in the topology, which has {p_all} GPUs")
    if len(set(pairs)) != len(pairs):
        raise ConfigError("a (src, dst) pair is listed twice")
    return pairs


def ring_shift_pairs(ranks: Sequence[int]) -> list[tuple[int, int]]:
    """Every rank sends to the next one of the group (nccl-tests' sendrecv_perf pattern)."""
    ranks = list(ranks)
    return [(r, ranks[(i + 1) % len(ranks)]) for i, r in enumerate(ranks)] if len(ranks) > 1 else []


def p2p_protocol(nbytes_per_pair: float, protocol: str = "auto") -> Protocol:
    """LL up to P2P_LL_THRESHOLD bytes per pair, Simple above (``"auto"``), or the one named."""
    if protocol == "auto":
        return choose_protocol(0, "ll" if nbytes_per_pair <= P2P_LL_THRESHOLD else "simple")
    return choose_protocol(0, protocol)


def exchange(fabric, src: np.ndarray, dst: np.ndarray, nbytes: np.ndarray, protocol: Protocol, *, name: str,
             apply=None, pattern=None) -> Schedule:
    """One step moving ``nbytes[i]`` from rank ``src[i]`` to rank ``dst[i]`` for every i, all at once."""
    src, dst = np.asarray(src, dtype=np.int64), np.asarray(dst, dtype=np.int64)
    nbytes = np.asarray(nbytes, dtype=float)
    topo = fabric.topology
    dom = np.array([topo.domain_of(topo.gpus[r]) for r in range(topo.num_gpus)])
    crosses = bool(np.any(dom[src] != dom[dst])) if len(src) else False
    if pattern is None:
        h = hashlib.blake2b(digest_size=12)
        for a in (src, dst, nbytes):
            h.update(a.tobytes())
        pattern = (name, h.digest())
    gi = fabric.gpu_index
    keys = np.arange(len(src), dtype=np.int64)

    def steps():
        if len(src):
            yield Step(pattern, lambda: (gi[src], gi[dst], nbytes, keys), "net" if crosses else "nvlink",
                       apply, name)
    return Schedule(name, steps(), protocol, "ring")


def send_recv(fabric, pairs: list[tuple[int, int]], nbytes: int, protocol: Protocol) -> Schedule:
    """Each pair's source sends its ``nbytes`` buffer to its destination; data: ``dst`` ends with ``src``'s."""
    src = np.array([s for s, _ in pairs], dtype=np.int64)
    dst = np.array([d for _, d in pairs], dtype=np.int64)

    def apply(data: dict) -> None:
        payloads = [(d, data[s].copy()) for s, d in pairs]
        for d, payload in payloads:
            data[d][:] = payload
    return exchange(fabric, src, dst, np.full(len(pairs), float(nbytes)), protocol, name="p2p", apply=apply,
                    pattern=("p2p", hashlib.blake2b(src.tobytes() + dst.tobytes(), digest_size=12).digest(), nbytes))
