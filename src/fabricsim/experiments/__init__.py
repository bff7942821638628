"""Experiments on a fabric: several training jobs sharing it (placement, slowdown, hot links).

Faults live with the fabric (``fabricsim.topologies.faults``) and the engine (``Simulation.at``); a shared
cluster takes them as one more input.
"""

from fabricsim.experiments.cluster import ClusterResult, Job, JobResult, format_cluster, run_cluster
from fabricsim.experiments.placement import PLACEMENTS, parse_ranks, place
from fabricsim.experiments.scenario import load_scenario, run_scenario

__all__ = ["Job", "JobResult", "ClusterResult", "run_cluster", "format_cluster", "PLACEMENTS", "place",
           "parse_ranks", "load_scenario", "run_scenario"]
