"""The failover playbook of a role: its promote steps (with undo) and verification, validated whole before
anything runs, every error with file:line:field.

Failover playbook (`playbooks/failover/<role>.yaml`, or --playbook):

    role: compute
    steps:
      - name: fence the old node
        on: failed            # failed | spare | local
        run: systemctl stop train-agent
        undo: systemctl start train-agent
        timeout: 60           # seconds (default 60)
    verify:
      - name: spare serves
        on: spare
        run: systemctl is-active train-agent
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from jueying_cli.errors import BadInputError
from jueying_cli.inventory.model import Inventory
from jueying_cli.yamlfile import LocatedDict, LocatedList, line_of, load_yaml

DEFAULT_STEP_TIMEOUT_S = 60.0
TARGETS = ("failed", "spare", "local")


@dataclass(frozen=True)
class Step:
    name: str
    on: str
    run: str
    undo: str | None = None
    timeout_s: float = DEFAULT_STEP_TIMEOUT_S


@dataclass(frozen=True)
class FailoverPlaybook:
    role: str
    steps: tuple[Step, ...]
    verify: tuple[Step, ...]
    source: str


def _step(item: Any, path: Path, where: str, *, verify: bool) -> Step:
    if not isinstance(item, LocatedDict):
        raise BadInputError("must be a mapping with name, on, run", path=str(path), line=line_of(item), field=where)
    allowed = {"name", "on", "run", "timeout"} | (set() if verify else {"undo"})
    for key in item:
        if key not in allowed:
            raise BadInputError(f"unknown key {key!r} (expected {', '.join(sorted(allowed))})", path=str(path),
                                line=item.line_of(key), field=f"{where}.{key}")
    for key in ("name", "on", "run"):
        if not isinstance(item.get(key), str) or not item[key].strip():
            raise BadInputError("is required and must be text", path=str(path), line=item.line_of(key),
                                field=f"{where}.{key}")
    if item["on"] not in TARGETS:
        raise BadInputError(f"must be one of {', '.join(TARGETS)}", path=str(path), line=item.line_of("on"),
                            field=f"{where}.on")
    undo = item.get("undo")
    if undo is not None and not isinstance(undo, str):
        raise BadInputError("must be text", path=str(path), line=item.line_of("undo"), field=f"{where}.undo")
    timeout = item.get("timeout", DEFAULT_STEP_TIMEOUT_S)
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or timeout <= 0:
        raise BadInputError("must be a positive number of seconds", path=str(path), line=item.line_of("timeout"),
                            field=f"{where}.timeout")
    return Step(name=item["name"], on=item["on"], run=item["run"], undo=undo, timeout_s=float(timeout))


def load_playbook(path: Path) -> FailoverPlaybook:
    """Parse and validate the whole playbook before anything runs (file:line on every error)."""
    doc = load_yaml(path)
    if not isinstance(doc, LocatedDict):
        raise BadInputError("must be a mapping with role, steps, verify", path=str(path), line=line_of(doc))
    for key in doc:
        if key not in ("role", "steps", "verify"):
            raise BadInputError(f"unknown key {key!r} (expected role, steps, verify)", path=str(path),
                                line=doc.line_of(key), field=key)
    steps = doc.get("steps")
    if not isinstance(steps, LocatedList) or not steps:
        raise BadInputError("must be a non-empty list of steps", path=str(path), line=doc.line_of("steps"),
                            field="steps")
    verify = doc.get("verify") or LocatedList()
    if not isinstance(verify, list):
        raise BadInputError("must be a list of checks", path=str(path), line=doc.line_of("verify"), field="verify")
    return FailoverPlaybook(
        role=str(doc.get("role", "")),
        steps=tuple(_step(s, path, f"steps[{i}]", verify=False) for i, s in enumerate(steps)),
        verify=tuple(_step(s, path, f"verify[{i}]", verify=True) for i, s in enumerate(verify)),
        source=str(path),
    )


def find_playbook(explicit: str | None, role: str, inventory: Inventory) -> Path:
    if explicit:
        path = Path(explicit)
        if not path.is_file():
            raise BadInputError("failover playbook not found", path=str(path), field="--playbook")
        return path
    candidates = [Path("playbooks/failover") / f"{role}.yaml"]
    if inventory.source:
        candidates.insert(0, Path(inventory.source).parent / "playbooks" / "failover" / f"{role}.yaml")
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    raise BadInputError(f"no failover playbook for role {role!r} (looked for "
                        f"{', '.join(str(c) for c in candidates)}); give one with --playbook", field="--playbook")
