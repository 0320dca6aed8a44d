"""Simulated cluster of real OpenSSH sshd nodes on loopback addresses (see ``_sim``)."""

from tests.cluster._sim import SimCluster, SimNode, read_gpu_state_file

__all__ = ["SimCluster", "SimNode", "read_gpu_state_file"]
