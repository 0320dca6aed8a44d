"""Host facts: the only module that imports psutil.

Runs on the node under Python 3.8+, with or without psutil: where psutil is missing the same facts
come from /proc and /sys, so a bare node with only python3 still gives a complete document.
"""

from __future__ import annotations

import os
import platform
import socket
import time
from typing import Dict, List, Optional

from jueying_cli.facts.schema import (
    CPU_KEYS,
    ERROR_KEYS,
    FILESYSTEM_KEYS,
    HOST_KEYS,
    INFINIBAND_PORT_KEYS,
    LOAD_KEYS,
    MEMORY_KEYS,
    NETWORK_INTERFACE_KEYS,
    OS_KEYS,
    SWAP_KEYS,
    record,
)

try:
    import psutil
except ImportError:  # a node without psutil: fall back to /proc and /sys
    psutil = None  # type: ignore[assignment]

# One JSON object of the document (the host section, a filesystem, an errors entry).
Obj = Dict[str, object]
Errors = List[Obj]

# statvfs on these can block for minutes when a server is gone (Ansible's fact-gathering hang).
NETWORK_FILESYSTEMS = frozenset((
    "nfs", "nfs4", "cifs", "smb", "smb3", "smbfs", "lustre", "gpfs", "beegfs", "ceph", "cephfs",
    "glusterfs", "fuse.glusterfs", "fuse.sshfs", "fuse.s3fs", "9p", "afs", "ncpfs", "davfs",
    "fuse.rclone", "fuse.juicefs", "fuse.ceph", "panfs", "wekafs", "orangefs", "pvfs2",
))
# Pseudo and in-memory filesystems carry no data an operator cares about here.
PSEUDO_FILESYSTEMS = frozenset((
    "proc", "sysfs", "devtmpfs", "devpts", "tmpfs", "cgroup", "cgroup2", "securityfs", "pstore",
    "debugfs", "tracefs", "configfs", "fusectl", "mqueue", "hugetlbfs", "bpf", "autofs", "binfmt_misc",
    "rpc_pipefs", "nsfs", "overlay", "squashfs", "efivarfs", "ramfs", "selinuxfs", "fuse.lxcfs",
    "fuse.portal", "nfsd",
))


def _read(path: str) -> Optional[str]:
    try:
        with open(path) as fh:
            return fh.read().strip()
    except OSError:
        return None


def os_release(path: str = "/etc/os-release") -> Obj:
    fields: Dict[str, str] = {}
    text = _read(path) or _read("/usr/lib/os-release") or ""
    for line in text.splitlines():
        key, sep, value = line.partition("=")
        if sep:
            fields[key.strip()] = value.strip().strip('"').strip("'")
    return record(OS_KEYS, id=fields.get("ID"), name=fields.get("NAME"), version=fields.get("VERSION_ID"),
                  pretty_name=fields.get("PRETTY_NAME"))


def cpu_info() -> Obj:
    model = None
    sockets = set()
    cores = set()
    threads = 0
    text = _read("/proc/cpuinfo") or ""
    physical = core = None
    for line in text.splitlines() + [""]:
        key, _, value = line.partition(":")
        key = key.strip()
        value = value.strip()
        if key == "model name" and model is None:
            model = value
        elif key == "physical id":
            physical = value
        elif key == "core id":
            core = value
        elif key == "processor":
            threads += 1
        elif not line.strip():
            if physical is not None:
                sockets.add(physical)
                if core is not None:
                    cores.add((physical, core))
            physical = core = None
    logical = os.cpu_count() or threads or None
    physical_cores: Optional[int] = len(cores) or None
    if psutil is not None:
        physical_cores = psutil.cpu_count(logical=False) or physical_cores
    return record(CPU_KEYS, model=model or platform.processor() or None,
                  sockets=len(sockets) or (1 if logical else None), cores=physical_cores or logical, threads=logical)


def memory_info() -> Dict[str, Obj]:
    """{"memory": ..., "swap": ...}: the host section's two memory objects."""
    if psutil is not None:
        vm = psutil.virtual_memory()
        sw = psutil.swap_memory()
        return {
            "memory": record(MEMORY_KEYS, total_bytes=vm.total, available_bytes=vm.available,
                             used_bytes=vm.total - vm.available),
            "swap": record(SWAP_KEYS, total_bytes=sw.total, used_bytes=sw.used),
        }
    info: Dict[str, int] = {}
    for line in (_read("/proc/meminfo") or "").splitlines():
        key, _, rest = line.partition(":")
        parts = rest.split()
        if parts and parts[0].isdigit():
            info[key] = int(parts[0]) * 1024
    total = info.get("MemTotal", 0)
    available = info.get("MemAvailable", info.get("MemFree", 0))
    swap_total = info.get("SwapTotal", 0)
    return {
        "memory": record(MEMORY_KEYS, total_bytes=total, available_bytes=available, used_bytes=total - available),
        "swap": record(SWAP_KEYS, total_bytes=swap_total, used_bytes=swap_total - info.get("SwapFree", 0)),
    }


def _mounts() -> List[Dict[str, str]]:
    mounts = []
    for line in (_read("/proc/self/mounts") or "").splitlines():
        parts = line.split()
        if len(parts) >= 3:
            # /proc/mounts escapes spaces as \040
            mounts.append({"device": parts[0], "mountpoint": parts[1].replace("\\040", " "), "fstype": parts[2]})
    return mounts


def filesystems(errors: Errors) -> List[Obj]:
    """Local, real filesystems with usage; network ones are skipped so a dead server cannot hang us."""
    result = []
    seen = set()
    for m in _mounts():
        fstype = m["fstype"]
        if fstype in NETWORK_FILESYSTEMS or fstype in PSEUDO_FILESYSTEMS or m["mountpoint"] in seen:
            continue
        if fstype.startswith("fuse.") and fstype not in ("fuse.ext4",):
            continue  # FUSE daemons can hang statvfs as surely as NFS
        seen.add(m["mountpoint"])
        try:
            st = os.statvfs(m["mountpoint"])
        except OSError as exc:
            errors.append(record(ERROR_KEYS, gpu=None, field="filesystems", error="OS_ERROR",
                                 message="%s: %s" % (m["mountpoint"], exc.strerror)))
            continue
        total = st.f_blocks * st.f_frsize
        free = st.f_bavail * st.f_frsize
        used = (st.f_blocks - st.f_bfree) * st.f_frsize
        result.append(record(
            FILESYSTEM_KEYS, mountpoint=m["mountpoint"], device=m["device"], fstype=fstype,
            total_bytes=total, used_bytes=used, free_bytes=free,
            used_pct=round(100.0 * used / (used + free), 1) if used + free else None,
        ))
    return result


def network_interfaces() -> List[Obj]:
    if psutil is not None:
        addrs = psutil.net_if_addrs()
        stats = psutil.net_if_stats()
        result = []
        for name in sorted(addrs):
            if name == "lo":
                continue
            st = stats.get(name)
            mac = None
            addresses = []
            for a in addrs[name]:
                if a.family == socket.AF_INET or a.family == socket.AF_INET6:
                    addresses.append(a.address.split("%")[0])
                elif a.family == getattr(psutil, "AF_LINK", None):
                    mac = a.address
            result.append(record(
                NETWORK_INTERFACE_KEYS, name=name, mac=mac, addresses=addresses,
                is_up=bool(st.isup) if st else None,
                speed_mbps=(st.speed or None) if st else None,
                mtu=st.mtu if st else None,
            ))
        return result
    result = []
    base = "/sys/class/net"
    try:
        names = sorted(os.listdir(base))
    except OSError:
        names = []
    for name in names:
        if name == "lo":
            continue
        speed = _read("%s/%s/speed" % (base, name))
        mtu = _read("%s/%s/mtu" % (base, name))
        speed_mbps = int(speed) if speed and speed.lstrip("-").isdigit() and int(speed) > 0 else None
        result.append(record(
            NETWORK_INTERFACE_KEYS, name=name, mac=_read("%s/%s/address" % (base, name)), addresses=[],
            is_up=_read("%s/%s/operstate" % (base, name)) == "up",
            speed_mbps=speed_mbps,
            mtu=int(mtu) if mtu and mtu.isdigit() else None,
        ))
    return result


def infiniband_ports(root: Optional[str] = None) -> List[Obj]:
    """InfiniBand / RoCE ports from sysfs (empty where the node has none)."""
    root = root or os.environ.get("JUEYING_PROBE_INFINIBAND_ROOT", "/sys/class/infiniband")
    ports = []
    try:
        devices = sorted(os.listdir(root))
    except OSError:
        return []
    for dev in devices:
        pdir = os.path.join(root, dev, "ports")
        try:
            port_names = sorted(os.listdir(pdir), key=lambda p: int(p) if p.isdigit() else 0)
        except OSError:
            continue
        for port in port_names:
            base = os.path.join(pdir, port)
            # sysfs gives "4: ACTIVE" and "5: LinkUp"; keep the words.
            state = _read(os.path.join(base, "state"))
            phys = _read(os.path.join(base, "phys_state"))
            ports.append(record(
                INFINIBAND_PORT_KEYS,
                device=dev,
                port=int(port) if port.isdigit() else port,
                state=state.split(":", 1)[-1].strip() if state else None,
                phys_state=phys.split(":", 1)[-1].strip() if phys else None,
                rate=_read(os.path.join(base, "rate")),
                link_layer=_read(os.path.join(base, "link_layer")),
            ))
    return ports


# Its identity is only 32 hex digits; a longer file is not a machine-id.
_MACHINE_ID_MAX = 128


def machine_id(path: Optional[str] = None) -> Optional[str]:
    """systemd's machine identity (/etc/machine-id, else D-Bus's copy); None where there is none. The path can
    be pointed elsewhere with JUEYING_PROBE_MACHINE_ID (tests give each simulated node its own)."""
    paths = [path] if path else [os.environ.get("JUEYING_PROBE_MACHINE_ID") or "/etc/machine-id",
                                 "/var/lib/dbus/machine-id"]
    for candidate in paths:
        text = _read(candidate)
        if text and len(text) <= _MACHINE_ID_MAX:
            return text
    return None


def uptime_seconds() -> Optional[float]:
    text = _read("/proc/uptime")
    if text:
        return round(float(text.split()[0]), 1)
    if psutil is not None:
        return round(time.time() - psutil.boot_time(), 1)
    return None


class StaticHost:
    """The host facts that do not change while the machine runs: a kept probe reads them once."""

    def __init__(self) -> None:
        uname = platform.uname()
        self.os = os_release()
        self.kernel = uname.release
        self.architecture = uname.machine
        self.cpu = cpu_info()
        self.machine_id = machine_id()


def collect_host(errors: Errors, time_sync: Obj, static: Optional[StaticHost] = None) -> Obj:
    static = static or StaticHost()
    try:
        load1, load5, load15 = os.getloadavg()
        load = record(LOAD_KEYS, load1=load1, load5=load5, load15=load15)
    except OSError:
        load = record(LOAD_KEYS, load1=None, load5=None, load15=None)
    return record(
        HOST_KEYS,
        hostname=socket.gethostname(),
        os=dict(static.os),
        kernel=static.kernel,
        architecture=static.architecture,
        uptime_s=uptime_seconds(),
        cpu=dict(static.cpu),
        load=load,
        filesystems=filesystems(errors),
        network_interfaces=network_interfaces(),
        infiniband=infiniband_ports(),
        psutil=psutil is not None,
        time_sync=time_sync,
        machine_id=static.machine_id,
        **memory_info(),
    )
