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
- ``NVLS_EFFICIENCY``: share of line rate reached by in-switch reduction. Fitted: NVLink 4 on row B054
  (480 GB/s NVLS busbw on 8 H100), NVLink 5 on row B067 (850 GB/s on 8 B200).

Validation reports the rows used here apart from the rows that were not (DESIGN.md, issue 6).
"""

from __future__ import annotations

from dataclasses import dataclass

from fabricsim.errors import ConfigError

__all__ = ["Protocol", "PROTOCOLS", "LINK_EFFICIENCY", "NVLS_EFFICIENCY", "NVLS_LATENCY", "NVLS_CHUNK", "choose_protocol",
           "FITTED_ROWS", "Calibration", "CALIBRATED", "IDEAL"]

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

# Per-GPU NVLS throughput: each GPU moves N (1 + 1/p) bytes each way through the switch; busbw B_nvls on
# p = 8 GPUs gives efficiency = B_nvls / (2 (p-1)/p) * (1 + 1/p) / line rate.
NVLS_EFFICIENCY = {
    "nvlink4": 480 / 1.75 * 1.125 / 450,  # B054
    "nvlink5": 850 / 1.75 * 1.125 / 900,  # B067
}

# In-switch reduction runs chunk by chunk: the reduce-scatter of one chunk overlaps the all-gather of the
# one before, so a message of K chunks takes K + 1 stages and a message of one chunk pays both phases in
# turn. Fitted on the DGX H100 curve (allreduce_curves.csv, 2 MiB to 1 GiB), where time minus N/B levels
# off near 50-100 us: the fill cost of one 16 MiB chunk at NVLS bandwidth.
NVLS_CHUNK = 16 * 2**20

FITTED_ROWS = {"LINK_EFFICIENCY": ["B053", "B066", "A029"], "NVLS_EFFICIENCY": ["B054", "B067"],
               "NVLS_CHUNK": ["allreduce_curves.csv"]}

def choose_protocol(nbytes: int, protocol: str = "auto", *, cost=None) -> Protocol:
    """The protocol for a message of ``nbytes``.

    ``"auto"`` does what NCCL's tuner does: estimate each protocol's time and take the smallest.
    ``cost(protocol) -> seconds`` is that estimate (the algorithm supplies it, knowing its steps and
    bandwidth); without one, Simple is used.
    """
    if protocol == "auto":
        if cost is None:
            return PROTOCOLS["simple"]
        return min(PROTOCOLS.values(), key=cost)
    try:
        return PROTOCOLS[protocol.lower()]
    except KeyError:
        raise ConfigError(f"unknown protocol {protocol!r}; use auto, ll, ll128 or simple") from None


@dataclass(frozen=True)
class Calibration:
    """Which efficiencies a run applies: usable share of line rate per link kind, and of NVLS."""

    link_efficiency: dict
    nvls_efficiency: dict

    def nvls_factor(self, kind: str) -> float:
        """Wire bytes per payload byte for in-switch reduction on ``kind`` links (on top of link efficiency)."""
        return self.link_efficiency.get(kind, 1.0) / self.nvls_efficiency.get(kind, self.link_efficiency.get(kind, 1.0))


CALIBRATED = Calibration(LINK_EFFICIENCY, NVLS_EFFICIENCY)
IDEAL = Calibration({}, {})  # line rate everywhere: what closed-form checks compare against
