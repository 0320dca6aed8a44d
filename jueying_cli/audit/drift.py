"""Drift and identity findings: pure functions of the nodes' facts, the inventory, a baseline and the last
stored identities. No I/O.

Each node is compared with the nodes of its GPU model (the inventory's `gpu_model` where set, else the model
most of its GPUs report). For every attribute the strongest expectation that has a say wins, in this order:

1. the node's `audit:` inventory variable (a mapping attribute -> value: pinned),
2. the inventory's `expected_gpus` (gpu_count) and `gpu_model` (gpu_model),
3. the baseline file (--baseline), per GPU model,
4. the majority of the other nodes of its GPU model that reported the attribute (more than half of them; with
   no majority, every node that is not with the most common value is reported, naming the split).

A node that could not report an attribute (None) is never drift for it. Identity findings: a hostname that is
not the inventory name, GPU UUIDs or a machine id that another node also reports, and a GPU serial or UUID in a
PCI slot that differs from the node's last stored snapshot (a swapped or RMA'd board).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from jueying_cli.audit.attributes import ATTRIBUTES, BY_NAME, Identity, model_of, read_attributes, read_identity
from jueying_cli.errors import BadInputError
from jueying_cli.facts.model import Facts
from jueying_cli.inventory.model import Node
from jueying_cli.vocab import AuditKind, Expectation

MAX_PIN_LENGTH = 1000


@dataclass(frozen=True)
class Finding:
    """One thing that differs from what was expected, with where the expectation came from."""

    node: str
    kind: AuditKind
    attribute: str
    value: str | None
    expected: str | None
    source: Expectation
    detail: str  # for people: "7 of 8 nodes with NVIDIA H100 80GB HBM3", "baseline base.json", "also gpu04"

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class NodeAudit:
    """What the audit read of one node that answered."""

    node: str
    model: str  # its comparison group
    attributes: dict[str, str | None]
    identity: Identity
    collected_at_unix: float


@dataclass(frozen=True)
class Baseline:
    """Expected attribute values per GPU model (--baseline FILE), and the file they came from."""

    models: dict[str, dict[str, str]]
    source: str


def audit_nodes(answered: Sequence[tuple[Node, Facts]]) -> list[NodeAudit]:
    return [NodeAudit(node.name, _group(node, facts), read_attributes(facts), read_identity(facts),
                      facts.collected_at_unix) for node, facts in answered]


def _group(node: Node, facts: Facts) -> str:
    pinned = node.vars.get("gpu_model")
    return pinned if isinstance(pinned, str) and pinned else model_of(facts)


def pins_of(node: Node, source: str | None) -> dict[str, str]:
    """The node's `audit:` variable as {attribute: value}; BadInputError (naming the inventory) for a name
    that is not an audited attribute or a value that is not a scalar."""
    raw = node.vars.get("audit")
    if raw is None:
        return {}
    if not isinstance(raw, Mapping):
        raise BadInputError("must be a mapping of attribute: value", path=source, field=f"{node.name}.audit")
    pins: dict[str, str] = {}
    for key, value in raw.items():
        if key not in BY_NAME:
            raise BadInputError(f"unknown attribute {key!r} (one of {', '.join(BY_NAME)})", path=source,
                                field=f"{node.name}.audit.{key}")
        if isinstance(value, bool) or not isinstance(value, str | int | float) or len(str(value)) > MAX_PIN_LENGTH:
            raise BadInputError(f"must be a text or a number, got {value!r:.80}", path=source,
                                field=f"{node.name}.audit.{key}")
        pins[key] = str(value)
    return pins


def find_drift(audits: Sequence[NodeAudit], nodes: Mapping[str, Node], *, baseline: Baseline | None = None,
               inventory_source: str | None = None) -> list[Finding]:
    """Every drift finding, by node then attribute order."""
    groups: dict[str, list[NodeAudit]] = {}
    for a in audits:
        groups.setdefault(a.model, []).append(a)
    majority = {model: _majorities(members) for model, members in groups.items()}
    findings: list[Finding] = []
    for a in audits:
        node = nodes[a.node]
        pins = pins_of(node, inventory_source)
        inventory = _inventory_expectations(node)
        for attr in ATTRIBUTES:
            value = a.attributes.get(attr.name)
            if value is None:
                continue
            found = _judge(a, attr.name, value, pins, inventory, baseline, majority[a.model].get(attr.name))
            if found is not None:
                findings.append(found)
    return findings


def _inventory_expectations(node: Node) -> dict[str, str]:
    found = {}
    if node.expected_gpus is not None:
        found["gpu_count"] = str(node.expected_gpus)
    model = node.vars.get("gpu_model")
    if isinstance(model, str) and model:
        found["gpu_model"] = model
    return found


@dataclass(frozen=True)
class _Majority:
    value: str | None  # None: no value has more than half
    count: int
    total: int
    split: str  # "550.127.05 (7), 535.183.01 (1)"
    top: str  # the most common value (first in sort order among equals)


def _majorities(members: Sequence[NodeAudit]) -> dict[str, _Majority]:
    found: dict[str, _Majority] = {}
    for attr in ATTRIBUTES:
        counts: dict[str, int] = {}
        for m in members:
            value = m.attributes.get(attr.name)
            if value is not None:
                counts[value] = counts.get(value, 0) + 1
        total = sum(counts.values())
        if total < 2 or len(counts) < 2:
            continue
        ranked = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
        top, count = ranked[0]
        split = ", ".join(f"{v} ({n})" for v, n in ranked)
        found[attr.name] = _Majority(top if count * 2 > total else None, count, total, split, top)
    return found


def _judge(a: NodeAudit, attribute: str, value: str, pins: Mapping[str, str], inventory: Mapping[str, str],
           baseline: Baseline | None, majority: _Majority | None) -> Finding | None:
    def finding(expected: str | None, source: Expectation, detail: str) -> Finding | None:
        if expected == value:
            return None
        return Finding(a.node, AuditKind.DRIFT, attribute, value, expected, source, detail)

    if attribute in pins:
        return finding(pins[attribute], Expectation.PIN, "inventory variable audit." + attribute)
    if attribute in inventory:
        var = "expected_gpus" if attribute == "gpu_count" else attribute
        if attribute == "gpu_count" and value.isdigit() and int(value) > int(inventory[attribute]):
            return None  # more GPUs than expected is not a loss; expected_gpus is a floor, as in status
        return finding(inventory[attribute], Expectation.INVENTORY, f"inventory variable {var}")
    if baseline is not None and a.model in baseline.models and attribute in baseline.models[a.model]:
        return finding(baseline.models[a.model][attribute], Expectation.BASELINE,
                       f"baseline {baseline.source} for {a.model}")
    if baseline is not None or majority is None:
        return None  # with a baseline, what it does not name is not compared
    if majority.value is not None:
        return finding(majority.value, Expectation.MAJORITY,
                       f"{majority.count} of {majority.total} nodes with {a.model}")
    if value == majority.top:
        return None
    return Finding(a.node, AuditKind.DRIFT, attribute, value, majority.top, Expectation.MAJORITY,
                   f"no majority among {majority.total} nodes with {a.model}: {majority.split}")


# ------------------------------------------------------------------ identity


def find_identity(audits: Sequence[NodeAudit], last: Mapping[str, Identity]) -> list[Finding]:
    """Hostname not the inventory name; GPU UUIDs or machine id shared with another node; a GPU serial or UUID
    that changed in its PCI slot since `last` (each node's identity at its last stored snapshot)."""
    findings: list[Finding] = []
    uuid_owner: dict[str, list[str]] = {}
    machine_owner: dict[str, list[str]] = {}
    for a in audits:
        for uuid in set(a.identity.gpu_uuids):
            uuid_owner.setdefault(uuid, []).append(a.node)
        if a.identity.machine_id:
            machine_owner.setdefault(a.identity.machine_id, []).append(a.node)
    for a in audits:
        ident = a.identity
        if _short(ident.hostname) != _short(a.node):
            findings.append(Finding(a.node, AuditKind.IDENTITY, "hostname", ident.hostname, a.node,
                                    Expectation.INVENTORY, "the node answers under another name than its "
                                    "inventory name"))
        if ident.machine_id and len(machine_owner[ident.machine_id]) > 1:
            others = [n for n in machine_owner[ident.machine_id] if n != a.node]
            findings.append(Finding(a.node, AuditKind.IDENTITY, "machine_id", ident.machine_id, None,
                                    Expectation.UNIQUE, "also reported by " + ", ".join(others)))
        shared = sorted({n for u in ident.gpu_uuids for n in uuid_owner[u] if n != a.node})
        if shared:
            count = sum(1 for u in set(ident.gpu_uuids) if len(uuid_owner[u]) > 1)
            findings.append(Finding(a.node, AuditKind.IDENTITY, "gpu_uuids",
                                    f"{count} of {len(set(ident.gpu_uuids))} GPU UUIDs", None, Expectation.UNIQUE,
                                    "the same GPU UUIDs are reported by " + ", ".join(shared)))
        before = last.get(a.node)
        if before is not None:
            findings.extend(_swapped(a.node, "gpu_serial", before.gpu_serials, ident.gpu_serials))
            findings.extend(_swapped(a.node, "gpu_uuid", before.gpu_uuid_by_bus, ident.gpu_uuid_by_bus))
    return findings


def _short(name: str) -> str:
    """A host name without its domain, lower case (gpu01.example.org is gpu01)."""
    return name.split(".", 1)[0].lower()


def _swapped(node: str, attribute: str, before: Mapping[str, str], now: Mapping[str, str]) -> list[Finding]:
    return [Finding(node, AuditKind.IDENTITY, attribute, f"{bus}: {now[bus]}", f"{bus}: {before[bus]}",
                    Expectation.HISTORY, f"the board in PCI slot {bus} changed since the last collection")
            for bus in sorted(now) if bus in before and before[bus] != now[bus]]


# ------------------------------------------------------------------ snapshots (what history keeps)


def snapshot_doc(a: NodeAudit) -> str:
    """The JSON text kept in node_snapshots for one node: its attributes and identity, keys sorted so equal
    snapshots are equal texts."""
    return json.dumps({"attributes": a.attributes, "identity": asdict(a.identity)}, sort_keys=True)


def identity_from_doc(doc: str) -> Identity | None:
    """The identity kept in a snapshot; None for one that cannot be read (an older or damaged row)."""
    try:
        raw = json.loads(doc)["identity"]
        return Identity(hostname=str(raw["hostname"]), machine_id=raw.get("machine_id"),
                        gpu_uuids=tuple(raw.get("gpu_uuids") or ()), gpu_serials=dict(raw.get("gpu_serials") or {}),
                        gpu_uuid_by_bus=dict(raw.get("gpu_uuid_by_bus") or {}))
    except (ValueError, KeyError, TypeError):
        return None


def attributes_from_doc(doc: str) -> dict[str, str | None]:
    try:
        raw = json.loads(doc)["attributes"]
        return {str(k): (None if v is None else str(v)) for k, v in raw.items()}
    except (ValueError, KeyError, TypeError, AttributeError):
        return {}
