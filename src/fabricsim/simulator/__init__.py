"""The flow-level engine: routing, max-min sharing, the fluid model and the SimPy fabric."""

from fabricsim.simulator.fabric import Fabric, FlowGroup, GroupResult
from fabricsim.simulator.routing import LinkTable, Route, Router, stable_hash
from fabricsim.simulator.sharing import max_min_rates

__all__ = ["Fabric", "FlowGroup", "GroupResult", "LinkTable", "Route", "Router", "stable_hash", "max_min_rates"]

from fabricsim.simulator.engine import Simulation, SimulationResult  # noqa: E402

__all__ += ["Simulation", "SimulationResult"]
