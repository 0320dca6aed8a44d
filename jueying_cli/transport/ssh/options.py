"""SSH settings from the command line: a plain dataclass, so building them never imports paramiko."""

from __future__ import annotations

from dataclasses import dataclass

DEFAULT_CONNECT_TIMEOUT_S = 10.0


@dataclass
class SshOptions:
    connect_timeout_s: float = DEFAULT_CONNECT_TIMEOUT_S  # TCP connect + banner + key exchange + auth
    accept_new_hostkeys: bool = False
    ssh_config_path: str | None = None  # replaces ~/.ssh/config and /etc/ssh/ssh_config (like ssh -F)
    keep_open: bool = False  # reuse connections across runs (status --watch)
    extra_known_hosts: tuple[str, ...] = ()
