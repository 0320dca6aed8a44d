"""The probe's serve mode: one long-lived process per node for `jueying status --watch`.

The controller starts it once over a kept SSH channel and then asks for a document per refresh, so a
refresh costs the node one read of NVML and /proc instead of a new python3, an import of pynvml and an
nvmlInit. Python 3.8-compatible, standard library only.

Protocol, one request per line on stdin:
    collect SEQ      ->  "facts SEQ LEN\\n" + LEN bytes: the facts document, compact JSON, zlib-compressed
                         "error SEQ LEN\\n" + LEN bytes: UTF-8 text, when collecting failed (the serve goes on)
    quit             ->  exit 0
End of input, or no request for `idle_s` seconds (a controller that vanished without closing), also ends it,
so nothing is ever left running on the node.
"""

from __future__ import annotations

import gc
import json
import os
import select
import traceback
import zlib
from typing import BinaryIO

from jueying_cli.probe import Collector

MAX_REQUEST_LINE = 256  # bytes; a longer line is a confused peer, not a request


def serve(out: BinaryIO, *, gpus: bool = True, idle_s: float = 300.0, pending: bytes = b"", in_fd: int = 0) -> int:
    """Answer requests from `in_fd` on `out` until quit, end of input or `idle_s` seconds without a request."""
    collector = Collector(gpus)
    buf = pending
    frozen = False
    try:
        while True:
            while b"\n" in buf:
                line, _, buf = buf.partition(b"\n")
                words = line.decode("ascii", "replace").split()
                if not words:
                    continue
                if words[0] == "quit":
                    return 0
                if words[0] == "collect" and len(words) == 2 and words[1].isdigit():
                    out.write(_answer(collector, words[1]))
                    out.flush()
                    if not frozen:
                        # Everything alive now (modules, NVML handles, caches) lives as long as the probe:
                        # keep the garbage collector from walking it on later requests (a full collection
                        # costs more than a request).
                        gc.freeze()
                        frozen = True
                else:
                    out.write(_frame("error", "0", ("unknown request: %r" % line[:80]).encode()))
                    out.flush()
            if len(buf) > MAX_REQUEST_LINE:
                return 2
            ready, _, _ = select.select([in_fd], [], [], idle_s)
            if not ready:
                return 0
            chunk = os.read(in_fd, 4096)
            if not chunk:
                return 0
            buf += chunk
    except BrokenPipeError:
        return 0
    finally:
        collector.close()


def _answer(collector: Collector, seq: str) -> bytes:
    try:
        doc = collector.collect()
        body = zlib.compress(json.dumps(doc, separators=(",", ":")).encode("utf-8"), 1)
    except Exception:  # noqa: BLE001 - report this read's failure and keep serving the next refresh
        return _frame("error", seq, traceback.format_exc(limit=3)[-2000:].encode("utf-8", "replace"))
    return _frame("facts", seq, body)


def _frame(kind: str, seq: str, body: bytes) -> bytes:
    return ("%s %s %d\n" % (kind, seq, len(body))).encode("ascii") + body
