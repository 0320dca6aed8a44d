"""ssh_config reading: OpenSSH's files in its order, Host blocks indexed per file, token expansion."""

from __future__ import annotations

import getpass
import os
from pathlib import Path
from typing import Any

import paramiko


def expand_path(path: str) -> str:
    """~ and $VARS expanded, as OpenSSH does for the paths it reads."""
    return os.path.expanduser(os.path.expandvars(path))


class SshConfig:
    """ssh_config files in OpenSSH's order: first value wins, IdentityFile accumulates.

    Each file is parsed once (by paramiko) and its Host blocks indexed: literal names in a dict, patterns
    in a short list. paramiko's own lookup walks every block twice and asks the OS for the user name per
    block, which costs O(nodes x hosts) and dominated the controller's CPU with a 1000-host config. Files
    with Match blocks (rare on clusters) keep paramiko's full lookup, which evaluates them correctly.
    """

    _EXPANDED = ("identityfile", "userknownhostsfile")  # the keys OpenSSH expands tokens in (and HostName: %h)

    def __init__(self, explicit: str | None) -> None:
        paths = [explicit] if explicit else [expand_path("~/.ssh/config"), "/etc/ssh/ssh_config"]
        self.configs: list[paramiko.SSHConfig] = []
        for path in paths:
            if os.path.isfile(path):
                self.configs.append(paramiko.SSHConfig.from_path(path))
        self._indexes = [_HostIndex(c) for c in self.configs]
        self._local_user = local_user()

    def lookup(self, host: str) -> dict[str, Any]:
        merged: dict[str, Any] = {}
        for config, index in zip(self.configs, self._indexes, strict=True):
            found = dict(config.lookup(host)) if index.has_match else index.lookup(host)
            for key, value in found.items():
                if key == "identityfile":
                    merged.setdefault(key, [])
                    merged[key] = merged[key] + [v for v in value if v not in merged[key]]
                elif key not in merged:
                    merged[key] = value
        return self._expand_tokens(host, merged)

    def _expand_tokens(self, host: str, options: dict[str, Any]) -> dict[str, Any]:
        """OpenSSH's %h %n %p %r %u %d %% tokens (paramiko's lookup did this; our index must too)."""
        hostname = str(options.get("hostname", host)).replace("%h", host).replace("%%", "%")
        table = {"%h": hostname, "%n": host, "%p": str(options.get("port", 22)),
                 "%r": str(options.get("user", self._local_user)), "%u": self._local_user,
                 "%d": os.path.expanduser("~")}

        def expand(value: str) -> str:
            if "%" not in value:
                return value
            out, i = [], 0
            while i < len(value):
                pair = value[i:i + 2]
                if pair == "%%":
                    out.append("%")
                    i += 2
                elif pair in table:
                    out.append(table[pair])
                    i += 2
                else:
                    out.append(value[i])
                    i += 1
            return "".join(out)

        result = dict(options)
        if "hostname" in result:
            result["hostname"] = hostname
        for key in self._EXPANDED:
            if key in result:
                value = result[key]
                result[key] = [expand(v) for v in value] if isinstance(value, list) else expand(str(value))
        if "identityfile" in result:
            result["identityfile"] = [os.path.expanduser(v) for v in result["identityfile"]]
        return result


class _HostIndex:
    """The Host blocks of one parsed ssh_config, indexed for lookups that cost O(1) per literal name."""

    def __init__(self, config: paramiko.SSHConfig) -> None:
        blocks = getattr(config, "_config", [])
        self.has_match = any("matches" in b for b in blocks)
        self.blocks: list[tuple[list[str], dict[str, Any]]] = []
        self.literal: dict[str, list[int]] = {}
        self.patterns: list[int] = []
        for position, block in enumerate(blocks):
            patterns = list(block.get("host", []))
            self.blocks.append((patterns, block.get("config", {})))
            if patterns and all(not any(ch in p for ch in "*?!") for p in patterns):
                for p in patterns:
                    self.literal.setdefault(p, []).append(position)
            else:
                self.patterns.append(position)

    def lookup(self, host: str) -> dict[str, Any]:
        import fnmatch

        positions = set(self.literal.get(host, ()))
        for position in self.patterns:
            patterns = self.blocks[position][0]
            negated = any(p.startswith("!") and fnmatch.fnmatch(host, p[1:]) for p in patterns)
            if not negated and any(not p.startswith("!") and fnmatch.fnmatch(host, p) for p in patterns):
                positions.add(position)
        options: dict[str, Any] = {}
        for position in sorted(positions):
            for key, value in self.blocks[position][1].items():
                if key not in options:
                    options[key] = value[:] if isinstance(value, list) else value
                elif key == "identityfile":
                    options[key].extend(v for v in value if v not in options[key])
        return options


def local_user() -> str:
    """The name of the user running jueying (the default remote user, and ssh_config's %u)."""
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return str(Path.home().name or "root")
