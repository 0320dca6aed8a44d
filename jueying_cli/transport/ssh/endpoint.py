"""Endpoint resolution: where and as whom to connect to a node, its inventory variables over ssh_config
(address, port, user, identity files, the known_hosts name and files, connect timeout, ProxyJump hops)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from jueying_cli.transport.ssh.config import SshConfig, expand_path
from jueying_cli.transport.ssh.config_syntax import parse_jump_hop
from jueying_cli.transport.ssh.known_hosts import GLOBAL_KNOWN_HOSTS

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
    certificate_files: tuple[str, ...] = ()  # CertificateFile, expanded
    strict_host_key_checking: str = "ask"  # as `ssh -G` prints it: true, false, ask or accept-new
    accept_new: bool = False  # unknown host keys may be recorded: --accept-new-hostkeys, or accept-new/no


# readconf.c fill_default_options: the identity files tried when ssh_config names none, in OpenSSH's order
# (files paramiko cannot load, sk and xmss keys, are skipped when the keys are loaded).
DEFAULT_IDENTITIES = ("id_rsa", "id_ecdsa", "id_ecdsa_sk", "id_ed25519", "id_ed25519_sk", "id_xmss", "id_dsa")


class Endpoints:
    """Resolves endpoints against one run's ssh_config and options."""

    def __init__(self, config: SshConfig, options: SshOptions) -> None:
        self._config = config
        self._options = options
        self._local = config.local

    def resolve(self, name: str, address: str | None, port: int | None, user: str | None, identity: str | None,
                proxy_jump: str | None) -> Endpoint:
        """`name` as the operator calls it; the other arguments are inventory variables (None: not set),
        which win over ssh_config."""
        cfg = self._config.lookup(name)
        address = address or cfg["hostname"]
        port = int(port or cfg.get("port") or 22)
        user = str(user or cfg.get("user") or self._local.user)
        files: list[str] = []
        if identity:
            files.append(expand_path(str(identity)))
        files.extend(cfg.get("identityfile", []))
        if not files:
            files = [self._local.tilde(f"~/.ssh/{n}") for n in DEFAULT_IDENTITIES]
        # OpenSSH lowercases the host name and the HostKeyAlias (which drops the port).
        alias = cfg.get("hostkeyalias")
        host = address.lower()
        if alias:
            kh_name = str(alias)
        elif port == 22:
            kh_name = host
        else:
            kh_name = f"[{host}]:{port}"
        user_files = [p for p in cfg["userknownhostsfile"] if p.lower() != "none"]
        global_files = [self._local.tilde(p) for p in cfg.get("globalknownhostsfile", GLOBAL_KNOWN_HOSTS)
                        if p.lower() != "none"]
        jump = proxy_jump or cfg.get("proxyjump")
        hops: tuple[str, ...] = ()
        if jump and str(jump).lower() != "none":
            hops = tuple(h.strip() for h in str(jump).split(",") if h.strip())
        timeout = self._options.connect_timeout_s
        if cfg.get("connecttimeout"):  # 0: no limit of ssh_config's own (the system's, in OpenSSH)
            timeout = min(timeout, float(cfg["connecttimeout"]))
        strict = str(cfg.get("stricthostkeychecking", "ask"))
        revoked = cfg.get("revokedhostkeys")
        return Endpoint(
            name=name, address=address, port=port, user=user, identity_files=tuple(dict.fromkeys(files)),
            identities_only=cfg.get("identitiesonly") == "yes",
            known_hosts_name=kh_name,
            known_hosts_files=tuple(dict.fromkeys([*user_files, *global_files, *self._options.extra_known_hosts])),
            connect_timeout_s=timeout, proxy_jump=hops,
            known_hosts_bare=None if alias or port == 22 else host,
            cert_principal=str(alias) if alias else host,
            record_file=user_files[0] if user_files else None,
            hash_known_hosts=cfg.get("hashknownhosts") == "yes",
            revoked_host_keys=self._local.tilde(str(revoked)) if revoked and str(revoked) != "none" else None,
            certificate_files=tuple(cfg.get("certificatefile", [])),
            strict_host_key_checking=strict,
            # `-o StrictHostKeyChecking=accept-new` on ssh's command line wins over ssh_config, as the flag does
            accept_new=self._options.accept_new_hostkeys or strict in ("accept-new", "false"),
        )


def parse_jump(spec: str) -> tuple[str | None, str, int | None]:
    """One ProxyJump hop, [user@]host[:port] or ssh://[user@]host[:port] -> (user, host, port)."""
    parsed = parse_jump_hop(spec)
    return parsed if parsed is not None else (None, spec, None)
