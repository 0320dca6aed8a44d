"""What every action needs for one run: the inventory and the selected nodes, a transport, the state database
and each backend's scheduler. Opening it settles what dead runs left pending in the audit log (never a live
run's entries: actions.apply.reconcile)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from jueying_cli.actions.apply import Reconciled, reconcile
from jueying_cli.actions.cap import Cap, cap_for
from jueying_cli.inventory.model import Inventory, Node
from jueying_cli.scheduler import Schedulers, all_states, schedulers_for
from jueying_cli.scheduler.base import Scheduler
from jueying_cli.vocab import Backend

if TYPE_CHECKING:
    from jueying_cli.store import Store
    from jueying_cli.transport.base import Transport


@dataclass
class ActionContext:
    inventory: Inventory
    nodes: list[Node]
    transport: Transport
    store: Store
    schedulers: Schedulers
    # audit entries dead runs left pending, settled when this context opened, and those left pending, with why
    reconciled: Reconciled = field(default_factory=Reconciled)

    @property
    def settled(self) -> int:
        return self.reconciled.settled

    @classmethod
    def open(cls, inventory: Inventory, nodes: list[Node], transport: Transport, store: Store, *,
             settle_pending: bool = True) -> ActionContext:
        """`settle_pending`: square audit entries an interrupted run left pending with what the schedulers
        show (operator commands do; `check --drain` does not)."""
        schedulers = schedulers_for(inventory, nodes, transport, store)
        reconciled = Reconciled()
        if settle_pending:
            reconciled = reconcile(store, {backend: scheduler for backend, (scheduler, _) in schedulers.items()})
        return cls(inventory, nodes, transport, store, schedulers, reconciled)

    def scheduler_of(self, node: str) -> tuple[Backend, Scheduler]:
        return next((backend, scheduler) for backend, (scheduler, names) in self.schedulers.items()
                    if node in names)

    def cap(self) -> Cap:
        """max_unavailable now, counting every node each backend knows to be down, draining or drained (builtin
        nodes are asked for their marker: those that do not answer count as down)."""
        return cap_for(self.inventory, all_states(self.schedulers, self.inventory))

    def close(self) -> None:
        self.store.close()
        self.transport.close()
