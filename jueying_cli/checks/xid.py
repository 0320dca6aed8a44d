"""The XID catalog jueying acts on: meaning, level and action per XID.

Sources: NVIDIA's Xid catalog ("Resolution Bucket (Immediate Action)", given as `nvidia` below), and how
the tools operators already run treat each XID (Azure aznhc, Meta GCM, DCGM health watches, AWS EKS agent),
as summarised in the project's research notes. Where they disagree, the choice and its reason is written
next to the entry. Our vocabulary is Action: reset_gpu means drain first, then reset.

The catalog never says RMA as an immediate action: RMA is reached when a reset or reboot does not help
(the XID recurs), and from the persistent counters that the remapped_rows / retired_pages checks read.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

from jueying_cli.vocab import Action, Level


@dataclass(frozen=True)
class XidInfo:
    meaning: str
    level: Level
    action: Action
    nvidia: str  # NVIDIA's immediate-action bucket, for the operator who looks it up
    advice: str = ""  # one short clause for the message, when the action alone is not enough


_W, _C = Level.WARNING, Level.CRITICAL

XID_CATALOG: Mapping[int, XidInfo] = {
    # Application-caused in the vast majority of cases: the job dies, the GPU is fine.
    8: XidInfo("GPU stopped processing (channel idle timeout)", _W, Action.NONE, "RESTART_APP"),
    13: XidInfo("graphics engine exception", _W, Action.NONE, "RESTART_APP",
                "usually the application; if it repeats on one GPU, run field diagnostics"),
    31: XidInfo("GPU memory page fault (MMU)", _W, Action.NONE, "RESTART_APP",
                "usually an application bug; if it repeats on one GPU, run field diagnostics"),
    43: XidInfo("GPU stopped processing (reset channel)", _W, Action.NONE, "IGNORE"),
    45: XidInfo("preemptive cleanup after another fault", _W, Action.NONE, "RESTART_FM when alone",
                "follows the XID that caused it; alone, restart nvidia-fabricmanager"),
    # GPU hangs the driver recovers from only by a reset.
    46: XidInfo("GPU stopped processing", _C, Action.RESET_GPU, "RESET_GPU"),
    # Memory errors.
    48: XidInfo("double-bit ECC error", _C, Action.RESET_GPU, "RESET_GPU; DRAIN_AND_RESET with 63/64",
                "run field diagnostics if it returns"),
    # Board power: a connector, not a GPU fault.
    54: XidInfo("auxiliary power not connected", _C, Action.DRAIN, "CHECK_MECHANICALS",
                "check the GPU's power connectors"),
    # 56: display engine, which data-centre GPUs do not drive: kept visible, never acted on.
    56: XidInfo("display engine error", _W, Action.NONE, "CONTACT_SUPPORT if it persists"),
    # 57/58: the HBM/GDDR interface itself; Azure fails the node on both.
    57: XidInfo("error programming the video memory interface", _C, Action.RESET_GPU, "RESET_GPU",
                "RMA if it recurs after a reset"),
    58: XidInfo("unstable video memory interface", _C, Action.RESET_GPU, "RESET_GPU",
                "RMA if it recurs after a reset"),
    62: XidInfo("internal micro-controller halt", _C, Action.RESET_GPU, "RESET_GPU"),
    # 63: NVIDIA says IGNORE, GCM warns, Azure and AWS fail it. gpud stopped treating it as a hardware
    # fault because pending remaps happen several times before any failure. WARNING, no action: the
    # remapped_rows check reports the pending remap itself (with its reset) and a real failure (RMA).
    63: XidInfo("row remap / page retirement recorded", _W, Action.NONE, "IGNORE",
                "reset the GPU when convenient to apply it"),
    # 64: the catalog's immediate action is RESET_GPU (investigatory: CONTACT_SUPPORT). We keep the
    # reset: it retries the remap at the next GPU init, and a failure that survives it is reported as
    # RMA by the remapped_rows check from NVML's persistent failure flag, which needs no history here.
    64: XidInfo("row remap / page retirement failed", _C, Action.RESET_GPU, "RESET_GPU",
                "RMA if it recurs after the reset"),
    65: XidInfo("video processor exception", _W, Action.NONE, "RESTART_APP"),
    68: XidInfo("video decoder (NVDEC) exception", _W, Action.NONE, "RESTART_APP"),
    69: XidInfo("graphics engine class error", _W, Action.NONE, "RESTART_APP"),
    74: XidInfo("NVLink error", _C, Action.RESET_GPU, "WORKFLOW_NVLINK_ERR",
                "check `nvidia-smi nvlink -e`; RMA if it recurs after a reset"),
    79: XidInfo("GPU has fallen off the bus", _C, Action.REBOOT, "RESTART_BM",
                "power-cycle the node; RMA if it recurs"),
    92: XidInfo("high single-bit ECC error rate", _W, Action.NONE, "IGNORE",
                "watch ecc_corrected and remapped_rows"),
    94: XidInfo("contained ECC error", _W, Action.NONE, "RESTART_APP",
                "restart the application that hit it; reset the GPU when convenient"),
    95: XidInfo("uncontained ECC error", _C, Action.RESET_GPU, "RESET_GPU"),
    # 109: the catalog and AWS say RESET_GPU, GCM calls it non-critical (mostly hung applications).
    # WARNING with a recommended reset: worth an operator's look, not an automatic drain.
    109: XidInfo("context switch timeout", _W, Action.RESET_GPU, "RESET_GPU"),
    110: XidInfo("security fault", _C, Action.RESET_GPU, "RESET_GPU"),
    119: XidInfo("GSP RPC timeout", _C, Action.RESET_GPU, "RESET_GPU",
                 "reboot if the reset does not clear it"),
    120: XidInfo("GSP error", _C, Action.RESET_GPU, "RESET_GPU", "reboot if the reset does not clear it"),
    136: XidInfo("link training failed", _C, Action.RESET_GPU, "RESET_GPU"),
    140: XidInfo("unrecovered ECC error", _C, Action.RESET_GPU, "RESET_GPU"),
    143: XidInfo("GPU initialisation failure", _C, Action.RESET_GPU, "RESET_GPU",
                 "RMA if it recurs after a reset"),
    151: XidInfo("key rotation error (confidential computing)", _C, Action.REBOOT, "RESTART_VM"),
    # 154 names the recovery the driver now requires; recovery_action_154() reads it from the text.
    154: XidInfo("GPU recovery action changed", _W, Action.NONE, "as the message says",
                 "see `nvidia-smi -q` GPU Recovery Action"),
    155: XidInfo("NVLink software-defined error", _C, Action.RESET_GPU, "RESET_GPU"),
    156: XidInfo("resource retirement event", _C, Action.RESET_GPU, "RESET_GPU"),
    158: XidInfo("GPU fatal timeout", _C, Action.RESET_GPU, "RESET_GPU"),
}

UNKNOWN_XID = XidInfo("not in jueying's XID catalog", _W, Action.NONE, "see NVIDIA's Xid catalog",
                      "look it up in NVIDIA's Xid catalog")

# NVML's nvmlGpuRecoveryAction_t, as XID 154 prints it: "... changed from 0x0 (None) to 0x2 (Node Reboot
# Required)". DCGM fails on GPU_RESET, NODE_REBOOT and DRAIN_AND_RESET, and warns on DRAIN_P2P.
_RECOVERY = {
    0: (Level.OK, Action.NONE, "no recovery needed any more"),
    1: (Level.CRITICAL, Action.RESET_GPU, "GPU reset required"),
    2: (Level.CRITICAL, Action.REBOOT, "node reboot required"),
    3: (Level.WARNING, Action.DRAIN, "drain peer-to-peer traffic"),
    4: (Level.CRITICAL, Action.RESET_GPU, "drain and reset required"),
}
_RECOVERY_RE = re.compile(r"\bto\s+0x([0-9a-fA-F]+)")


def lookup(xid: int) -> XidInfo:
    """The catalog entry, or UNKNOWN_XID (a WARNING: an XID we do not know is worth a look)."""
    return XID_CATALOG.get(xid, UNKNOWN_XID)


def recovery_action_154(text: str) -> tuple[Level, Action, str] | None:
    """(level, action, meaning) from an XID 154 message; None when the text does not say."""
    match = _RECOVERY_RE.search(text)
    if not match:
        return None
    return _RECOVERY.get(int(match.group(1), 16))
