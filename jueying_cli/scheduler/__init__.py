"""Drain/resume backends: slurm (scontrol) and builtin (jueying's own ledger). Chosen per node by the
inventory variable `scheduler`."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from jueying_cli.errors import BadInputError
from jueying_cli.inventory.model import Inventory, Node
from jueying_cli.scheduler.base import Scheduler


def schedulers_for(inventory: Inventory, nodes: Sequence[Node], transport: Any,
                   store: Any) -> dict[str, tuple[Scheduler, list[str]]]:
    """{backend name: (scheduler, names of the given nodes it manages)}."""
    groups: dict[str, list[Node]] = {}
    for node in nodes:
        groups.setdefault(backend_for(node), []).append(node)
    result: dict[str, tuple[Scheduler, list[str]]] = {}
    for name, members in groups.items():
        result[name] = (make_scheduler(name, inventory, members, transport, store), [n.name for n in members])
    return result


def make_scheduler(name: str, inventory: Inventory, members: Sequence[Node], transport: Any,
                   store: Any) -> Scheduler:
    if name == "slurm":
        from jueying_cli.scheduler.slurm import SlurmScheduler, local_runner, remote_runner

        controllers = {str(n.vars["slurm_controller"]) for n in members if n.vars.get("slurm_controller")}
        if len(controllers) > 1:
            raise BadInputError(f"nodes name different slurm_controller values: {', '.join(sorted(controllers))}",
                                field="slurm_controller")
        if controllers:
            controller = controllers.pop()
            if controller not in inventory.nodes:
                raise BadInputError(f"slurm_controller {controller!r} is not in the inventory",
                                    field="slurm_controller")
            return SlurmScheduler(remote_runner(transport, inventory.nodes[controller]))
        return SlurmScheduler(local_runner)
    from jueying_cli.scheduler.builtin import BuiltinScheduler

    return BuiltinScheduler(store, transport, inventory.nodes)


def all_states(schedulers: Mapping[str, tuple[Scheduler, list[str]]], inventory: Inventory) -> dict[str, Any]:
    """Every node each backend knows (Slurm: the whole cluster; builtin: its inventory nodes), for the cap."""
    states: dict[str, Any] = {}
    for name, (scheduler, _) in schedulers.items():
        if name == "builtin":
            members = [n.name for n in inventory.nodes.values() if backend_for(n) == "builtin"]
            states.update(scheduler.states(members))
        else:
            states.update(scheduler.all_states())  # type: ignore[attr-defined]
    return states


def backend_for(node: Node) -> str:
    """The scheduler a node is managed by: inventory variable `scheduler` (slurm or builtin, default builtin)."""
    name = str(node.vars.get("scheduler") or "builtin")
    if name not in ("slurm", "builtin"):
        raise BadInputError(f"unknown scheduler {name!r} for {node.name} (slurm or builtin)", field="scheduler")
    return name
