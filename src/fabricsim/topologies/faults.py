"""Faults and degradations: a fabric as built, with parts missing or slower.

A *static* fault is a new Topology (the graph with links removed or scaled); routing then simply sees a
different graph (DESIGN.md, "Faults"). A *timed* fault names the same parts and a time; the engine
changes those links' capacities at that instant of a run (``Simulation.at``). Both are described by
:class:`Fault` and written in one syntax, on the command line and in files:

``TARGET``                        fail (``--fail``): every link of TARGET carries nothing
``TARGET:F``                      degrade (``--degrade``): keep a share F in [0, 1] of TARGET's links
``TARGET:KIND=F``                 degrade only the links whose kind starts with KIND (``nvlink``, ``ib``)
``TARGET:latency=+2us``           add latency to every link of TARGET
``T@...`` or ``T:...``            timed (``--fail-at 1ms:leaf3``, ``--degrade-at 1ms:r0/gpu5:nvlink=0.5``)

TARGET is a node name (``leaf3``, ``spine0``, ``pod1/spine2``, ``r0/nvs5``, ``n3/nic2``, ``r0/gpu5``), a
directed link ``A->B`` or a full-duplex one ``A--B``, or one of the NVLink switch aliases ``rN/trayT``
(the two switch chips of tray T of rack N: chips 2T and 2T+1, as built by ``gb200_nvl72``) and
``rN/planeP`` (chip P). Shell-style globs work on each name (``spine*``, ``*/tray3``, ``r0/gpu*--*``).
A node's links are all its links in both directions. A GPU itself cannot fail (it would be a missing
rank, not a fault of the fabric); fail or degrade its links instead.

How a degradation is modelled (what NCCL sees):

- Links carry ``lanes``, physical links merged into one edge. A degraded selection keeps
  ``round(F x lanes)`` of them and loses the rest: an edge left with no lane is removed, an edge that keeps
  some runs at ``kept / lanes`` of its bandwidth. For a GPU the lanes are counted over all its selected
  links together, and whole planes are dropped from the highest switch chip down: a GB200 GPU (one link
  to each of 18 chips) degraded to 0.5 keeps 9 planes, exactly like a GPU whose NVLinks to 9 switch chips
  are down. NCCL then sees 9 usable NVLink planes, not one slower link, and so does routing: peers reach
  the GPU only through the chips it still touches.
- A single-lane link that is not one of a GPU's planes (a 400G port trained down to 200G) runs at F of
  its rate.
- A timed fault scales capacities with the same selection (dropped planes carry nothing from that time).

A fabric cut apart is refused, naming the faults and the GPUs they cut off (:func:`check_connected`),
never simulated into a hang.

Examples
--------
>>> from fabricsim.topologies import gb200_nvl72
>>> rack = gb200_nvl72()
>>> hurt = apply_faults(rack, [parse_fault("r0/tray3")])
>>> round(hurt.injection_bandwidth() / rack.injection_bandwidth(), 4)   # 16 of 18 planes: 1 - 1/9
0.8889
>>> parse_fault("1ms:leaf3").time
0.001
"""

from __future__ import annotations

import fnmatch
import re
from dataclasses import dataclass
from typing import Hashable, Iterable, Sequence

import networkx as nx

from fabricsim.errors import ConfigError, InfeasibleError
from fabricsim.topologies.base import Topology, _reach_through_switches
from fabricsim.units import format_time, parse_time

__all__ = ["Fault", "parse_fault", "parse_faults", "select_links", "link_factors", "apply_faults",
           "check_connected", "timed_faults", "SYNTAX"]

SYNTAX = ("TARGET (fail), TARGET:F or TARGET:KIND=F (degrade to share F), TARGET:latency=+2us; timed: "
          "TIME:... (e.g. 1ms:leaf3). TARGET: a node (leaf3, r0/nvs5, n3/nic2), a link A->B or A--B, "
          "rN/trayT or rN/planeP; globs allowed")

_DURATION = r"[0-9.]+(?:e-?[0-9]+)?\s*(?:s|ms|us|µs|ns)"  # a fault's time: a number and its unit
_TIME = re.compile(rf"^\s*({_DURATION})\s*[:@](.+)$")


@dataclass(frozen=True)
class Fault:
    """One fault: ``target`` loses all but ``factor`` of its links' lanes (0: failed), or gains latency.

    ``kind`` restricts the links to those whose kind starts with it; ``time`` (seconds from the start
    of a run) makes the fault timed; ``None`` means the fabric is built without those parts.
    """

    target: str
    factor: float = 0.0
    kind: str = ""
    latency: float = 0.0
    time: float | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.factor, (int, float)) or not 0 <= self.factor <= 1:
            raise ConfigError(f"fault {self.target!r}: the share kept must be in [0, 1], got {self.factor!r}")
        if not self.latency >= 0:
            raise ConfigError(f"fault {self.target!r}: added latency must be non-negative")
        if self.time is not None and not self.time >= 0:
            raise ConfigError(f"fault {self.target!r}: its time must be non-negative")
        if self.time is not None and self.latency:
            raise ConfigError(f"fault {self.target!r}: a timed fault changes bandwidth, not latency")

    def describe(self) -> str:
        what = (f"+{format_time(self.latency)} latency" if self.latency
                else "failed" if self.factor == 0 else f"at {self.factor:g}")
        kind = f" {self.kind} links" if self.kind else ""
        when = f" at t={format_time(self.time)}" if self.time is not None else ""
        return f"{self.target}{kind} {what}{when}"


def parse_fault(text: str, *, degrade: bool | None = None, option: str = "") -> Fault:
    """A Fault from its text (module docstring). ``degrade=False`` refuses a share (``--fail``);
    ``option`` (e.g. ``"--fail-at"``) names the option in messages (default ``--fail``/``--degrade``).

    >>> parse_fault("r0/gpu5:nvlink=0.5")
    Fault(target='r0/gpu5', factor=0.5, kind='nvlink', latency=0.0, time=None)
    >>> parse_fault("leaf3->spine0:latency=+2us").latency
    2e-06
    """
    if not isinstance(text, str) or not text.strip():
        raise ConfigError(f"empty fault; expected {SYNTAX}")
    raw = text.strip()
    time = None
    m = _TIME.match(raw)
    if m:
        time = parse_time(m.group(1).replace(" ", ""))
        raw = m.group(2).strip()
    target, _, change = _split_change(raw)
    if not target:
        raise ConfigError(f"fault {text!r} names no part; expected {SYNTAX}")
    timed = "-at" if option.endswith("-at") else ""
    if not change:
        if degrade:
            raise ConfigError(f"{option or '--degrade'} {text!r} needs a share: TARGET:0.5 or TARGET:nvlink=0.5")
        return Fault(target, 0.0, time=time)
    if degrade is False:
        raise ConfigError(f"{option or '--fail'} {text!r} takes no share; use --degrade{timed} {text!r}")
    key, eq, value = change.partition("=")
    key, value = (key.strip(), value.strip()) if eq else ("", key.strip())
    if key == "latency":
        if not value.startswith("+"):
            raise ConfigError(f"fault {text!r}: write added latency as latency=+2us")
        return Fault(target, 1.0, latency=parse_time(value[1:]), time=time)
    try:
        factor = float(value)
    except ValueError:
        raise ConfigError(f"fault {text!r}: {value!r} is not a share in [0, 1]; expected {SYNTAX}") from None
    return Fault(target, factor, kind=key, time=time)


def _split_change(raw: str) -> tuple[str, str, str]:
    """TARGET and the change after its last ':' (names never hold ':'; links use -> or --)."""
    if ":" not in raw:
        return raw, "", ""
    target, _, change = raw.rpartition(":")
    return target.strip(), ":", change.strip()


def parse_faults(fail: Iterable[str] = (), degrade: Iterable[str] = (), fail_at: Iterable[str] = (),
                 degrade_at: Iterable[str] = ()) -> list[Fault]:
    """The faults of the CLI's four options (each value may list several, comma-separated)."""
    out: list[Fault] = []
    for values, is_degrade, timed in ((fail, False, False), (degrade, True, False), (fail_at, False, True),
                                      (degrade_at, True, True)):
        option = "--" + ("degrade" if is_degrade else "fail") + ("-at" if timed else "")
        for value in values:
            for text in (t for t in value.split(",") if t.strip()):
                if timed:
                    out.append(_timed_fault(text, is_degrade, option))
                    continue
                fault = parse_fault(text, degrade=is_degrade, option=option)
                if fault.time is not None:
                    raise ConfigError(f"{option} {text!r} has a time: use --fail-at/--degrade-at for timed faults")
                out.append(fault)
    return out


def _timed_fault(text: str, degrade: bool, option: str) -> Fault:
    """``TIME:SPEC`` of ``--fail-at``/``--degrade-at``, each part checked on its own (messages name the option)."""
    split = re.match(r"^([^:@]*)[:@](.*)$", text.strip())  # TIME:SPEC, or TIME@SPEC
    example = "1ms:r0/tray3:0.5" if degrade else "1ms:leaf3"
    if split is None or not split.group(1).strip():
        raise ConfigError(f"{option} {text!r} has no time: write TIME:TARGET, e.g. {example}")
    when, rest = split.group(1).strip(), split.group(2)
    if not rest.strip():
        raise ConfigError(f"{option} {text!r} names no part after its time: write TIME:TARGET, e.g. {example}")
    try:
        time = parse_time(when.replace(" ", ""))
    except ConfigError as exc:
        raise ConfigError(f"{option} {text!r}: {exc}") from None
    if not re.fullmatch(_DURATION, when):  # what untimed specs read as a time, and no more (a unit: '1' is not 1 s)
        raise ConfigError(f"{option} {text!r}: write its time as a number and a unit, e.g. {example}")
    try:
        fault = parse_fault(rest, degrade=degrade, option=option)
    except ConfigError as exc:  # its message quotes the spec without its time: quote the whole of it
        raise ConfigError(str(exc).replace(repr(rest), repr(text.strip()))) from None
    if fault.time is not None:
        raise ConfigError(f"{option} {text!r} has two times; write TIME:TARGET, e.g. {example}")
    if fault.latency:
        raise ConfigError(f"{option} {text!r}: a timed fault changes bandwidth, not latency")
    return Fault(fault.target, fault.factor, fault.kind, fault.latency, time)


# --- selecting the parts ------------------------------------------------------------------------------------
def _alias_names(G: nx.DiGraph, node: Hashable, attrs: dict) -> list[str]:
    names = [str(node)]
    if attrs.get("kind") == "nvswitch" and "/" in str(node):
        prefix = str(node).rsplit("/", 1)[0]
        if "tray" in attrs:
            names.append(f"{prefix}/tray{attrs['tray']}")
        if "plane" in attrs:
            names.append(f"{prefix}/plane{attrs['plane']}")
    return names


def _match_nodes(G: nx.DiGraph, pattern: str) -> list[Hashable]:
    return [n for n, d in G.nodes(data=True) if any(fnmatch.fnmatchcase(a, pattern) for a in _alias_names(G, n, d))]


def select_links(topology: Topology, fault: Fault) -> list[tuple[Hashable, Hashable]]:
    """The directed edges a fault's target names (kind filter applied). ConfigError if none."""
    G = topology.graph
    target = fault.target
    for sep, both in (("--", True), ("<->", True), ("->", False)):
        if sep in target:
            a, _, b = target.partition(sep)
            A, B = set(_match_nodes(G, a.strip())), set(_match_nodes(G, b.strip()))
            edges = [(u, v) for u, v in G.edges if (u in A and v in B) or (both and u in B and v in A)]
            break
    else:
        nodes = _match_nodes(G, target)
        gpus = [n for n in nodes if G.nodes[n].get("kind") == "gpu"]
        if gpus and fault.factor == 0 and not fault.kind and not fault.latency:
            raise ConfigError(f"fault {target!r} would fail GPU {gpus[0]!r}: a GPU is a rank, not a part of the "
                              f"fabric; fail its links instead ('{gpus[0]}:nvlink=0') or leave it out of the job")
        chosen = set(nodes)
        edges = [(u, v) for u, v in G.edges if u in chosen or v in chosen]
    edges = [(u, v) for u, v in edges if str(G.edges[u, v].get("kind", "")).startswith(fault.kind)]
    if not edges:
        example = next((str(n) for n, k in G.nodes(data="kind") if k == "switch"), None) or str(topology.gpus[0])
        raise ConfigError(f"fault {target!r} matches no link{' of kind ' + fault.kind if fault.kind else ''} in "
                          f"{topology.name}; name nodes as the fabric does (e.g. {example!r}, rN/trayT, A--B, "
                          "globs like spine*)")
    return edges


def link_factors(topology: Topology, fault: Fault) -> dict[tuple, float]:
    """Share of bandwidth each selected directed edge keeps (0: the edge is gone), by the lane rule.

    A GPU target drops whole planes, highest switch chip first, counting lanes over all its selected
    links (module docstring); other edges keep ``round(factor x lanes)`` lanes, or run at ``factor``
    when they have one lane.
    """
    G = topology.graph
    edges = select_links(topology, fault)
    f = fault.factor
    if f == 0 or fault.latency:
        return {e: (1.0 if fault.latency else 0.0) for e in edges}
    out: dict[tuple, float] = {}
    # a GPU's planes: its edges to (or from) switch chips, grouped per GPU, both directions alike
    per_gpu: dict[Hashable, list[Hashable]] = {}
    rest = []
    for u, v in edges:
        gpu, other = (u, v) if G.nodes[u].get("kind") == "gpu" else (v, u) if G.nodes[v].get("kind") == "gpu" \
            else (None, None)
        if gpu is not None and G.nodes[other].get("kind") == "nvswitch":
            per_gpu.setdefault(gpu, [])
            if other not in per_gpu[gpu]:
                per_gpu[gpu].append(other)
        else:
            rest.append((u, v))
    selected = set(edges)
    for gpu, chips in per_gpu.items():
        chips.sort(key=_natural)
        lanes = [_lanes(G, gpu, c) for c in chips]
        drop = sum(lanes) - round(f * sum(lanes))
        for c, n in zip(reversed(chips), reversed(lanes)):
            lost = min(n, drop)
            drop -= lost
            for e in ((gpu, c), (c, gpu)):
                if e in selected:
                    out[e] = (n - lost) / n
    for u, v in rest:
        n = int(G.edges[u, v].get("lanes", 1))
        out[(u, v)] = round(f * n) / n if n > 1 else f
    return out


def _lanes(G: nx.DiGraph, gpu: Hashable, chip: Hashable) -> int:
    e = G.edges[gpu, chip] if G.has_edge(gpu, chip) else G.edges[chip, gpu]
    return int(e.get("lanes", 1))


def _natural(name: Hashable) -> list:
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", str(name))]


# --- applying them ------------------------------------------------------------------------------------------
def apply_faults(topology: Topology, faults: Sequence[Fault], *, ranks: Sequence[int] | None = None,
                 check: bool = True) -> Topology:
    """A copy of ``topology`` with the static ``faults`` applied; timed ones are kept for the engine.

    Parameters
    ----------
    faults : sequence of Fault
        Static faults change the graph; timed faults go into ``meta["timed_faults"]`` as
        ``(time, [(u, v, factor), ...], description)``, which ``Simulation`` schedules at every run.
    ranks : sequence of int, optional
        The GPUs that must still reach each other (default: all).
    check : bool
        Refuse a fabric the static faults cut apart (:func:`check_connected`).

    Raises
    ------
    ConfigError
        A target that names nothing, or a GPU.
    InfeasibleError
        The faults cut the GPUs apart.
    """
    if not faults:
        return topology
    G = topology.graph.copy()
    static = [f for f in faults if f.time is None]
    for fault in static:
        for (u, v), keep in link_factors(topology, fault).items():
            if not G.has_edge(u, v):
                continue
            attrs = G.edges[u, v]
            if fault.latency:
                attrs["latency"] = attrs.get("latency", 0.0) + fault.latency
            elif keep <= 0:
                G.remove_edge(u, v)
            else:
                lanes = int(attrs.get("lanes", 1))
                attrs["bandwidth"] = attrs["bandwidth"] * keep
                if lanes > 1:
                    attrs["lanes"] = max(1, round(lanes * keep))
    meta = dict(topology.meta)
    meta["faults"] = list(topology.meta.get("faults", [])) + [f.describe() for f in faults]
    out = Topology(G, list(topology.gpus), [list(d) for d in topology.domains], name=topology.name,
                   hardware=dict(topology.hardware), meta=meta)
    # timed faults name the links of the fabric as the static faults left it
    meta["timed_faults"] = list(topology.meta.get("timed_faults", [])) + timed_faults(out, faults)
    if check and static:
        check_connected(out, ranks)
    return out


def timed_faults(topology: Topology, faults: Sequence[Fault]) -> list[tuple]:
    """``(time, [(u, v, factor), ...], description)`` of every timed fault, in time order."""
    out = []
    for fault in sorted((f for f in faults if f.time is not None), key=lambda f: f.time):
        links = [(u, v, keep) for (u, v), keep in link_factors(topology, fault).items()]
        out.append((fault.time, links, fault.describe()))
    return out


def check_connected(topology: Topology, ranks: Sequence[int] | None = None) -> None:
    """Every GPU of ``ranks`` (default all) reaches every other through forwarding nodes, or InfeasibleError
    naming the faults and the GPUs cut off."""
    G = topology.graph
    gpus = list(topology.gpus) if ranks is None else [topology.gpus[r] for r in ranks]
    if len(gpus) < 2:
        return
    for neighbours, phrase in ((G.successors, "from"), (G.predecessors, "to")):
        start = gpus[0]
        cut = [g for g in gpus if g not in _reach_through_switches(G, start, neighbours)]
        if cut:
            cut, start = _cut_off(G, gpus, cut, start)
        if cut:
            names = ", ".join(map(str, cut[:4])) + (f" and {len(cut) - 4} more" if len(cut) > 4 else "")
            faults = "; ".join(topology.meta.get("faults", [])) or "the fabric"
            raise InfeasibleError(f"{faults} cuts the group apart: {len(cut)} of {len(gpus)} GPUs ({names}) have "
                                  f"no path {phrase} {start} (GPUs do not forward; no other route is left)")


def _cut_off(G: nx.DiGraph, gpus: list, cut: list, start: Hashable) -> tuple[list, Hashable]:
    """The GPUs on the wrong side of a cut: those not attached to the switch island that serves most of the
    group (islands: connected parts of the graph of forwarding nodes, as GPUs do not forward)."""
    forwarding = [n for n, k in G.nodes(data="kind") if k != "gpu"]
    island = {}
    for i, comp in enumerate(nx.weakly_connected_components(G.subgraph(forwarding))):
        island.update(dict.fromkeys(comp, i))
    attached: dict[int, set] = {}
    for g in gpus:
        for v in G.successors(g):
            attached.setdefault(island[v], set()).add(g)
    if not attached:
        return cut, start
    main = max(attached.values(), key=len)
    off = [g for g in gpus if g not in main]
    return (off, next(iter(sorted(main, key=gpus.index)))) if off else (cut, start)


def faults_from_spec(entries: Iterable) -> list[Fault]:
    """Faults from a file's list: strings in the CLI syntax, or tables {target, factor, kind, time}."""
    out = []
    for entry in entries:
        if isinstance(entry, str):
            out.append(parse_fault(entry))
        elif isinstance(entry, dict):
            extra = set(entry) - {"target", "factor", "kind", "time", "latency"}
            if extra or "target" not in entry:
                raise ConfigError(f"a fault table takes target, factor, kind, time, latency; got {sorted(entry)}")
            time = entry.get("time")
            latency = entry.get("latency", 0.0)
            out.append(Fault(str(entry["target"]), float(entry.get("factor", 0.0)), str(entry.get("kind", "")),
                             parse_time(latency) if isinstance(latency, str) else float(latency),
                             parse_time(time) if isinstance(time, str) else time))
        else:
            raise ConfigError(f"a fault is a string like 'leaf3' or a table, got {entry!r}")
    return out
