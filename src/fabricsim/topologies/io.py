"""Named presets, user-defined fabrics, and files: TOML/YAML specs, GraphML, JSON node-link, DOT.

A spec file (TOML, or YAML with PyYAML installed) lists nodes and links with units::

    name = "two-gpus"
    nodes = [
      {id = "gpu0", kind = "gpu", rank = 0},
      {id = "gpu1", kind = "gpu", rank = 1},
      {id = "sw", kind = "nvswitch", tier = 0},
    ]
    links = [
      {a = "gpu0", b = "sw", bandwidth = "450 GB/s", latency = "0.5 us", kind = "nvlink4", lanes = 18},
      {a = "gpu1", b = "sw", bandwidth = "450 GB/s", latency = "0.5 us", kind = "nvlink4", lanes = 18},
    ]

``bandwidth`` is one way (a number is B/s); a link is full duplex (two directed edges) unless
``duplex = false``. Node keys besides ``id`` and ``kind`` and link keys besides the ones above are kept as
attributes. GPUs are ranked by ``rank`` if every GPU has one, else in file order; NVLink domains come from
the GPUs' ``domain`` if every GPU has one, else from the NVLink islands (see :func:`from_graph`).
"""

from __future__ import annotations

import json
import math
import os
import tomllib
from dataclasses import dataclass, field
from typing import Any, Callable, Hashable, Iterable

import networkx as nx

from fabricsim.atomic_file import write_whole
from fabricsim.errors import ConfigError, FabricsimError, TopologyError
from fabricsim.topologies.base import NODE_KINDS, Topology
from fabricsim.topologies.nvlink import NVL72_GPUS, dgx_b200, dgx_h100, gb200_nvl72, nvl576
from fabricsim.topologies.scaleout import scale_out
from fabricsim.units import parse_rate, parse_time

__all__ = [
    "PRESETS", "Preset", "build", "resolve", "from_graph", "load", "save", "FORMATS",
    "to_spec", "from_spec", "write_toml", "write_dot",
]

FORMATS = ("toml", "yaml", "graphml", "json", "dot")
_SUFFIXES = {".toml": "toml", ".yaml": "yaml", ".yml": "yaml", ".graphml": "graphml", ".json": "json",
             ".dot": "dot", ".gv": "dot"}
_SCALE_OUT_OPTIONS = ("gpus", "count", "network", "oversubscription", "planes", "nic", "switch", "sharp",
                      "network_kind", "net_latency", "adaptive_routing")


@dataclass(frozen=True)
class Preset:
    """A named fabric: how to build it, the options it takes, and at most how many GPUs it holds."""

    builder: Callable[..., Topology]
    description: str
    options: tuple[str, ...] = ("gpus",)
    max_gpus: int | None = None
    defaults: dict[str, Any] = field(default_factory=dict)


def _family(domain: str) -> Callable[..., Topology]:
    def build_family(**options: Any) -> Topology:
        return scale_out(domain, **options)
    return build_family


PRESETS: dict[str, Preset] = {
    "dgx-h100": Preset(dgx_h100, "8 H100, 4 NVSwitch gen3; NVLink4 450 GB/s each way per GPU", max_gpus=8),
    "dgx-b200": Preset(dgx_b200, "8 B200, 2 NVLink5 switch chips; 900 GB/s each way per GPU", max_gpus=8),
    "gb200-nvl72": Preset(gb200_nvl72, "72 GB200, 18 NVLink5 switch chips in 9 trays; 900 GB/s each way",
                          ("gpus", "planes"), max_gpus=NVL72_GPUS),
    "nvl576": Preset(nvl576, "8 NVL72 racks under a 2nd NVLink switch tier, one 576-GPU domain (assumed layout)",
                     ("gpus", "planes"), max_gpus=8 * NVL72_GPUS),
    "dgx-h100-ib": Preset(_family("dgx-h100"), "DGX H100 nodes, one 400G NDR NIC per GPU, rail-optimised fat tree",
                          _SCALE_OUT_OPTIONS),
    "dgx-b200-ib": Preset(_family("dgx-b200"), "DGX B200 nodes, one 400G NDR NIC per GPU, rail-optimised fat tree",
                          _SCALE_OUT_OPTIONS),
    "gb200-nvl72-ib": Preset(_family("gb200-nvl72"), "GB200 NVL72 racks, one 400G NDR NIC per GPU, 4 rails",
                             _SCALE_OUT_OPTIONS),
}


def build(name: str, *, gpus: int | None = None, **options: Any) -> Topology:
    """Build the preset called ``name`` with ``gpus`` GPUs (default: its full size; two domains for ``-ib``).

    Raises
    ------
    TopologyError
        Unknown name (the message lists the known ones).
    ConfigError
        An option the preset does not take, or a non-positive ``gpus``.
    InfeasibleError
        More GPUs than a single-domain preset holds.

    Examples
    --------
    >>> build("dgx-h100", gpus=4).num_gpus
    4
    >>> build("dgx-h100-ib", gpus=24).domains[2][0]
    'n2/gpu0'
    """
    preset = PRESETS.get(name)
    if preset is None:
        raise TopologyError(f"unknown topology {name!r}; known: {', '.join(PRESETS)}")
    options = {k: v for k, v in options.items() if v is not None}
    for key in options:
        if key not in preset.options:
            raise ConfigError(f"preset {name} takes no option {key!r} (it takes: {', '.join(preset.options)})")
    if gpus is not None:
        options["gpus"] = gpus
    return preset.builder(**options)


def resolve(name_or_path: str, *, gpus: int | None = None, **options: Any) -> Topology:
    """A preset by name, or a topology file (TOML, YAML, GraphML, JSON) by path.

    Raises
    ------
    TopologyError
        Neither a preset nor a file (the message lists the presets).
    ConfigError
        Preset options given with a file, or a file that cannot be read (see :func:`load`, :func:`build`).
    """
    if not isinstance(name_or_path, (str, os.PathLike)):
        raise ConfigError(f"a topology is a preset name or a file path, got {type(name_or_path).__name__}")
    name_or_path = os.fspath(name_or_path)
    if name_or_path in PRESETS:
        return build(name_or_path, gpus=gpus, **options)
    suffix = os.path.splitext(name_or_path)[1].lower()
    if os.path.exists(name_or_path) or suffix in _SUFFIXES:
        given = [k for k, v in dict(options, gpus=gpus).items() if v is not None]
        if given:
            raise ConfigError(f"option(s) {', '.join(given)} apply to presets, not to a file ({name_or_path})")
        return load(name_or_path)
    raise TopologyError(f"unknown topology {name_or_path!r}; known: {', '.join(PRESETS)} "
                        "(or a path to a .toml, .yaml, .graphml or .json file)")


# --- user graphs ------------------------------------------------------------------------------------------
def from_graph(G: nx.Graph, *, gpus: list[Hashable] | None = None, domains: list[list[Hashable]] | None = None,
               name: str | None = None) -> Topology:
    """A validated Topology from any networkx graph following the attribute conventions of ``base``.

    Parameters
    ----------
    G : networkx graph
        Undirected edges become two directed ones; parallel edges of a multigraph merge (bandwidths and
        lanes summed). Missing ``latency`` is 0, missing ``lanes`` 1. The input is not modified.
    gpus : list, optional
        Rank order. Default: nodes of kind ``"gpu"`` by their ``rank`` attribute if all have one, else in
        node order, grouped so that each NVLink domain is contiguous.
    domains : list of lists, optional
        NVLink domains. Default: by the GPUs' ``domain`` attribute if all have one, else NVLink islands
        (GPUs joined by edges whose kind starts with ``"nvlink"``, through any nodes); a GPU without NVLink
        is a domain of its own.
    name : str, optional
        Default: the graph's ``name`` attribute, else ``"custom"``.

    Examples
    --------
    >>> G = nx.Graph()
    >>> G.add_nodes_from([("a", {"kind": "gpu"}), ("b", {"kind": "gpu"}), ("s", {"kind": "nvswitch"})])
    >>> G.add_edges_from([("a", "s"), ("b", "s")], bandwidth=450e9, kind="nvlink4")
    >>> t = from_graph(G)
    >>> t.gpus, t.domains, t.bisection_bandwidth() / 1e9
    (['a', 'b'], [['a', 'b']], 900.0)
    """
    if not isinstance(G, nx.Graph):
        raise ConfigError(f"from_graph needs a networkx graph, got {type(G).__name__}")
    D = _as_digraph(G)
    gpu_nodes = [n for n, k in D.nodes(data="kind") if k == "gpu"]
    explicit_order = gpus is not None
    if gpus is None:
        ranks = [D.nodes[g].get("rank") for g in gpu_nodes]
        if gpu_nodes and all(isinstance(r, int) and not isinstance(r, bool) for r in ranks):
            if len(set(ranks)) != len(ranks):
                raise TopologyError("two GPUs carry the same rank")
            gpus = [g for _, g in sorted(zip(ranks, gpu_nodes), key=lambda rg: rg[0])]
            explicit_order = True
        else:
            gpus = gpu_nodes
    gpus = list(gpus)
    if domains is None:
        labels = [D.nodes[g].get("domain") for g in gpus] if gpus else []
        if gpus and all(label is not None for label in labels):
            key_of = dict(zip(gpus, labels))
        else:
            key_of = _nvlink_islands(D, gpus)
        grouped: dict[Any, list] = {}
        for g in gpus:
            grouped.setdefault(key_of.get(g, ("alone", g)), []).append(g)
        domains = list(grouped.values())
        if not explicit_order:
            gpus = [g for dom in domains for g in dom]
    topo = Topology(D, gpus, [list(d) for d in domains], name=name or str(D.graph.get("name") or "custom"))
    topo.hardware = {}
    meta = D.graph.get("fabricsim_meta")
    if isinstance(meta, str):
        try:
            topo.meta = dict(json.loads(meta))
        except (ValueError, TypeError):
            topo.meta = {}
    topo.graph.graph.pop("fabricsim_meta", None)
    return topo.validate()


def _as_digraph(G: nx.Graph) -> nx.DiGraph:
    D = nx.DiGraph()
    D.graph.update(G.graph)
    D.add_nodes_from(G.nodes(data=True))
    directed = G.is_directed()
    for u, v, d in G.edges(data=True):
        pairs = [(u, v)] if directed else [(u, v), (v, u)]
        for a, b in pairs:
            attrs = dict(d)
            attrs.setdefault("latency", 0.0)
            attrs.setdefault("lanes", 1)
            if D.has_edge(a, b):  # a multigraph's parallel edges: one edge, bandwidth and lanes summed
                old = D[a][b]
                try:
                    old["bandwidth"] = old["bandwidth"] + attrs["bandwidth"]
                    old["lanes"] = int(old["lanes"]) + int(attrs["lanes"])
                except (KeyError, TypeError, ValueError):
                    raise TopologyError(f"parallel edges {a!r} -> {b!r} without numeric bandwidth") from None
            else:
                D.add_edge(a, b, **attrs)
    return D


def _nvlink_islands(D: nx.DiGraph, gpus: Iterable[Hashable]) -> dict[Hashable, int]:
    parent: dict[Hashable, Hashable] = {}

    def find(x: Hashable) -> Hashable:
        parent.setdefault(x, x)
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for u, v, kind in D.edges(data="kind", default=""):
        if str(kind).startswith("nvlink"):
            parent[find(u)] = find(v)
    return {g: find(g) for g in gpus if g in parent}


# --- spec dicts (TOML / YAML) -----------------------------------------------------------------------------
def _exact_text(value: float, units: tuple[tuple[str, float], ...], parse: Callable, bare: str) -> str:
    """Shortest readable text with a unit that parses back to exactly ``value``."""
    for unit, factor in units:
        if value >= factor or factor == units[-1][1]:
            for digits in (6, 10, 15, 17):
                text = f"{format(value / factor, f'.{digits}g')} {unit}"
                if parse(text) == value:
                    return text
    return f"{float(value)!r} {bare}"


def _rate_text(bw: float) -> str:
    return _exact_text(bw, (("TB/s", 1e12), ("GB/s", 1e9), ("MB/s", 1e6), ("B/s", 1.0)), parse_rate, "B/s")


def _time_text(t: float) -> str:
    if t == 0:
        return "0 s"
    return _exact_text(t, (("s", 1.0), ("ms", 1e-3), ("us", 1e-6), ("ns", 1e-9)), parse_time, "s")


def to_spec(topo: Topology) -> dict[str, Any]:
    """The spec dict of ``topo`` (what TOML and YAML files hold): nodes with rank/domain, links with units."""
    G = topo.graph
    rank = {g: r for r, g in enumerate(topo.gpus)}
    nodes = []
    for n, d in G.nodes(data=True):
        entry = {"id": n, "kind": d.get("kind")}
        if n in rank:
            entry["rank"] = rank[n]
            entry["domain"] = topo.domain_of(n)
        entry.update({k: v for k, v in d.items() if k not in ("kind", "rank", "domain") and v is not None})
        nodes.append(entry)
    links = []
    for u, v, d in G.edges(data=True):
        back = G.get_edge_data(v, u)
        if back == d and str(u) > str(v):
            continue  # written with its reverse as one duplex link
        entry = {"a": u, "b": v, "bandwidth": _rate_text(d["bandwidth"]),
                 "latency": _time_text(float(d.get("latency", 0.0))), "kind": d.get("kind", ""),
                 "lanes": int(d.get("lanes", 1))}
        if back != d:
            entry["duplex"] = False
        entry.update({k: val for k, val in d.items() if k not in entry and k not in ("bandwidth", "latency")
                      and val is not None})
        links.append(entry)
    meta = {k: v for k, v in sorted(topo.meta.items()) if _plain(v)}
    return {"name": topo.name, "nodes": nodes, "links": links, "meta": meta}


def _plain(value: Any) -> bool:
    """A scalar or a list of scalars: what every format here can hold."""
    scalar = (str, int, float, bool)
    return isinstance(value, scalar) or (isinstance(value, list) and all(isinstance(v, scalar) for v in value))


def from_spec(spec: Any, source: str = "<spec>") -> Topology:
    """A validated Topology from a spec dict; ConfigError naming ``source`` and the entry at fault."""
    def bad(problem: str) -> ConfigError:
        return ConfigError(f"{source}: {problem}")

    if not isinstance(spec, dict):
        raise bad("expected a table with 'nodes' and 'links'")
    unknown = set(spec) - {"name", "nodes", "links", "meta"}
    if unknown:
        raise bad(f"unknown top-level key {sorted(unknown)[0]!r} (expected name, nodes, links)")
    nodes, links = spec.get("nodes"), spec.get("links")
    if not isinstance(nodes, list) or not nodes:
        raise bad("'nodes' must be a non-empty list of tables with 'id' and 'kind'")
    if not isinstance(links, list):
        raise bad("'links' must be a list of tables with 'a', 'b' and 'bandwidth'")
    G = nx.DiGraph(name=str(spec.get("name", "custom")))
    for i, node in enumerate(nodes):
        if not isinstance(node, dict) or "id" not in node or "kind" not in node:
            raise bad(f"node {i + 1} needs 'id' and 'kind'")
        nid = node["id"]
        if not isinstance(nid, (str, int)) or isinstance(nid, bool):
            raise bad(f"node {i + 1}: id must be a string or an integer, got {nid!r}")
        if nid in G:
            raise bad(f"node {nid!r} is listed twice")
        if node["kind"] not in NODE_KINDS:
            raise bad(f"node {nid!r} has kind {node['kind']!r}; expected one of {', '.join(NODE_KINDS)}")
        for key, value in node.items():
            if not isinstance(value, (str, int, float, bool)):
                raise bad(f"node {nid!r}: attribute {key!r} must be a string, number or boolean")
        for key in ("rank", "domain", "tier"):
            if key in node and (isinstance(node[key], bool) or not isinstance(node[key], int)):
                raise bad(f"node {nid!r}: {key} must be an integer, got {node[key]!r}")
        G.add_node(nid, **{k: v for k, v in node.items() if k != "id"})
    first: dict[tuple, int] = {}  # directed edge -> the entry that made it
    for i, entry in enumerate(links):
        where = f"link {i + 1}"
        if not isinstance(entry, dict) or "a" not in entry or "b" not in entry:
            raise bad(f"{where} needs 'a' and 'b'")
        a, b = entry["a"], entry["b"]
        where = f"link {i + 1} ({a} - {b})"
        for end in (a, b):
            if not isinstance(end, (str, int)) or isinstance(end, bool) or end not in G:
                raise bad(f"{where} names unknown node {end!r}")
        if a == b:
            raise bad(f"{where} joins {a!r} to itself; a self-loop carries nothing")
        if "bandwidth" not in entry:
            raise bad(f"{where} has no bandwidth")
        try:
            attrs = {"bandwidth": parse_rate(entry["bandwidth"]),
                     "latency": parse_time(entry.get("latency", 0.0))}
        except ConfigError as exc:
            raise bad(f"{where}: {exc}") from None
        lanes = entry.get("lanes", 1)
        if isinstance(lanes, bool) or not isinstance(lanes, int) or lanes < 1:
            raise bad(f"{where}: lanes must be a positive integer, got {lanes!r}")
        duplex = entry.get("duplex", True)
        if not isinstance(duplex, bool):
            raise bad(f"{where}: duplex must be true or false")
        attrs["lanes"] = lanes
        attrs["kind"] = str(entry.get("kind", "link"))
        attrs.update({k: v for k, v in entry.items()
                      if k not in ("a", "b", "bandwidth", "latency", "lanes", "kind", "duplex")})
        for edge in ((a, b), (b, a)) if duplex else ((a, b),):
            if edge in first:  # a second entry would silently replace the first: refuse it
                raise bad(f"{where} repeats link {first[edge]} ({edge[0]} -> {edge[1]}); list each link once "
                          "(a bundle is one entry with its lanes and total bandwidth)")
            first[edge] = i + 1
            G.add_edge(*edge, **attrs)
    meta = spec.get("meta")
    if meta is not None:
        if not isinstance(meta, dict):
            raise bad("'meta' must be a table (fabricsim writes it; you may delete it)")
        G.graph["fabricsim_meta"] = json.dumps(meta)
    try:
        return from_graph(G)
    except TopologyError as exc:
        raise TopologyError(f"{source}: {exc}") from None


# --- TOML by hand -------------------------------------------------------------------------------------------
def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False).replace("\x7f", "\\u007f")
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    raise TypeError(f"cannot write {type(value).__name__} to TOML")


def _toml_key(key: str) -> str:
    if key and all(c.isascii() and (c.isalnum() or c in "_-") for c in key):
        return key
    return _toml_value(str(key))


def _toml_inline(entry: dict) -> str:
    return "{" + ", ".join(f"{_toml_key(str(k))} = {_toml_value(v)}" for k, v in entry.items()) + "}"


def write_toml(spec: dict, path: str) -> None:
    """Write a spec dict as TOML: one inline table per node and per link."""
    lines = ["# fabricsim topology spec. bandwidth: one way per direction; latency: per hop.",
             f"name = {_toml_value(str(spec['name']))}", "", "nodes = ["]
    lines += [f"  {_toml_inline(n)}," for n in spec["nodes"]]
    lines += ["]", "", "links = ["]
    lines += [f"  {_toml_inline(e)}," for e in spec["links"]]
    lines += ["]", ""]
    if spec.get("meta"):
        lines += ["# builder facts (closed-form bisection, diameter); not used once the fabric is edited",
                  "[meta]"]
        lines += [f"{_toml_key(k)} = {_toml_value(v)}" for k, v in spec["meta"].items()]
        lines.append("")
    write_whole(path, "\n".join(lines))


# --- DOT by hand --------------------------------------------------------------------------------------------
def _dot_id(value: Any) -> str:
    return '"' + str(value).replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


_DOT_SHAPES = {"gpu": "box", "nvswitch": "hexagon", "nic": "ellipse", "switch": "diamond"}


def write_dot(topo: Topology, path: str) -> None:
    """Graphviz DOT of ``topo``: one edge per physical link, nodes ranked by tier.

    A full-duplex link (two directed edges with the same attributes) is one edge drawn ``dir=both``; a
    link whose directions differ, or a one-way link, keeps one edge per direction. ``lanes`` merged
    into one edge stay one edge with a ``lanes`` attribute. Each row of :func:`draw.layers` (NVLink
    switches by tier, GPUs, NICs, network switches by tier) is a ``rank=same`` subgraph, so ``dot``
    lays the fabric out tier by tier. Bandwidth is in B/s one way, latency in s.
    """
    from fabricsim.topologies.draw import layers
    from fabricsim.units import format_rate

    G = topo.graph
    rank = {g: r for r, g in enumerate(topo.gpus)}
    out = [f"digraph {_dot_id(topo.name)} {{",
           "  // fabricsim: one edge per physical link; bandwidth in B/s one way, latency in s",
           "  rankdir=BT;"]
    for n, d in G.nodes(data=True):
        attrs = {k: v for k, v in d.items() if v is not None}
        if n in rank:
            attrs["rank_order"] = rank[n]
        attrs.setdefault("shape", _DOT_SHAPES.get(d.get("kind"), "box"))
        out.append(f"  {_dot_id(n)} [" + ", ".join(f"{k}={_dot_id(v)}" for k, v in attrs.items()) + "];")
    for row in layers(topo):
        out.append("  { rank=same; " + " ".join(f"{_dot_id(n)};" for n in row) + " }")
    for u, v, d in G.edges(data=True):
        duplex = G.get_edge_data(v, u) == d
        if duplex and str(u) > str(v):
            continue  # written once, with its reverse, as a two-way edge
        attrs = {k: val for k, val in d.items() if val is not None}
        attrs["label"] = format_rate(d["bandwidth"])
        if duplex:
            attrs["dir"] = "both"
        out.append(f"  {_dot_id(u)} -> {_dot_id(v)} ["
                   + ", ".join(f"{k}={_dot_id(val)}" for k, val in attrs.items()) + "];")
    out.append("}")
    write_whole(path, "\n".join(out) + "\n")


def _read_text(path: str) -> str:
    """The file's text (UTF-8); ConfigError naming the file if it is binary or not UTF-8."""
    with open(path, "rb") as fh:
        data = fh.read()
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not a text file (byte {data[exc.start]:#04x} at offset {exc.start} is not "
                          "UTF-8); expected a .toml, .yaml, .graphml or .json topology") from None
    if "\x00" in text:
        raise ConfigError(f"{path}: not a text file (it holds NUL bytes)")
    return text


# --- load / save ------------------------------------------------------------------------------------------
def _format_of(path: str, fmt: str | None) -> str:
    """The format named, or read from the suffix; a format that contradicts a known suffix is refused."""
    if not isinstance(path, (str, os.PathLike)):
        raise ConfigError(f"a topology file path must be a string or a path, got {type(path).__name__} {path!r}")
    path = os.fspath(path)
    suffix = os.path.splitext(path)[1].lower()
    if fmt is not None:
        if fmt not in FORMATS:
            raise ConfigError(f"unknown format {fmt!r}; use {', '.join(FORMATS)}")
        if suffix in _SUFFIXES and _SUFFIXES[suffix] != fmt:
            raise ConfigError(f"{path}: the suffix {suffix!r} says {_SUFFIXES[suffix]}, but the format asked for is "
                              f"{fmt}; name the file {os.path.splitext(path)[0]}.{fmt} or drop the format")
        return fmt
    if suffix not in _SUFFIXES:
        raise ConfigError(f"{path}: cannot tell the format from the suffix {suffix or '(none)'!r}; "
                          f"use one of {', '.join(sorted(_SUFFIXES))}")
    return _SUFFIXES[suffix]


def _graph_for_export(topo: Topology) -> nx.DiGraph:
    """A copy with ``rank`` and ``domain`` on GPUs, no None attributes, and meta as a JSON string."""
    H = nx.DiGraph()
    H.graph["name"] = topo.name
    H.graph["fabricsim_meta"] = json.dumps({k: v for k, v in topo.meta.items() if _plain(v)}, sort_keys=True)
    rank = {g: r for r, g in enumerate(topo.gpus)}
    for n, d in topo.graph.nodes(data=True):
        attrs = {k: v for k, v in d.items() if v is not None}
        if n in rank:
            attrs["rank"] = rank[n]
            attrs["domain"] = topo.domain_of(n)
        H.add_node(n, **attrs)
    H.add_edges_from((u, v, {k: val for k, val in d.items() if val is not None})
                     for u, v, d in topo.graph.edges(data=True))
    return H


def save(topo: Topology, path: str, *, format: str | None = None) -> None:
    """Write ``topo`` to ``path`` as toml, yaml, graphml, json or dot (default: from the suffix).

    JSON is networkx's node-link form with the current ``edges`` key (``nx.node_link_graph(data,
    edges="edges")`` reads it; :func:`load` reads both it and the older ``links`` key).

    Raises
    ------
    ConfigError
        Unknown format, a format that contradicts the file's suffix (``x.json`` as TOML), or a file that
        cannot be written.
    """
    if not isinstance(topo, Topology):
        raise ConfigError(f"save() needs a Topology, got {type(topo).__name__}")
    fmt = _format_of(path, format)
    path = os.fspath(path)
    try:
        if fmt == "toml":
            write_toml(to_spec(topo), path)
        elif fmt == "yaml":
            yaml = _yaml()
            write_whole(path, yaml.safe_dump(to_spec(topo), sort_keys=False))
        elif fmt == "graphml":
            import io as _io

            buffer = _io.BytesIO()
            nx.write_graphml(_graph_for_export(topo), buffer)
            write_whole(path, buffer.getvalue().decode("utf-8"))
        elif fmt == "json":
            data = nx.node_link_data(_graph_for_export(topo), edges="edges")
            write_whole(path, json.dumps(data))
        else:
            write_dot(topo, path)
    except OSError as exc:
        raise ConfigError(f"{path}: cannot write: {exc.strerror or exc}") from None


def load(path: str) -> Topology:
    """A validated Topology from a toml, yaml, graphml or json file.

    JSON may use the node-link ``edges`` key (networkx 3.4 and later, what :func:`save` writes) or the
    older ``links`` key.

    Raises
    ------
    ConfigError
        ``path`` is not a path, the file cannot be read, is binary, or is malformed (the message names the
        file and the entry at fault).
    TopologyError
        The fabric it describes cannot be simulated (see :meth:`Topology.validate`).
    """
    fmt = _format_of(path, None)
    path = os.fspath(path)
    if fmt == "dot":
        raise ConfigError(f"{path}: DOT is export only; load a .toml, .yaml, .graphml or .json file")
    try:
        if fmt == "graphml":
            try:
                G = nx.read_graphml(path)
            except OSError:
                raise
            except Exception as exc:  # networkx and the XML parser raise many kinds
                raise ConfigError(f"{path}: not a readable GraphML file: {_one_line(exc)}") from None
        else:
            text = _read_text(path)
            if fmt == "toml":
                try:
                    spec = tomllib.loads(text)
                except tomllib.TOMLDecodeError as exc:
                    raise ConfigError(f"{path}: not valid TOML: {_one_line(exc)}") from None
                return _physical(from_spec(spec, path), path)
            if fmt == "yaml":
                yaml = _yaml()
                try:
                    spec = yaml.safe_load(text)
                except yaml.YAMLError as exc:
                    raise ConfigError(f"{path}: not valid YAML: {_one_line(exc)}") from None
                return _physical(from_spec(spec, path), path)
            try:
                data = json.loads(text)
                key = "links" if isinstance(data, dict) and "links" in data and "edges" not in data else "edges"
                G = nx.node_link_graph(data, edges=key)
            except Exception as exc:  # json and networkx raise many kinds
                raise ConfigError(f"{path}: not a node-link JSON graph: {_one_line(exc)}") from None
            if not G.is_multigraph():
                _no_repeated_edges(data[key], G.is_directed(), path)
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror or exc}") from None
    try:
        return from_graph(G).check_physical()
    except FabricsimError as exc:
        raise type(exc)(f"{path}: {exc}") from None
    except (TypeError, ValueError, KeyError) as exc:  # attributes of the wrong type in a GraphML/JSON file
        raise ConfigError(f"{path}: malformed graph: {_one_line(exc)}") from None


def _no_repeated_edges(edges: list, directed: bool, path: str) -> None:
    """ConfigError if a node-link JSON graph that is not a multigraph lists an edge twice (networkx would
    keep the last one's attributes without a word; a multigraph's parallel edges are summed instead)."""
    first: dict[tuple, int] = {}
    for i, e in enumerate(edges, start=1):
        ends = (json.dumps(e.get("source")), json.dumps(e.get("target")))
        pair = ends if directed else tuple(sorted(ends))
        if pair in first:
            raise ConfigError(f"{path}: edge {i} ({e.get('source')} -> {e.get('target')}) repeats edge {first[pair]}; "
                              "list each link once, or set \"multigraph\": true to add parallel links up")
        first[pair] = i


def _physical(topo: Topology, path: str) -> Topology:
    try:
        return topo.check_physical()
    except TopologyError as exc:
        raise TopologyError(f"{path}: {exc}") from None


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return text or type(exc).__name__


def _yaml():
    try:
        import yaml
    except ImportError:
        raise ConfigError("YAML needs PyYAML: pip install 'fabricsim[yaml]' (or use TOML)") from None
    return yaml
