"""Endpoint resolution: where and as whom to connect to a node, its inventory variables over ssh_config
(address, port, user, identity files, the known_hosts name and files, connect timeout, ProxyJump hops)."""

from __future__ import annotations

from contextlib import suppress
from dataclasses import dataclass
from typing import TYPE_CHECKING

from jueying_cli.transport.ssh.config import SshConfig, expand_path, local_user
from jueying_cli.transport.ssh.keys import DEFAULT_IDENTITIES
from jueying_cli.transport.ssh.known_hosts import GLOBAL_KNOWN_HOSTS, USER_KNOWN_HOSTS

if TYPE_CHECKING:
    from jueying_cli.transport.ssh.options import SshOptions


@dataclass(frozen=True)
class Endpoint:
    """Where and as whom to connect, after inventory variables and ssh_config are applied."""

    name: str  # what the operator calls it
    address: str
    port: int
    user: str
    identity_files: tuple[str, ...]
    identities_only: bool
    known_hosts_name: str  # the name looked up in known_hosts: HostKeyAlias, host, or [host]:port
    known_hosts_files: tuple[str, ...]  # the user files, then the system files (OpenSSH's order)
    connect_timeout_s: float
    proxy_jump: tuple[str, ...] = ()
    known_hosts_bare: str | None = None  # [host]:port without HostKeyAlias: the host, also looked up
    cert_principal: str = ""  # the name a host certificate must list: HostKeyAlias, or the host
    record_file: str | None = None  # where --accept-new-hostkeys records (the first user file)
    hash_known_hosts: bool = False  # HashKnownHosts: record names hashed
    revoked_host_keys: str | None = None  # RevokedHostKeys


class Endpoints:
    """Resolves endpoints against one run's ssh_config and options."""

    def __init__(self, config: SshConfig, options: SshOptions) -> None:
        self._config = config
        self._options = options
        self._local_user = local_user()

    def resolve(self, name: str, address: str | None, port: int | None, user: str | None, identity: str | None,
                proxy_jump: str | None) -> Endpoint:
        """`name` as the operator calls it; the other arguments are inventory variables (None: not set),
        which win over ssh_config."""
        cfg = self._config.lookup(name)
        address = address or cfg.get("hostname") or name
        port = int(port or cfg.get("port") or 22)
        user = str(user or cfg.get("user") or self._local_user)
        files: list[str] = []
        if identity:
            files.append(expand_path(str(identity)))
        files.extend(expand_path(p) for p in cfg.get("identityfile", []))
        if not files:
            files = [expand_path(f"~/.ssh/{n}") for n in DEFAULT_IDENTITIES]
        # OpenSSH lowercases the host name; a HostKeyAlias is used as written (and drops the port).
        alias = cfg.get("hostkeyalias")
        host = address.lower()
        if alias:
            kh_name = str(alias)
        elif port == 22:
            kh_name = host
        else:
            kh_name = f"[{host}]:{port}"
        user_files = _files(cfg.get("userknownhostsfile"), USER_KNOWN_HOSTS)
        global_files = _files(cfg.get("globalknownhostsfile"), GLOBAL_KNOWN_HOSTS)
        jump = proxy_jump or cfg.get("proxyjump")
        hops: tuple[str, ...] = ()
        if jump and str(jump).lower() != "none":
            hops = tuple(h.strip() for h in str(jump).split(",") if h.strip())
        timeout = self._options.connect_timeout_s
        if cfg.get("connecttimeout"):
            with suppress(ValueError):
                timeout = min(timeout, float(cfg["connecttimeout"]))
        return Endpoint(
            name=name, address=address, port=port, user=user, identity_files=tuple(dict.fromkeys(files)),
            identities_only=str(cfg.get("identitiesonly", "no")).lower() == "yes",
            known_hosts_name=kh_name,
            known_hosts_files=tuple(dict.fromkeys([*user_files, *global_files, *self._options.extra_known_hosts])),
            connect_timeout_s=timeout, proxy_jump=hops,
            known_hosts_bare=None if alias or port == 22 else host,
            cert_principal=str(alias) if alias else host,
            record_file=user_files[0] if user_files else None,
            hash_known_hosts=str(cfg.get("hashknownhosts", "no")).lower() == "yes",
            revoked_host_keys=next(iter(_files(cfg.get("revokedhostkeys"), ())), None),
        )


def _files(value: object, default: tuple[str, ...]) -> list[str]:
    """UserKnownHostsFile / GlobalKnownHostsFile: several paths, `none` for no file at all."""
    paths = str(value).split() if value else list(default)
    return [expand_path(p) for p in paths if p.lower() != "none"]


def parse_jump(spec: str) -> tuple[str | None, str, int | None]:
    """One ProxyJump hop, [user@]host[:port] -> (user, host, port)."""
    user = None
    if "@" in spec:
        user, spec = spec.rsplit("@", 1)
    port = None
    if spec.startswith("["):
        host, _, rest = spec[1:].partition("]")
        if rest.startswith(":") and rest[1:].isdigit():
            port = int(rest[1:])
    elif spec.count(":") == 1:
        host, _, port_text = spec.partition(":")
        port = int(port_text) if port_text.isdigit() else None
    else:
        host = spec
    return user, host, port
