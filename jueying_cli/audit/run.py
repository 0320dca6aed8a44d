"""`jueying audit` as one function: facts (already collected) in, an AuditReport out, reading the state
database for the last identities and, with --since, the changes."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from jueying_cli.audit.drift import Baseline, audit_nodes, find_drift, find_identity
from jueying_cli.audit.history import changes_since, last_identities, swaps_in
from jueying_cli.audit.report import AuditReport, Unanswered
from jueying_cli.facts.collected import NodeFacts
from jueying_cli.inventory.model import Inventory

if TYPE_CHECKING:
    from jueying_cli.store import Store


def run_audit(results: Sequence[NodeFacts], inventory: Inventory, *, baseline: Baseline | None,
              store: Store | None, since: tuple[str, float] | None, now: float) -> AuditReport:
    """Drift and identity findings for the nodes that answered; `store` (None: no history to compare with)
    gives each node's identity at its last collection and, with `since` ("7d", seconds), the changes."""
    answered = [(r.node, r.facts) for r in results if r.facts is not None]
    audits = audit_nodes(answered)
    nodes = {r.name: r.node for r in results}
    findings = find_drift(audits, nodes, baseline=baseline, inventory_source=inventory.source)
    last = last_identities(store, audits) if store is not None else {}
    findings += find_identity(audits, last)
    changes = None
    if since is not None and store is not None:
        changes = changes_since(store, [r.name for r in results], now - since[1])
        seen = {(f.node, f.attribute, f.value) for f in findings}
        findings += [f for f in swaps_in(changes) if (f.node, f.attribute, f.value) not in seen]
    order = {r.name: i for i, r in enumerate(results)}
    findings.sort(key=lambda f: (order.get(f.node, len(order)), f.kind != "identity", f.attribute))
    compared = f"baseline {baseline.source}" if baseline is not None else "the majority of each GPU model"
    unanswered = [Unanswered(r.name, r.outcome.status, r.outcome.error or r.outcome.status)
                  for r in results if r.facts is None]
    return AuditReport(audits, findings, unanswered, compared, changes, since[0] if since else None, now)
