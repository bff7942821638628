"""The project's exception hierarchy.

Library code raises these for anything a user can get wrong; the CLI turns them into one line on stderr
and exit code 2. Anything else escaping is a bug in fabricsim, not in the user's input.
"""

__all__ = ["FabricsimError", "TopologyError", "ConfigError", "InfeasibleError"]


class FabricsimError(Exception):
    """Base class of every error fabricsim raises on purpose."""


class TopologyError(FabricsimError):
    """A fabric that cannot be built or simulated (unknown preset, disconnected GPU, bad bandwidth)."""


class ConfigError(FabricsimError):
    """Malformed user input: a size, a rate, a config file, an option combination."""


class InfeasibleError(FabricsimError):
    """A well-formed request the fabric cannot satisfy (more GPUs than it holds, TP wider than a domain)."""
