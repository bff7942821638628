"""Drawings of a fabric, layered by tier: NVLink switches below the GPUs, NICs and network switches above.

matplotlib is imported inside the functions, so importing fabricsim does not pull it in.
"""

from __future__ import annotations

import math
from typing import Any, Hashable

from fabricsim.atomic_file import save_figure
from fabricsim.errors import ConfigError, InfeasibleError
from fabricsim.topologies.base import Topology
from fabricsim.units import format_rate

__all__ = ["draw", "save_drawing", "layers", "MAX_DRAW_NODES"]

MAX_DRAW_NODES = 3000
_KIND_STYLE = {  # colour, marker
    "gpu": ("#2e7d32", "s"), "nvswitch": ("#6a1b9a", "h"), "nic": ("#ef6c00", "o"), "switch": ("#1565c0", "D"),
}
_ROW_NAMES = {"gpu": "GPUs", "nvswitch": "NVLink switches", "nic": "NICs", "switch": "switches"}


def _edge_colour(kind: str) -> str:
    if kind.startswith("nvlink"):
        return "#66bb6a"
    if kind == "pcie":
        return "#9e9e9e"
    return "#64b5f6"


def layers(topo: Topology) -> list[list[Hashable]]:
    """Rows bottom-up, each ordered to keep links short (GPUs in rank order, others by neighbour barycentre).

    Order of rows: NVLink switches from the highest tier down, GPUs, NICs, network switches by tier.
    """
    G = topo.graph
    rows: dict[tuple, list] = {}
    for n, d in G.nodes(data=True):
        kind = d.get("kind")
        tier = int(d.get("tier", 0) or 0)
        key = {"nvswitch": (0, -tier), "gpu": (1, 0), "nic": (2, 0), "switch": (3, tier)}.get(kind, (4, 0))
        rows.setdefault(key, []).append(n)
    ordered = [rows[k] for k in sorted(rows)]
    position: dict[Hashable, float] = {}
    gpu_row = rows.get((1, 0), [])
    rank = {g: i for i, g in enumerate(topo.gpus)}
    gpu_row.sort(key=lambda g: rank.get(g, math.inf))
    _place(gpu_row, position)
    start = ordered.index(gpu_row) if gpu_row in ordered else 0
    # outward from the GPU row in both directions, each row by the mean position of placed neighbours
    for sweep in (range(start + 1, len(ordered)), range(start - 1, -1, -1)):
        for i in sweep:
            row = ordered[i]
            row.sort(key=lambda n: _barycentre(G, n, position))
            _place(row, position)
    return ordered


def _barycentre(G: Any, node: Hashable, position: dict) -> float:
    xs = [position[v] for v in G.successors(node) if v in position]
    return sum(xs) / len(xs) if xs else math.inf


def _place(row: list, position: dict) -> None:
    for i, n in enumerate(row):
        position[n] = (i + 0.5) / len(row)


def draw(topo: Topology, *, ax: Any = None) -> Any:
    """Draw ``topo`` on ``ax`` (a new figure if None) and return the axes.

    Raises
    ------
    InfeasibleError
        More than 3,000 nodes: no drawing of that size is readable; draw a smaller instance.
    """
    import matplotlib

    if ax is None:
        matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.collections import LineCollection
    from matplotlib.lines import Line2D

    G = topo.graph
    if G.number_of_nodes() > MAX_DRAW_NODES:
        raise InfeasibleError(f"{topo.name} has {G.number_of_nodes()} nodes; drawings stay readable up to "
                              f"{MAX_DRAW_NODES}: draw a smaller instance (e.g. --gpus 144)")
    rows = layers(topo)
    widest = max(len(r) for r in rows)
    if ax is None:
        width = min(20.0, max(9.0, widest * 0.28))
        _, ax = plt.subplots(figsize=(width, 1.4 + (1.5 if widest <= 40 else 2.2) * len(rows)))
    xy: dict[Hashable, tuple[float, float]] = {}
    for y, row in enumerate(rows):
        for i, n in enumerate(row):
            xy[n] = ((i + 0.5) / len(row), float(y))

    # links: one line per full-duplex pair, width by bandwidth
    seen = set()
    segments, colours, widths = [], [], []
    top_bw = max((b for _, _, b in G.edges(data="bandwidth")), default=1.0)
    for u, v, d in G.edges(data=True):
        if (v, u) in seen:
            continue
        seen.add((u, v))
        segments.append((xy[u], xy[v]))
        colours.append(_edge_colour(str(d.get("kind", ""))))
        widths.append(0.4 + 2.2 * math.log1p(d["bandwidth"]) / math.log1p(top_bw))
    alpha = 0.8 if len(segments) < 400 else max(0.08, 400 / len(segments))
    ax.add_collection(LineCollection(segments, colors=colours, linewidths=widths, alpha=alpha, zorder=1))

    for y, row in enumerate(rows):
        kind = G.nodes[row[0]].get("kind", "")
        colour, marker = _KIND_STYLE.get(kind, ("black", "o"))
        size = max(6.0, min(160.0, 9000.0 / len(row)))
        ax.scatter([xy[n][0] for n in row], [y] * len(row), s=size, c=colour, marker=marker, zorder=3,
                   edgecolors="white", linewidths=0.5)
        roles = sorted({str(G.nodes[n].get("role", kind)) for n in row})
        name = _ROW_NAMES.get(kind, kind)
        if kind in ("nvswitch", "switch"):
            name = ", ".join(roles)
        ax.text(-0.01, y, f"{name}\n({len(row)})", ha="right", va="center", fontsize=9)
        if len(row) <= 40:
            for n in row:
                ax.annotate(_short(n), xy[n], xytext=(0, -11 if y == 0 else 9), textcoords="offset points",
                            ha="center", va="top" if y == 0 else "bottom", fontsize=7,
                            rotation=0 if len(row) <= 12 else 90)
    s = topo.summary() if G.number_of_edges() < 60_000 else None
    title = f"{topo.name}: {topo.num_gpus} GPUs in {len(topo.domains)} NVLink domain(s)"
    if s is not None:
        parts = [f"NVLink {format_rate(s['nvlink_per_gpu'])}"] if s["nvlink_per_gpu"] else []
        parts += [f"NIC {format_rate(s['nic_per_gpu'])}"] if s["nic_per_gpu"] else []
        if parts:
            title += f"; {', '.join(parts)} each way per GPU"
    ax.set_title(title, fontsize=11)
    kinds = sorted({str(d.get("kind", "")) for _, _, d in G.edges(data=True)})
    ax.legend(handles=[Line2D([], [], color=_edge_colour(k), lw=2, label=k) for k in kinds],
              loc="upper right", fontsize=8, title="links", title_fontsize=8, framealpha=0.9)
    ax.set_xlim(-0.16, 1.02)
    ax.set_ylim(-0.6, len(rows) - 0.4)
    ax.axis("off")
    return ax


def _short(node: Hashable) -> str:
    text = str(node)
    return text if len(text) <= 12 else text[-12:]


def save_drawing(topo: Topology, path: str) -> None:
    """Draw ``topo`` into ``path`` (.png or .svg)."""
    if not str(path).lower().endswith((".png", ".svg")):
        raise ConfigError(f"{path}: drawings are written as .png or .svg")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ax = draw(topo)
    fig = ax.figure
    fig.tight_layout()
    try:
        save_figure(fig, path, dpi=110)
    except OSError as exc:
        raise ConfigError(f"{path}: cannot write: {exc.strerror or exc}") from None
    finally:
        plt.close(fig)
