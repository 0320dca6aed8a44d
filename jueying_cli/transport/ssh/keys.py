"""Client identities: private key files and ssh-agent keys, each loaded once per run and never prompted for."""

from __future__ import annotations

import os
import threading

import paramiko

DEFAULT_IDENTITIES = ("id_ed25519", "id_ecdsa", "id_rsa")


class Identities:
    """Private keys loaded once per run (parsing a key costs more than a whole command on a warm link)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._keys: dict[str, paramiko.PKey | None] = {}
        self._encrypted: set[str] = set()
        self._agent_keys: list[paramiko.PKey] | None = None

    def key(self, path: str) -> paramiko.PKey | None:
        """The key in `path`, or None: missing, unreadable, or passphrase-protected (we never prompt;
        `encrypted()` tells that case apart)."""
        with self._lock:
            if path not in self._keys:
                try:
                    self._keys[path] = paramiko.PKey.from_path(path)
                except paramiko.PasswordRequiredException:
                    self._keys[path] = None
                    self._encrypted.add(path)
                except TypeError:  # cryptography: "password-protected, but password was not provided"
                    self._keys[path] = None
                    self._encrypted.add(path)
                except (OSError, paramiko.SSHException, ValueError):
                    self._keys[path] = None
            return self._keys[path]

    def encrypted(self, path: str) -> bool:
        """`path` holds a passphrase-protected key (known once `key(path)` was asked)."""
        with self._lock:
            return path in self._encrypted

    def agent_keys(self) -> list[paramiko.PKey]:
        with self._lock:
            if self._agent_keys is None:
                self._agent_keys = []
                if os.environ.get("SSH_AUTH_SOCK"):
                    try:
                        self._agent_keys = list(paramiko.Agent().get_keys())
                    except (OSError, paramiko.SSHException):
                        self._agent_keys = []
            return self._agent_keys
