"""Injected GPU faults: overlay files a drill (`jueying drill`, do: gpu_fault) leaves on the node, applied by
the probe to the GPU facts it read from NVML, so `jueying check`, `check --drain` and `status` react to them
exactly as to a real fault (like DCGM's field injection, but for every reader of the facts document).

Runs on the node (Python 3.8, standard library only). One JSON file per injected fault,
`<dir>/<tag>.json`, where dir is `JUEYING_PROBE_INJECT_DIR` or /run/jueying/inject (tmpfs: a reboot clears
it; the drill creates it 0700 and its files 0600):

    {"fault": "lost" | "ecc" | "row_remap_failure" | "xid", "gpu": 0, "count": 1, "xid": 79,
     "injected_at_unix": 1700000000.0, "expires_at_unix": 1700001800.0}

Every applied fault is listed in the document's `injected` list. A file that cannot be read or is malformed
is ignored with an entry in the document's errors (field "injected"), and one past its expires_at_unix is
ignored even when nothing removed it: an overlay never outlives its time-to-live, and never crashes the probe.
"""

from __future__ import annotations

import json
import os
import time
from typing import Dict, List, Optional, Union

from jueying_cli.facts.schema import ERROR_KEYS, INJECTED_KEYS, XID_EVENT_KEYS, record

Obj = Dict[str, object]

DEFAULT_DIR = "/run/jueying/inject"
FAULTS = ("lost", "ecc", "row_remap_failure", "xid")
MAX_FILES = 64  # more overlay files than this on one node is not a drill: the rest are ignored (noted)
MAX_FILE_BYTES = 4096  # one overlay is ~150 bytes


def inject_dir() -> str:
    return os.environ.get("JUEYING_PROBE_INJECT_DIR") or DEFAULT_DIR


def _note(errors: List[Obj], gpu: Optional[int], message: str) -> None:
    errors.append(record(ERROR_KEYS, gpu=gpu, field="injected", error="ignored", message=message[:300]))


def _int(value: object, low: int, high: int) -> Optional[int]:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        return None
    return value


def _number(value: object) -> Optional[float]:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value)


def read_overlays(errors: List[Obj], now: Optional[float] = None) -> List[Obj]:
    """The live overlays of this node, as `injected` entries (tag, fault, gpu, count, xid, expiry), oldest
    tag first; a missing directory means none."""
    directory = inject_dir()
    try:
        names = sorted(n for n in os.listdir(directory) if n.endswith(".json") and not n.startswith("."))
    except OSError:
        return []
    now = time.time() if now is None else now
    if len(names) > MAX_FILES:
        _note(errors, None, "%d overlay files in %s: only the first %d read" % (len(names), directory, MAX_FILES))
        names = names[:MAX_FILES]
    out: List[Obj] = []
    for name in names:
        tag = name[:-len(".json")]
        path = os.path.join(directory, name)
        try:
            with open(path, "rb") as fh:
                raw = fh.read(MAX_FILE_BYTES + 1)
            if len(raw) > MAX_FILE_BYTES:
                raise ValueError("longer than %d bytes" % MAX_FILE_BYTES)
            doc = json.loads(raw.decode("utf-8"))
        except FileNotFoundError:
            continue  # undone between listdir and open
        except (OSError, ValueError) as exc:
            _note(errors, None, "overlay %s is malformed, ignored: %s" % (path, exc))
            continue
        entry = _parse(doc)
        if not isinstance(entry, dict):
            _note(errors, None, "overlay %s is malformed, ignored: %s" % (path, entry))
            continue
        expires = entry["expires_at_unix"]
        if isinstance(expires, float) and expires <= now:
            continue  # past its time-to-live: the undo timer did not run, the overlay is over anyway
        entry["tag"] = tag
        out.append(record(INJECTED_KEYS, **entry))
    return out


def _parse(doc: object) -> Union[Obj, str]:
    """The overlay's values, or a reason it is malformed."""
    if not isinstance(doc, dict):
        return "not a JSON object"
    fault = doc.get("fault")
    if fault not in FAULTS:
        return "fault must be one of %s" % ", ".join(FAULTS)
    gpu = _int(doc.get("gpu", 0), 0, 1023)
    if gpu is None:
        return "gpu must be an integer 0..1023"
    count = _int(doc.get("count", 1), 1, 2 ** 31) if fault == "ecc" else None
    if fault == "ecc" and count is None:
        return "count must be a positive integer"
    xid = _int(doc.get("xid"), 1, 65535) if fault == "xid" else None
    if fault == "xid" and xid is None:
        return "xid must be an integer 1..65535"
    expires = _number(doc.get("expires_at_unix"))
    if expires is None:
        return "expires_at_unix (a unix time) is required"
    injected = _number(doc.get("injected_at_unix"))
    return {"tag": "", "fault": fault, "gpu": gpu, "count": count, "xid": xid, "injected_at_unix": injected,
            "expires_at_unix": expires}


def apply(overlays: List[Obj], gpus: List[Obj], kernel_log: Obj, errors: List[Obj]) -> List[Obj]:
    """Apply each overlay to the GPU list and kernel log read from the node; the overlays applied (one naming
    a GPU this node does not have is noted in errors and left out)."""
    by_index = {g.get("index"): g for g in gpus}
    applied: List[Obj] = []
    for o in overlays:
        gpu = by_index.get(o["gpu"])
        if gpu is None:
            _note(errors, None, "overlay %s names GPU %s, which this node does not have" % (o["tag"], o["gpu"]))
            continue
        fault = o["fault"]
        if fault == "lost":
            gpu["lost"] = True
        elif fault == "ecc":
            ecc = gpu.get("ecc_errors")
            if isinstance(ecc, dict):
                count = o["count"] if isinstance(o["count"], int) else 1
                for key in ("uncorrected_volatile", "uncorrected_aggregate"):
                    value = ecc.get(key)
                    ecc[key] = (value if isinstance(value, int) else 0) + count
        elif fault == "row_remap_failure":
            rows = gpu.get("remapped_rows")
            if isinstance(rows, dict):
                rows["failure"] = True
        elif fault == "xid":
            events = kernel_log.get("xid_events")
            if not isinstance(events, list):
                _note(errors, o["gpu"] if isinstance(o["gpu"], int) else None,
                      "overlay %s: the kernel log is unreadable, the injected XID is not shown" % o["tag"])
                continue
            stamp = o["injected_at_unix"] if o["injected_at_unix"] is not None else time.time()
            events.append(record(XID_EVENT_KEYS, time_unix=stamp, pci_bus_id=gpu.get("pci_bus_id"), xid=o["xid"],
                                 pid=None, text="injected by jueying drill %s" % o["tag"]))
        applied.append(o)
    return applied
