"""Which ssh_config blocks apply, as OpenSSH 9.x decides: match.c (match_pattern, match_pattern_list,
match_hostname), readconf.c (the Host line, match_cfg_line), and the %-token and ${VAR} expansion of
misc.c (percent_dollar_expand) with tilde_expand_filename.
"""

from __future__ import annotations

import functools
import hashlib
import os
import pwd
import re
import socket
import subprocess
from dataclasses import dataclass

from jueying_cli.transport.ssh.config_syntax import MATCH_CRITERIA, Line, strdelim


@functools.lru_cache(maxsize=4096)
def _compiled(pattern: str) -> re.Pattern[str]:
    return re.compile("".join(".*" if c == "*" else "." if c == "?" else re.escape(c) for c in pattern), re.DOTALL)


def match_pattern(text: str, pattern: str) -> bool:
    """match.c match_pattern: `*` any run of characters, `?` one character, anything else itself (so `[`
    is a plain character), case-sensitive."""
    if "*" not in pattern and "?" not in pattern:
        return text == pattern
    return _compiled(pattern).fullmatch(text) is not None


def match_pattern_list(text: str, patterns: str, lower: bool) -> bool:
    """match.c match_pattern_list: a comma list; a matching `!pattern` refuses whatever else matches.
    `lower`: the patterns are lowercased first (match_hostname also lowercases the text)."""
    positive = False
    for sub in patterns.split(","):
        negated = sub.startswith("!")
        sub = sub[1:] if negated else sub
        if match_pattern(text, sub.lower() if lower else sub):
            if negated:
                return False
            positive = True
    return positive


@dataclass(frozen=True, eq=False)
class HostCond:
    """A `Host` line: its patterns, each alone (a comma is a plain character there), `!` negates."""

    patterns: tuple[str, ...]

    def literals(self) -> tuple[str, ...] | None:
        """The names that can make this line match, when none of its positive patterns is a wildcard."""
        positive = [p for p in self.patterns if not p.startswith("!")]
        if not positive or any("*" in p or "?" in p for p in positive):
            return None
        return tuple(positive)

    def matches(self, host: str) -> bool:
        found = False
        for pattern in self.patterns:
            negated = pattern.startswith("!")
            if match_pattern(host, pattern[1:] if negated else pattern):
                if negated:
                    return False
                found = True
        return found


@dataclass(frozen=True)
class Criterion:
    name: str  # all, canonical, final, exec, host, originalhost, user, localuser
    negated: bool
    arg: str


@dataclass(frozen=True, eq=False)
class MatchCond:
    """A `Match` line, checked as readconf.c match_cfg_line checks it when it reads the line."""

    criteria: tuple[Criterion, ...]
    where: str  # file:line, for a failing exec

    @property
    def wants_final(self) -> bool:
        return any(c.name == "final" for c in self.criteria)


def parse_match(line: Line) -> MatchCond:
    criteria: list[Criterion] = []
    attributes = 0
    rest: str | None = line.rest
    while True:
        word, rest = strdelim(rest)
        if not word or word.startswith("#"):
            break
        negated = word.startswith("!")
        name = (word[1:] if negated else word).lower()
        if name == "all":
            following, _ = strdelim(rest)
            if attributes > 1 or (following and not following.startswith("#")):
                raise line.error(f"'{word}' cannot be combined with other Match attributes")
            criteria.append(Criterion("all", negated, ""))
            return MatchCond(tuple(criteria), f"{line.path}:{line.number}")
        attributes += 1
        if name in ("canonical", "final"):
            criteria.append(Criterion(name, negated, ""))
            continue
        arg, rest = strdelim(rest)
        if name not in MATCH_CRITERIA:
            raise line.error(f"Bad Match condition: unsupported Match attribute {word}"
                             + (" (OpenSSH 9.4+; jueying does not read it)" if name in ("tagged", "localnetwork")
                                else ""))
        if not arg or arg.startswith("#"):
            raise line.error(f"Bad Match condition: missing Match criteria for {word}")
        criteria.append(Criterion(name, negated, arg))
    if attributes == 0:
        raise line.error("Bad Match condition: one or more attributes required for Match")
    return MatchCond(tuple(criteria), f"{line.path}:{line.number}")


@dataclass
class Local:
    """Who runs jueying, as OpenSSH sees it: the passwd entry of the real uid, and this host's name."""

    user: str
    home: str
    uid: int
    hostname: str

    @classmethod
    def here(cls) -> Local:
        uid = os.getuid()
        try:
            entry = pwd.getpwuid(uid)
            user, home = entry.pw_name, entry.pw_dir
        except KeyError:  # no passwd entry (some containers): OpenSSH refuses to run; we use the environment
            import getpass

            user, home = getpass.getuser(), os.path.expanduser("~")
        return cls(user, home, uid, socket.gethostname())

    def tokens(self, host: str, original: str, port: int, user: str, alias: str | None) -> dict[str, str]:
        """The %-tokens of ssh_config(5) TOKENS for files (IdentityFile, UserKnownHostsFile, Match exec...)."""
        short = self.hostname.split(".", 1)[0]
        conn_hash = hashlib.sha1(f"{self.hostname}{host}{port}{user}".encode()).hexdigest()  # noqa: S324 - %C
        return {"%": "%", "C": conn_hash, "d": self.home, "h": host, "i": str(self.uid), "k": alias or original,
                "L": short, "l": self.hostname, "n": original, "p": str(port), "r": user, "u": self.user}

    def tilde(self, path: str) -> str:
        """misc.c tilde_expand: `~` and `~/` are the passwd home (not $HOME), `~user/` that user's."""
        if not path.startswith("~"):
            return path
        if path == "~" or path.startswith("~/"):
            return self.home.rstrip("/") + "/" + path[1:].lstrip("/")
        name, slash, rest = path[1:].partition("/")
        if name:
            try:
                home = pwd.getpwnam(name).pw_dir
            except KeyError:
                raise ValueError(f"no such user {name}") from None
        else:
            home = self.home
        rest = rest.lstrip("/") if slash else ""
        return home + ("" if home.endswith("/") else "/") + rest


_TOKEN = re.compile(r"%(.)", re.DOTALL)
_TOKEN_OR_VAR = re.compile(r"\$\{([^}]*)\}|%(.)", re.DOTALL)


def expand(value: str, tokens: dict[str, str], dollar: bool = True) -> str:
    """misc.c percent_dollar_expand, one pass left to right (values are not expanded again). The syntax was
    checked when the line was read; an unknown token here is left as it is."""
    if "%" not in value and not (dollar and "${" in value):
        return value

    def one(m: re.Match[str]) -> str:
        if m.lastindex == 1 and dollar:
            return os.environ.get(m.group(1), "")
        letter = m.group(m.lastindex or 0)
        return tokens.get(letter, m.group(0))

    return (_TOKEN_OR_VAR if dollar else _TOKEN).sub(one, value)


class MatchState:
    """What a Match line is checked against, at the point of the file where it stands."""

    def __init__(self, local: Local, host: str, original: str, final: bool) -> None:
        self.local = local
        self.host = host  # the host this pass matches Host lines against
        self.original = original
        self.final = final

    def evaluate(self, cond: MatchCond, options: dict[str, object]) -> bool:
        hostname = options.get("hostname")
        if self.final:
            host = str(hostname)
        elif hostname is not None:
            host = expand(str(hostname), {"h": self.host, "%": "%"}, dollar=False)
        else:
            host = self.host
        ruser = str(options.get("user") or self.local.user)
        result = True
        for c in cond.criteria:
            if c.name == "all":
                return result and not c.negated
            if c.name in ("canonical", "final"):
                ok = self.final
            elif c.name == "host":
                ok = match_pattern_list(host.lower(), c.arg, lower=True)
            elif c.name == "originalhost":
                ok = match_pattern_list(self.original.lower(), c.arg, lower=True)
            elif c.name == "user":
                ok = match_pattern_list(ruser, c.arg, lower=False)
            elif c.name == "localuser":
                ok = match_pattern_list(self.local.user, c.arg, lower=False)
            else:  # exec: run only when every criterion before it matched, as OpenSSH does
                if not result:
                    continue
                port = int(str(options.get("port") or 22))
                alias = options.get("hostkeyalias")
                command = expand(c.arg, self.local.tokens(host, self.original, port, ruser,
                                                          str(alias) if alias else host), dollar=False)
                ok = _exec(command)
            if ok == c.negated:
                result = False
        return result


@functools.lru_cache(maxsize=1024)
def _exec(command: str) -> bool:
    """Match exec: the command through $SHELL (else /bin/sh), stdin and stdout on /dev/null; exit 0 matches.
    Each distinct command runs once per jueying run."""
    shell = os.environ.get("SHELL") or "/bin/sh"
    try:
        return subprocess.run([shell, "-c", command], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                              check=False).returncode == 0
    except OSError:
        return False
