"""The code that runs ON a node and prints one facts document.

Python 3.8-compatible and self-contained (standard library, optional psutil, pynvml): the controller
may ship it to a node where jueying is not installed.
"""

from __future__ import annotations

import os
import platform
import time
from typing import TYPE_CHECKING, Callable, Dict, List, Optional, Tuple

from jueying_cli.facts.schema import DOCUMENT_KEYS, FACTS_SCHEMA, PROBE_KEYS, record

if TYPE_CHECKING:
    from jueying_cli.probe.host import StaticHost

# One JSON object of the document; the document itself is one.
Obj = Dict[str, object]


def collect(gpus: bool = True) -> Obj:
    """One facts document for this machine (see DESIGN.md: schema 1, units in key names)."""
    from jueying_cli.probe.kernel import collect_time_sync, collect_xids
    from jueying_cli.probe.nvml import collect_gpus

    return _document(gpus, collect_gpus, collect_time_sync, collect_xids, None)


class Collector:
    """Facts documents for repeated reads in one process (`status --watch`, the probe's serve mode): NVML
    stays initialised, static facts (OS, CPU model, kernel, GPU identity and limits) are read once, the
    kernel log is tailed, and the time-sync state (two subprocesses) is asked at most every
    TIME_SYNC_EVERY_S seconds and TIME_SYNC_EVERY_READS reads. Each document is as complete as one from
    collect()."""

    TIME_SYNC_EVERY_S = 60.0
    # ... and not before this many reads since the last ask: a first refresh of thousands of nodes can take
    # longer than a minute, and every probe asking again on the next refresh would make it a slow one.
    TIME_SYNC_EVERY_READS = 10

    def __init__(self, gpus: bool = True) -> None:
        from jueying_cli.probe.host import StaticHost
        from jueying_cli.probe.kernel import KernelLogTail
        from jueying_cli.probe.nvml import NvmlSession

        self.gpus = gpus
        self._nvml = NvmlSession()
        self._kernel = KernelLogTail()
        self._time_sync: Optional[Obj] = None
        self._time_sync_at = 0.0
        self._reads_since_time_sync = 0
        self._static_host = StaticHost()

    def collect(self) -> Obj:
        return _document(self.gpus, self._nvml.collect, self._cached_time_sync, self._kernel.collect,
                         self._static_host)

    def _cached_time_sync(self) -> Obj:
        from jueying_cli.probe.kernel import collect_time_sync

        now = time.monotonic()
        self._reads_since_time_sync += 1
        if self._time_sync is None or (now - self._time_sync_at >= self.TIME_SYNC_EVERY_S
                                       and self._reads_since_time_sync >= self.TIME_SYNC_EVERY_READS):
            self._time_sync = collect_time_sync()
            self._time_sync_at = now
            self._reads_since_time_sync = 0
        return dict(self._time_sync)

    def close(self) -> None:
        self._nvml.close()
        self._kernel.close()


def _document(gpus: bool, collect_gpus: Callable[[List[Obj]], Tuple[Obj, List[Obj]]],
              time_sync: Callable[[], Obj], xids: Callable[[], Obj], static_host: Optional[StaticHost]) -> Obj:
    from jueying_cli.probe import inject
    from jueying_cli.probe.host import collect_host
    from jueying_cli.probe.nvml import skipped_nvml

    started = time.time()
    errors: List[Obj] = []
    host = collect_host(errors, time_sync(), static_host)
    if gpus:
        nvml, gpu_list = collect_gpus(errors)
    else:
        nvml, gpu_list = skipped_nvml(), []
    kernel_log = xids()
    # GPU faults a drill injected (overlay files, read on every collection): applied to what NVML said
    injected = inject.apply(inject.read_overlays(errors), gpu_list, kernel_log, errors) if gpus else []
    return record(
        DOCUMENT_KEYS,
        schema=FACTS_SCHEMA,
        collected_at=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(started)),
        collected_at_unix=round(started, 3),
        probe_duration_s=round(time.time() - started, 4),
        # Which interpreter ran the probe, and over which SSH connection ("ip port local_port"): a reused
        # connection keeps its client port across `status --watch` refreshes.
        probe=record(PROBE_KEYS, python_version=platform.python_version(), pid=os.getpid(),
                     ssh_client=os.environ.get("SSH_CLIENT")),
        host=host,
        nvml=nvml,
        gpus=gpu_list,
        kernel_log=kernel_log,
        injected=injected,
        errors=errors,
    )
