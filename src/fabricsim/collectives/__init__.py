"""Collectives over the simulated fabric: ring, double binary tree, hierarchical and NVLS all-reduce."""

from fabricsim.collectives.analytic import allreduce_lower_bound, innetwork_lower_bound, ring_allreduce_time
from fabricsim.collectives.base import CollectiveResult, GroupLayout, busbw_factor
from fabricsim.collectives.protocol import CALIBRATED, IDEAL, Calibration
from fabricsim.collectives.select import ALGORITHMS, AllreduceRunner, allreduce, available_algorithms

__all__ = ["ALGORITHMS", "AllreduceRunner", "allreduce", "available_algorithms", "CollectiveResult", "GroupLayout",
           "busbw_factor", "Calibration", "CALIBRATED", "IDEAL", "allreduce_lower_bound", "innetwork_lower_bound",
           "ring_allreduce_time"]
