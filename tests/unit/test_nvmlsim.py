"""The simulated NVML (tests/nvmlsim) answers the real pynvml, gpustat and nvitop from its state file.

pynvml keeps the loaded library for the life of a process, so every check runs pynvml in a child
``python3`` started with :func:`tests.nvmlsim.sim_env`.  The library is compiled once per session.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from tests.nvmlsim import (  # noqa: E402
    LIBRARY_NAME,
    build_library,
    default_state,
    find_nvml_header,
    sim_env,
    write_state,
)

pytestmark = pytest.mark.harness  # the test harness's own tests (tests/conftest.py reports them apart)

pytest.importorskip("pynvml")

# Reads every state key back through pynvml, in the state file's own spelling, one GPU at a time.
# Errors come back as the pynvml exception class name, e.g. {"error": "NVMLError_GpuIsLost"}.
READBACK = textwrap.dedent(
    """
    import json, sys
    import pynvml as N

    def err(e):
        return {"error": type(e).__name__, "text": str(e)}

    def gpu(h):
        mem1 = N.nvmlDeviceGetMemoryInfo(h)
        mem2 = N.nvmlDeviceGetMemoryInfo(h, version=N.nvmlMemory_v2)
        assert mem1.total == mem1.used + mem1.free, mem1
        assert mem2.total == mem2.reserved + mem2.used + mem2.free, mem2
        util = N.nvmlDeviceGetUtilizationRates(h)
        temp = N.nvmlDeviceGetTemperature(h, N.NVML_TEMPERATURE_GPU)
        assert N.nvmlDeviceGetTemperatureV(h, N.NVML_TEMPERATURE_GPU) == temp
        reasons = N.nvmlDeviceGetCurrentClocksEventReasons(h)
        assert N.nvmlDeviceGetCurrentClocksThrottleReasons(h) == reasons
        limit = N.nvmlDeviceGetEnforcedPowerLimit(h)
        assert N.nvmlDeviceGetPowerManagementLimit(h) == limit
        lo, hi = N.nvmlDeviceGetPowerManagementLimitConstraints(h)
        ecc_cur, ecc_pend = N.nvmlDeviceGetEccMode(h)
        mig_cur, mig_pend = N.nvmlDeviceGetMigMode(h)
        corr, unc, pend, fail = N.nvmlDeviceGetRemappedRows(h)
        links = {}
        for link in range(N.NVML_NVLINK_MAX_LINKS):
            try:
                links[link] = N.nvmlDeviceGetNvLinkState(h, link)
            except N.NVMLError_NotSupported:
                pass
        procs = []
        for p in N.nvmlDeviceGetComputeRunningProcesses(h):
            try:
                name = N.nvmlSystemGetProcessName(p.pid)
            except N.NVMLError_NotFound:
                name = ""
            procs.append(f"{p.pid}:{p.usedGpuMemory}" + (f":{name}" if name else ""))
        assert [(p.pid, p.usedGpuMemory) for p in N.nvmlDeviceGetComputeRunningProcesses_v2(h)] == [
            (int(s.split(":")[0]), int(s.split(":")[1])) for s in procs]
        sbe = N.nvmlDeviceGetRetiredPages_v2(h, N.NVML_PAGE_RETIREMENT_CAUSE_MULTIPLE_SINGLE_BIT_ECC_ERRORS)
        dbe = N.nvmlDeviceGetRetiredPages(h, N.NVML_PAGE_RETIREMENT_CAUSE_DOUBLE_BIT_ECC_ERROR)
        assert len({p["address"] for p in sbe} | set(dbe)) == len(sbe) + len(dbe)
        ecc = {}
        if ecc_cur:
            for kind, etype in (("corrected", 0), ("uncorrected", 1)):
                for counter, ctype in (("volatile", 0), ("aggregate", 1)):
                    ecc[f"ecc_{kind}_{counter}"] = N.nvmlDeviceGetTotalEccErrors(h, etype, ctype)
        return {
            "name": N.nvmlDeviceGetName(h),
            "uuid": N.nvmlDeviceGetUUID(h),
            "serial": N.nvmlDeviceGetSerial(h),
            "pci_bus_id": N.nvmlDeviceGetPciInfo(h).busId,
            "vbios_version": N.nvmlDeviceGetVbiosVersion(h),
            "brand": N.nvmlDeviceGetBrand(h),
            "architecture": N.nvmlDeviceGetArchitecture(h),
            "memory_total_bytes": mem1.total,
            "memory_used_bytes": mem1.used,
            "memory_reserved_bytes": mem2.reserved,
            "utilization_gpu_pct": util.gpu,
            "utilization_memory_pct": util.memory,
            "temperature_c": temp,
            "temperature_slowdown_c": N.nvmlDeviceGetTemperatureThreshold(h, N.NVML_TEMPERATURE_THRESHOLD_SLOWDOWN),
            "temperature_shutdown_c": N.nvmlDeviceGetTemperatureThreshold(h, N.NVML_TEMPERATURE_THRESHOLD_SHUTDOWN),
            "temperature_max_gpu_c": N.nvmlDeviceGetTemperatureThreshold(h, N.NVML_TEMPERATURE_THRESHOLD_GPU_MAX),
            "temperature_mem_max_c": N.nvmlDeviceGetTemperatureThreshold(h, N.NVML_TEMPERATURE_THRESHOLD_MEM_MAX),
            "power_mw": N.nvmlDeviceGetPowerUsage(h),
            "power_limit_mw": limit,
            "power_default_limit_mw": N.nvmlDeviceGetPowerManagementDefaultLimit(h),
            "power_min_limit_mw": lo,
            "power_max_limit_mw": hi,
            "clock_sm_mhz": N.nvmlDeviceGetClockInfo(h, N.NVML_CLOCK_SM),
            "clock_mem_mhz": N.nvmlDeviceGetClockInfo(h, N.NVML_CLOCK_MEM),
            "clock_video_mhz": N.nvmlDeviceGetClockInfo(h, N.NVML_CLOCK_VIDEO),
            "clock_sm_max_mhz": N.nvmlDeviceGetMaxClockInfo(h, N.NVML_CLOCK_SM),
            "clock_mem_max_mhz": N.nvmlDeviceGetMaxClockInfo(h, N.NVML_CLOCK_MEM),
            "clock_video_max_mhz": N.nvmlDeviceGetMaxClockInfo(h, N.NVML_CLOCK_VIDEO),
            "clocks_event_reasons": reasons,
            "pstate": N.nvmlDeviceGetPerformanceState(h),
            "persistence_mode": N.nvmlDeviceGetPersistenceMode(h),
            "compute_mode": N.nvmlDeviceGetComputeMode(h),
            "ecc_mode_current": ecc_cur,
            "ecc_mode_pending": ecc_pend,
            **ecc,
            "retired_pages_sbe": len(sbe),
            "retired_pages_dbe": len(dbe),
            "retired_pages_pending": N.nvmlDeviceGetRetiredPagesPendingStatus(h),
            "remapped_rows_corrected": corr,
            "remapped_rows_uncorrected": unc,
            "remapped_rows_pending": pend,
            "remapped_rows_failure": fail,
            "pcie_gen_current": N.nvmlDeviceGetCurrPcieLinkGeneration(h),
            "pcie_gen_max": N.nvmlDeviceGetMaxPcieLinkGeneration(h),
            "pcie_width_current": N.nvmlDeviceGetCurrPcieLinkWidth(h),
            "pcie_width_max": N.nvmlDeviceGetMaxPcieLinkWidth(h),
            "pcie_replay_counter": N.nvmlDeviceGetPcieReplayCounter(h),
            "nvlink_count": len(links),
            "nvlink_down": ",".join(str(k) for k, up in sorted(links.items()) if not up),
            "mig_mode_current": mig_cur,
            "mig_mode_pending": mig_pend,
            "energy_mj": N.nvmlDeviceGetTotalEnergyConsumption(h),
            "processes": ",".join(procs),
            "lost": 0,
        }

    try:
        N.nvmlInit()
    except N.NVMLError as e:
        print(json.dumps({"init": err(e)}))
        sys.exit(0)
    out = {
        "init": "SUCCESS",
        "driver_version": N.nvmlSystemGetDriverVersion(),
        "cuda_driver_version": N.nvmlSystemGetCudaDriverVersion_v2(),
        "nvml_version": N.nvmlSystemGetNVMLVersion(),
        "gpu_count": N.nvmlDeviceGetCount(),
    }
    for i in range(out["gpu_count"]):
        try:
            h = N.nvmlDeviceGetHandleByIndex(i)
            assert N.nvmlDeviceGetIndex(h) == i
            fields = gpu(h)
        except N.NVMLError as e:
            fields = err(e)
        for key, value in fields.items():
            out[f"gpu.{i}.{key}"] = value
    N.nvmlShutdown()
    print(json.dumps(out))
    """
)


@pytest.fixture(scope="session")
def lib_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    try:
        find_nvml_header()
    except RuntimeError as e:
        pytest.skip(str(e))
    return build_library(tmp_path_factory.mktemp("nvmlsim-lib"))


@pytest.fixture
def state_path(tmp_path: Path) -> Path:
    return tmp_path / "gpus.state"


def run_python(lib: Path, state: Path, code: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, **sim_env(lib, state)}
    return subprocess.run(
        [sys.executable, "-c", code, *args], env=env, capture_output=True, text=True, timeout=60, check=False
    )


def pynvml_json(lib: Path, state: Path, code: str, *args: str) -> Any:
    """Run ``code`` (which prints one JSON document) under the simulated NVML."""
    result = run_python(lib, state, code, *args)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def readback(lib: Path, state: Path) -> dict[str, str]:
    """Every key pynvml can see, as state-file strings."""
    return {key: str(value) for key, value in pynvml_json(lib, state, READBACK).items()}


def normalised(state: dict[str, str]) -> dict[str, str]:
    """Numbers compared by value (``0x1`` == ``1``), everything else as written."""
    out = {}
    for key, value in state.items():
        try:
            out[key] = str(int(value, 0))
        except ValueError:
            out[key] = value
    return out


# ---- the default profile


def test_default_profile_reads_back_field_by_field(lib_dir: Path, state_path: Path) -> None:
    assert not state_path.exists()  # no file: the built-in 8x H100 profile
    assert normalised(readback(lib_dir, state_path)) == normalised(default_state())


def test_default_profile_without_state_variable(lib_dir: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "JUEYING_NVMLSIM_STATE"}
    env["LD_LIBRARY_PATH"] = str(lib_dir)
    code = "import pynvml as N; N.nvmlInit(); print(N.nvmlDeviceGetCount(), N.nvmlSystemGetDriverVersion())"
    result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert result.stdout.split() == ["8", "550.127.05"]


def test_default_state_has_distinct_identities() -> None:
    state = default_state()
    for field in ("uuid", "serial", "pci_bus_id"):
        values = {state[f"gpu.{i}.{field}"] for i in range(8)}
        assert len(values) == 8, field
    assert all(len(state[f"gpu.{i}.serial"]) == 13 for i in range(8))
    assert [state[f"gpu.{i}.pci_bus_id"] for i in (0, 7)] == ["00000000:18:00.0", "00000000:DB:00.0"]
    assert "gpu.3.name" not in default_state(3)
    assert default_state(3)["gpu_count"] == "3"


# ---- editing the state file


def test_edited_fields_change_what_pynvml_reads(lib_dir: Path, state_path: Path) -> None:
    changes: dict[str, object] = {
        "driver_version": "535.183.01",
        "cuda_driver_version": 12020,
        "nvml_version": "12.535.183.01",
        "gpu_count": 4,
        "gpu.0.name": "NVIDIA A100-SXM4-80GB",
        "gpu.0.uuid": "GPU-00000000-1111-2222-3333-444444444444",
        "gpu.0.pci_bus_id": "00000001:C1:00.0",
        "gpu.0.architecture": 7,
        "gpu.1.temperature_c": 91,
        "gpu.1.clocks_event_reasons": 0x20 | 0x40,  # SW + HW thermal slowdown
        "gpu.1.pstate": 2,
        "gpu.1.power_mw": 699000,
        "gpu.1.power_limit_mw": 400000,
        "gpu.1.utilization_gpu_pct": 100,
        "gpu.1.memory_used_bytes": 79 << 30,
        "gpu.1.memory_reserved_bytes": 0,
        # 4194305 is above the kernel's PID_MAX_LIMIT: never a live process whose name would be read back.
        "gpu.1.processes": [(4242, 40 << 30, "/usr/bin/python3 train.py"), (4194305, 1 << 30)],
        "gpu.2.ecc_uncorrected_volatile": 2,
        "gpu.2.ecc_corrected_aggregate": 1234,
        "gpu.2.retired_pages_sbe": 3,
        "gpu.2.retired_pages_dbe": 1,
        "gpu.2.retired_pages_pending": True,
        "gpu.2.remapped_rows_uncorrected": 1,
        "gpu.2.remapped_rows_pending": True,
        "gpu.2.remapped_rows_failure": True,
        "gpu.3.pcie_gen_current": 3,
        "gpu.3.pcie_width_current": 8,
        "gpu.3.pcie_replay_counter": 77,
        "gpu.3.nvlink_down": [2, 17],
        "gpu.3.mig_mode_pending": 1,
        "gpu.3.persistence_mode": False,
        "gpu.3.serial": "1650000000001",
        "gpu.3.vbios_version": "96.00.61.00.01",
    }
    write_state(state_path, changes)
    expected = default_state(4)
    expected.update({key: str(int(v) if isinstance(v, bool) else v) for key, v in changes.items()})
    expected["gpu.1.processes"] = f"4242:{40 << 30}:/usr/bin/python3 train.py,4194305:{1 << 30}"
    expected["gpu.3.nvlink_down"] = "2,17"
    assert normalised(readback(lib_dir, state_path)) == normalised(expected)


def test_ecc_off_hides_counters_and_pcie_only_gpu_has_no_links(lib_dir: Path, state_path: Path) -> None:
    write_state(state_path, {"gpu.0.ecc_mode_current": 0, "gpu.0.nvlink_count": 0})
    code = textwrap.dedent(
        """
        import json, pynvml as N
        N.nvmlInit()
        h = N.nvmlDeviceGetHandleByIndex(0)
        out = {}
        for name, call in (("ecc", lambda: N.nvmlDeviceGetTotalEccErrors(h, 1, 0)),
                           ("link0", lambda: N.nvmlDeviceGetNvLinkState(h, 0)),
                           ("link99", lambda: N.nvmlDeviceGetNvLinkState(h, 99)),
                           ("fan", lambda: N.nvmlDeviceGetFanSpeed(h))):
            try:
                out[name] = call()
            except N.NVMLError as e:
                out[name] = type(e).__name__
        print(json.dumps(out))
        """
    )
    assert pynvml_json(lib_dir, state_path, code) == {
        "ecc": "NVMLError_NotSupported",
        "link0": "NVMLError_NotSupported",
        "link99": "NVMLError_InvalidArgument",
        "fan": "NVMLError_NotSupported",
    }


def test_state_file_syntax(lib_dir: Path, state_path: Path) -> None:
    state_path.write_text(
        "# comment line\n"
        "\n"
        "   gpu.0.temperature_c   =   45   \n"
        "gpu.0.temperature_c = 50\n"  # later lines win
        "  # indented comment = 1\n"
        "gpu.0.clocks_event_reasons = 0x8\n"
        "gpu.0.power_mw = not-a-number\n"  # malformed: default
        "no equals sign here\n"
        "some.unknown.key = 1\n"
        "gpu.0.name = Name = with equals # and hash\n",
        encoding="utf-8",
    )
    values = readback(lib_dir, state_path)
    assert values["gpu.0.temperature_c"] == "50"
    assert values["gpu.0.clocks_event_reasons"] == "8"
    assert values["gpu.0.power_mw"] == "70000"
    assert values["gpu.0.name"] == "Name = with equals # and hash"
    assert values["gpu.1.temperature_c"] == "31"


def test_state_file_is_reread_on_every_init(lib_dir: Path, state_path: Path) -> None:
    write_state(state_path, {"gpu.0.temperature_c": 40})
    code = textwrap.dedent(
        """
        import json, sys, pynvml as N
        sys.path.insert(0, sys.argv[2])
        from tests.nvmlsim import write_state
        temps = []
        for temp in (None, 77):
            if temp is not None:
                write_state(sys.argv[1], {"gpu.0.temperature_c": temp, "gpu_count": 2})
            N.nvmlInit()
            temps.append(N.nvmlDeviceGetTemperature(N.nvmlDeviceGetHandleByIndex(0), 0))
            temps.append(N.nvmlDeviceGetCount())
            N.nvmlShutdown()
        try:
            N.nvmlDeviceGetCount()  # after the last shutdown
        except N.NVMLError as e:
            temps.append(type(e).__name__)
        print(json.dumps(temps))
        """
    )
    assert pynvml_json(lib_dir, state_path, code, str(state_path), str(REPO)) == [
        40,
        8,
        77,
        2,
        "NVMLError_Uninitialized",
    ]


# ---- faults


def test_lost_gpu_fails_every_call_while_others_read(lib_dir: Path, state_path: Path) -> None:
    write_state(state_path, {"gpu.2.lost": 1})
    values = readback(lib_dir, state_path)
    assert values["gpu.2.error"] == "NVMLError_GpuIsLost"
    assert values["gpu.2.text"] == "GPU is lost"
    assert values["gpu_count"] == "8"
    for i in (0, 1, 3, 7):
        assert values[f"gpu.{i}.name"] == "NVIDIA H100 80GB HBM3"
    # A handle taken before the GPU fell off the bus fails too.
    code = textwrap.dedent(
        """
        import json, sys, pynvml as N
        sys.path.insert(0, sys.argv[2])
        from tests.nvmlsim import write_state
        write_state(sys.argv[1], {})
        N.nvmlInit()
        h = N.nvmlDeviceGetHandleByIndex(2)
        N.nvmlShutdown()
        write_state(sys.argv[1], {"gpu.2.lost": 1})
        N.nvmlInit()
        try:
            N.nvmlDeviceGetTemperature(h, 0)
        except N.NVMLError as e:
            print(json.dumps(type(e).__name__))
        """
    )
    assert pynvml_json(lib_dir, state_path, code, str(state_path), str(REPO)) == "NVMLError_GpuIsLost"


def test_injected_failures(lib_dir: Path, state_path: Path) -> None:
    write_state(
        state_path,
        {
            "fail.nvmlSystemGetCudaDriverVersion_v2": "NOT_SUPPORTED",
            "gpu.3.fail.nvmlDeviceGetPowerUsage": "NOT_SUPPORTED",
            "gpu.2.fail.nvmlDeviceGetRemappedRows": "GPU_IS_LOST",
            "fail.nvmlDeviceGetSerial": "NO_PERMISSION",
            "gpu.5.fail.nvmlDeviceGetSerial": "SUCCESS",  # per-GPU entry wins over the global one
            "gpu.6.fail.nvmlDeviceGetHandleByIndex_v2": "UNKNOWN",
        },
    )
    code = textwrap.dedent(
        """
        import json, pynvml as N
        N.nvmlInit()
        def q(fn, *args):
            try:
                return fn(*args)
            except N.NVMLError as e:
                return type(e).__name__
        h = [q(N.nvmlDeviceGetHandleByIndex, i) for i in range(8)]
        print(json.dumps({
            "cuda": q(N.nvmlSystemGetCudaDriverVersion_v2),
            "cuda_v1": q(N.nvmlSystemGetCudaDriverVersion),
            "power": [q(N.nvmlDeviceGetPowerUsage, h[i]) for i in (0, 3)],
            "rows": [q(N.nvmlDeviceGetRemappedRows, h[i]) for i in (1, 2)],
            "serial": [q(N.nvmlDeviceGetSerial, h[i]) for i in (0, 5)],
            "handle6": h[6],
        }))
        """
    )
    assert pynvml_json(lib_dir, state_path, code) == {
        "cuda": "NVMLError_NotSupported",
        "cuda_v1": 12040,  # only the named symbol fails
        "power": [70000, "NVMLError_NotSupported"],
        "rows": [[0, 0, 0, 0], "NVMLError_GpuIsLost"],
        "serial": ["NVMLError_NoPermission", default_state()["gpu.5.serial"]],
        "handle6": "NVMLError_Unknown",
    }


@pytest.mark.parametrize(
    ("init", "error"),
    [("DRIVER_NOT_LOADED", "NVMLError_DriverNotLoaded"), ("NO_PERMISSION", "NVMLError_NoPermission")],
)
def test_init_failure(lib_dir: Path, state_path: Path, init: str, error: str) -> None:
    write_state(state_path, {"init": init})
    result = pynvml_json(lib_dir, state_path, READBACK)
    assert result["init"]["error"] == error


def test_error_strings(lib_dir: Path, state_path: Path) -> None:
    code = (
        "import json, pynvml as N; N.nvmlInit(); "
        "print(json.dumps([N.nvmlErrorString(c) for c in (0, 3, 9, 15, 999, 12345)]))"
    )
    assert pynvml_json(lib_dir, state_path, code) == [
        "Success",
        "Not Supported",
        "Driver Not Loaded",
        "GPU is lost",
        "Unknown Error",
        "Unknown Error",
    ]


def test_handles_by_uuid_and_bus_id(lib_dir: Path, state_path: Path) -> None:
    state = default_state()
    code = textwrap.dedent(
        """
        import json, sys, pynvml as N
        N.nvmlInit()
        by_uuid = N.nvmlDeviceGetIndex(N.nvmlDeviceGetHandleByUUID(sys.argv[1]))
        by_bus = N.nvmlDeviceGetIndex(N.nvmlDeviceGetHandleByPciBusId(sys.argv[2]))
        try:
            N.nvmlDeviceGetHandleByUUID("GPU-nope")
        except N.NVMLError as e:
            missing = type(e).__name__
        print(json.dumps([by_uuid, by_bus, missing]))
        """
    )
    uuid = state["gpu.6.uuid"]
    assert pynvml_json(lib_dir, state_path, code, uuid, "0000:5d:00.0") == [6, 3, "NVMLError_NotFound"]


# ---- an older driver


def test_omitted_function_is_missing(lib_dir: Path, state_path: Path, tmp_path: Path) -> None:
    old = build_library(tmp_path / "old-driver", omit=["nvmlDeviceGetRemappedRows"])
    built = (old / LIBRARY_NAME).stat().st_mtime_ns
    assert build_library(tmp_path / "old-driver", omit=["nvmlDeviceGetRemappedRows"]) == old
    assert (old / LIBRARY_NAME).stat().st_mtime_ns == built  # up to date: not rebuilt
    code = textwrap.dedent(
        """
        import json, pynvml as N
        N.nvmlInit()
        h = N.nvmlDeviceGetHandleByIndex(0)
        try:
            result = N.nvmlDeviceGetRemappedRows(h)
        except N.NVMLError as e:
            result = type(e).__name__
        print(json.dumps([result, N.nvmlDeviceGetName(h)]))
        """
    )
    assert pynvml_json(old, state_path, code) == ["NVMLError_FunctionNotFound", "NVIDIA H100 80GB HBM3"]
    assert pynvml_json(lib_dir, state_path, code) == [[0, 0, 0, 0], "NVIDIA H100 80GB HBM3"]


def test_build_rejects_bad_symbol_names(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="not an NVML symbol"):
        build_library(tmp_path, omit=["-o/etc/passwd"])


# ---- helpers


def test_write_state_renders_values(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "state"
    write_state(
        path,
        {
            "gpu.0.lost": True,
            "gpu.1.lost": False,
            "gpu_count": 2,
            "gpu.0.nvlink_down": [1, 3],
            "gpu.0.processes": [(10, 20, "a b"), (30, 40)],
            "init": "SUCCESS",
        },
    )
    lines = [line for line in path.read_text().splitlines() if not line.startswith("#")]
    assert lines == [
        "gpu.0.lost = 1",
        "gpu.1.lost = 0",
        "gpu_count = 2",
        "gpu.0.nvlink_down = 1,3",
        "gpu.0.processes = 10:20:a b,30:40",
        "init = SUCCESS",
    ]
    assert [p.name for p in path.parent.iterdir()] == ["state"]  # no temporary files left
    with pytest.raises(ValueError):
        write_state(path, {"gpu.0.name": "two\nlines"})


def test_sim_env_prepends_library_path(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LD_LIBRARY_PATH", "/opt/x")
    assert sim_env(Path("/lib/sim"), Path("/s")) == {
        "LD_LIBRARY_PATH": "/lib/sim:/opt/x",
        "JUEYING_NVMLSIM_STATE": "/s",
    }
    monkeypatch.delenv("LD_LIBRARY_PATH")
    assert sim_env(Path("/lib/sim"), Path("/s"))["LD_LIBRARY_PATH"] == "/lib/sim"


# ---- real peers: gpustat and nvitop


def test_gpustat_json_lists_the_simulated_gpus(lib_dir: Path, state_path: Path) -> None:
    pytest.importorskip("gpustat")
    write_state(
        state_path,
        {"gpu.4.name": "NVIDIA H100 80GB HBM3 (sim)", "gpu.4.temperature_c": 88, "gpu.5.power_mw": 512000},
    )
    env = {**os.environ, **sim_env(lib_dir, state_path)}
    result = subprocess.run(
        [sys.executable, "-m", "gpustat", "--json"], env=env, capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stderr
    gpus = json.loads(result.stdout)["gpus"]
    state = default_state()
    assert [g["index"] for g in gpus] == list(range(8))
    assert [g["uuid"] for g in gpus] == [state[f"gpu.{i}.uuid"] for i in range(8)]
    assert [g["name"] for g in gpus] == ["NVIDIA H100 80GB HBM3"] * 4 + ["NVIDIA H100 80GB HBM3 (sim)"] + [
        "NVIDIA H100 80GB HBM3"
    ] * 3
    assert [g["temperature.gpu"] for g in gpus] == [30, 31, 32, 33, 88, 35, 36, 37]
    assert gpus[5]["power.draw"] == 512
    assert gpus[0]["memory.total"] == 85520809984 // 2**20
    assert json.loads(result.stdout)["driver_version"] == "550.127.05"


def test_nvitop_once_shows_every_gpu(lib_dir: Path, state_path: Path) -> None:
    pytest.importorskip("nvitop")
    write_state(state_path, {"gpu.2.lost": 1, "gpu.6.ecc_uncorrected_volatile": 5})
    env = {**os.environ, **sim_env(lib_dir, state_path), "COLUMNS": "100"}
    result = subprocess.run(
        [sys.executable, "-m", "nvitop", "-1"], env=env, capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stderr
    assert "Driver Version: 550.127.05" in result.stdout
    rows = [line for line in result.stdout.splitlines() if "H100 80GB HBM3" in line]
    assert len(rows) == 7
    assert "GPU is Lost" in result.stdout
    assert any(row.split("│")[3].split()[-1] == "5" for row in rows)  # Uncorr. ECC column of GPU 6
    assert "FunctionNotFound" not in result.stdout + result.stderr
