"""fabricsim: a flow-level simulator of multi-GPU cluster interconnects.

Units everywhere: seconds, bytes, bytes per second per direction (see ``fabricsim.units``).
"""

from fabricsim.errors import ConfigError, FabricsimError, InfeasibleError, TopologyError

__all__ = ["FabricsimError", "TopologyError", "ConfigError", "InfeasibleError", "__version__"]
__version__ = "0.1.0"
