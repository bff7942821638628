"""Collectives over the simulated fabric, in nccl-tests' vocabulary.

``collective(sim, kind, nbytes, ...)`` runs any of all-reduce, reduce-scatter, all-gather, broadcast,
reduce, all-to-all and send/recv inside a simulation; ``CollectiveRunner`` runs them alone for sweeps.
"""

from fabricsim.collectives.analytic import allreduce_lower_bound, innetwork_lower_bound, ring_allreduce_time
from fabricsim.collectives.base import CollectiveResult, GroupLayout, busbw_factor
from fabricsim.collectives.kinds import KINDS, Kind
from fabricsim.collectives.protocol import CALIBRATED, IDEAL, Calibration
from fabricsim.collectives.runner import (COLLECTIVES, CollectiveRunner, all_gather, all_to_all, broadcast,
                                          collective, reduce, reduce_scatter, send_recv)
from fabricsim.collectives.select import ALGORITHMS, AllreduceRunner, allreduce, available_algorithms

__all__ = ["ALGORITHMS", "AllreduceRunner", "allreduce", "available_algorithms", "CollectiveResult", "GroupLayout",
           "busbw_factor", "Calibration", "CALIBRATED", "IDEAL", "allreduce_lower_bound", "innetwork_lower_bound",
           "ring_allreduce_time", "KINDS", "Kind", "COLLECTIVES", "CollectiveRunner", "collective", "reduce_scatter",
           "all_gather", "all_to_all", "broadcast", "reduce", "send_recv"]
