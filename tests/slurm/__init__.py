"""A real multi-node Slurm cluster on this host (munged, slurmctld, one ``slurmd -N`` per node); see ``_cluster``."""

from tests.slurm._cluster import DEFAULT_NODES, SlurmCluster, SlurmError, find_free_ports

__all__ = ["DEFAULT_NODES", "SlurmCluster", "SlurmError", "find_free_ports"]
