"""The inventory: nodes, their groups and variables. Immutable once loaded."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

# Variables jueying understands, with the type each must have. Anything else in a jueying inventory
# is a typo until proven otherwise (prefix custom variables with `x_`).
KNOWN_VARS: Mapping[str, tuple[type, ...]] = {
    "address": (str,),  # host name or IP to connect to, if not the node name (like ssh's HostName)
    "ssh_user": (str,),
    "ssh_port": (int,),
    "ssh_identity_file": (str,),
    "ssh_proxy_jump": (str,),  # [user@]host[:port][,...] like ssh -J
    "site": (str,),
    "rack": (str,),
    "role": (str,),
    "expected_gpus": (int,),
    "gpu_model": (str,),
    "spare_pool": (str,),
    "partition": (str,),  # the scheduler partition, for `jueying capacity --by partition`
    "audit": (dict,),  # {attribute: value} that `jueying audit` expects on these nodes (pins)
    "scheduler": (str,),  # slurm or builtin (default): who drains and resumes this node
    "slurm_controller": (str,),  # run scontrol on this inventory node over SSH (default: on this machine)
    "max_unavailable": (int,),  # cluster-wide cap on drained/down nodes (count)
    "max_unavailable_pct": (int, float),  # the same as a percentage (default 10)
    "local": (bool,),  # run on this machine without SSH
}


@dataclass(frozen=True, slots=True)
class Node:
    """One node: its name (what the operator types) and its merged variables."""

    name: str
    vars: Mapping[str, Any] = field(default_factory=dict)
    groups: tuple[str, ...] = ()

    @property
    def address(self) -> str | None:
        value = self.vars.get("address")
        return str(value) if value is not None else None

    @property
    def is_local(self) -> bool:
        return bool(self.vars.get("local"))

    @property
    def expected_gpus(self) -> int | None:
        value = self.vars.get("expected_gpus")
        return value if isinstance(value, int) and not isinstance(value, bool) else None


@dataclass(frozen=True)
class Inventory:
    """Nodes in file order and groups by name; `source` is the file it came from (None: embedded local)."""

    nodes: Mapping[str, Node]
    groups: Mapping[str, tuple[str, ...]]
    source: str | None = None

    def node(self, name: str) -> Node:
        return self.nodes[name]
