"""What the GPU checks share: reading NVML's errors for a field, UNKNOWN for unreadable values, the
"no GPUs" result, per-GPU iteration that skips lost GPUs, and wording helpers."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping

from jueying_cli.checks.model import CheckResult, NodeContext
from jueying_cli.facts.model import GpuFacts
from jueying_cli.vocab import Level

# ---------------------------------------------------------------- shared helpers

NOT_SUPPORTED = ("NOT_SUPPORTED", "FUNCTION_NOT_FOUND")


def nvml_error(ctx: NodeContext, gpu: int | None, field: str) -> str | None:
    """NVML's error name recorded for `field` (or a sub-field of it) of this GPU, if any."""
    for err in ctx.facts.errors:
        if err.gpu == gpu and (err.field == field or err.field.startswith(field + ".")):
            return err.error
    return None


def no_data(ctx: NodeContext, check: str, gpu: GpuFacts, what: str, field: str) -> CheckResult:
    """UNKNOWN: this GPU did not report what the check needs (with NVML's reason when recorded)."""
    why = nvml_error(ctx, gpu.index, field) or "not reported"
    return ctx.result(check, Level.UNKNOWN, f"GPU {gpu.index}: {what} unreadable ({why})", gpu=gpu.index,
                      code="NO_DATA")


def no_gpus_result(ctx: NodeContext, check: str) -> CheckResult:
    """The result of a GPU check on a node with no readable GPU. The nvml check is the one that reports why
    (CRITICAL, or UNKNOWN); the others say they were skipped, so one cause is not counted nine times."""
    facts = ctx.facts
    lost = [g.index for g in facts.gpus if g.lost]
    if lost:
        return ctx.result(check, Level.OK, f"skipped: every GPU is lost ({indexes(lost)}), see the nvml check",
                          code="SKIPPED")
    if facts.nvml.status == "ok":
        return ctx.result(check, Level.OK, "no GPUs on this node", code="NO_GPUS")
    if ctx.node.expected_gpus == 0:
        return ctx.result(check, Level.OK, "no GPUs expected on this node (expected_gpus: 0)", code="NO_GPUS")
    return ctx.result(check, Level.OK, f"skipped: no GPU facts (NVML {facts.nvml.status}), see the nvml check",
                      code="SKIPPED")


def indexes(indexes: Iterable[int]) -> str:
    items = list(indexes)
    return ("GPU " if len(items) == 1 else "GPUs ") + ", ".join(str(i) for i in items)


def lost_note(ctx: NodeContext) -> str:
    lost = [g.index for g in ctx.facts.gpus if g.lost]
    return f"; {indexes(lost)} lost, see nvml" if lost else ""


def per_gpu(ctx: NodeContext, check: str, one: Callable[[GpuFacts], list[CheckResult]],
             summary: Callable[[list[GpuFacts]], str]) -> list[CheckResult]:
    """Run `one` on every GPU that answered; one OK result with `summary` when nothing was found."""
    gpus = [g for g in ctx.facts.gpus if not g.lost]
    if not gpus:
        return [no_gpus_result(ctx, check)]
    found = [result for gpu in gpus for result in one(gpu)]
    if found:
        return found
    return [ctx.result(check, Level.OK, summary(gpus) + lost_note(ctx), code="OK")]


def is_busy(gpu: GpuFacts, busy_util_pct: float) -> bool | None:
    """Whether the GPU is working: utilization at or above busy_util_pct (%), else NVML's idle flag."""
    if gpu.utilization_gpu_pct is not None:
        return gpu.utilization_gpu_pct >= busy_util_pct
    if gpu.clocks_event_reasons is not None:
        return "gpu_idle" not in gpu.clocks_event_reasons
    return None


def count_text(value: float) -> str:
    return f"{value:,.0f}"


def ago(seconds: float) -> str:
    """A short age: '40 s', '12 min', '1.5 h'."""
    if seconds < 0:
        return "in the future (clock skew)"
    if seconds < 90:
        return f"{seconds:.0f} s ago"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min ago"
    return f"{seconds / 3600:.1f} h ago"


def hours_text(hours: float) -> str:
    return f"{hours:g} h"


def has_any(values: Mapping[str, object]) -> bool:
    """Whether NVML gave any of the values (all None: the section could not be read)."""
    return any(v is not None for v in values.values())
