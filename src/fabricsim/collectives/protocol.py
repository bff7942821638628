"""How NCCL's protocols turn link bandwidth into collective bandwidth: named, documented parameters.

A collective step pays a protocol latency (synchronisation, flag polling, kernel work) and moves its bytes
over links whose usable bandwidth is below line rate. Three families of parameters, each with its source:

- ``PROTOCOLS``: NCCL's LL, LL128 and Simple. ``wire_efficiency`` is the payload share of the bytes each
  protocol puts on the wire (LL128: 8 bytes of flag per 128-byte line). LL carries 8 bytes of data per 16,
  and NCCL's model caps LL bus bandwidth at 141 GB/s on Hopper and 282 GB/s on Blackwell (C106): 0.31 of
  NVLink line rate, which is 0.38 of what Simple moves at NVLink 4's efficiency (0.82, below). Per-step and launch latencies are NCCL's own tuning-model constants (rows C098, C099, C101).
  A step's protocol latency already includes the wire: the fabric's path latency is counted once, and
  only the protocol latency beyond the wire latency every flow of the step pays is added.
- ``LINK_EFFICIENCY``: application-level share of line rate per link kind. Fitted: NVLink 4 on row B053
  (370 of 450 GB/s ring busbw on 8 H100), NVLink 5 on row B066 (700 of 900 GB/s on 8 B200), NICs on row
  A029 (48.5 of 50 GB/s per ConnectX-7).
- NVLS (in-switch reduction, see ``nvls.py``): NCCL's own structure, from its source: ``NVLS_CHANNELS``
  CTAs, each moving ``NVLS_CHUNK`` per head and step, so a pipeline stage is channels x heads x chunk; and
  per switch generation one fitted number: Hopper's usable NVLS rate (``NVLS_EFFICIENCY``, row B054) and
  Blackwell's fan-in cost per doubling of the group (``NVLS_FANIN``, row B067); and Hopper's NVLS share
  inside NCCL's multi-node kernels (``NVLS_NETWORK_EFFICIENCY``, row CW-H100-2N-8GiB). The NVLS tree's
  chunk follows NCCL's per-message rule (``nvls_chunk``).

Validation reports the rows used here apart from the rows that were not (DESIGN.md, issue 6).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

from fabricsim.errors import ConfigError

__all__ = ["Protocol", "PROTOCOLS", "LINK_EFFICIENCY", "NVLS_EFFICIENCY", "NVLS_FANIN", "NVLS_LATENCY", "NVLS_CHUNK", "NVLS_CHANNELS",
           "NVLS_NETWORK_EFFICIENCY", "nvls_chunk", "nvls_channels", "nvls_stage_bytes", "choose_protocol", "FITTED_ROWS", "Calibration", "CALIBRATED", "IDEAL"]

US = 1e-6


@dataclass(frozen=True)
class Protocol:
    """One NCCL protocol: payload share of wire bytes, launch latency, per-step latency by link class."""

    name: str
    wire_efficiency: float
    launch_latency: dict  # algorithm -> s (NCCL baseLatencies, C098)
    step_latency: dict  # (algorithm, "nvlink" | "net") -> s (NCCL hwLatencies, C099 / C101)


PROTOCOLS = {
    "ll": Protocol("ll", 141 / 450 / (370 / 450),
                   {"ring": 6.6 * US, "tree": 6.8 * US},
                   {("ring", "nvlink"): 0.6 * US, ("ring", "net"): 2.7 * US,
                    ("tree", "nvlink"): 0.6 * US, ("tree", "net"): 5.0 * US}),
    "ll128": Protocol("ll128", 120 / 128,
                      {"ring": 14.0 * US, "tree": 14.0 * US},
                      {("ring", "nvlink"): 1.9 * US, ("ring", "net"): 4.0 * US,
                       ("tree", "nvlink"): 1.25 * US, ("tree", "net"): 8.5 * US}),
    "simple": Protocol("simple", 1.0,
                       {"ring": 8.4 * US, "tree": 8.4 * US},
                       {("ring", "nvlink"): 3.4 * US, ("ring", "net"): 14.0 * US,
                        ("tree", "nvlink"): 4.0 * US, ("tree", "net"): 14.0 * US}),
}

# NVLS (in-switch reduction) has no LL variants; NCCL charges 25 us on NVLink and 18 us per network
# crossing for it (C099, C101), with no base latency (C098).
NVLS_LATENCY = {"nvlink": 25.0 * US, "net": 18.0 * US}

LINK_EFFICIENCY = {
    "nvlink4": 370 / 450,  # B053
    "nvlink5": 700 / 900,  # B066
    "ib-ndr": 48.5 / 50,  # A029
    "ib-xdr": 48.5 / 50,  # A029 share assumed for XDR
    "eth-400g": 48.5 / 50,  # A029 share assumed for RoCE
    "eth-800g": 48.5 / 50,
}

# NVLS all-reduce is a stream of multimem loads (the switch returns the sum of the p GPUs' copies: the
# reduce-scatter) and multimem stores (the switch multicasts a shard to all p: the all-gather), issued by a
# fixed number of CTAs. Each GPU's links carry N (1 + 1/p) each way at NVLS's usable rate B_nvls. Every
# load, and every stage's flags, wait for all p GPUs; with a bounded number of bytes in flight per GPU
# (Little's law) the time per byte gains a term that grows with the depth of that fan-in, log2 p:
#
#     T = a + N [(1 + 1/p) + NVLS_FANIN log2 p] / B_nvls
#
# Per switch generation, one parameter each, as before issue 10 (two rows, B054 and B067):
# - NVSwitch gen3 (Hopper, nvlink4): B_nvls = 308 GB/s fitted on B054 (480 GB/s busbw on 8 H100) and no
#   fan-in term: H100 NVLS busbw grows from 5 to 8 GPUs exactly as the link traffic predicts (B055: 420, 440,
#   460, 480 GB/s against 410, 439, 461, 478 simulated), so nothing is left for one.
# - NVLink 5 switch (Blackwell, nvlink5): B_nvls = the ring's usable rate (LINK_EFFICIENCY, B066: NVLS moves
#   bytes over the same ports) and NVLS_FANIN fitted on B067 (850 GB/s on 8 B200):
#   1 + 1/8 + 3 f = 1.75 x 700 / 850 -> f = 0.1054. Without it a link-traffic-only model predicts 1,059 GB/s
#   on a 72-GPU NVL72 against ~840 measured (issue 10); with it, 830. The NVL72 and multi-rack rows stay
#   evidence. Why log2 p (a combining tree in the switch, or the slowest of p responses) is an assumption no
#   public source confirms. Causes ruled out: switch ALU throughput (a chip of a DGX B200 and of an NVL72
#   reduces the same 4 N of operands per all-reduce: 8 GPUs x N / 2 chips, 72 x N / 18), and NCCL's channel
#   count (24 NVLS CTAs on both, NVLS_CHANNELS below).
NVLS_EFFICIENCY = {
    "nvlink4": 480 / 1.75 * 1.125 / 450,  # B054
    "nvlink5": 700 / 900,  # B066 (LINK_EFFICIENCY's NVLink 5 share)
}
NVLS_FANIN = {
    "nvlink4": 0.0,  # none needed on B055 (see above)
    "nvlink5": (1.75 * 700 / 850 - 1.125) / 3,  # B067
}

# NCCL's NVLS constants, src/transport/nvls.cc (NCCL 2.2x): NVLS_NCHANNELS_SM90 16 (Hopper), SM100 24 inside
# one NVLink domain (NVLS_NCHANNELS_SM100_NVL, one node or one MNNVL clique) and 32 across nodes (SM100), and
# NCCL_NVLS_CHUNKSIZE 128 KiB per head and step. A pipeline stage (one loop of the NVLS kernel) moves
# channels x heads x chunk bytes: 16 x 8 x 128 KiB = 16 MiB on a DGX H100 (what the DGX H100 curve was once
# fitted to), 24 x 8 x 128 KiB = 24 MiB on a DGX B200 and 24 x 72 x 128 KiB = 216 MiB on an NVL72, whose
# fill is the ~0.5 ms the NVL72 rows pay at 0.5-2 GiB. Heads = GPUs of the island (one head per GPU inside
# a node; across nodes one per NIC, which is one per GPU in every preset): an assumption read from NCCL's
# "NVLS Head" log lines (https://github.com/NVIDIA/nccl/issues/1357), not from its code.
NVLS_CHUNK = 128 * 2**10
NVLS_CHANNELS = {"nvlink4": {"domain": 16, "multi-node": 16}, "nvlink5": {"domain": 24, "multi-node": 32}}


def nvls_channels(kind: str, multi_node: bool = False) -> int:
    """NCCL's NVLS CTA count for NVLink ``kind`` (Hopper's 16 for unknown kinds)."""
    return NVLS_CHANNELS.get(kind, NVLS_CHANNELS["nvlink4"])["multi-node" if multi_node else "domain"]


# NCCL shrinks the per-head chunk of its NVLS kernels for smaller messages so that the pipeline keeps
# enough stages in flight (src/enqueue.cc, computeCollDevWork, NCCL 2.2x). With ops = channels x heads:
# - NVLSTree (several islands): from one Simple step (NCCL_BUFFSIZE 4 MiB / NCCL_STEPS 8 = 512 KiB), then
#   256 KiB below 32 ops x chunk, 128 KiB below 16 ops x chunk, 64 KiB below 4, 32 KiB below 1 (each test on
#   the chunk the previous one left). On two NVL72 racks (32 x 72 ops) that is 64 KiB at 0.5-1 GiB, 128 KiB
#   at 2-8 GiB and 256 KiB at 16 GiB.
# - NVLS (one island, and NVLS under SHARP): at most 128 KiB, then 64 KiB below 64 ops x chunk, 32 KiB below
#   8, 16 KiB below 2. Not applied here: with it the single-node and NVL72 rows at 4 MiB-1 GiB come out
#   10-26% optimistic, so the one-island pipeline keeps 128 KiB stages, whose one-stage fill then stands for
#   start-up costs the model does not have otherwise (an assumption, listed in docs/validation.md).
NVLS_TREE_CHUNK = 512 * 2**10
NVLS_TREE_CHUNK_RULES = ((32, 256 * 2**10), (16, 128 * 2**10), (4, 64 * 2**10), (1, 32 * 2**10))


def nvls_chunk(nbytes: int | None, ops: int, tree: bool = False) -> int:
    """NCCL's per-head NVLS chunk: NVLS_CHUNK for one island (or without a message size), the NVLSTree
    chunk for a message of ``nbytes`` with ``ops`` = channels x heads across islands (rules above)."""
    if not tree or nbytes is None:
        return NVLS_CHUNK
    chunk = NVLS_TREE_CHUNK
    for factor, cap in NVLS_TREE_CHUNK_RULES:
        if nbytes < factor * ops * chunk and chunk > cap:
            chunk = cap
    return chunk


def nvls_stage_bytes(kind: str, heads: int, multi_node: bool = False, nbytes: int | None = None,
                     tree: bool = False) -> int:
    """Bytes one NVLS pipeline stage moves: channels x heads x chunk (``nvls_chunk``: NCCL's NVLSTree chunk
    for a message of ``nbytes`` when ``tree``, else NVLS_CHUNK)."""
    ops = nvls_channels(kind, multi_node) * max(1, heads)
    return ops * nvls_chunk(nbytes, ops, tree)


# NVLS inside NCCL's multi-node kernels (NVLSTree; NVLS over IB SHARP): the share of the one-island NVLS
# rate they reach, per switch generation. Hopper's NVLS runs below its links' usable rate (308 of 370 GB/s,
# B054 against B053), so it is bounded by the kernel, not by the wire; NCCL's multi-node NVLS kernels give
# the in-switch reduction fewer warps, since some send to and receive from the network (src/device/
# all_reduce.h, NVLS kernel: 3 reduce + 2 broadcast warps with a network peer, as under SHARP, against 5-7
# reduce warps without; the NVLSTree kernel likewise gives warps to its tree roles, assumed to cost the same).
# Fitted on one row, CW-H100-2N-8GiB (440.6 GB/s busbw on 2 x 8 H100, NVLS tree): 0.87 takes the simulated
# busbw from 507 to 441 GB/s. The SHARP row B070 and the other H100 two-node row (NT309-H100-2N) are its
# evidence. Blackwell NVLS already runs at its links' usable rate (B066/B067) and its multi-node rows (two
# DGX B200, two NVL72 racks) need no share, so it has none. That the cause is the warp split is an
# assumption; the share itself is measured.
NVLS_NETWORK_EFFICIENCY = {"nvlink4": 0.87}

FITTED_ROWS = {"LINK_EFFICIENCY": ["B053", "B066", "A029"], "NVLS_EFFICIENCY": ["B054"], "NVLS_FANIN": ["B067"],
               "NVLS_NETWORK_EFFICIENCY": ["CW-H100-2N-8GiB"]}

def choose_protocol(nbytes: int, protocol: str = "auto", *, cost=None, protocols: dict | None = None) -> Protocol:
    """The protocol for a message of ``nbytes``.

    ``"auto"`` does what NCCL's tuner does: estimate each protocol's time and take the smallest.
    ``cost(protocol) -> seconds`` is that estimate (the algorithm supplies it, knowing its steps and
    bandwidth); without one, Simple is used. ``protocols`` replaces PROTOCOLS (a Calibration's latencies).
    """
    protocols = protocols or PROTOCOLS
    if protocol == "auto":
        if cost is None:
            return protocols["simple"]
        return min(protocols.values(), key=cost)
    try:
        return protocols[protocol.lower()]
    except KeyError:
        raise ConfigError(f"unknown protocol {protocol!r}; use auto, ll, ll128 or simple") from None


@dataclass(frozen=True)
class Calibration:
    """Which calibration a run applies: usable share of line rate per link kind, of NVLS, and NVLS's fan-in
    cost per link kind."""

    link_efficiency: dict
    nvls_efficiency: dict
    nvls_fanin: dict = field(default_factory=dict)
    protocols: dict = field(default_factory=dict)  # name -> Protocol; empty: PROTOCOLS (NCCL's constants)
    source: str = ""  # what it was fitted on (a calibration file says which logs and sizes)
    nvls_network: dict = field(default_factory=dict)  # NVLS_NETWORK_EFFICIENCY: kind -> share; absent: 1

    def protocol(self, name: str) -> Protocol:
        """Protocol ``name`` with this calibration's latencies."""
        return (self.protocols or PROTOCOLS)[name]

    def replace(self, **changes: Any) -> "Calibration":
        """A copy with some fields changed (dicts are copied, never shared)."""
        import dataclasses

        fields = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        fields = {k: dict(v) if isinstance(v, dict) else v for k, v in fields.items()}
        fields.update(changes)
        return Calibration(**fields)

    def to_toml(self) -> str:
        """This calibration as TOML (read back by ``Calibration.load``); latencies in seconds."""
        from fabricsim.collectives.calibration_file import dumps

        return dumps(self)

    def save(self, path: str | os.PathLike) -> None:
        """Write ``to_toml()`` to ``path`` whole (a temporary file renamed over it)."""
        from fabricsim.collectives.calibration_file import save

        save(self, path)

    @staticmethod
    def load(path: str | os.PathLike) -> "Calibration":
        """A calibration from a TOML file (ConfigError naming the file and the bad key)."""
        from fabricsim.collectives.calibration_file import load

        return load(path)

    def nvls_factor(self, kind: str, fanin: int = 0, network: bool = False) -> float:
        """Wire bytes per payload byte of NVLS traffic on ``kind`` links, on top of link efficiency, when a
        stage waits for ``fanin`` GPUs: (link / NVLS share) x (1 + f log2(fanin) / (1 + 1/fanin)), divided
        by the multi-node kernels' share (``nvls_network``) when ``network``."""
        import math

        link = self.link_efficiency.get(kind, 1.0)
        factor = link / self.nvls_efficiency.get(kind, link)
        if network:
            factor /= self.nvls_network.get(kind, 1.0)
        f = self.nvls_fanin.get(kind, 0.0)
        if fanin > 1 and f:
            factor *= 1.0 + f * math.log2(fanin) / (1.0 + 1.0 / fanin)
        return factor


CALIBRATED = Calibration(LINK_EFFICIENCY, NVLS_EFFICIENCY, NVLS_FANIN, nvls_network=NVLS_NETWORK_EFFICIENCY)
IDEAL = Calibration({}, {})  # line rate everywhere, no fan-in cost: what closed-form checks compare against
