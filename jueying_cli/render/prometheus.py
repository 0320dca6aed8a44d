"""jueying in Prometheus's terms: the metric families of `jueying check --prometheus` (a node_exporter
textfile) and of `jueying exporter`, as plain data. exporter/metrics.py turns them into the text format
(prometheus_client lives there); this module is pure, so every family is tested from recorded facts.

Conventions (README, "jueying in Prometheus"):
- GPU telemetry uses dcgm-exporter's names and labels (`DCGM_FI_DEV_GPU_TEMP{gpu, UUID, device, modelName,
  Hostname, pci_bus_id}`), so Grafana dashboards made for dcgm-exporter work unchanged. dcgm-exporter types
  some of them as counters without the `_total` suffix; here every one is a gauge (`rate()` still works on
  the ones that only grow). `promtool check metrics` finds nothing but what dcgm-exporter's own names bring
  (camelCase labels, `COUNTER` in a name); the `jueying_*` families are lint-clean.
- jueying's own judgements are `jueying_*` families keyed by `node` (and `check`, `gpu`), with enum-style
  series: one per possible value with value 1 for the current one and 0 for the others, so `max()` and
  `sum()` never rank one level by its Nagios number and a missing series means no data, never OK.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from jueying_cli.checks.flap import Finding
from jueying_cli.checks.model import strongest_action, worst
from jueying_cli.facts.model import Facts, GpuFacts
from jueying_cli.status.summary import NodeSummary
from jueying_cli.vocab import Level, NodeStatus, OutcomeStatus, SchedulerState

MIB = 1024 * 1024
LEVELS = (Level.OK, Level.WARNING, Level.CRITICAL, Level.UNKNOWN)
PENDING_LEVELS = (Level.WARNING, Level.CRITICAL, Level.UNKNOWN)

Labels = dict[str, str]


@dataclass
class Family:
    """One metric family: a name, its HELP text and its samples (labels, value); a gauge unless `kind` is
    "counter" (then the name ends in _total)."""

    name: str
    help: str
    samples: list[tuple[Labels, float]] = field(default_factory=list)
    kind: str = "gauge"

    def add(self, labels: Labels, value: float) -> None:
        self.samples.append((labels, value))

    def enum(self, labels: Labels, key: str, values: Iterable[str], current: str | None) -> None:
        """Enum-style: one series per possible value, 1 for `current`, 0 for the others."""
        for value in values:
            self.add({**labels, key: value}, 1.0 if value == current else 0.0)


# ------------------------------------------------------------------ check results


def _gpu_label(gpu: int | None) -> str:
    return "" if gpu is None else str(gpu)


def check_families(findings: Sequence[Finding]) -> list[Family]:
    """Per node, check and GPU (`gpu=""` for a result about the whole node): the confirmed level (enum),
    the level held but not yet confirmed (enum; all 0 when nothing is pending), and while a confirmed
    problem stands, the action it recommends; per node, the worst confirmed level (enum)."""
    level = Family("jueying_check_level", "Confirmed level of a jueying health check on a node and GPU "
                   "(gpu=\"\" for the whole node): 1 for the current level, 0 for the others. A result that "
                   "has not yet held for the check's confirm_runs runs counts as OK here and shows in "
                   "jueying_check_pending.")
    pending = Family("jueying_check_pending", "A non-OK result seen but not yet confirmed (flap control): 1 for "
                     "its level, 0 for the others; all 0 when nothing is pending.")
    action = Family("jueying_check_action", "The action recommended by a confirmed non-OK result (drain, "
                    "reset_gpu, reboot, rma, none); present only while the problem stands.")
    node_level = Family("jueying_node_level", "Worst confirmed check level on a node: 1 for the current level, "
                        "0 for the others (CRITICAL > WARNING > UNKNOWN > OK).")
    by_key: dict[tuple[str, str, str], list[Finding]] = {}
    by_node: dict[str, list[Level]] = {}
    for f in findings:
        by_key.setdefault((f.result.node, f.result.check, _gpu_label(f.result.gpu)), []).append(f)
        by_node.setdefault(f.result.node, []).append(f.counted_level)
    for (node, check, gpu), group in sorted(by_key.items()):
        labels = {"node": node, "check": check, "gpu": gpu}
        confirmed = worst(f.counted_level for f in group)
        level.enum(labels, "level", [x.name for x in LEVELS], confirmed.name)
        held = [f.result.level for f in group if not f.confirmed and f.result.level != Level.OK]
        pending.enum(labels, "level", [x.name for x in PENDING_LEVELS], worst(held).name if held else None)
        if confirmed != Level.OK:
            chosen = strongest_action(f.result.action for f in group if f.confirmed and f.result.level != Level.OK)
            action.add({**labels, "action": str(chosen)}, 1.0)
    for node, levels in sorted(by_node.items()):
        node_level.enum({"node": node}, "level", [x.name for x in LEVELS], worst(levels).name)
    return [level, pending, action, node_level]


def run_families(*, run_timestamp: float, duration_s: float, exit_code: int) -> list[Family]:
    """The `jueying check` run itself: when it finished, how long it took, its Nagios exit code."""
    stamp = Family("jueying_check_last_run_timestamp_seconds", "When the last jueying check run finished "
                   "(unix seconds); alert when it is too old.")
    stamp.add({}, round(run_timestamp, 3))
    took = Family("jueying_check_duration_seconds", "How long the last jueying check run took (seconds).")
    took.add({}, round(duration_s, 3))
    code = Family("jueying_check_exit_code", "The last jueying check run's exit code (Nagios: 0 OK, 1 WARNING, "
                  "2 CRITICAL, 3 UNKNOWN).")
    code.add({}, float(exit_code))
    return [stamp, took, code]


# ------------------------------------------------------------------ nodes


# Not a node's own health: the scheduler's word, and `status --source prometheus`'s "nothing in Prometheus".
_NOT_HEALTH = frozenset({NodeStatus.DRAINED, NodeStatus.DRAINING, NodeStatus.NO_DATA})


def node_families(rows: Sequence[NodeSummary], outcomes: Mapping[str, OutcomeStatus],
                  stale: Iterable[str] = (), gpu_rows: Sequence[NodeSummary] | None = None) -> list[Family]:
    """Per node: its own health (enum; drained or draining is the scheduler's word, in its own families), the
    outcome of collecting it (enum, separate: a node can answer and be degraded), GPUs present/expected/lost,
    the age of its facts, host load and memory, and what its scheduler says (enum) with the drain reason.
    `gpu_rows`: the same rows with the health checks' results applied (summary.with_health), for the GPU
    columns: a GPU with a confirmed problem is not counted healthy, as in `jueying status`."""
    stale = set(stale)
    state = Family("jueying_node_state", "A node's own health as `jueying status` judges it: 1 for the current "
                   "state, 0 for the others (ok, degraded, no_driver; failed, timeout, unreachable, auth_failed, "
                   "hostkey_failed when it gave no facts). What the scheduler says (drained, draining) is in "
                   "jueying_node_scheduler_state and jueying_node_drain_info.")
    reason = Family("jueying_node_state_reason", "Why a node is not ok (the status table's reason); present only "
                    "when there is one.")
    outcome = Family("jueying_node_collection_status", "How collecting a node's facts ended (SSH or local): 1 for "
                     "the outcome, 0 for the others. Separate from the node's health.")
    stale_f = Family("jueying_node_stale", "1 when the values shown are from an earlier collection: the node "
                     "missed the last one (the exporter keeps its last answer).")
    present = Family("jueying_node_gpus", "GPUs present and answering on a node.")
    expected = Family("jueying_node_gpus_expected", "GPUs a node should have (the inventory's expected_gpus); "
                      "absent when not set.")
    lost = Family("jueying_node_gpus_lost", "GPUs on a node that NVML reports lost (GPU_IS_LOST).")
    collected = Family("jueying_node_facts_timestamp_seconds", "When a node's facts were collected, by the "
                       "node's clock (unix seconds).")
    load1 = Family("jueying_node_load1", "A node's 1-minute load average.")
    threads = Family("jueying_node_cpu_threads", "A node's CPU threads.")
    mem_used = Family("jueying_node_memory_used_bytes", "A node's host memory in use (total - available, bytes).")
    mem_total = Family("jueying_node_memory_total_bytes", "A node's host memory (bytes).")
    sched = Family("jueying_node_scheduler_state", "What a node's scheduler says of it: 1 for the current state, "
                   "0 for the others; absent when the node has no scheduler state.")
    drain = Family("jueying_node_drain_info", "1 for a node that is drained or draining, with the backend and the "
                   "drain reason; absent otherwise.")
    for row in rows:
        node = {"node": row.node}
        state.enum(node, "state", [str(s) for s in NodeStatus if s not in _NOT_HEALTH], str(row.state))
        if row.reason and row.state != NodeStatus.OK:
            reason.add({**node, "reason": row.reason}, 1.0)
        status = outcomes.get(row.node)
        outcome.enum(node, "status", [str(s) for s in OutcomeStatus], str(status) if status else None)
        stale_f.add(node, 1.0 if row.node in stale or row.stale else 0.0)
        if row.gpus_present is not None:
            present.add(node, float(row.gpus_present))
            lost.add(node, float(row.gpus_lost))
        if row.gpus_expected is not None:
            expected.add(node, float(row.gpus_expected))
        for family, value in ((collected, row.collected_at_unix), (load1, row.load1), (threads, row.cpu_threads),
                              (mem_used, row.host_memory_used_bytes), (mem_total, row.host_memory_total_bytes)):
            if value is not None:
                family.add(node, float(value))
        if row.scheduler_state is not None:
            sched.enum(node, "state", [str(s) for s in SchedulerState], str(row.scheduler_state))
            if row.scheduler_state in (SchedulerState.DRAINED, SchedulerState.DRAINING) or row.drain_reason:
                drain.add({**node, "backend": str(row.scheduler or ""), "reason": row.drain_reason or ""}, 1.0)
    return [state, reason, outcome, stale_f, present, expected, lost, collected, load1, threads, mem_used, mem_total,
            sched, drain, *gpu_summary_families(rows if gpu_rows is None else gpu_rows)]


def gpu_summary_families(rows: Sequence[NodeSummary]) -> list[Family]:
    """Per node, the GPU columns of the status table, computed as `jueying status` computes them (healthy GPUs
    only): `status --source prometheus` reads a few series per node instead of every GPU's, and a dashboard
    gets a node's hottest GPU or GPU memory without aggregating dcgm-exporter's series."""
    util_avg = Family("jueying_node_gpu_utilization_avg_percent", "Average GPU utilisation over a node's healthy "
                      "GPUs (%).")
    util_max = Family("jueying_node_gpu_utilization_max_percent", "Highest GPU utilisation on a node (%).")
    mem_used = Family("jueying_node_gpu_memory_used_bytes", "GPU memory in use, summed over a node's healthy GPUs "
                      "(bytes).")
    mem_total = Family("jueying_node_gpu_memory_total_bytes", "GPU memory, summed over a node's healthy GPUs "
                       "(bytes).")
    hottest = Family("jueying_node_gpu_temperature_max_celsius", "Temperature of a node's hottest GPU (degrees C); "
                     "gpu is its index.")
    power = Family("jueying_node_gpu_power_watts", "Power draw, summed over a node's healthy GPUs (W).")
    limit = Family("jueying_node_gpu_power_limit_watts", "Enforced power limits, summed over a node's healthy GPUs "
                   "(W).")
    models = Family("jueying_node_gpu_models", "Healthy GPUs on a node per model name.")
    for row in rows:
        node = {"node": row.node}
        for family, value in ((util_avg, row.utilization_avg_pct), (util_max, row.utilization_max_pct),
                              (mem_used, row.gpu_memory_used_bytes), (mem_total, row.gpu_memory_total_bytes),
                              (power, row.power_watts), (limit, row.power_limit_watts)):
            if value is not None:
                family.add(node, float(value))
        if row.hottest_gpu_c is not None:
            hottest.add({**node, "gpu": _gpu_label(row.hottest_gpu_index)}, float(row.hottest_gpu_c))
        for count in row.gpu_models:
            models.add({**node, "model": count.model}, float(count.gpus))
    return [util_avg, util_max, mem_used, mem_total, hottest, power, limit, models]


def cap_families(limit: int, unavailable: int) -> list[Family]:
    """max_unavailable and how many nodes count against it now (alert: drain cap reached)."""
    cap = Family("jueying_drain_max_unavailable", "Most nodes that may be out of service at once (max_unavailable); "
                 "automation holds further drains back beyond it.")
    cap.add({}, float(limit))
    now = Family("jueying_drain_unavailable_nodes", "Nodes counted against max_unavailable now: drained, "
                 "draining or down.")
    now.add({}, float(unavailable))
    return [cap, now]


# ------------------------------------------------------------------ GPUs (dcgm-exporter's names)

# (name, HELP, how to read it from a GPU). Names and units are dcgm-exporter's (etc/default-counters.csv and
# DCGM's field list); a value the GPU does not report leaves its series out.
_DCGM: tuple[tuple[str, str, str], ...] = (
    ("DCGM_FI_DEV_GPU_TEMP", "GPU temperature (in C).", "temperature_c"),
    ("DCGM_FI_DEV_GPU_UTIL", "GPU utilization (in %).", "utilization_gpu_pct"),
    ("DCGM_FI_DEV_MEM_COPY_UTIL", "Memory utilization (in %).", "utilization_memory_pct"),
    ("DCGM_FI_DEV_FB_USED", "Framebuffer memory used (in MiB).", "fb_used"),
    ("DCGM_FI_DEV_FB_FREE", "Framebuffer memory free (in MiB).", "fb_free"),
    ("DCGM_FI_DEV_FB_TOTAL", "Framebuffer memory total (in MiB).", "fb_total"),
    ("DCGM_FI_DEV_POWER_USAGE", "Power draw (in W).", "power_watts"),
    ("DCGM_FI_DEV_POWER_MGMT_LIMIT", "Enforced power limit (in W).", "power_limit_watts"),
    ("DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION", "Total energy consumption since boot (in mJ).", "energy_consumed_mj"),
    ("DCGM_FI_DEV_SM_CLOCK", "SM clock frequency (in MHz).", "clock_sm_mhz"),
    ("DCGM_FI_DEV_MEM_CLOCK", "Memory clock frequency (in MHz).", "clock_mem_mhz"),
    ("DCGM_FI_DEV_XID_ERRORS", "Value of the last XID error seen in the kernel log's window (0: none).", "xid"),
    ("DCGM_FI_DEV_ECC_SBE_VOL_TOTAL", "Total number of single-bit volatile ECC errors.", "sbe_vol"),
    ("DCGM_FI_DEV_ECC_DBE_VOL_TOTAL", "Total number of double-bit volatile ECC errors.", "dbe_vol"),
    ("DCGM_FI_DEV_ECC_SBE_AGG_TOTAL", "Total number of single-bit persistent ECC errors.", "sbe_agg"),
    ("DCGM_FI_DEV_ECC_DBE_AGG_TOTAL", "Total number of double-bit persistent ECC errors.", "dbe_agg"),
    ("DCGM_FI_DEV_RETIRED_SBE", "Total number of retired pages due to single-bit errors.", "retired_sbe"),
    ("DCGM_FI_DEV_RETIRED_DBE", "Total number of retired pages due to double-bit errors.", "retired_dbe"),
    ("DCGM_FI_DEV_UNCORRECTABLE_REMAPPED_ROWS", "Number of remapped rows for uncorrectable errors.", "remap_unc"),
    ("DCGM_FI_DEV_CORRECTABLE_REMAPPED_ROWS", "Number of remapped rows for correctable errors.", "remap_cor"),
    ("DCGM_FI_DEV_ROW_REMAP_FAILURE", "Whether remapping of rows has failed.", "remap_failure"),
    ("DCGM_FI_DEV_ROW_REMAP_PENDING", "Whether a row remap is pending (reset the GPU to apply it).", "remap_pending"),
    ("DCGM_FI_DEV_PCIE_REPLAY_COUNTER", "Total number of PCIe retries.", "pcie_replay"),
)
NVLINK_ACTIVE = "jueying_gpu_nvlinks_active"
NVLINK_TOTAL = "jueying_gpu_nvlinks"


def _flag(value: bool | None) -> float | None:
    return None if value is None else float(value)


def _mib(value: int | None) -> float | None:
    return None if value is None else float(value // MIB)


def _gpu_value(gpu: GpuFacts, key: str, last_xid: Mapping[str, int]) -> float | None:
    ecc, rows, pages = gpu.ecc_errors, gpu.remapped_rows, gpu.retired_pages
    derived: dict[str, float | int | None] = {
        "fb_used": _mib(gpu.memory_used_bytes), "fb_free": _mib(gpu.memory_free_bytes),
        "fb_total": _mib(gpu.memory_total_bytes),
        "xid": last_xid.get((gpu.pci_bus_id or "").lower(), 0) if gpu.pci_bus_id else None,
        "sbe_vol": ecc.corrected_volatile, "dbe_vol": ecc.uncorrected_volatile,
        "sbe_agg": ecc.corrected_aggregate, "dbe_agg": ecc.uncorrected_aggregate,
        "retired_sbe": pages.single_bit_ecc, "retired_dbe": pages.double_bit_ecc,
        "remap_unc": rows.uncorrected, "remap_cor": rows.corrected,
        "remap_failure": _flag(rows.failure), "remap_pending": _flag(rows.pending),
        "pcie_replay": gpu.pcie.replay_counter,
    }
    value = derived[key] if key in derived else getattr(gpu, key)
    return None if value is None else float(value)


def _last_xid(facts: Facts) -> dict[str, int]:
    """The latest XID per PCI bus id (lower case, the kernel's short form matched by suffix below)."""
    found: dict[str, tuple[float, int]] = {}
    events = facts.kernel_log.xid_events if facts.kernel_log is not None else None
    for e in events or ():
        if e.pci_bus_id is None:
            continue
        for gpu in facts.gpus:
            if gpu.pci_bus_id and _same_bus(gpu.pci_bus_id, e.pci_bus_id):
                when = e.time_unix or 0.0
                key = gpu.pci_bus_id.lower()
                if key not in found or when >= found[key][0]:
                    found[key] = (when, e.xid)
    return {k: v[1] for k, v in found.items()}


def _same_bus(nvml_id: str, kernel_id: str) -> bool:
    """NVML says 00000000:2A:00.0, the kernel log 0000:2a:00: compare domain-less bus:device."""
    def norm(text: str) -> str:
        parts = text.lower().split(":")
        return ":".join(parts[-2:]).split(".")[0] if len(parts) >= 2 else text.lower()
    return norm(nvml_id) == norm(kernel_id)


def gpu_families(node_facts: Iterable[tuple[str, Facts]]) -> list[Family]:
    """dcgm-exporter's GPU families (labels gpu, UUID, device, modelName, Hostname, pci_bus_id) plus NVLinks
    active/total per GPU. `Hostname` is the inventory's node name. A lost GPU has no series here (see
    jueying_node_gpus_lost)."""
    families = {name: Family(name, text) for name, text, _ in _DCGM}
    links_active = Family(NVLINK_ACTIVE, "NVLinks of a GPU that are active (jueying's nvlink check: CRITICAL when "
                          "fewer than jueying_gpu_nvlinks).")
    links = Family(NVLINK_TOTAL, "NVLinks a GPU has.")
    for node, facts in node_facts:
        last_xid = _last_xid(facts)
        for gpu in facts.gpus:
            if gpu.lost:
                continue
            labels = {"gpu": str(gpu.index), "UUID": gpu.uuid or "", "device": f"nvidia{gpu.index}",
                      "modelName": gpu.name or "", "Hostname": node, "pci_bus_id": gpu.pci_bus_id or ""}
            for name, _, key in _DCGM:
                value = _gpu_value(gpu, key, last_xid)
                if value is not None:
                    families[name].add(labels, value)
            if gpu.nvlinks:
                ours = {"node": node, "gpu": str(gpu.index)}
                links.add(ours, float(len(gpu.nvlinks)))
                links_active.add(ours, float(sum(1 for link in gpu.nvlinks if link.active)))
    return [*families.values(), links, links_active]
