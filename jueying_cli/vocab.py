"""The typed vocabularies that cross modules, defined once: outcome status, node status, scheduler state,
check level and recommended action, change kind, audit result, scheduler backend.

StrEnum members are their own strings, so JSON, SQLite, f-strings and comparisons with plain text keep
working unchanged; IntEnum levels are Nagios exit codes.
"""

from __future__ import annotations

from enum import IntEnum, StrEnum


class OutcomeStatus(StrEnum):
    """Exactly one per node per command (DESIGN.md). Transport errors never appear as command output."""

    OK = "ok"
    FAILED = "failed"  # the command ran and exited non-zero, or its output was rejected
    TIMEOUT = "timeout"
    UNREACHABLE = "unreachable"  # refused, no route, connect timed out, name not resolved, connection lost
    AUTH_FAILED = "auth_failed"
    HOSTKEY_FAILED = "hostkey_failed"


class StopReason(StrEnum):
    """Why a transport stopped waiting for a command before it ended (Outcome.stopped): such an outcome is
    `timeout` with no exit code, and keeps what the command printed until then."""

    LIMIT = "limit"  # the node's own limit passed: its connect timeout, or the command's timeout
    DEADLINE = "deadline"  # the deadline the transport was given passed
    CANCELLED = "cancelled"  # the run was stopped: Ctrl-C, or the fan-out reached the global deadline first


class NodeStatus(StrEnum):
    """What one `jueying status` row says of a node: its health when it answered, what the scheduler says
    when it is drained or draining, or the outcome that kept it from answering."""

    OK = "ok"
    DEGRADED = "degraded"  # lost GPUs, fewer GPUs than expected, unreadable essential telemetry
    NO_DRIVER = "no_driver"  # NVML not usable
    DRAINING = "draining"
    DRAINED = "drained"
    FAILED = "failed"
    TIMEOUT = "timeout"
    UNREACHABLE = "unreachable"
    AUTH_FAILED = "auth_failed"
    HOSTKEY_FAILED = "hostkey_failed"
    NO_DATA = "no_data"  # `status --source prometheus`: the server has no fresh series for the node


# Statuses of a node that answered (its facts are shown).
ANSWERED = frozenset({NodeStatus.OK, NodeStatus.DEGRADED, NodeStatus.NO_DRIVER, NodeStatus.DRAINED,
                      NodeStatus.DRAINING})


class SchedulerState(StrEnum):
    """A scheduler's view of a node, normalised to Slurm's names in lower case."""

    IDLE = "idle"
    ALLOCATED = "allocated"
    MIXED = "mixed"
    DRAINING = "draining"
    DRAINED = "drained"
    DOWN = "down"
    UNKNOWN = "unknown"


class Level(IntEnum):
    """Nagios plugin codes, which are also `jueying check`'s exit codes."""

    OK = 0
    WARNING = 1
    CRITICAL = 2
    UNKNOWN = 3

    @property
    def severity(self) -> int:
        """Sort key: CRITICAL > WARNING > UNKNOWN > OK. UNKNOWN ranks between OK and WARNING (as in Meta's GCM):
        "could not tell" must never hide a real warning, and never outrank one either."""
        return (0, 2, 3, 1)[self.value]


class Action(StrEnum):
    """What an operator (or automation) should do about a finding, in the XID catalog's / DCGM's terms.

    reset_gpu always means "drain, then reset": nothing may run on a GPU while it is reset.
    """

    NONE = "none"
    DRAIN = "drain"
    RESET_GPU = "reset_gpu"
    REBOOT = "reboot"
    RMA = "rma"


class ChangeKind(StrEnum):
    """A change jueying makes (or plans) to a node's service state; the audit log's `action` column."""

    NONE = "none"
    DRAIN = "drain"
    UPDATE_REASON = "update_reason"
    RESUME = "resume"
    FAILOVER = "failover"


class AuditResult(StrEnum):
    """How an audit entry ended: `pending` is written before acting and settled after."""

    PENDING = "pending"
    DONE = "done"
    FAILED = "failed"
    NOT_DONE = "not_done"  # settled after an interrupted run: the scheduler does not show the change
    UNKNOWN = "unknown"  # settled after an interrupted failover: how far its steps got cannot be told


class Backend(StrEnum):
    """Who drains a node: the inventory variable `scheduler`."""

    SLURM = "slurm"
    BUILTIN = "builtin"


class AuditKind(StrEnum):
    """What an audit finding is about: a value that drifted from what was expected, or who a node (or a GPU
    board) is."""

    DRIFT = "drift"
    IDENTITY = "identity"


class Expectation(StrEnum):
    """Where an audit finding's expected value came from (the strongest one that has a say wins)."""

    PIN = "inventory audit pin"  # the node's `audit:` variable pins the value
    INVENTORY = "inventory"  # expected_gpus, gpu_model, or the node's own name (hostname)
    BASELINE = "baseline"  # --baseline FILE
    MAJORITY = "majority"  # most nodes of the same GPU model
    UNIQUE = "unique"  # an identity no other node may share (GPU UUIDs, machine id)
    HISTORY = "history"  # what the node reported at its last collection


class HealthClass(StrEnum):
    """`jueying capacity`: what a node or GPU counts as, in this order of precedence for a node."""

    HEALTHY = "healthy"
    DEGRADED = "degraded"  # answered, in service, with a confirmed problem (lost GPUs, a failed check)
    DRAINED = "drained"  # drained or draining in its scheduler
    DOWN = "down"  # down in its scheduler; for GPUs also lost or missing from the node
    UNREACHABLE = "unreachable"  # gave no facts


class OutputFormat(StrEnum):
    """How a table command prints its rows (`--format`): a table for people, or rows for scripts."""

    TABLE = "table"
    JSON = "json"  # the envelope, as --json
    CSV = "csv"  # RFC 4180 (Python's csv module)
    TSV = "tsv"  # one row a line; tab, newline, CR and backslash escaped


class DrillStatus(StrEnum):
    """How a drill run ended (`running` while it runs, or when its process died: `drill recover` finishes it).
    Close to the Chaos Toolkit journal's words."""

    RUNNING = "running"
    COMPLETED = "completed"  # every step ran, every objective met, steady state held
    FAILED = "failed"  # a step failed, the steady state deviated or an objective was missed
    ABORTED = "aborted"  # a guard stopped it (preflight, abort_when, max_unavailable, deadline)
    INTERRUPTED = "interrupted"  # SIGINT / SIGTERM, or the process died (recovered)
    SKIPPED = "skipped"  # a target was empty and on_empty: skip


class RollbackStatus(StrEnum):
    """How a drill's rollback ended; `failed` means a person must act."""

    PENDING = "pending"
    NOT_NEEDED = "not_needed"  # nothing had started
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    SKIPPED = "skipped"  # strategy: never
