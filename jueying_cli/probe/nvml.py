"""GPU facts through NVML: the only module that imports pynvml (opening, closing, re-initialising it, and
reading every GPU with nvml_read.py).

Runs on the node, possibly under Python 3.8 without jueying installed, so it uses only the
standard library and pynvml. Every NVML read may fail on its own: the value becomes None and an
entry lands in the errors list, so one unsupported field or one lost GPU never costs the rest.
"""

from __future__ import annotations

from types import ModuleType
from typing import Dict, List, Optional, Tuple

from jueying_cli.facts.schema import (
    GPU_KEYS,
    NVML_KEYS,
    record,
)
from jueying_cli.probe.nvml_read import (
    GpuLost,
    Reader,
    StaticCache,
    cuda_version,
    empty_gpu,
    error_message,
    error_name,
    read_gpu,
    text,
)

# One JSON object of the document (a GPU, the nvml section, an errors entry).
Obj = Dict[str, object]
Errors = List[Obj]

_INIT_STATUS = {
    "LIBRARY_NOT_FOUND": "library_not_found",
    "DRIVER_NOT_LOADED": "driver_not_loaded",
    "NO_PERMISSION": "no_permission",
    "FUNCTION_NOT_FOUND": "library_mismatch",
}


def _nvml_section(status: str, message: Optional[str] = None) -> Obj:
    """The nvml section of a library that could not be used: why, and nothing else."""
    return record(NVML_KEYS, status=status, message=message, driver_version=None, cuda_driver_version=None,
                  nvml_version=None, gpu_count=None)


def skipped_nvml() -> Obj:
    """The nvml section of a document collected without GPUs (--no-gpus)."""
    return _nvml_section("skipped", "GPU collection not requested")


def _open() -> Tuple[Optional[ModuleType], Obj]:
    """Import pynvml and initialise NVML: (the module, None) or (None, the nvml section saying why not)."""
    try:
        import pynvml
    except ImportError as exc:
        return None, _nvml_section("pynvml_missing", "python module pynvml (package nvidia-ml-py) not found: %s" % exc)
    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError as exc:
        name = error_name(exc)
        message = "nvmlInit failed: %s (%s)" % (error_message(exc), name)
        if name == "LIBRARY_NOT_FOUND":
            message = "libnvidia-ml.so.1 not found (no NVIDIA driver installed?)"
        return None, _nvml_section(_INIT_STATUS.get(name, "error"), message)
    return pynvml, {}


def _close(pynvml: ModuleType) -> None:
    try:
        pynvml.nvmlShutdown()
    except pynvml.NVMLError:
        pass


def _read_all(pynvml: ModuleType, errors: Errors, cache: Optional[StaticCache] = None) -> Tuple[Obj, List[Obj]]:
    """(nvml section, gpu list) from an initialised NVML."""
    r = Reader(pynvml, errors)
    driver = text(r.call(None, "driver_version", pynvml.nvmlSystemGetDriverVersion))
    cuda = cuda_version(r.call(None, "cuda_driver_version", pynvml.nvmlSystemGetCudaDriverVersion_v2))
    version = text(r.call(None, "nvml_version", pynvml.nvmlSystemGetNVMLVersion))
    count: Optional[int] = r.call(None, "gpu_count", pynvml.nvmlDeviceGetCount)
    nvml = record(NVML_KEYS, status="ok", message=None, driver_version=driver, cuda_driver_version=cuda,
                  nvml_version=version, gpu_count=count)
    if cache is not None:
        cache.check_count(count)
    gpus = []
    for index in range(count or 0):
        gpu = empty_gpu(index)
        try:
            handle = r.call(index, "handle", pynvml.nvmlDeviceGetHandleByIndex, index)
            if handle is not None:
                read_gpu(r, index, handle, gpu, cache)
        except GpuLost:
            gpu["lost"] = True
        gpus.append(record(GPU_KEYS, **gpu))  # a key the schema does not have is a bug here: raise
    return nvml, gpus


def collect_gpus(errors: Errors) -> Tuple[Obj, List[Obj]]:
    """Return (nvml section, gpu list). Never raises for NVML trouble: it is reported in the nvml status."""
    pynvml, failed = _open()
    if pynvml is None:
        return failed, []
    try:
        return _read_all(pynvml, errors)
    finally:
        _close(pynvml)


# Errors after which a kept NVML session is not trusted for the next read: initialise again.
_REINIT_ERRORS = ("UNINITIALIZED", "DRIVER_NOT_LOADED", "GPU_IS_LOST", "RESET_REQUIRED",
                  "LIB_RM_VERSION_MISMATCH", "UNKNOWN")


class NvmlSession:
    """NVML initialised once for many reads (`status --watch`): nvmlInit costs more than a whole read of
    eight GPUs, and the static fields (schema.GPU_STATIC_KEYS, PCIE_STATIC_KEYS) are read once per GPU. After a
    lost GPU, a driver error or a change in GPU count it initialises again and forgets them, so a GPU reset or
    driver reload shows up on the next read; a failed init is retried on every read."""

    def __init__(self) -> None:
        self._pynvml: Optional[ModuleType] = None
        self._count: Optional[int] = None
        self._static = StaticCache()

    def collect(self, errors: Errors) -> Tuple[Obj, List[Obj]]:
        if self._pynvml is None:
            self._pynvml, failed = _open()
            if self._pynvml is None:
                return failed, []
        mark = len(errors)
        nvml, gpus = _read_all(self._pynvml, errors, self._static)
        count = self._static.count
        troubled = any(e.get("error") in _REINIT_ERRORS for e in errors[mark:]) or any(g["lost"] for g in gpus)
        if troubled or (self._count is not None and count != self._count):
            self.close()
        else:
            self._count = count
        return nvml, gpus

    def close(self) -> None:
        if self._pynvml is not None:
            _close(self._pynvml)
        self._pynvml = None
        self._count = None
        self._static = StaticCache()
