"""Fabric builders: functions with keyword options that return a validated Topology."""

from fabricsim.topologies.base import Topology

__all__ = ["Topology"]
