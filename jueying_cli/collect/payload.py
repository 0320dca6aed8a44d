"""What the controller sends a node to collect its facts: the probe's own source and a copy of pynvml
(used only when the node has none) on stdin, and a tiny bootstrap run with `python3 -c` that imports them
from memory, so nothing is written on the node and the probe always matches the controller's version.
A node needs only python3 (3.8+)."""

from __future__ import annotations

import json
import shlex
import zlib
from functools import lru_cache
from pathlib import Path

from jueying_cli.transport.base import Command

DEFAULT_PROBE_TIMEOUT_S = 30.0
_PROBE_MODULES = (
    "jueying_cli",
    "jueying_cli.facts",
    "jueying_cli.facts.schema",
    "jueying_cli.probe",
    "jueying_cli.probe.host",
    "jueying_cli.probe.inject",
    "jueying_cli.probe.kernel",
    "jueying_cli.probe.nvml",
    "jueying_cli.probe.nvml_read",
    "jueying_cli.probe.serve",
    "jueying_cli.probe.__main__",
)
# Exit code the bootstrap uses when the node cannot run the probe at all.
NO_PYTHON_RC = 127

# Python 3.8-compatible. Reads the payload from stdin: a JSON header line, then zlib blobs; reads exactly
# that much (os.read, no buffering), so in serve mode the requests that follow stay for the probe.
_BOOTSTRAP = r"""
import os, sys, json, zlib, importlib.abc, importlib.util
if sys.version_info < (3, 8):
    sys.stderr.write("jueying: python3 on this node is %d.%d; the probe needs 3.8 or newer\n" % sys.version_info[:2])
    sys.exit(127)
def read_until(data, done):
    while not done(data):
        chunk = os.read(0, 1 << 16)
        if not chunk:
            sys.stderr.write("jueying: probe payload cut short\n")
            sys.exit(3)
        data += chunk
    return data
data = read_until(b"", lambda d: b"\n" in d)
head, _, rest = data.partition(b"\n")
header = json.loads(head.decode())
total = sum(size for _, size in header["sizes"])
rest = read_until(rest, lambda d: len(d) >= total)
rest, pending = rest[:total], rest[total:]
blobs = {}
pos = 0
for name, size in header["sizes"]:
    blobs[name] = rest[pos:pos + size]
    pos += size
try:
    import pynvml
except ImportError:
    pass
else:
    blobs.pop("pynvml", None)
class Finder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    def find_spec(self, name, path=None, target=None):
        if name in blobs:
            return importlib.util.spec_from_loader(name, self, is_package=name in header["packages"])
        return None
    def create_module(self, spec):
        return None
    def exec_module(self, module):
        name = module.__name__
        code = compile(zlib.decompress(blobs[name]).decode("utf-8"), "<jueying:%s>" % name, "exec")
        if name in header["packages"]:
            module.__path__ = []
        exec(code, module.__dict__)
sys.meta_path.insert(0, Finder())
for name in list(sys.modules):
    if name == "jueying_cli" or name.startswith("jueying_cli."):
        del sys.modules[name]
if header.get("serve"):
    from jueying_cli.probe.serve import serve
    sys.exit(serve(sys.stdout.buffer, gpus="--no-gpus" not in header["args"], idle_s=header["idle_s"],
                   pending=pending))
from jueying_cli.probe.__main__ import main
sys.exit(main(["--compact"] + header["args"]))
"""


@lru_cache(maxsize=4)
def probe_payload(with_gpus: bool = True, serve_idle_s: float | None = None) -> bytes:
    """The stdin payload: header line + zlib-compressed sources (built once per run). With `serve_idle_s` the
    probe stays up and answers requests (see probe/serve.py), leaving after that many idle seconds."""
    import importlib.util

    sources: list[tuple[str, bytes]] = []
    for name in _PROBE_MODULES:
        spec = importlib.util.find_spec(name)
        if spec is None or spec.origin is None:
            raise RuntimeError(f"cannot find {name} to ship")
        sources.append((name, Path(spec.origin).read_bytes()))
    nvml_spec = importlib.util.find_spec("pynvml")
    if nvml_spec is not None and nvml_spec.origin:
        sources.append(("pynvml", Path(nvml_spec.origin).read_bytes()))
    blobs = [(name, zlib.compress(src, 6)) for name, src in sources]
    header = {
        "sizes": [[name, len(blob)] for name, blob in blobs],
        "packages": ["jueying_cli", "jueying_cli.facts", "jueying_cli.probe"],
        "args": [] if with_gpus else ["--no-gpus"],
        "serve": serve_idle_s is not None,
        "idle_s": serve_idle_s,
    }
    return json.dumps(header).encode() + b"\n" + b"".join(blob for _, blob in blobs)


def probe_script() -> str:
    """The shell script that starts the probe from the payload on stdin; fixed text, nothing spliced in."""
    return (
        "command -v python3 >/dev/null 2>&1 || "
        f"{{ echo 'jueying: python3 not found on PATH' >&2; exit {NO_PYTHON_RC}; }}; "
        f"exec python3 -c {shlex.quote(_BOOTSTRAP)}"
    )


def probe_command(timeout_s: float = DEFAULT_PROBE_TIMEOUT_S, with_gpus: bool = True) -> Command:
    return Command(script=probe_script(), timeout_s=timeout_s, stdin=probe_payload(with_gpus))
