"""Hardware presets: GPUs, links and switches, each figure with its source.

Bandwidths are bytes per second **per direction** (DESIGN.md, "Units"). Vendors quote NVLink as a
bidirectional total: "NVLink 5, 1.8 TB/s per GPU" is 18 links x 50 GB/s each way, so a GPU injects at most
900 GB/s and receives at most 900 GB/s at the same time. Row ids (A001, ...) refer to
``shared/reference/published_figures.csv``, which names the public source of each row.

Latencies are not published for NVLink or NVSwitch hops (row A032): every latency here is a named
assumption, chosen to be calibrated against the measured all-reduce curves, and easy to override with
``dataclasses.replace``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from fabricsim.errors import ConfigError

__all__ = [
    "GPU", "LinkSpec", "SwitchSpec",
    "H100", "H200", "B200", "GB200", "GPUS",
    "NVLINK4", "NVLINK5", "NVLINK_C2C", "IB_NDR", "IB_XDR", "ETH_400G", "ETH_800G", "PCIE5_X16", "LINKS",
    "NVSWITCH_GEN3", "NVLINK5_SWITCH", "NVLINK5_SWITCH_TRAY", "QUANTUM2_NDR", "QUANTUM_X800", "SPECTRUM_X800",
    "SWITCHES", "gpu_preset", "NetworkKind", "NETWORK_KINDS", "CLOUD_NIC_LATENCY", "FITTED_ROWS",
]

TFLOPS = 1e12
GBps = 1e9
TBps = 1e12
GiB_ = 2**30
GB_ = 10**9


@dataclass(frozen=True)
class GPU:
    """One GPU: dense tensor-core throughput by precision (FLOP/s), HBM capacity (bytes) and bandwidth."""

    name: str
    flops: dict[str, float]
    hbm_bytes: int
    hbm_bandwidth: float
    nvlink: str
    source: str = ""

    def peak_flops(self, precision: str) -> float:
        """Dense peak at ``precision`` ("bf16", "fp8", "fp4"); refuses a precision the GPU lacks."""
        key = precision.lower()
        if key not in self.flops:
            have = ", ".join(sorted(self.flops))
            raise ConfigError(f"{self.name} has no {precision!r} tensor-core rate (it has: {have})")
        return self.flops[key]


@dataclass(frozen=True)
class LinkSpec:
    """A link kind: one-way bandwidth of one physical link (lane) and its one-hop latency (s)."""

    kind: str
    bandwidth: float
    latency: float
    links_per_gpu: int = 1
    source: str = ""
    latency_source: str = ""

    @property
    def per_gpu_bandwidth(self) -> float:
        """One-way bandwidth of all of a GPU's links of this kind together."""
        return self.bandwidth * self.links_per_gpu


@dataclass(frozen=True)
class SwitchSpec:
    """A switch kind: ports, per-port one-way bandwidth and port-to-port latency."""

    kind: str
    ports: int
    port_bandwidth: float
    latency: float
    source: str = ""
    notes: str = field(default="", compare=False)

    @property
    def capacity(self) -> float:
        """One-way switching capacity, all ports together (B/s)."""
        return self.ports * self.port_bandwidth


# --- links -----------------------------------------------------------------------------------------------
# Assumed hop latencies. No vendor publishes them (A032). A GPU -> NVSwitch -> GPU path of two NVLink hops
# is set to NCCL's smallest per-step NVLink latency, the LL protocol's 0.6 us (C099), which includes the
# wire, the switch and the flag handshake: so 0.3 us per hop.
NVLINK_HOP_LATENCY = 0.3e-6
NIC_LATENCY = 1.0e-6  # GPU <-> NIC through PCIe and the NIC pipeline: assumption
IB_SWITCH_LATENCY = 0.6e-6  # HDR port-to-port latency, A031 (NDR assumed the same)

NVLINK4 = LinkSpec(
    kind="nvlink4", bandwidth=25 * GBps, latency=NVLINK_HOP_LATENCY, links_per_gpu=18,
    source="A007: 900 GB/s bidirectional per Hopper GPU over 18 links -> 25 GB/s each way per link",
    latency_source="assumption (A032: not published)",
)
NVLINK5 = LinkSpec(
    kind="nvlink5", bandwidth=50 * GBps, latency=NVLINK_HOP_LATENCY, links_per_gpu=18,
    source="A001, A003, A004, A005: 18 links x 50 GB/s each way = 900 GB/s each way, 1.8 TB/s bidirectional",
    latency_source="assumption (A032: not published)",
)
NVLINK_C2C = LinkSpec(
    kind="nvlink-c2c", bandwidth=450 * GBps, latency=NVLINK_HOP_LATENCY,
    source="NVIDIA Grace Blackwell GB200 page: NVLink-C2C 900 GB/s bidirectional CPU-GPU",
    latency_source="assumption",
)
IB_NDR = LinkSpec(
    kind="ib-ndr", bandwidth=400e9 / 8, latency=NIC_LATENCY,
    source="A027: ConnectX-7 400 Gb/s = 50 GB/s each way (A029: NCCL reaches 48.5 GB/s per NIC)",
    latency_source="assumption",
)
IB_XDR = LinkSpec(
    kind="ib-xdr", bandwidth=800e9 / 8, latency=NIC_LATENCY,
    source="A028: ConnectX-8 SuperNIC 800 Gb/s = 100 GB/s each way",
    latency_source="assumption",
)
ETH_400G = LinkSpec(
    kind="eth-400g", bandwidth=400e9 / 8, latency=NIC_LATENCY,
    source="400 GbE (ConnectX-7 / BlueField-3 class NIC, A027): 50 GB/s each way",
    latency_source="assumption",
)
ETH_800G = LinkSpec(
    kind="eth-800g", bandwidth=800e9 / 8, latency=NIC_LATENCY,
    source="800 GbE (ConnectX-8 SuperNIC, A028): 100 GB/s each way",
    latency_source="assumption",
)
PCIE5_X16 = LinkSpec(
    kind="pcie5", bandwidth=64 * GBps, latency=NIC_LATENCY,
    source="PCIe 5.0 x16: 32 GT/s x 16 lanes, ~64 GB/s each way before encoding overhead",
    latency_source="assumption",
)
LINKS = {spec.kind: spec for spec in (NVLINK4, NVLINK5, NVLINK_C2C, IB_NDR, IB_XDR, ETH_400G, ETH_800G, PCIE5_X16)}

# --- switches --------------------------------------------------------------------------------------------
NVSWITCH_GEN3 = SwitchSpec(
    kind="nvswitch3", ports=64, port_bandwidth=25 * GBps, latency=NVLINK_HOP_LATENCY,
    source="A009 (64 NVLink4 ports per chip, secondary), A010 (4 chips per HGX H100 baseboard)",
)
NVLINK5_SWITCH = SwitchSpec(
    kind="nvlink5-switch", ports=72, port_bandwidth=50 * GBps, latency=NVLINK_HOP_LATENCY,
    source="A013/A016/A020: 144 ports per tray, 2 chips per tray -> 72 NVLink5 ports per chip",
)
NVLINK5_SWITCH_TRAY = SwitchSpec(
    kind="nvlink5-switch-tray", ports=144, port_bandwidth=50 * GBps, latency=NVLINK_HOP_LATENCY,
    source="A013 (144 ports), A014 (14.4 TB/s non-blocking per tray), A015 (9 trays per NVL72)",
)
QUANTUM2_NDR = SwitchSpec(
    kind="ib-ndr-switch", ports=64, port_bandwidth=400e9 / 8, latency=IB_SWITCH_LATENCY,
    source="A030: Quantum-2, 64 ports at 400 Gb/s; latency A031 (HDR figure, assumed for NDR)",
)
QUANTUM_X800 = SwitchSpec(
    kind="ib-xdr-switch", ports=144, port_bandwidth=800e9 / 8, latency=IB_SWITCH_LATENCY,
    source="NVIDIA Quantum-X800 Q3400 product page: 144 ports at 800 Gb/s; latency assumed as A031",
)
SPECTRUM_X800 = SwitchSpec(
    kind="eth-800g-switch", ports=64, port_bandwidth=800e9 / 8, latency=IB_SWITCH_LATENCY,
    source="NVIDIA Spectrum-X SN5600 product page: 64 ports at 800 GbE; latency assumed as A031",
)
SWITCHES = {s.kind: s for s in (NVSWITCH_GEN3, NVLINK5_SWITCH, NVLINK5_SWITCH_TRAY, QUANTUM2_NDR, QUANTUM_X800,
                                SPECTRUM_X800)}

# --- network kinds -----------------------------------------------------------------------------------------
# A cloud fabric's NIC traversal (GPU -> NIC -> wire, or back), fitted on one published small all-reduce:
# 2 x 8 H100 on GCP A3 Mega (GPUDirect-TCPXO), 64 B in 122.9 us (row A3M-64B, in-place). With NVLink hops and
# NCCL's LL latencies as on any fabric, 2 crossings x (2 NIC + 2 switch traversals) leave 26.5 us per NIC.
CLOUD_NIC_LATENCY = 26.5e-6  # A3M-64B
FITTED_ROWS = {"CLOUD_NIC_LATENCY": ["A3M-64B"]}

@dataclass(frozen=True)
class NetworkKind:
    """The latency character of a scale-out fabric: one NIC traversal (GPU -> PCIe -> NIC pipeline, or back)
    and one switch traversal. A GPU-to-GPU message across one leaf pays 2 NIC + 2 switch-link latencies."""

    name: str
    nic_latency: float
    switch_latency: float
    source: str = ""


NETWORK_KINDS = {
    "ib": NetworkKind("ib", NIC_LATENCY, IB_SWITCH_LATENCY,
                      "InfiniBand: switch 0.6 us port to port (A031, HDR; NDR assumed the same); NIC 1 us: assumption. "
                      "Checked on small messages across two H20 nodes (NVLS tree, issue 1244 rows): within 15%"),
    "roce": NetworkKind("roce", NIC_LATENCY, 0.8e-6,
                        "RoCE (Ethernet RDMA, e.g. Spectrum-X or Broadcom-based fabrics): same NIC as InfiniBand; "
                        "switch 0.8 us port to port is an assumption (Ethernet switch ASICs of the same class are "
                        "quoted at 0.25-0.85 us); no published collective measurement checks it"),
    "cloud": NetworkKind("cloud", CLOUD_NIC_LATENCY, IB_SWITCH_LATENCY,
                         "generic cloud GPU fabric: NIC traversal fitted on GCP A3 Mega (GPUDirect-TCPXO) small "
                         "all-reduces (row A3M-64B); other clouds (AWS EFA over SRD, ...) differ and publish no "
                         "figure: pass net_latency= from a measurement of your own fabric"),
}


# --- GPUs ------------------------------------------------------------------------------------------------
H100 = GPU(
    name="H100", nvlink="nvlink4",
    flops={"bf16": 989 * TFLOPS, "fp16": 989 * TFLOPS, "fp8": 1979 * TFLOPS},
    hbm_bytes=81_559 * 2**20, hbm_bandwidth=3.35 * TBps,
    source="A033 (BF16 989 TFLOPS dense), A034 (FP8 1979), A035 (HBM3 3.35 TB/s); the '80 GB' of the datasheet is "
           "81,559 MiB (85.5e9 bytes) as NVML reports it (thundergolfer.com/blog/nvidia-gpu-memory-capacity, "
           "nvidia-smi table)",
)
H200 = GPU(
    name="H200", nvlink="nvlink4",
    flops={"bf16": 989 * TFLOPS, "fp16": 989 * TFLOPS, "fp8": 1979 * TFLOPS},
    hbm_bytes=143_771 * 2**20, hbm_bandwidth=4.8 * TBps,
    source="H200 SXM datasheet: same tensor cores as H100 (A033/A034), HBM3e at 4.8 TB/s (A036 measures 4.0-4.15 "
           "TB/s STREAM); the '141 GB' is 143,771 MiB (150.75e9 bytes) as NVML reports it "
           "(thundergolfer.com/blog/nvidia-gpu-memory-capacity)",
)
B200 = GPU(
    name="B200", nvlink="nvlink5",
    flops={"bf16": 2250 * TFLOPS, "fp16": 2250 * TFLOPS, "fp8": 4500 * TFLOPS, "fp4": 9000 * TFLOPS},
    hbm_bytes=180 * GB_, hbm_bandwidth=7.7 * TBps,
    source="A037 (BF16 2.25 PFLOPS dense), A038 (FP8 4.5), FP4 9 dense (HGX B200 spec 144 PF sparse / 8 GPUs / 2), "
           "A040 (180 GB HBM3e, 7.7 TB/s; taken as 180e9 bytes: no NVML figure was found, while Hopper's datasheet "
           "GB are ~7% more bytes than their decimal reading)",
)
GB200 = GPU(
    name="GB200", nvlink="nvlink5",
    flops={"bf16": 2500 * TFLOPS, "fp16": 2500 * TFLOPS, "fp8": 5000 * TFLOPS, "fp4": 10000 * TFLOPS},
    hbm_bytes=186 * GB_, hbm_bandwidth=8.0 * TBps,
    source="A039 (BF16 2.5 / FP8 5 PFLOPS dense per GPU), A041 (rack FP4 1440 PF sparse -> 10 PF dense per GPU), "
           "A040 (186 GB HBM3e, 8 TB/s)",
)
GPUS = {g.name.lower(): g for g in (H100, H200, B200, GB200)}


def gpu_preset(name: str) -> GPU:
    """The GPU preset called ``name`` (case-insensitive), or a ConfigError listing the known ones."""
    try:
        return GPUS[name.lower()]
    except KeyError:
        raise ConfigError(f"unknown GPU {name!r}; known: {', '.join(sorted(GPUS))}") from None
