"""ssh_config read as OpenSSH 9.x reads it (readconf.c, ssh.c process_config_files), for many hosts at once.

Files: `--ssh-config FILE` alone (like `ssh -F`; `none`: no file), else ~/.ssh/config then /etc/ssh/ssh_config.
Each file is read once, `Include`s inline, into sections: the lines under one Host or Match line, each with
the chain of Host/Match lines it stands under (an Include inside a block puts the included file under that
block). A lookup walks the sections in file order, first value wins (IdentityFile and CertificateFile
accumulate), Match lines checked with the values set so far, and walks again when a `Match final` exists
(the final pass, matched against the HostName). Sections under a Host line of plain names (no `*`/`?`) are
indexed by name, so a 1,000-host config costs a handful of sections per lookup, not a thousand.
"""

from __future__ import annotations

import glob
import ipaddress
import os
import stat
from dataclasses import dataclass, field
from typing import Any

from jueying_cli.errors import BadInputError
from jueying_cli.transport.ssh.config_match import (
    HostCond,
    Local,
    MatchCond,
    MatchState,
    expand,
    match_pattern_list,
    parse_match,
)
from jueying_cli.transport.ssh.config_syntax import KEYWORDS, Line, split_line, value_of
from jueying_cli.transport.ssh.known_hosts import USER_KNOWN_HOSTS as DEFAULT_USER_KNOWN_HOSTS

USER_CONFIG = "~/.ssh/config"
SYSTEM_CONFIG = "/etc/ssh/ssh_config"
MAX_INCLUDE_DEPTH = 16  # readconf.c READCONF_MAX_DEPTH
_ACCUMULATE = ("identityfile", "certificatefile")

Cond = HostCond | MatchCond


def expand_path(path: str) -> str:
    """~ and $VARS expanded, as a shell would: for paths given on jueying's command line or inventory."""
    return os.path.expanduser(os.path.expandvars(path))


@dataclass
class _Section:
    guard: tuple[Cond, ...]  # every one must hold, in order (short-circuit, as OpenSSH's active flag does)
    lines: list[tuple[str, object, bool]] = field(default_factory=list)  # (keyword, value, user config)


class SshConfig:
    """The ssh_config files of one run, read once; `lookup(host)` is what `ssh -G host` would print (for the
    keywords jueying uses), with IdentityFile and CertificateFile expanded as `ssh` expands them."""

    def __init__(self, explicit: str | None) -> None:
        self.local = Local.here()
        self.sections: list[_Section] = []
        self._ignore_unknown: list[str] = []
        if explicit is not None:
            if explicit.lower() != "none":
                if not os.path.isfile(explicit):
                    raise BadInputError("cannot open the ssh_config file", path=explicit)
                self._read(explicit, (), user=True, check_perm=False, depth=0)
        else:
            user_config = os.path.join(self.local.home, ".ssh", "config")
            if os.path.isfile(user_config):
                self._read(user_config, (), user=True, check_perm=True, depth=0)
            if os.path.isfile(SYSTEM_CONFIG):
                self._read(SYSTEM_CONFIG, (), user=False, check_perm=False, depth=0)
        self.wants_final = any(isinstance(c, MatchCond) and c.wants_final for s in self.sections for c in s.guard)
        self._index: dict[str, list[int]] = {}
        always: list[int] = []
        for position, section in enumerate(self.sections):
            literal = next((names for c in section.guard if isinstance(c, HostCond)
                            and (names := c.literals()) is not None), None)
            if literal is None:
                always.append(position)
            else:
                for name in set(literal):
                    self._index.setdefault(name, []).append(position)
        self._always = always
        self._has_match = any(isinstance(c, MatchCond) for s in self.sections for c in s.guard)

    # ------------------------------------------------------------ reading

    def _read(self, path: str, guard: tuple[Cond, ...], *, user: bool, check_perm: bool, depth: int) -> None:
        if depth > MAX_INCLUDE_DEPTH:
            raise BadInputError("too many recursive configuration includes", path=path)
        try:
            if check_perm:
                info = os.stat(path)
                if (info.st_uid not in (0, os.getuid())) or (stat.S_IMODE(info.st_mode) & 0o022):
                    raise BadInputError("bad owner or permissions (must be owned by you or root and not writable "
                                        "by group or others, as ssh requires)", path=path)
            with open(path, encoding="utf-8", errors="surrogateescape") as f:
                text = f.read()
        except IsADirectoryError:
            return
        except OSError as exc:
            raise BadInputError(f"cannot read the ssh_config file: {exc.strerror}", path=path) from exc
        section = self._section(guard)
        for number, raw in enumerate(text.splitlines(), 1):
            line = split_line(raw, path, number)
            if line is None:
                continue
            if line.keyword not in KEYWORDS:
                if any(match_pattern_list(line.keyword, p, lower=True) for p in self._ignore_unknown):
                    continue
                raise line.error(f"Bad configuration option: {line.keyword}")
            value = value_of(line)
            if line.keyword == "host":
                section = self._section((*guard, HostCond(tuple(line.args))))
            elif line.keyword == "match":
                section = self._section((*guard, parse_match(line)))
            elif line.keyword == "include":
                for pattern in line.args:
                    self._include(line, pattern, section.guard, user, depth)
                section = self._section(section.guard)  # what follows stands after the included lines
            else:
                if line.keyword == "ignoreunknown":
                    self._ignore_unknown.append(str(value))
                section.lines.append((line.keyword, value, user))

    def _section(self, guard: tuple[Cond, ...]) -> _Section:
        section = _Section(guard)
        self.sections.append(section)
        return section

    def _include(self, line: Line, pattern: str, guard: tuple[Cond, ...], user: bool, depth: int) -> None:
        """readconf.c Include: relative paths are under ~/.ssh (user files) or /etc/ssh; `~` is $HOME here
        (glob's GLOB_TILDE, unlike the other paths); matches read in sorted order; none is not an error."""
        if pattern.startswith("~") and not user:
            raise line.error(f"bad include path {pattern}.")
        if not os.path.isabs(pattern) and not pattern.startswith("~"):
            pattern = ("~/.ssh/" if user else "/etc/ssh/") + pattern
        for path in sorted(glob.glob(os.path.expanduser(pattern))):
            self._read(path, guard, user=user, check_perm=True, depth=depth + 1)

    # ------------------------------------------------------------ lookup

    def lookup(self, host: str) -> dict[str, Any]:
        """The options for `host` (as typed): lowercase keywords, first value wins; `hostname` with its
        tokens expanded and lowercased (addresses kept), `port` an int, `user` the remote user (if set),
        `identityfile`/`certificatefile` lists and `userknownhostsfile` (a list) expanded like `ssh` does."""
        options: dict[str, Any] = {}
        self._walk(MatchState(self.local, host, host, final=False), options)
        name = expand(str(options["hostname"]), {"h": host, "%": "%"}, dollar=False) if "hostname" in options \
            else host
        name = name if _is_address(name) else name.lower()
        if self.wants_final:
            options["hostname"] = name
            self._walk(MatchState(self.local, name, host, final=True), options)
        options["hostname"] = name
        if "hostkeyalias" in options:
            options["hostkeyalias"] = str(options["hostkeyalias"]).lower()
        port = int(options.get("port", 22))
        user = str(options.get("user") or self.local.user)
        tokens = self.local.tokens(name, host, port, user, options.get("hostkeyalias"))
        for key in _ACCUMULATE:
            if key in options:
                options[key] = [self._path(p, tokens) for p, _ in options[key]]
        known = options.get("userknownhostsfile", DEFAULT_USER_KNOWN_HOSTS)
        options["userknownhostsfile"] = [p if p.lower() == "none" else self._path(p, tokens) for p in known]
        if "proxyjump" in options and options["proxyjump"] != "none":
            options["proxyjump"] = expand(options["proxyjump"], {k: tokens[k] for k in "%hnpr"}, dollar=False)
        return options

    def _path(self, path: str, tokens: dict[str, str]) -> str:
        try:
            return expand(self.local.tilde(path), tokens)
        except ValueError as exc:  # ~user of no such user
            raise BadInputError(f"ssh_config path {path}: {exc}") from exc

    def _walk(self, state: MatchState, options: dict[str, Any]) -> None:
        hits = self._index.get(state.host)
        positions = sorted({*hits, *self._always}) if hits else self._always
        decided: dict[int, bool] = {}  # a Match line is checked once, where it stands
        for position in positions:
            section = self.sections[position]
            if not section.lines and not self._has_match:
                continue
            if all(self._holds(c, state, options, decided) for c in section.guard):
                for keyword, value, user in section.lines:
                    _apply(options, keyword, value, user)

    @staticmethod
    def _holds(cond: Cond, state: MatchState, options: dict[str, Any], decided: dict[int, bool]) -> bool:
        if isinstance(cond, HostCond):
            return cond.matches(state.host)
        key = id(cond)
        if key not in decided:
            decided[key] = state.evaluate(cond, options)
        return decided[key]


def _apply(options: dict[str, Any], keyword: str, value: object, user: bool) -> None:
    """One active line: the first value wins, with OpenSSH's exceptions."""
    if keyword in _ACCUMULATE:
        entries = options.setdefault(keyword, [])
        if (value, user) not in entries:  # readconf.c add_identity_file: duplicates ignored
            entries.append((value, user))
    elif keyword in ("proxyjump", "proxycommand"):  # whichever comes first disables the other
        if "proxyjump" not in options and "proxycommand" not in options:
            options[keyword] = value
    elif keyword == "connecttimeout" and value is None:  # `none` leaves it unset: a later line may set it
        return
    elif keyword not in options:
        options[keyword] = value


def _is_address(name: str) -> bool:
    if ":" not in name and not name.replace(".", "").isdigit():
        return False
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return False
    return True

