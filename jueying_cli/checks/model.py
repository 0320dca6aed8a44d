"""The model of health checks: how levels rank, how actions rank, results, specs and parameters.

Level (Nagios codes) and Action (NVIDIA XID catalog / DCGM) are defined in jueying_cli.vocab.

Everything here is plain data: a check is a pure function from facts to a list of CheckResult.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from jueying_cli.facts.model import Facts
from jueying_cli.inventory.model import Node
from jueying_cli.vocab import Action, Level


def severity(level: Level) -> int:
    """Sort key: CRITICAL > WARNING > UNKNOWN > OK (Level.severity, in vocab)."""
    return level.severity


def worst(levels: Iterable[Level]) -> Level:
    """The most severe level (CRITICAL > WARNING > UNKNOWN > OK); OK for none at all."""
    return max(levels, key=severity, default=Level.OK)


_ACTION_ORDER = (Action.NONE, Action.DRAIN, Action.RESET_GPU, Action.REBOOT, Action.RMA)


def strongest_action(actions: Iterable[Action]) -> Action:
    """The most disruptive action (rma > reboot > reset_gpu > drain > none); none for no actions."""
    return max(actions, key=_ACTION_ORDER.index, default=Action.NONE)


@dataclass(frozen=True)
class CheckResult:
    """One finding of one check on one node (and GPU); `code` is stable across runs for flap control."""

    node: str
    check: str
    level: Level
    message: str
    gpu: int | None = None
    action: Action = Action.NONE
    code: str = ""
    value: float | None = None
    threshold: float | None = None


@dataclass(frozen=True)
class NodeContext:
    """What a check sees of one node: its inventory entry, its facts, this check's params, the time."""

    node: Node
    facts: Facts
    params: Mapping[str, Any]
    now: float  # unix seconds, the reference for "within the last N hours"

    def result(self, check: str, level: Level, message: str, *, gpu: int | None = None,
               action: Action = Action.NONE, code: str = "", value: float | None = None,
               threshold: float | None = None) -> CheckResult:
        """A CheckResult for this node."""
        return CheckResult(node=self.node.name, check=check, level=level, message=message, gpu=gpu,
                           action=action, code=code, value=value, threshold=threshold)


NodeCheck = Callable[[NodeContext], list[CheckResult]]
FleetCheck = Callable[[Sequence[NodeContext]], list[CheckResult]]
Scope = Literal["node", "fleet"]
ParamKind = Literal["bool", "int", "float", "int_list", "str_list", "level"]


@dataclass(frozen=True)
class Param:
    """One parameter of a check: default, type, bounds; `doc` is shown in errors and the README."""

    default: Any
    kind: ParamKind
    doc: str
    nullable: bool = False  # null switches the rule off
    minimum: float | None = None
    maximum: float | None = None


@dataclass(frozen=True)
class CheckSpec:
    """A registered check. `function` takes a NodeContext (scope node) or a sequence of them (fleet)."""

    name: str
    scope: Scope
    function: Callable[..., list[CheckResult]]
    params: Mapping[str, Param]  # every parameter, `enabled` and `confirm_runs` included
    description: str
    action: Action  # the action of its most severe finding
    reads: str = ""  # the facts it reads, for the README table

    @property
    def defaults(self) -> dict[str, Any]:
        """{param: default} for every parameter."""
        return {name: param.default for name, param in self.params.items()}
