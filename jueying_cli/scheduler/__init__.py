"""Drain/resume backends: slurm (scontrol, here or on the controller node over SSH) and builtin (jueying's
own ledger plus a marker on the node). Chosen per node by the inventory variable `scheduler`."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from jueying_cli.errors import BadInputError
from jueying_cli.inventory.model import Inventory, Node
from jueying_cli.scheduler.base import NodeState, Scheduler
from jueying_cli.vocab import Backend

if TYPE_CHECKING:
    from jueying_cli.store import Store
    from jueying_cli.transport.base import Transport

Schedulers = dict[Backend, tuple[Scheduler, list[str]]]


def backend_for(node: Node) -> Backend:
    """The scheduler a node is managed by: inventory variable `scheduler` (slurm or builtin, default builtin)."""
    name = str(node.vars.get("scheduler") or Backend.BUILTIN)
    try:
        return Backend(name)
    except ValueError:
        raise BadInputError(f"unknown scheduler {name!r} for {node.name} (slurm or builtin)",
                            field="scheduler") from None


def schedulers_for(inventory: Inventory, nodes: Sequence[Node], transport: Transport, store: Store) -> Schedulers:
    """{backend: (scheduler, names of the given nodes it manages)}. `transport` reaches the Slurm controller
    node (`slurm_controller`) and the builtin backend's markers; `store` holds the builtin ledger."""
    groups: dict[Backend, list[Node]] = {}
    for node in nodes:
        groups.setdefault(backend_for(node), []).append(node)
    return {backend: (make_scheduler(backend, inventory, members, transport, store), [n.name for n in members])
            for backend, members in groups.items()}


def make_scheduler(backend: Backend, inventory: Inventory, members: Sequence[Node], transport: Transport,
                   store: Store) -> Scheduler:
    if backend == Backend.SLURM:
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


def all_states(schedulers: Schedulers, inventory: Inventory) -> dict[str, NodeState]:
    """Every node each backend knows, for the cap. Slurm: the whole cluster as slurmctld reports it (DOWN and
    NOT_RESPONDING included). Builtin: its inventory nodes, each asked for its marker at once (BuiltinScheduler
    .survey): a node that does not answer within a short timeout is DOWN, whatever the ledger says."""
    from jueying_cli.scheduler.builtin import BuiltinScheduler

    states: dict[str, NodeState] = {}
    for scheduler, _ in schedulers.values():
        if isinstance(scheduler, BuiltinScheduler):
            members = [n.name for n in inventory.nodes.values() if backend_for(n) == Backend.BUILTIN]
            states.update(scheduler.survey(members))
        else:
            states.update(scheduler.all_states())
    return states
