"""A simulated NVML: ``nvmlsim.c`` compiled into ``libnvidia-ml.so.1`` for the real pynvml.

There is no GPU on the test machines.  :func:`build_library` compiles ``nvmlsim.c`` against the real
``nvml.h`` from the ``nvidia-nvml-dev`` wheel; a process started with :func:`sim_env` then loads it
in place of the driver's library (pynvml does ``CDLL("libnvidia-ml.so.1")``), and every answer comes
from the state file named by ``JUEYING_NVMLSIM_STATE``.  The file is re-read on every
``nvmlInit*``, so a test rewrites it (:func:`write_state`) and the next init sees the new facts.

State file: UTF-8, one ``key = value`` per line, ``#`` starts a comment line, blank lines ignored,
whitespace around key and value trimmed, later lines win, unknown keys ignored.  Integers are
decimal or ``0x`` hex; a malformed number falls back to the key's default.  A missing variable or
file means the built-in profile: an idle 8x NVIDIA H100 80GB HBM3 SXM node
(:func:`default_state` lists every key with its default).

Global keys
    ``init`` (NVML return name without ``NVML_ERROR_``: what nvmlInit returns), ``driver_version``,
    ``cuda_driver_version``, ``nvml_version``, ``gpu_count`` (at most 64),
    ``fail.<nvmlSymbol> = <ERR>`` (that function fails on every call, system or device level).

Per-GPU keys ``gpu.<N>.<field>`` (N from 0)
    name, uuid, serial, pci_bus_id, vbios_version, brand, architecture,
    memory_total_bytes, memory_used_bytes, memory_reserved_bytes,
    utilization_gpu_pct, utilization_memory_pct,
    temperature_c, temperature_slowdown_c, temperature_shutdown_c, temperature_max_gpu_c,
    temperature_mem_max_c,
    power_mw, power_limit_mw, power_default_limit_mw, power_min_limit_mw, power_max_limit_mw,
    clock_sm_mhz, clock_mem_mhz, clock_video_mhz, clock_sm_max_mhz, clock_mem_max_mhz,
    clock_video_max_mhz, clocks_event_reasons, pstate,
    persistence_mode, compute_mode, ecc_mode_current, ecc_mode_pending,
    ecc_{corrected,uncorrected}_{volatile,aggregate},
    retired_pages_sbe, retired_pages_dbe, retired_pages_pending,
    remapped_rows_{corrected,uncorrected,pending,failure},
    pcie_gen_current, pcie_gen_max, pcie_width_current, pcie_width_max, pcie_replay_counter,
    nvlink_count, nvlink_down (comma list of link indices), mig_mode_current, mig_mode_pending,
    energy_mj (nvmlDeviceGetTotalEnergyConsumption, millijoules),
    processes (comma list of ``pid:used_bytes[:name]``), lost,
    ``fail.<nvmlSymbol> = <ERR>`` (that function fails on this GPU; wins over the global one).

Semantics worth knowing
    * ``lost = 1``: every call on that GPU, nvmlDeviceGetHandleByIndex_v2 included, returns
      NVML_ERROR_GPU_IS_LOST.
    * Memory: ``memory_used_bytes`` is what ``nvmlDeviceGetMemoryInfo`` (v1) reports as used,
      reserved memory included, and free = total - used in both versions.
      ``nvmlDeviceGetMemoryInfo_v2`` (what gpustat and nvitop show) splits that amount into
      ``reserved = min(memory_reserved_bytes, used)`` and ``used = used - reserved``.  Set
      ``memory_reserved_bytes = 0`` to make both versions report the same used amount.
    * ``nvmlDeviceGetTotalEccErrors`` answers NOT_SUPPORTED while ``ecc_mode_current = 0``.
    * NVLink: links >= NVML_NVLINK_MAX_LINKS are INVALID_ARGUMENT, links >= ``nvlink_count``
      NOT_SUPPORTED (``nvlink_count = 0`` is a PCIe-only board).
    * Only compute processes are simulated (the graphics list is empty); nvmlSystemGetProcessName
      answers the name from ``processes``, else the host's ``/proc/<pid>/comm``.
    * Fan speed is NOT_SUPPORTED (SXM), the driver model NOT_SUPPORTED (Linux).
    * ``build_library(dir, omit=["nvmlDeviceGetRemappedRows"])`` builds a library without those
      exported symbols, like an older driver: pynvml then raises NVMLError_FunctionNotFound.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
import subprocess
import tempfile
from collections.abc import Iterable, Mapping
from pathlib import Path

__all__ = [
    "LIBRARY_NAME",
    "MAX_GPUS",
    "SOURCE",
    "STATE_ENV",
    "build_library",
    "default_state",
    "find_nvml_header",
    "gpu_defaults",
    "sim_env",
    "write_state",
]

LIBRARY_NAME = "libnvidia-ml.so.1"
STATE_ENV = "JUEYING_NVMLSIM_STATE"
SOURCE = Path(__file__).resolve().parent / "nvmlsim.c"
MAX_GPUS = 64  # SIM_MAX_GPUS in nvmlsim.c

CFLAGS = (
    "-std=c99",
    "-shared",
    "-fPIC",
    "-O1",
    "-Wall",
    "-Wextra",
    "-Werror",
    "-DNVML_NO_UNVERSIONED_FUNC_DEFS",
)
_STAMP_NAME = ".nvmlsim-build.json"
_SYMBOL_RE = re.compile(r"^nvml[A-Za-z0-9_]+$")

# Mirrors k_global_defaults in nvmlsim.c (a unit test reads them back through pynvml).
GLOBAL_DEFAULTS: dict[str, str] = {
    "init": "SUCCESS",
    "driver_version": "550.127.05",
    "cuda_driver_version": "12040",
    "nvml_version": "12.550.127.05",
    "gpu_count": "8",
}

# Mirrors k_gpu_defaults in nvmlsim.c: the per-GPU defaults that do not depend on the index.
GPU_DEFAULTS: dict[str, str] = {
    "name": "NVIDIA H100 80GB HBM3",
    "vbios_version": "96.00.99.00.01",
    "brand": "14",  # NVML_BRAND_NVIDIA
    "architecture": "9",  # NVML_DEVICE_ARCH_HOPPER
    "memory_total_bytes": "85520809984",
    "memory_used_bytes": "587202560",  # 560 MiB, reserved included
    "memory_reserved_bytes": "583008256",  # 556 MiB of it
    "utilization_gpu_pct": "0",
    "utilization_memory_pct": "0",
    "temperature_slowdown_c": "87",
    "temperature_shutdown_c": "92",
    "temperature_max_gpu_c": "85",
    "temperature_mem_max_c": "95",
    "power_mw": "70000",
    "power_limit_mw": "700000",
    "power_default_limit_mw": "700000",
    "power_min_limit_mw": "200000",
    "power_max_limit_mw": "700000",
    "clock_sm_mhz": "345",
    "clock_mem_mhz": "2619",
    "clock_video_mhz": "765",
    "clock_sm_max_mhz": "1980",
    "clock_mem_max_mhz": "2619",
    "clock_video_max_mhz": "1755",
    "clocks_event_reasons": "0x1",  # nvmlClocksEventReasonGpuIdle
    "pstate": "0",
    "persistence_mode": "1",
    "compute_mode": "0",
    "ecc_mode_current": "1",
    "ecc_mode_pending": "1",
    "ecc_corrected_volatile": "0",
    "ecc_corrected_aggregate": "0",
    "ecc_uncorrected_volatile": "0",
    "ecc_uncorrected_aggregate": "0",
    "retired_pages_sbe": "0",
    "retired_pages_dbe": "0",
    "retired_pages_pending": "0",
    "remapped_rows_corrected": "0",
    "remapped_rows_uncorrected": "0",
    "remapped_rows_pending": "0",
    "remapped_rows_failure": "0",
    "pcie_gen_current": "5",
    "pcie_gen_max": "5",
    "pcie_width_current": "16",
    "pcie_width_max": "16",
    "pcie_replay_counter": "0",
    "nvlink_count": "18",
    "nvlink_down": "",
    "mig_mode_current": "0",
    "mig_mode_pending": "0",
    "energy_mj": "3600000000",  # 1 kWh since the driver was loaded
    "processes": "",
    "lost": "0",
}

# PCI bus numbers of the eight GPUs of an HGX H100 board (k_pci_buses in nvmlsim.c).
_PCI_BUSES = (0x18, 0x2A, 0x3A, 0x5D, 0x9A, 0xAB, 0xBA, 0xDB)


def gpu_defaults(index: int) -> dict[str, str]:
    """Every per-GPU field of GPU ``index`` with its default (keys without the ``gpu.N.`` prefix)."""
    if not 0 <= index < MAX_GPUS:
        raise ValueError(f"GPU index {index} out of range 0..{MAX_GPUS - 1}")
    fields = {
        "name": GPU_DEFAULTS["name"],
        # Same formulas as gpu_computed_default() in nvmlsim.c.
        "uuid": f"GPU-{0x8D1F6B20 + index * 0x1111:08x}-5c3e-{0x4A10 + index:04x}-9b7d-{0x2E4C6A8F0000 + index:012x}",
        "serial": str(1654823010017 + 101 * index),
        "pci_bus_id": f"{index // 8:08X}:{_PCI_BUSES[index % 8]:02X}:00.0",
        "temperature_c": str(30 + index),
    }
    fields.update((k, v) for k, v in GPU_DEFAULTS.items() if k not in fields)
    return fields


def default_state(gpu_count: int = 8) -> dict[str, str]:
    """Every key with its default value, as strings (the same values as the C defaults)."""
    if not 0 <= gpu_count <= MAX_GPUS:
        raise ValueError(f"gpu_count must be 0..{MAX_GPUS}, not {gpu_count}")
    state = dict(GLOBAL_DEFAULTS)
    state["gpu_count"] = str(gpu_count)
    for index in range(gpu_count):
        state.update((f"gpu.{index}.{field}", value) for field, value in gpu_defaults(index).items())
    return state


def find_nvml_header() -> Path:
    """The real ``nvml.h`` shipped in the ``nvidia-nvml-dev`` wheel (``nvidia/<cuXX>/include``)."""
    spec = importlib.util.find_spec("nvidia")
    locations = list(spec.submodule_search_locations or []) if spec is not None else []
    candidates = sorted(
        {path for location in locations for path in Path(location).glob("*/include/nvml.h")},
        key=lambda path: path.parent.parent.name,
        reverse=True,  # cu13 before cu12
    )
    if not candidates:
        raise RuntimeError(
            "nvml.h not found under nvidia/*/include in "
            f"{locations or 'any nvidia package'}: install the 'nvidia-nvml-dev' wheel "
            "(pip install nvidia-nvml-dev) to build the simulated NVML"
        )
    return candidates[0]


def _render(value: object) -> str:
    """A state-file value: bools and ints as numbers, lists comma-joined, tuples colon-joined."""
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, tuple):
        return ":".join(_render(item) for item in value)
    if isinstance(value, list | set | frozenset):
        items = sorted(value) if isinstance(value, set | frozenset) else value
        return ",".join(_render(item) for item in items)
    return str(value)


def write_state(path: Path, state: Mapping[str, object]) -> None:
    """Atomically replace the state file ``path`` with ``key = value`` lines for ``state``.

    Values: bools and ints as numbers; a list/set is comma-joined and a tuple colon-joined, so
    ``{"gpu.0.processes": [(1234, 2 << 30, "python")], "gpu.1.nvlink_down": [0, 5]}`` works.
    """
    path = Path(path)
    lines = ["# nvmlsim GPU state (tests/nvmlsim, see its module docstring)"]
    for key, value in state.items():
        text = _render(value)
        if not key or key != key.strip() or any(c in key for c in "=\n\r#"):
            raise ValueError(f"bad state key {key!r}")
        if "\n" in text or "\r" in text:
            raise ValueError(f"state value for {key!r} contains a line break")
        lines.append(f"{key} = {text}")
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write("\n".join(lines) + "\n")
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def sim_env(lib_dir: Path, state_path: Path) -> dict[str, str]:
    """Environment additions that make a child process load the simulated NVML with ``state_path``."""
    existing = os.environ.get("LD_LIBRARY_PATH", "")
    library_path = f"{lib_dir}:{existing}" if existing else str(lib_dir)
    return {"LD_LIBRARY_PATH": library_path, STATE_ENV: str(state_path)}


def build_library(out_dir: Path, omit: Iterable[str] = ()) -> Path:
    """Compile nvmlsim.c into ``out_dir/libnvidia-ml.so.1`` (creating out_dir); return out_dir.

    ``omit`` names NVML symbols to leave out (``-DNVMLSIM_OMIT_<symbol>``), like an older driver.
    The compile is skipped when the library is newer than the source and the header and was built
    with the same omit set and flags (recorded in a stamp file next to it).
    """
    out_dir = Path(out_dir)
    omitted = sorted(set(omit))
    for symbol in omitted:
        if not _SYMBOL_RE.match(symbol):
            raise ValueError(f"not an NVML symbol name: {symbol!r}")
    header = find_nvml_header()
    library = out_dir / LIBRARY_NAME
    stamp_path = out_dir / _STAMP_NAME
    stamp: dict[str, object] = {"omit": omitted, "header": str(header), "cflags": list(CFLAGS)}

    out_dir.mkdir(parents=True, exist_ok=True)
    if _up_to_date(library, stamp_path, stamp, (SOURCE, header)):
        return out_dir

    compiler = shutil.which(os.environ.get("CC", "gcc"))
    if compiler is None:
        raise RuntimeError("no C compiler (gcc) on PATH: cannot build the simulated NVML")
    fd, tmp = tempfile.mkstemp(prefix=f".{LIBRARY_NAME}.", suffix=".tmp", dir=out_dir)
    os.close(fd)
    command = [
        compiler,
        *CFLAGS,
        *(f"-DNVMLSIM_OMIT_{symbol}" for symbol in omitted),
        f"-I{header.parent}",
        f"-Wl,-soname,{LIBRARY_NAME}",
        "-o",
        tmp,
        str(SOURCE),
        "-pthread",
    ]
    try:
        result = subprocess.run(command, capture_output=True, text=True, check=False)
        if result.returncode != 0:
            raise RuntimeError(f"building the simulated NVML failed: {' '.join(command)}\n{result.stderr}")
        os.replace(tmp, library)
    finally:
        Path(tmp).unlink(missing_ok=True)
    stamp_tmp = stamp_path.with_name(f"{_STAMP_NAME}.{os.getpid()}.tmp")
    stamp_tmp.write_text(json.dumps(stamp, indent=1) + "\n", encoding="utf-8")
    os.replace(stamp_tmp, stamp_path)
    return out_dir


def _up_to_date(library: Path, stamp_path: Path, stamp: dict[str, object], inputs: Iterable[Path]) -> bool:
    try:
        built = library.stat().st_mtime
        recorded = json.loads(stamp_path.read_text(encoding="utf-8"))
        return recorded == stamp and all(built > source.stat().st_mtime for source in inputs)
    except (OSError, ValueError):
        return False
