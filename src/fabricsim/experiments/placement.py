"""Where the jobs of a shared cluster run: packed, scattered, or explicit rank lists.

- ``"packed"``: the job takes the lowest free ranks. Ranks fill NVLink domains in order and the
  scale-out builders fill leaf switches in rank order, so a packed job holds whole domains and leaves
  when its size allows, and shares a leaf with at most its neighbours.
- ``"scattered"``: the job takes the same positions of every domain: free GPUs ordered by (position in
  the domain, domain), lowest first. Two jobs of half a cluster each get the first and second half of
  every rack: each spans every domain, so their traffic meets on every leaf and spine (the layout a busy
  scheduler drifts into).
- explicit ranks: a list of ints, or a string of ranges ``"0-71,144-215"``.

Explicit jobs are placed first, then the others in the order given, on the GPUs still free.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Sequence

from fabricsim.errors import ConfigError, InfeasibleError

if TYPE_CHECKING:
    from fabricsim.topologies.base import Topology

__all__ = ["PLACEMENTS", "place", "parse_ranks"]

PLACEMENTS = ("packed", "scattered")


def parse_ranks(value: str | Sequence[int]) -> list[int]:
    """Ranks from a list of ints or a string ``"0-3,8,10-11"``.

    >>> parse_ranks("0-3,8")
    [0, 1, 2, 3, 8]
    """
    if isinstance(value, str):
        out: list[int] = []
        for part in (p.strip() for p in value.split(",") if p.strip()):
            lo, dash, hi = part.partition("-")
            try:
                a, b = int(lo), int(hi) if dash else int(lo)
            except ValueError:
                raise ConfigError(f"ranks {value!r}: {part!r} is not a rank or a range a-b") from None
            if b < a:
                raise ConfigError(f"ranks {value!r}: range {part!r} runs backwards")
            out += range(a, b + 1)
        return out
    if isinstance(value, (list, tuple)) and all(isinstance(r, int) and not isinstance(r, bool) for r in value):
        return list(value)
    raise ConfigError(f"ranks must be a list of integers or a string like '0-71,144-215', got {value!r}")


def place(topology: Topology, jobs: Sequence[tuple[int | None, object]]) -> list[list[int]]:
    """Ranks of every job. ``jobs``: (size, placement) pairs, placement a policy name or explicit ranks.

    Raises ConfigError for an unknown policy or a bad rank list, InfeasibleError when the jobs do not fit
    or two explicit jobs claim one GPU.
    """
    p = topology.num_gpus
    free = [True] * p
    out: list[list[int] | None] = [None] * len(jobs)
    for i, (size, how) in enumerate(jobs):
        if isinstance(how, str) and how in PLACEMENTS:
            continue
        if isinstance(how, str) and not any(c.isdigit() for c in how):
            raise ConfigError(f"job {i}: placement {how!r} is not one of {', '.join(PLACEMENTS)} or a rank list")
        ranks = sorted(parse_ranks(how))
        if size is not None and size != len(ranks):
            raise ConfigError(f"job {i}: {len(ranks)} ranks listed for a job of {size} GPUs")
        for r in ranks:
            if not 0 <= r < p:
                raise InfeasibleError(f"job {i}: rank {r} is not in the fabric ({p} GPUs)")
            if not free[r]:
                raise InfeasibleError(f"job {i}: rank {r} is already another job's")
            free[r] = False
        if len(set(ranks)) != len(ranks):
            raise ConfigError(f"job {i} lists a rank twice")
        out[i] = ranks
    position = {}
    for d, dom in enumerate(topology.domains):
        for j, g in enumerate(dom):
            position[g] = (j, d)
    scatter_order = sorted(range(p), key=lambda r: position[topology.gpus[r]])
    for i, (size, how) in enumerate(jobs):
        if out[i] is not None:
            continue
        if how not in PLACEMENTS:
            raise ConfigError(f"job {i}: placement {how!r} is not one of {', '.join(PLACEMENTS)} or a rank list")
        if size is None or size < 1:
            raise ConfigError(f"job {i}: a {how} job needs a positive number of GPUs")
        order = range(p) if how == "packed" else scatter_order
        ranks = [r for r in order if free[r]][:size]
        if len(ranks) < size:
            raise InfeasibleError(f"job {i} needs {size} GPUs but only {len(ranks)} are free in {topology.name} "
                                  f"({p} GPUs)")
        for r in ranks:
            free[r] = False
        out[i] = sorted(ranks)
    return out  # type: ignore[return-value]
