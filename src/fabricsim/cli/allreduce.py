"""``fabricsim allreduce``: an all_reduce_perf-style sweep of sizes on a simulated fabric.

Made by cli/collective.py, which makes every collective's command the same way (flags, columns, outputs).
"""

from __future__ import annotations

from fabricsim.cli.collective import COMMANDS

__all__ = ["allreduce"]

allreduce = COMMANDS["allreduce"]
