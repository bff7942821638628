"""Max-min fair bandwidth sharing by progressive filling, vectorised with numpy.

Pure functions, no SimPy: the fluid model (``fluid.py``) calls them whenever the set of draining flows
changes. A flow crosses a set of links; all unfrozen flows grow at the same rate until some link fills;
the flows crossing that link freeze at that level; repeat. The result is the unique max-min fair
allocation: no flow can gain without taking from a flow that has no more than it.

Filling one level at a time costs one pass per distinct rate. Instead every pass freezes *all* links
whose fair share is no larger than the share of any other link their flows cross: a link's share only
grows as flows elsewhere freeze below it, so those flows can end at no other rate. The global minimum is
always among them, so this is exact progressive filling in a few passes.
"""

from __future__ import annotations

import numpy as np

__all__ = ["max_min_rates", "progressive_filling", "link_loads"]

# Relative tolerance for "this link is a bottleneck at this level": levels closer than this are the
# same level, so float noise cannot split one fair share into two.
_LEVEL_RTOL = 1e-12


def max_min_rates(entry_flow: np.ndarray, entry_link: np.ndarray, capacity: np.ndarray, n_flows: int,
                  weight: np.ndarray | None = None, *,
                  bottleneck: bool = False) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
    """Max-min fair rate of every flow.

    Parameters
    ----------
    entry_flow, entry_link : int arrays of equal length
        One entry per (flow, link) incidence: flow ``entry_flow[i]`` crosses link ``entry_link[i]``.
    capacity : float array
        Capacity of every link (B/s), indexed by link id.
    n_flows : int
        Number of flows; flows with no entry get rate ``inf`` (nothing limits them).
    weight : float array, optional
        Multiplicity of each flow (identical flows merged into one): a flow of weight w takes w shares.

    bottleneck : bool
        Also return, per flow, one link where it is limited (-1 for a flow with no links): a link that
        is full and on which no flow gets more. Every flow having one is what makes an allocation
        max-min fair; the incremental solver (``fluid.py``) checks exactly that.

    Returns
    -------
    numpy.ndarray
        Rate of each flow in B/s (per unit of weight); with ``bottleneck``, a pair (rates, links).

    Examples
    --------
    Two flows share link 0 (10 B/s); the second also crosses link 1 (4 B/s):

    >>> max_min_rates(np.array([0, 1, 1]), np.array([0, 0, 1]), np.array([10.0, 4.0]), 2).tolist()
    [6.0, 4.0]
    """
    if n_flows == 0 or entry_flow.size == 0:
        rate, limit = np.full(n_flows, np.inf), np.full(n_flows, -1, dtype=np.int64)
        return (rate, limit) if bottleneck else rate
    # work on the links in use only: a large fabric has many idle links, and every pass is per link
    in_use = np.zeros(capacity.shape[0], dtype=bool)
    in_use[entry_link] = True
    used_links = np.flatnonzero(in_use)
    compact = np.empty(capacity.shape[0], dtype=np.int64)
    compact[used_links] = np.arange(used_links.shape[0])
    w_flow = np.ones(n_flows) if weight is None else np.asarray(weight, dtype=float)
    rate, limit = progressive_filling(entry_flow, compact[entry_link], capacity[used_links].astype(float), n_flows,
                                      w_flow[entry_flow])
    if bottleneck:
        return rate, np.where(limit >= 0, used_links[np.maximum(limit, 0)], -1)
    return rate


def progressive_filling(ef: np.ndarray, el: np.ndarray, cap_left: np.ndarray, n_flows: int,
                        ew: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``max_min_rates`` on links numbered 0..len(cap_left)-1: (rates, a bottleneck link of each flow).

    ``ew`` is the weight of each entry's flow; ``cap_left`` (a fresh array) is consumed. Links that no
    entry crosses are allowed and ignored. Flows with no entry keep rate ``inf`` and bottleneck -1.
    """
    n_links = cap_left.shape[0]
    rate = np.empty(n_flows)
    rate.fill(np.inf)
    limit = np.empty(n_flows, dtype=np.int64)
    limit.fill(-1)
    done = np.zeros(n_flows, dtype=bool)  # frozen so far (only unfrozen flows' entries are left)
    share, link_min, flow_min = np.empty(n_links), np.empty(n_links), np.empty(n_flows)
    while ef.size:
        count = np.bincount(el, weights=ew, minlength=n_links)
        # a link that no entry left crosses gets inf or nan here, and is never read (only through el)
        with np.errstate(divide="ignore", invalid="ignore"):
            np.divide(np.maximum(cap_left, 0.0), count, out=share)
        flow_min.fill(np.inf)
        np.minimum.at(flow_min, ef, share[el])
        link_min.fill(np.inf)
        np.minimum.at(link_min, el, flow_min[ef])
        # bottleneck links: no flow through them has a tighter link elsewhere (every entry's link is used)
        on_bottleneck = (link_min >= share * (1 - _LEVEL_RTOL))[el]
        frozen = ef[on_bottleneck]
        limit[frozen] = el[on_bottleneck]
        rate[frozen] = flow_min[frozen]
        done[frozen] = True
        hit = done[ef]
        if np.count_nonzero(hit) == hit.shape[0]:
            break  # every flow frozen: the capacity left is not needed
        # frozen flows keep their share of every link they cross
        cap_left -= np.bincount(el[hit], weights=ew[hit] * rate[ef[hit]], minlength=n_links)
        keep = ~hit
        ef, el, ew = ef[keep], el[keep], ew[keep]
    return rate, limit


def link_loads(entry_flow: np.ndarray, entry_link: np.ndarray, rate: np.ndarray, n_links: int,
               weight: np.ndarray | None = None) -> np.ndarray:
    """Total rate carried by every link (B/s) for the given per-flow rates."""
    r = rate[entry_flow] if weight is None else rate[entry_flow] * weight[entry_flow]
    return np.bincount(entry_link, weights=r, minlength=n_links)
