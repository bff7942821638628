"""The parallel layout of a training job and its mapping onto a fabric's ranks.

A layout splits ``gpus = tp x cp x pp x dp`` ways (DESIGN.md, "Training at scale"):

- ``tp`` tensor parallel (Shoeybi et al., arXiv:1909.08053): every layer's matrices split over ``tp``
  GPUs, two all-reduces per layer forward and two backward (or, with sequence parallelism, a reduce-scatter
  and an all-gather in place of each all-reduce: Korthikanti et al., arXiv:2205.05198, section 4.2.2).
- ``cp`` context parallel: the sequence split over ``cp`` GPUs, attention as a ring passing key/value blocks
  (Liu et al., "Ring Attention", arXiv:2310.01889; Megatron-Core's context parallelism).
- ``pp`` pipeline stages (Narayanan et al., arXiv:2104.04473): contiguous blocks of layers, micro-batches
  flowing through them under 1F1B, optionally ``virtual_stages`` model chunks per GPU (interleaved 1F1B).
- ``dp`` data-parallel replicas, optionally sharding optimizer state, gradients and parameters
  (``zero`` 1, 2, 3: Rajbhandari et al., arXiv:1910.02054; stage 3 is what PyTorch FSDP does).
- ``ep`` expert parallel for mixture-of-experts layers, carved out of ``dp x cp`` as Megatron-Core does:
  the ``dp x cp`` GPUs of one (tp position, pipeline stage) form groups of ``ep`` that hold different
  experts and exchange tokens by all-to-all.

Rank order (Megatron-Core's default ``order="tp-cp-ep-dp-pp"``, where ep folds into cp x dp): TP varies
fastest, then CP, then DP, then PP, so a TP group is ``tp`` consecutive ranks and stays inside one NVLink
domain, and pipeline stages are the slowest-varying coordinate, each a contiguous block of
``gpus / pp`` ranks. ``order`` lists the four dimensions fastest first and may be any permutation:
``"tp-dp-cp-pp"`` puts the data-parallel replicas closer than the context-parallel ring.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from fabricsim.errors import ConfigError, InfeasibleError

if TYPE_CHECKING:
    from fabricsim.topologies.base import Topology

__all__ = ["Layout", "RankGroups", "rank_groups", "DEFAULT_ORDER", "RECOMPUTE", "DIMS"]

DEFAULT_ORDER = "tp-cp-dp-pp"
DIMS = ("tp", "cp", "dp", "pp")
RECOMPUTE = ("none", "selective", "full")


def _positive(name: str, value) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"--{name.replace('_', '-')} must be a positive integer, got {value!r}")


def _parse_order(order: str) -> tuple[str, ...]:
    dims = tuple(d.strip().lower() for d in str(order).replace(",", "-").split("-") if d.strip())
    if sorted(dims) != sorted(DIMS):
        raise ConfigError(f"order must list tp, cp, dp and pp once each, fastest first (e.g. {DEFAULT_ORDER!r}), "
                          f"got {order!r}")
    return dims


@dataclass(frozen=True)
class Layout:
    """How one training job is split over its GPUs.

    Parameters
    ----------
    tp, cp, pp, dp : int
        Tensor-parallel width, context-parallel width, pipeline stages, data-parallel replicas.
    ep : int
        Expert-parallel width; must divide ``dp x cp`` and the model's experts (1 for a dense model:
        ``check_model``).
    virtual_stages : int
        Model chunks per pipeline rank (interleaved 1F1B); 1 is plain 1F1B.
    micro_batch : int
        Sequences per micro-batch.
    zero : int
        0: plain data parallel (gradients all-reduced); 1: optimizer states sharded over DP (Megatron's
        distributed optimizer: gradient reduce-scatter, parameter all-gather after the step); 2: gradients
        sharded too; 3: parameters too (FSDP: parameter all-gather per layer forward and backward).
    recompute : {"none", "selective", "full"}
        Activation recomputation (Korthikanti et al. 2022): "selective" recomputes the attention core,
        "full" reruns each layer's forward during backward.
    sequence_parallel : bool, optional
        Megatron sequence parallelism with TP; default on whenever ``tp > 1``.
    order : str
        Rank order of the dimensions, fastest first (default "tp-cp-dp-pp").

    Examples
    --------
    >>> lay = Layout(tp=8, pp=16, dp=64)
    >>> lay.gpus, lay.sequence_parallel
    (8192, True)
    >>> Layout.for_gpus(64, tp=8, pp=2).dp
    4
    """

    tp: int = 1
    cp: int = 1
    pp: int = 1
    dp: int = 1
    ep: int = 1
    virtual_stages: int = 1
    micro_batch: int = 1
    zero: int = 0
    recompute: str = "none"
    sequence_parallel: bool | None = None
    order: str = DEFAULT_ORDER
    dims: tuple = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        for name in ("tp", "cp", "pp", "dp", "ep", "virtual_stages", "micro_batch"):
            _positive(name, getattr(self, name))
        if isinstance(self.zero, bool) or self.zero not in (0, 1, 2, 3):
            raise ConfigError(f"--zero must be 0, 1, 2 or 3, got {self.zero!r}")
        if self.recompute not in RECOMPUTE:
            raise ConfigError(f"--recompute must be one of {', '.join(RECOMPUTE)}, got {self.recompute!r}")
        if (self.dp * self.cp) % self.ep:
            raise ConfigError(f"--ep {self.ep} must divide dp x cp = {self.dp} x {self.cp} = {self.dp * self.cp} "
                              "(expert parallelism is carved out of the data- and context-parallel ranks)")
        if self.virtual_stages > 1 and self.pp < 2:
            raise ConfigError(f"--virtual-stages {self.virtual_stages} needs pipeline parallelism (--pp 2 or more)")
        if self.sequence_parallel is None:
            object.__setattr__(self, "sequence_parallel", self.tp > 1)
        elif self.sequence_parallel and self.tp == 1:
            object.__setattr__(self, "sequence_parallel", False)  # nothing to parallelise over
        object.__setattr__(self, "dims", _parse_order(self.order))
        object.__setattr__(self, "order", "-".join(self.dims))

    @classmethod
    def for_gpus(cls, gpus: int, *, tp: int = 1, cp: int = 1, pp: int = 1, dp: int | None = None,
                 **options: Any) -> "Layout":
        """The layout on ``gpus`` GPUs, ``dp`` derived as ``gpus / (tp cp pp)`` unless given."""
        _positive("gpus", gpus)
        for name, value in (("tp", tp), ("cp", cp), ("pp", pp)):
            _positive(name, value)
        model_parallel = tp * cp * pp
        if dp is None:
            if gpus % model_parallel:
                raise InfeasibleError(f"tp x cp x pp = {tp} x {cp} x {pp} = {model_parallel} does not divide "
                                      f"{gpus} GPUs")
            dp = gpus // model_parallel
        layout = cls(tp=tp, cp=cp, pp=pp, dp=dp, **options)
        layout.check_gpus(gpus)
        return layout

    @property
    def gpus(self) -> int:
        return self.tp * self.cp * self.pp * self.dp

    @property
    def model_parallel(self) -> int:
        """GPUs holding one replica of the model: tp x cp x pp."""
        return self.tp * self.cp * self.pp

    @property
    def edp(self) -> int:
        """Expert data parallel: replicas of each expert, dp x cp / ep."""
        return self.dp * self.cp // self.ep

    def size(self, dim: str) -> int:
        return getattr(self, dim)

    def with_(self, **changes: Any) -> "Layout":
        """A copy with some fields changed (validated again)."""
        return replace(self, **changes)

    def check_gpus(self, gpus: int) -> None:
        if self.gpus != gpus:
            raise InfeasibleError(f"layout tp {self.tp} x cp {self.cp} x pp {self.pp} x dp {self.dp} = {self.gpus} "
                                  f"GPUs does not match the {gpus} GPUs of the fabric")

    def check_model(self, layers: int, experts: int = 0) -> None:
        """Refuse more pipeline chunks (stages times virtual stages) than the model's layers plus two, and
        expert parallelism that does not split the model's ``experts`` evenly (or a model without any).

        The two extra chunks are the ends holding only the embedding and only the output layer, as Llama 3
        split 126 layers into 16 x 8 chunks (``compute.stage_layers``); a plain pipeline (no interleaving)
        still needs a block on every stage.
        """
        if self.ep > 1 and not experts:
            raise ConfigError(f"--ep {self.ep}: the model has no experts; expert parallelism splits the experts "
                              "of mixture-of-experts layers (use --ep 1)")
        if experts and experts % self.ep:
            raise ConfigError(f"--ep {self.ep} must divide the model's {experts} experts")
        chunks = self.pp * self.virtual_stages
        spare = 2 if self.virtual_stages > 1 else 0
        if chunks > layers + spare:
            what = f"pp {self.pp} x virtual stages {self.virtual_stages} = {chunks}" if self.virtual_stages > 1 \
                else f"--pp {self.pp}"
            extra = " plus the two end chunks that may hold only the embedding and the output layer" if spare else ""
            raise InfeasibleError(f"{what} pipeline stages is more than the model's {layers} layers{extra}")

    def describe(self) -> str:
        parts = [f"TP {self.tp}" + (" (SP)" if self.sequence_parallel else "")]
        if self.cp > 1:
            parts.append(f"CP {self.cp}")
        if self.pp > 1:
            parts.append(f"PP {self.pp}" + (f" x {self.virtual_stages} virtual" if self.virtual_stages > 1 else ""))
        parts.append(f"DP {self.dp}")
        if self.ep > 1:
            parts.append(f"EP {self.ep}")
        s = " x ".join(parts)
        if self.zero:
            s += f", ZeRO-{self.zero}"
        if self.recompute != "none":
            s += f", {self.recompute} recompute"
        return s


@dataclass(frozen=True)
class RankGroups:
    """The communicator groups of a layout: each a list of groups, each a list of ranks (positions in
    ``topology.gpus``), every rank in exactly one group of each kind.

    ``pp`` groups list a pipeline's ranks in stage order; ``stage_ranks[s]`` lists the ranks of stage
    ``s``; ``coords[r]`` is rank r's (tp, cp, dp, pp) coordinate.
    """

    layout: Layout
    tp: list
    cp: list
    dp: list
    pp: list
    ep: list
    stage_ranks: list
    coords: list


def _rank_grid(layout: Layout):
    """Every rank at its coordinate: ``grid[t, c, d, p]`` (axes in DIMS order) is the rank of that
    (tp, cp, dp, pp) position, ``layout.dims`` (fastest first) giving each dimension's stride."""
    import numpy as np

    strides, s = {}, 1
    for d in layout.dims:
        strides[d] = s
        s *= layout.size(d)
    grid = np.zeros([layout.size(d) for d in DIMS], dtype=np.int64)
    for axis, d in enumerate(DIMS):
        shape = [1] * len(DIMS)
        shape[axis] = layout.size(d)
        grid = grid + (np.arange(layout.size(d), dtype=np.int64) * strides[d]).reshape(shape)
    return grid


def _runs(ranks, width: int) -> list:
    """Rows of ``ranks`` (a 2-D array, each row in group order) cut into groups of ``width``, as lists
    sorted by their first rank (groups are disjoint: the order is unique)."""
    import numpy as np

    groups = ranks.reshape(-1, width)
    return groups[np.argsort(groups[:, 0], kind="stable")].tolist()


def _groups_along(grid, dim: str) -> list:
    """The groups along ``dim``: ranks equal in every other coordinate, in ``dim``'s order."""
    import numpy as np

    axis = DIMS.index(dim)
    return _runs(np.moveaxis(grid, axis, -1), grid.shape[axis])


def rank_groups(topology: Topology, layout: Layout) -> RankGroups:
    """Map ``layout`` onto ``topology``'s ranks (Megatron-Core's rank order; see the module docstring).

    Raises
    ------
    InfeasibleError
        The layout's GPU count differs from the fabric's, or a TP group would cross an NVLink domain.

    Examples
    --------
    >>> from fabricsim.topologies.io import build
    >>> g = rank_groups(build("dgx-h100-ib", gpus=16), Layout(tp=4, pp=2, dp=2))
    >>> g.tp[:2], g.dp[0], g.pp[0]
    ([[0, 1, 2, 3], [4, 5, 6, 7]], [0, 4], [0, 8])
    """
    import numpy as np

    layout.check_gpus(topology.num_gpus)
    grid = _rank_grid(layout)
    tp = _groups_along(grid, "tp")
    domain = [topology.domain_of(g) for g in topology.gpus]
    widest = max(len(d) for d in topology.domains)
    if layout.tp > widest:
        raise InfeasibleError(f"--tp {layout.tp} is larger than the NVLink domain ({widest} GPUs in "
                              f"{topology.name or 'this topology'}): tensor parallelism stays inside a domain")
    for group in tp:
        if len({domain[r] for r in group}) > 1:
            raise InfeasibleError(f"--tp {layout.tp} crosses an NVLink domain (ranks {group[0]}..{group[-1]}; "
                                  f"domains of {', '.join(sorted({str(len(d)) for d in topology.domains}))} GPUs, "
                                  f"order {layout.order}): TP must stay inside one domain")
    cp = _groups_along(grid, "cp")
    dp = _groups_along(grid, "dp")
    pp = _groups_along(grid, "pp")
    # EP: inside each (tp, pp) position, the dp x cp ranks in (cp fastest, then dp) order, cut into runs of ep
    members = grid.transpose(0, 3, 2, 1).reshape(layout.tp * layout.pp, layout.dp * layout.cp)  # [t, s] x [d, c]
    width = layout.ep if (layout.dp * layout.cp) % layout.ep == 0 else None
    if width is not None:
        ep = _runs(members, width)
    else:  # a last, shorter run per (tp, pp) position
        ep = sorted((row[i:i + layout.ep] for row in members.tolist()
                     for i in range(0, len(row), layout.ep)), key=lambda g: g[0])
    stage_ranks = np.sort(grid.reshape(-1, layout.pp), axis=0).T.tolist()
    position = np.empty(layout.gpus, dtype=np.int64)
    position[grid.ravel()] = np.arange(layout.gpus)
    coords = list(zip(*(axis.tolist() for axis in np.unravel_index(position, grid.shape))))
    return RankGroups(layout, tp, cp, dp, pp, ep, stage_ranks, coords)
