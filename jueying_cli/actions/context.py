"""What every action needs for one run: the inventory and the selected nodes, a transport, the state database
and each backend's scheduler. Opening it settles what dead runs left pending in the audit log (never a live
run's entries: actions.apply.reconcile)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from jueying_cli.actions.apply import Reconciled, reconcile
from jueying_cli.actions.cap import Cap, cap_for
from jueying_cli.errors import LockBusy
from jueying_cli.inventory.model import Inventory, Node
from jueying_cli.scheduler import Schedulers, all_states, schedulers_for
from jueying_cli.scheduler.base import Scheduler
from jueying_cli.vocab import Backend

if TYPE_CHECKING:
    from jueying_cli.store import Store
    from jueying_cli.store.lock import RunLock
    from jueying_cli.transport.base import Transport

CAP_WAIT_S = 300.0  # how long a drain waits for another run's drains before checking max_unavailable


@dataclass
class ActionContext:
    inventory: Inventory
    nodes: list[Node]
    transport: Transport
    store: Store
    schedulers: Schedulers
    # audit entries dead runs left pending, settled when this context opened, and those left pending, with why
    reconciled: Reconciled = field(default_factory=Reconciled)

    _cap_lock: RunLock | None = None

    @property
    def settled(self) -> int:
        return self.reconciled.settled

    def hold_cap(self) -> None:
        """Take the cap lock (waiting up to CAP_WAIT_S for another run's drains to be made): a run that adds
        drains holds it from checking max_unavailable until its drains are made (release_cap), so the next run
        to check sees them. LockBusy when it stays taken."""
        if self._cap_lock is not None:
            return
        lock = self.store.cap_lock()
        try:
            self._cap_lock = lock.acquire(CAP_WAIT_S)
        except LockBusy as exc:
            raise LockBusy(f"another jueying run is draining nodes and holds max_unavailable: {exc}; waited "
                           f"{CAP_WAIT_S:g} s, nothing done") from None

    def release_cap(self) -> None:
        if self._cap_lock is not None:
            self._cap_lock.release()
            self._cap_lock = None

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
        self.release_cap()
        self.store.close()
        self.transport.close()
