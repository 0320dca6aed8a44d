"""What the audit keeps in the state database and reads back: one snapshot per node whenever its audited
attributes or identity change, and the changes over a window (--since). Pure apart from the store passed in."""

from __future__ import annotations

import itertools
import re
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

from jueying_cli.audit.attributes import ATTRIBUTES
from jueying_cli.audit.drift import (
    Finding,
    NodeAudit,
    attributes_from_doc,
    audit_nodes,
    identity_from_doc,
    snapshot_doc,
)
from jueying_cli.errors import BadInputError
from jueying_cli.facts.collected import NodeFacts
from jueying_cli.store.snapshots import Snapshot
from jueying_cli.vocab import AuditKind, Expectation

if TYPE_CHECKING:
    from jueying_cli.store import Store

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*$")
_UNIT_S = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
MAX_DURATION_S = 10 * 365 * 86400


def parse_duration(text: str, option: str = "--since") -> float:
    """Seconds in "90s", "30m", "12h", "7d", "2w"; BadInputError naming the option otherwise."""
    match = _DURATION.match(text)
    if not match:
        raise BadInputError(f"{text!r} is not a duration (a number and s, m, h, d or w: 30m, 12h, 7d)", field=option)
    seconds = float(match.group(1)) * _UNIT_S[match.group(2)]
    if not 0 < seconds <= MAX_DURATION_S:
        raise BadInputError(f"{text!r}: a duration must be more than 0 and at most 10 years", field=option)
    return seconds


def snapshot_rows(results: Sequence[NodeFacts]) -> list[Snapshot]:
    """One snapshot per node that answered (the store keeps it only when it changed)."""
    answered = [(r.node, r.facts) for r in results if r.facts is not None]
    return [Snapshot(a.node, a.collected_at_unix, snapshot_doc(a)) for a in audit_nodes(answered)]


@dataclass(frozen=True)
class Change:
    """One attribute of one node that changed between two stored snapshots."""

    node: str
    at_unix: float  # when the new value was first collected
    attribute: str
    before: str | None
    after: str | None

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def changes_since(store: Store, nodes: Sequence[str], since: float) -> list[Change]:
    """What changed on each node from `since` (unix s) on, oldest first per node: audited attributes, and
    identity (hostname, machine id, GPU serial and UUID per PCI slot)."""
    found: list[Change] = []
    for node in nodes:
        snapshots = store.snapshots.since(node, since)
        for old, new in itertools.pairwise(snapshots):
            found.extend(_diff(node, old, new))
    return found


def _diff(node: str, old: Snapshot, new: Snapshot) -> list[Change]:
    changes = []
    before, after = attributes_from_doc(old.doc), attributes_from_doc(new.doc)
    for attr in ATTRIBUTES:
        if before.get(attr.name) != after.get(attr.name):
            changes.append(Change(node, new.collected_at, attr.name, before.get(attr.name), after.get(attr.name)))
    id_before, id_after = identity_from_doc(old.doc), identity_from_doc(new.doc)
    if id_before is None or id_after is None:
        return changes
    for name in ("hostname", "machine_id"):
        if getattr(id_before, name) != getattr(id_after, name):
            changes.append(Change(node, new.collected_at, name, getattr(id_before, name), getattr(id_after, name)))
    for name, b, a in (("gpu_serial", id_before.gpu_serials, id_after.gpu_serials),
                       ("gpu_uuid", id_before.gpu_uuid_by_bus, id_after.gpu_uuid_by_bus)):
        for bus in sorted(set(b) | set(a)):
            if b.get(bus) != a.get(bus):
                changes.append(Change(node, new.collected_at, name, _slot(bus, b.get(bus)), _slot(bus, a.get(bus))))
    return changes


def _slot(bus: str, value: str | None) -> str | None:
    return None if value is None else f"{bus}: {value}"


def swaps_in(changes: Sequence[Change]) -> list[Finding]:
    """Identity findings for the GPU boards that changed in a slot within the window (a board seen by an earlier
    collection, such as `jueying status`, is still reported by `audit --since`)."""
    return [Finding(c.node, AuditKind.IDENTITY, c.attribute, c.after, c.before, Expectation.HISTORY,
                    f"changed at {_iso(c.at_unix)}") for c in changes
            if c.attribute in ("gpu_serial", "gpu_uuid") and c.before is not None and c.after is not None]


def _iso(unix: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(unix))


def last_identities(store: Store, audits: Sequence[NodeAudit]) -> dict[str, Any]:
    """Each node's identity at its latest stored snapshot (nodes never stored are left out)."""
    found = {}
    for a in audits:
        snap = store.snapshots.latest(a.node)
        ident = identity_from_doc(snap.doc) if snap is not None else None
        if ident is not None:
            found[a.node] = ident
    return found
