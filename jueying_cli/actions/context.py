"""What every action needs for one run: the inventory and the selected nodes, a transport, the state database
and each backend's scheduler. Opening it settles what an interrupted run left pending in the audit log."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from jueying_cli.actions.apply import reconcile
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
    settled: int = 0  # audit entries left pending by an interrupted run, settled when this context opened

    @classmethod
    def open(cls, inventory: Inventory, nodes: list[Node], transport: Transport, store: Store, *,
             settle_pending: bool = True) -> ActionContext:
        """`settle_pending`: square audit entries an interrupted run left pending with what the schedulers
        show (operator commands do; `check --drain` does not)."""
        schedulers = schedulers_for(inventory, nodes, transport, store)
        settled = 0
        if settle_pending:
            settled = reconcile(store, {backend: scheduler for backend, (scheduler, _) in schedulers.items()})
        return cls(inventory, nodes, transport, store, schedulers, settled)

    def scheduler_of(self, node: str) -> tuple[Backend, Scheduler]:
        return next((backend, scheduler) for backend, (scheduler, names) in self.schedulers.items()
                    if node in names)

    def cap(self) -> Cap:
        """max_unavailable now, counting every node each backend knows to be down, draining or drained."""
        return cap_for(self.inventory, all_states(self.schedulers, self.inventory))

    def close(self) -> None:
        self.store.close()
        self.transport.close()
