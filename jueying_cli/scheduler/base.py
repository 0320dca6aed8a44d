"""What a scheduler backend is: the node states jueying reads, and drain/resume it asks for."""

from __future__ import annotations

import getpass
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

from jueying_cli.vocab import Backend, SchedulerState

# The reason layout. Written since this version: the operator's words first, jueying's tag last, so `sinfo -R`
# (20 characters of REASON by default) shows what the operator wrote: `xid 79 on GPU 3 [jueying:alice]`, and
# `ecc_uncorrected ECC_DBE_VOLATILE gpu2 [jueying-check]` for check --drain. Written by earlier versions, and
# still recognised as jueying's: `jueying: xid 79 [alice]` and `jueying: auto: ... [jueying-check]`.
REASON_PREFIX = "jueying:"  # the earlier layout's prefix
AUTO_ACTOR = "jueying-check"  # who check --drain/--resume acts as (the audit log's actor, the auto tag)
OLD_AUTO_PREFIX = "jueying: auto:"
_TAG = re.compile(r" \[(?:jueying:(?P<user>[^\s\[\]]+)|(?P<auto>jueying-check))\]\Z")
_TAG_ALONE = re.compile(r"(?:\A| )\[(?:jueying:[^\s\[\]]+|jueying-check)\]\Z")  # what bare_reason() strips
_OLD_USER = re.compile(r" \[(?P<user>[^\[\]]*)\]\Z")


@dataclass(frozen=True)
class NodeState:
    node: str
    state: SchedulerState  # normalised to Slurm's names, lower case
    drain: bool  # the drain flag is set (draining or drained)
    reason: str | None = None
    reason_user: str | None = None
    reason_time: float | None = None  # unix seconds
    raw: str = ""  # the backend's own words, e.g. "MIXED+DRAIN"
    jobs: tuple[str, ...] = ()  # what keeps the node busy (job ids, or GPU processes for the builtin backend)
    partitions: tuple[str, ...] = ()  # the scheduler's partitions the node is in (Slurm; none for builtin)

    @property
    def owned(self) -> bool:
        """Drained by jueying (its reason carries jueying's tag, or the earlier layout's prefix): `resume`
        may resume it without --force."""
        return is_jueying_reason(self.reason)

    @property
    def unavailable(self) -> bool:
        """Counts against max_unavailable: drained, draining or down."""
        return self.drain or self.state in (SchedulerState.DOWN, SchedulerState.DRAINED, SchedulerState.DRAINING)


class Scheduler(Protocol):
    name: Backend

    def states(self, nodes: Sequence[str]) -> Mapping[str, NodeState]:
        """Current state of each node (nodes the scheduler does not know are left out)."""
        ...

    def drain(self, nodes: Sequence[str], reason: str) -> None:
        """Set the drain flag with this reason (also replaces the reason of drained nodes)."""
        ...

    def resume(self, nodes: Sequence[str]) -> None:
        """Clear the drain flag."""
        ...

    def all_states(self) -> Mapping[str, NodeState]:
        """Every node the backend knows (for the cap: nodes already down or drained count)."""
        ...


def operator() -> str:
    """Who is acting: the user behind sudo when there is one."""
    for var in ("SUDO_USER", "LOGNAME", "USER"):
        if os.environ.get(var):
            return os.environ[var]
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "unknown"


def bare_reason(text: str) -> str:
    """The operator's words of a reason: on one line, without a jueying tag or prefix (of either layout), so
    a reason copied from `sinfo -R` back into --reason is not tagged twice."""
    text = " ".join(text.split())
    for _ in range(8):  # tags and prefixes stacked by hand; a bounded number of them
        before = text
        text = _TAG_ALONE.sub("", text)
        if text.startswith(OLD_AUTO_PREFIX):
            text = _OLD_USER.sub("", text[len(OLD_AUTO_PREFIX):]).strip()
        elif text.startswith(REASON_PREFIX):
            text = _OLD_USER.sub("", text[len(REASON_PREFIX):]).strip()
        if text == before:
            break
    return text


def jueying_reason(text: str, user: str | None = None) -> str:
    """`<text> [jueying:<user>]`: the operator's words first (sinfo -R shows the first 20 characters of a
    reason), jueying's tag with who asked last. Slurm records the user who set a reason too, but that is the
    account scontrol ran as (root, or the SSH user of slurm_controller), not the operator behind sudo."""
    who = re.sub(r"[\s\[\]]+", "_", user or operator()) or "unknown"
    return f"{bare_reason(text)} [jueying:{who}]"


def auto_reason(text: str) -> str:
    """`<text> [jueying-check]`: a drain made by `check --drain`, the only kind `check --resume` resumes."""
    return f"{bare_reason(text)} [{AUTO_ACTOR}]"


def is_jueying_reason(reason: str | None) -> bool:
    """A reason jueying wrote: its tag at the end, or (earlier versions) its prefix at the start."""
    return reason is not None and (reason.startswith(REASON_PREFIX) or _TAG.search(reason) is not None)


def is_auto_reason(reason: str | None) -> bool:
    """A reason `check --drain` wrote (either layout)."""
    if not reason:
        return False
    tag = _TAG.search(reason)
    return reason.startswith(OLD_AUTO_PREFIX) or (tag is not None and tag.group("auto") is not None)


def reason_user(reason: str) -> str | None:
    """Who a reason names: `[jueying:alice]` -> alice, `[jueying-check]`, or a last `[alice]` (the earlier
    layout, or a marker written by hand)."""
    tag = _TAG.search(reason)
    if tag is not None:
        return tag.group("user") or tag.group("auto")
    old = _OLD_USER.search(reason)
    return old.group("user") if old is not None else None
