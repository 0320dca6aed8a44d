"""XID events from the kernel log, and the clock's offset from its time source.

Runs on the node (Python 3.8, standard library only). XIDs are read from /dev/kmsg without blocking
(root or CAP_SYSLOG), falling back to `dmesg`; each event carries its wall-clock time so checks can
window and de-duplicate them. `JUEYING_PROBE_KERNEL_LOG` names a file to read instead (tests, or a
copy of a node's log): lines in /dev/kmsg format, `dmesg --time-format iso` format or plain dmesg.
"""

from __future__ import annotations

import calendar
import errno
import os
import re
import subprocess
import time
from typing import Any, Dict, List, Optional, Tuple

from jueying_cli.facts.schema import KERNEL_LOG_KEYS, TIME_SYNC_KEYS, XID_EVENT_KEYS, record

# One JSON object of the document (the kernel_log section, the time_sync section).
Obj = Dict[str, object]
# One XID event: JSON too, but read back here (its time_unix is compared for the window).
Event = Dict[str, Any]

# NVRM: Xid (PCI:0000:18:00): 79, pid=1234, name=python3, GPU has fallen off the bus.
_XID_RE = re.compile(r"NVRM: Xid \(PCI:([0-9A-Fa-f:.]+)\): (\d+)(?:, pid=(\d+|'<unknown>'))?(?:, ([^\n]*))?")
_ISO_RE = re.compile(r"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(?:[,.](\d+))?([+-]\d\d:?\d\d|Z)?\s+(.*)$")
_DMESG_RE = re.compile(r"^\[\s*(\d+\.\d+)\]\s+(.*)$")
MAX_EVENTS = 1000  # a looping XID must not bloat the facts document
WINDOW_S = 24 * 3600  # older events are not collected


def _boot_time() -> Optional[float]:
    try:
        with open("/proc/uptime") as fh:
            return time.time() - float(fh.read().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def _iso_to_unix(stamp: str, fraction: Optional[str], zone: Optional[str]) -> Optional[float]:
    try:
        base = calendar.timegm(time.strptime(stamp, "%Y-%m-%dT%H:%M:%S"))
    except ValueError:
        return None
    offset = 0
    if zone and zone != "Z":
        sign = -1 if zone[0] == "-" else 1
        digits = zone[1:].replace(":", "")
        offset = sign * (int(digits[:2]) * 3600 + int(digits[2:4]) * 60)
    return base - offset + (float("0." + fraction) if fraction else 0.0)


def parse_line(line: str, boot: Optional[float]) -> Tuple[Optional[float], str]:
    """(unix time or None, message) for a kmsg, ISO-dmesg or plain-dmesg line."""
    if ";" in line and line[:1].isdigit():  # /dev/kmsg: "prio,seq,usec,flags;message"
        head, _, message = line.partition(";")
        fields = head.split(",")
        if len(fields) >= 3 and fields[2].isdigit():
            return (boot + int(fields[2]) / 1e6 if boot is not None else None), message
    match = _ISO_RE.match(line)
    if match:
        return _iso_to_unix(match.group(1), match.group(2), match.group(3)), match.group(4)
    match = _DMESG_RE.match(line)
    if match:
        return (boot + float(match.group(1)) if boot is not None else None), match.group(2)
    return None, line


def _read_records(fd: int) -> List[str]:
    """The records readable from an open /dev/kmsg descriptor now, without blocking."""
    lines = []
    while True:
        try:
            record = os.read(fd, 8192)
        except OSError as exc:
            if exc.errno == errno.EAGAIN:
                break
            if exc.errno == errno.EPIPE:  # overwritten while reading: skip ahead
                continue
            raise
        if not record:
            break
        lines.append(record.decode("utf-8", "replace").split("\n", 1)[0])
    return lines


def _read_kmsg() -> List[str]:
    """All records in the kernel ring buffer, without blocking."""
    fd = os.open("/dev/kmsg", os.O_RDONLY | os.O_NONBLOCK)
    try:
        return _read_records(fd)
    finally:
        os.close(fd)


def _read_source() -> Tuple[str, List[str]]:
    override = os.environ.get("JUEYING_PROBE_KERNEL_LOG")
    if override:
        with open(override, encoding="utf-8", errors="replace") as fh:
            return override, fh.read().splitlines()
    try:
        return "/dev/kmsg", _read_kmsg()
    except OSError:
        pass
    out = subprocess.run(["dmesg", "--time-format", "iso"], capture_output=True, timeout=5, check=False)
    if out.returncode != 0:
        raise OSError(out.stderr.decode("utf-8", "replace").strip() or "dmesg failed")
    return "dmesg", out.stdout.decode("utf-8", "replace").splitlines()


def _events(lines: List[str], boot: Optional[float]) -> List[Event]:
    """XID events among kernel log lines, oldest first, without the age window."""
    events = []
    for line in lines:
        if "NVRM: Xid" not in line:
            continue
        when, message = parse_line(line, boot)
        match = _XID_RE.search(message)
        if not match:
            continue
        pid = match.group(3)
        events.append(record(
            XID_EVENT_KEYS,
            time_unix=None if when is None else round(when, 3),
            pci_bus_id=match.group(1),
            xid=int(match.group(2)),
            pid=int(pid) if pid and pid.isdigit() else None,
            text=(match.group(4) or "").strip()[:200],
        ))
    return events


def _section(source: str, events: List[Event], now: float) -> Obj:
    recent = [e for e in events if e["time_unix"] is None or e["time_unix"] >= now - WINDOW_S]
    truncated = len(recent) > MAX_EVENTS
    return record(KERNEL_LOG_KEYS, status="ok", source=source,
                  message="only the newest %d XID events kept" % MAX_EVENTS if truncated else None,
                  xid_events=recent[-MAX_EVENTS:])


def _unavailable(exc: BaseException) -> Obj:
    return record(KERNEL_LOG_KEYS, status="unavailable", source=None,
                  message="cannot read the kernel log: %s" % exc, xid_events=None)


def collect_xids(now: Optional[float] = None) -> Obj:
    """{status, source, message, xid_events: [{time_unix, pci_bus_id, xid, pid, text}]} for the last day."""
    now = time.time() if now is None else now
    try:
        source, lines = _read_source()
    except (OSError, subprocess.SubprocessError) as exc:
        return _unavailable(exc)
    return _section(source, _events(lines, _boot_time()), now)


class KernelLogTail:
    """XID events for repeated reads in one process (`status --watch`): /dev/kmsg stays open and each read
    parses only the records logged since the last one; a log file named by JUEYING_PROBE_KERNEL_LOG is
    parsed again only when it changed. dmesg, the fallback, is run at most every DMESG_EVERY_S."""

    DMESG_EVERY_S = 30.0

    def __init__(self) -> None:
        self._fd: Optional[int] = None
        self._events: List[Event] = []
        self._file_stamp: Optional[Tuple[int, int, int]] = None
        self._source: Optional[str] = None
        self._dmesg_at = 0.0
        self._boot = _boot_time()

    def collect(self, now: Optional[float] = None) -> Obj:
        now = time.time() if now is None else now
        try:
            self._update(time.monotonic())
        except (OSError, subprocess.SubprocessError) as exc:
            self.close()
            return _unavailable(exc)
        # Bounded memory however long the watch: drop what left the window, keep at most MAX_EVENTS + 1.
        self._events = [e for e in self._events if e["time_unix"] is None or e["time_unix"] >= now - WINDOW_S]
        del self._events[:-(MAX_EVENTS + 1)]
        return _section(self._source or "", self._events, now)

    def _update(self, mono: float) -> None:
        override = os.environ.get("JUEYING_PROBE_KERNEL_LOG")
        if override:
            st = os.stat(override)
            stamp = (st.st_ino, st.st_mtime_ns, st.st_size)
            if stamp != self._file_stamp:
                self._source, lines = _read_source()
                self._events = _events(lines, self._boot)
                self._file_stamp = stamp
            return
        if self._fd is None and self._source != "dmesg":
            try:
                self._fd = os.open("/dev/kmsg", os.O_RDONLY | os.O_NONBLOCK)
                self._source = "/dev/kmsg"
            except OSError:
                self._source = "dmesg"
        if self._fd is not None:
            self._events.extend(_events(_read_records(self._fd), self._boot))
            return
        if not self._events or mono - self._dmesg_at >= self.DMESG_EVERY_S:
            self._source, lines = _read_source()
            self._events = _events(lines, self._boot)
            self._dmesg_at = mono

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
        self._fd = None


def _run(argv: List[str]) -> Optional[str]:
    try:
        out = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, timeout=3, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.decode("utf-8", "replace") if out.returncode == 0 else None


def collect_time_sync() -> Obj:
    """{source, synchronized, offset_s}: chrony's measured offset when chronyd runs, else systemd's flag."""
    text = _run(["chronyc", "-n", "tracking"])
    if text:
        offset = None
        leap_ok = None
        for line in text.splitlines():
            key, _, value = line.partition(":")
            words = value.split()
            if key.strip() == "System time" and len(words) >= 3:
                try:
                    offset = float(words[0]) * (-1 if words[2] == "slow" else 1)
                except ValueError:
                    offset = None
            elif key.strip() == "Leap status":
                leap_ok = value.strip() == "Normal"
        return record(TIME_SYNC_KEYS, source="chrony", synchronized=leap_ok, offset_s=offset)
    text = _run(["timedatectl", "show", "-p", "NTPSynchronized", "--value"])
    if text:
        return record(TIME_SYNC_KEYS, source="timedatectl", synchronized=text.strip() == "yes", offset_s=None)
    return record(TIME_SYNC_KEYS, source=None, synchronized=None, offset_s=None)
