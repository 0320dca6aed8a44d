"""Client identities: private key files and ssh-agent keys, each loaded once per run and never prompted for."""

from __future__ import annotations

import base64
import os
import threading

import paramiko


class Identities:
    """Private keys loaded once per run (parsing a key costs more than a whole command on a warm link)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._keys: dict[str, paramiko.PKey | None] = {}
        self._encrypted: set[str] = set()
        self._local = threading.local()  # this thread's agent connection and its keys
        self._agents: list[paramiko.Agent] = []
        self._generation = 0  # bumped by close(): connections of an older generation are closed

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

    def public_blob(self, path: str) -> bytes | None:
        """The public key of the identity `path`: from the key itself, or from `path.pub` (all OpenSSH reads
        of a passphrase-protected key without its passphrase); None when neither can be read."""
        key = self.key(path)
        if key is not None:
            return key.asbytes()
        try:
            with open(path + ".pub", encoding="ascii", errors="replace") as fh:
                fields = fh.read().split()
            return base64.b64decode(fields[1], validate=True) if len(fields) >= 2 else None
        except (OSError, ValueError):
            return None

    def encrypted(self, path: str) -> bool:
        """`path` holds a passphrase-protected key (known once `key(path)` was asked)."""
        with self._lock:
            return path in self._encrypted

    def agent_keys(self) -> list[paramiko.PKey]:
        """The agent's keys, over a connection of the calling thread's own: paramiko's agent client is one
        socket without a lock, and fan-out threads signing over a shared one read each other's answers
        (most nodes of a run then failed authentication, or waited for an answer that never came)."""
        keys: list[paramiko.PKey] | None = getattr(self._local, "agent_keys", None)
        if keys is None or getattr(self._local, "generation", None) != self._generation:
            keys = []
            if os.environ.get("SSH_AUTH_SOCK"):
                try:
                    agent = paramiko.Agent()
                    keys = list(agent.get_keys())
                except (OSError, paramiko.SSHException):
                    keys = []
                else:
                    with self._lock:
                        self._agents.append(agent)
            self._local.agent_keys, self._local.generation = keys, self._generation
        return keys

    def close(self) -> None:
        """Close every agent connection (a later agent_keys() opens a new one)."""
        with self._lock:
            agents, self._agents = self._agents, []
            self._generation += 1
        for agent in agents:
            agent.close()
