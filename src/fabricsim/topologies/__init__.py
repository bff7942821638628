"""Fabric builders: functions with keyword options that return a validated Topology.

>>> from fabricsim.topologies import gb200_nvl72
>>> gb200_nvl72(planes="aggregate").num_gpus
72
"""

from fabricsim.topologies.base import Topology, format_summary
from fabricsim.topologies.io import PRESETS, build, from_graph, load, resolve, save
from fabricsim.topologies.nvlink import dgx_b200, dgx_h100, gb200_nvl72, nvl576
from fabricsim.topologies.scaleout import scale_out

__all__ = [
    "Topology", "format_summary",
    "dgx_h100", "dgx_b200", "gb200_nvl72", "nvl576", "scale_out",
    "PRESETS", "build", "resolve", "from_graph", "load", "save",
]
