"""A page opened in real headless Chromium (Debian's `chromium`), for the self-contained HTML reports (`audit`,
`capacity`): the DOM it built, and every URL it tried to load, read from its NetLog.

Chromium runs in a network namespace of its own with only loopback up (`unshare --net`), so whatever it tries
(its own update checks included) leaves no machine, and the test stops it: `--dump-dom` and `--screenshot` make
it exit once the page is loaded.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from urllib.parse import urlsplit

import pytest

CHROMIUM_FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--no-first-run")
# Chromium's own background requests (component updates, time, spell-check dictionaries): never the page's.
CHROMIUM_OWN = ("google.com", "googleapis.com", "gvt1.com", "gstatic.com")
# A URL a page must never load: the detector is checked against a page that does load it.
CANARY = "http://127.0.0.1:9/c.png"


def open_in_chromium(page: Path, tmp_path: Path, *extra: str) -> tuple[str, set[str]]:
    """(the DOM Chromium built from `page` (with --dump-dom among `extra`), every URL it tried to load)."""
    chromium = shutil.which("chromium")
    if chromium is None:
        pytest.skip("Debian's chromium is not installed (scripts/test installs it)")
    netlog = tmp_path / f"netlog-{page.stem}.json"
    profile = tmp_path / f"chromium-profile-{page.stem}"
    argv = ["unshare", "--net", "sh", "-c", 'ip link set lo up && exec "$@"', "sh", chromium, *CHROMIUM_FLAGS,
            f"--user-data-dir={profile}", f"--log-net-log={netlog}", *extra, page.resolve().as_uri()]
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr[-2000:]
    events = json.loads(netlog.read_text())["events"]
    urls = {e["params"]["url"] for e in events if isinstance(e.get("params"), dict) and "url" in e["params"]}
    return proc.stdout, urls


def page_requests(urls: set[str]) -> set[str]:
    """The URLs the page itself asked for (Chromium's own background requests left out)."""
    return {u for u in urls if not any((urlsplit(u).hostname or "").endswith(host) for host in CHROMIUM_OWN)}


def assert_detector_works(tmp_path: Path) -> None:
    """A page that does load something is caught: the NetLog check can fail."""
    control = tmp_path / "control.html"
    control.write_text(f'<!DOCTYPE html><html><body><img src="{CANARY}"></body></html>')
    _, urls = open_in_chromium(control, tmp_path, "--dump-dom")
    assert CANARY in page_requests(urls)
