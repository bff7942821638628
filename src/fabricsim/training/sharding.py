"""Data parallelism and its sharded forms: which collectives a step issues, how much they move, and how
they overlap the compute.

Per GPU and step, with ``d`` data-parallel ranks (``dp x cp``: Megatron reduces gradients over data and
context parallel ranks together), ``P`` the GPU's parameter bytes (bf16) and ``G`` its gradient bytes
(``bytes_per_grad`` per parameter), each rank sends (Rajbhandari et al., "ZeRO", arXiv:1910.02054,
section 7; NCCL's ring moves ``(d-1)/d`` of the buffer per reduce-scatter or all-gather):

- ZeRO-0 (plain data parallel): all-reduce of the gradients, ``2 (d-1)/d x G``;
- ZeRO-1 and ZeRO-2 (Megatron-LM's distributed optimizer): reduce-scatter of the gradients and, after the
  optimizer step, all-gather of the updated parameters, ``(d-1)/d x (G + P)``, the same as ZeRO-0 when
  ``G = P``;
- ZeRO-3 / FSDP (PyTorch FSDP's default, resharding after forward): per micro-batch, all-gather of each
  layer's parameters before its forward and again before its backward, and reduce-scatter of its
  gradients, ``m (d-1)/d x (2 P + G)``: with one micro-batch and bf16 gradients, 3 x the parameter bytes
  (the ZeRO paper's 1.5x of plain data parallelism).

Overlap, as the frameworks do it:

- ZeRO-0/1/2: gradients go in buckets (``bucket_params``: Megatron-Core's ``max(40 M, 1 M x d)``
  parameters), each reduced as soon as the last micro-batch's backward has produced it
  (``--overlap-grad-reduce``); one stream per rank runs them in order, so bucket ``i`` starts at
  ``max(ready_i, end_{i-1})``. ZeRO-1/2's parameter all-gather is issued at the start of the next forward
  and each chunk's first forward waits for its own buckets (``--overlap-param-gather``).
- ZeRO-3: the all-gather of the next layer is prefetched while the current one computes (FSDP's
  ``forward_prefetch``/``backward_prefetch``), so a chunk's forward takes ``max(compute, gather)`` and its
  backward ``max(compute, gather + reduce-scatter)``.
"""

from __future__ import annotations

import math

import numpy as np

__all__ = ["dp_bytes_per_gpu", "bucket_params", "bucket_sizes", "bucket_chain"]


def dp_bytes_per_gpu(zero: int, param_bytes: float, grad_bytes: float, d: int, micro_batches: int = 1) -> float:
    """Bytes each GPU sends per step for data parallelism at ZeRO stage ``zero`` (closed form above)."""
    if d < 2:
        return 0.0
    share = (d - 1) / d
    if zero == 0:
        return 2 * share * grad_bytes
    if zero in (1, 2):
        return share * (grad_bytes + param_bytes)
    return micro_batches * share * (2 * param_bytes + grad_bytes)


def bucket_params(d: int) -> int:
    """Megatron-Core's gradient bucket: ``max(40,000,000, 1,000,000 x d)`` parameters
    (``DistributedDataParallelConfig``'s default in ``megatron/training``)."""
    return max(40_000_000, 1_000_000 * d)


def bucket_sizes(total_bytes: float, bucket_bytes: float) -> np.ndarray:
    """Buckets of ``bucket_bytes`` and a remainder (int bytes)."""
    total = int(math.ceil(total_bytes))
    if total <= 0:
        return np.zeros(0, dtype=np.int64)
    full, rest = divmod(total, int(bucket_bytes))
    return np.asarray([int(bucket_bytes)] * full + ([rest] if rest else []), dtype=np.int64)


def bucket_chain(ready: np.ndarray, durations: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Start and end of buckets run one at a time in order: ``start_i = max(ready_i, end_{i-1})``.

    ``end_i = max_{j<=i} (ready_j + sum_{k=j..i} d_k)``: a running maximum over a prefix sum.
    """
    ready = np.asarray(ready, dtype=float)
    durations = np.asarray(durations, dtype=float)
    if not len(ready):
        return np.zeros(0), np.zeros(0)
    csum = np.cumsum(durations)
    end = csum + np.maximum.accumulate(ready - (csum - durations))
    return end - durations, end
