"""The code that runs ON a node and prints one facts document.

Python 3.8-compatible and self-contained (standard library, optional psutil, pynvml): the controller
may ship it to a node where jueying is not installed.
"""

from __future__ import annotations

import os
import platform
import time
from typing import Any, Dict, List

FACTS_SCHEMA = 1


def collect(gpus: bool = True) -> Dict[str, Any]:
    """One facts document for this machine (see DESIGN.md: schema 1, units in key names)."""
    from jueying_cli.probe.host import collect_host
    from jueying_cli.probe.kernel import collect_time_sync, collect_xids
    from jueying_cli.probe.nvml import collect_gpus

    started = time.time()
    errors: List[Dict[str, Any]] = []
    host = collect_host(errors)
    host["time_sync"] = collect_time_sync()
    if gpus:
        nvml, gpu_list = collect_gpus(errors)
    else:
        nvml, gpu_list = {"status": "skipped", "message": "GPU collection not requested"}, []
    return {
        "schema": FACTS_SCHEMA,
        "collected_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(started)),
        "collected_at_unix": round(started, 3),
        "probe_duration_s": round(time.time() - started, 4),
        "probe": {
            # Which interpreter ran the probe, and over which SSH connection ("ip port local_port"): a
            # reused connection keeps its client port across `status --watch` refreshes.
            "python_version": platform.python_version(),
            "pid": os.getpid(),
            "ssh_client": os.environ.get("SSH_CLIENT"),
        },
        "host": host,
        "nvml": nvml,
        "gpus": gpu_list,
        "kernel_log": collect_xids(),
        "errors": errors,
    }
