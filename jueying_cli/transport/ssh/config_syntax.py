"""ssh_config lines as OpenSSH 9.x reads them (readconf.c process_config_line, misc.c strdelim/argv_split):
words, quotes, `=`, comments, keywords, and the checks OpenSSH makes on each value when it reads a line,
active or not. Every bad line is a BadInputError naming file:line (exit 2), as `ssh` refuses the file.
"""

from __future__ import annotations

import re
import socket
from typing import NamedTuple

from jueying_cli.errors import BadInputError

WHITESPACE = " \t\r\n"

# Every keyword OpenSSH's client knows (readconf.c keywords[], up to 10.x, so that a config written for a newer
# client is not refused), by how jueying checks its value. Keywords jueying reads have kinds of their own.
_FLAGS = {
    "batchmode", "checkhostip", "clearallforwardings", "compression", "enablesshkeysign", "exitonforwardfailure",
    "forwardx11", "forwardx11trusted", "gatewayports", "hashknownhosts", "hostbasedauthentication",
    "identitiesonly", "kbdinteractiveauthentication", "challengeresponseauthentication", "skeyauthentication",
    "tisauthentication", "nohostauthenticationforlocalhost", "passwordauthentication", "permitlocalcommand",
    "proxyusefdpass", "streamlocalbindunlink", "tcpkeepalive", "keepalive", "visualhostkey", "stdinnull",
    "forkafterauthentication", "enableescapecommandline", "canonicalizefallbacklocal",
}
_OTHER = {
    "addkeystoagent", "addressfamily", "bindaddress", "bindinterface", "canonicaldomains", "canonicalizehostname",
    "canonicalizemaxdots", "canonicalizepermittedcnames", "casignaturealgorithms", "channeltimeout", "ciphers",
    "connectionattempts", "controlmaster", "controlpath", "controlpersist", "dynamicforward", "escapechar",
    "fingerprinthash", "forwardagent", "forwardx11timeout", "gssapiauthentication", "gssapidelegatecredentials",
    "hostbasedacceptedalgorithms", "hostbasedkeytypes", "hostkeyalgorithms", "identityagent", "ipqos",
    "kbdinteractivedevices", "kexalgorithms", "knownhostscommand", "localcommand", "localforward", "loglevel",
    "logverbose", "macs", "numberofpasswordprompts", "obscurekeystroketiming", "permitremoteopen",
    "pkcs11provider", "preferredauthentications", "pubkeyacceptedalgorithms", "pubkeyacceptedkeytypes",
    "pubkeyauthentication", "rekeylimit", "remotecommand", "remoteforward", "requesttty", "requiredrsasize",
    "securitykeyprovider", "sendenv", "serveralivecountmax", "serveraliveinterval", "sessiontype", "setenv",
    "smartcarddevice", "streamlocalbindmask", "syslogfacility", "tag", "tunnel", "tunneldevice", "updatehostkeys",
    "verifyhostkeydns", "versionaddendum", "xauthlocation", "refuseconnection", "warnweakcrypto",
    "pubkeyauthoptions",
    # deprecated or unsupported: OpenSSH reads past them
    "protocol", "cipher", "fallbacktorsh", "globalknownhostsfile2", "rhostsauthentication", "userknownhostsfile2",
    "useroaming", "usersh", "useprivilegedport", "afstokenpassing", "kerberosauthentication", "kerberostgtpassing",
    "rsaauthentication", "rhostsrsaauthentication", "compressionlevel", "dsaauthentication",
}
_READ = {  # keyword -> kind, for what jueying uses
    "host": "host", "match": "match", "include": "include", "ignoreunknown": "string",
    "hostname": "hostname", "user": "string", "port": "port", "identityfile": "path", "identityfile2": "path",
    "certificatefile": "path", "proxyjump": "proxyjump", "proxycommand": "command", "connecttimeout": "time",
    "userknownhostsfile": "files", "globalknownhostsfile": "files", "hostkeyalias": "string",
    "revokedhostkeys": "string", "stricthostkeychecking": "strict",
}
KEYWORDS = {**dict.fromkeys(_FLAGS, "flag"), **dict.fromkeys(_OTHER, "other"), **_READ}
ALIASES = {"identityfile2": "identityfile", "keepalive": "tcpkeepalive"}
_STRICT = {"yes": "true", "true": "true", "no": "false", "false": "false", "off": "false", "ask": "ask",
           "accept-new": "accept-new"}
FILE_TOKENS = frozenset("CdhikLlnpru")  # ssh_config(5) TOKENS: IdentityFile, CertificateFile, UserKnownHostsFile
MATCH_CRITERIA = ("all", "canonical", "final", "exec", "host", "originalhost", "user", "localuser")


class Line(NamedTuple):  # a tuple: built for every line of a 1,000-host file, so cheap to build
    path: str
    number: int
    keyword: str  # lowercased, aliases resolved
    args: tuple[str, ...]  # the words after the keyword (quotes and escapes removed, comment dropped)
    rest: str  # the raw text after the keyword (what OpenSSH reads Match, ProxyJump and ProxyCommand from)

    def error(self, message: str) -> BadInputError:
        return BadInputError(message, path=self.path, line=self.number)


_DELIM = re.compile(r'[ \t\r\n"=]')
_PLAIN = re.compile(r"[\"'\\#]")
_BLANKS = re.compile(r"[ \t]+")
_TOKENS = re.compile(r"%(.?)", re.DOTALL)
_VARS = re.compile(r"\$\{([^}]*)(\}?)")
_SIMPLE = re.compile(r"[ \t]*([^ \t\r\n\"=#][^ \t\r\n\"=]*)(?:[ \t]+=?|=)[ \t]*(.*)", re.DOTALL)


def strdelim(s: str | None) -> tuple[str | None, str | None]:
    """misc.c strdelim: the next word (split at whitespace, one `=`, or a double-quoted run) and the rest."""
    if s is None:
        return None, None
    match = _DELIM.search(s)
    if match is None:
        return s, None
    i = match.start()
    if s[i] == '"':
        s = s[:i] + s[i + 1:]
        j = s.find('"', i)
        if j < 0:
            return None, None  # no matching quote
        return s[:j], s[j + 1:].lstrip(WHITESPACE)
    rest = s[i + 1:].lstrip(WHITESPACE)
    if s[i] != "=" and rest.startswith("="):
        rest = rest[1:].lstrip(WHITESPACE)
    return s[:i], rest


def argv_split(s: str) -> list[str] | None:
    """misc.c argv_split with comments: words, single or double quotes, backslash escapes; None: bad quotes."""
    if _PLAIN.search(s) is None:  # no quote, escape or comment: plain words
        return [w for w in _BLANKS.split(s) if w]
    words: list[str] = []
    i, n = 0, len(s)
    while i < n:
        if s[i] in " \t":
            i += 1
            continue
        if s[i] == "#":
            break
        word: list[str] = []
        quote = ""
        while i < n:
            c = s[i]
            if c == "\\" and i + 1 < n and (s[i + 1] in "'\"\\" or (not quote and s[i + 1] == " ")):
                word.append(s[i + 1])
                i += 2
                continue
            if not quote and c in " \t":
                break
            if not quote and c in "\"'":
                quote = c
            elif quote and c == quote:
                quote = ""
            else:
                word.append(c)
            i += 1
        if quote:
            return None
        words.append("".join(word))
    return words


def split_line(text: str, path: str, number: int) -> Line | None:
    """One line of a file: None for blank lines and comments."""
    text = text.rstrip(WHITESPACE + "\f")
    simple = _SIMPLE.fullmatch(text)  # `Keyword value`, `Keyword=value`: most lines, without strdelim's walk
    if simple is not None:
        keyword, rest = simple.group(1), simple.group(2)
    else:
        keyword, rest = strdelim(text)
        if keyword == "":
            keyword, rest = strdelim(rest)
        if not keyword or keyword.startswith("#"):
            return None
        rest = (rest or "").lstrip(WHITESPACE)
    keyword = keyword.lower()
    if not rest:
        raise BadInputError(f'no argument after keyword "{keyword}"', path=path, line=number)
    args = argv_split(rest)
    if args is None:
        raise BadInputError("invalid quotes", path=path, line=number)
    return Line(path, number, ALIASES.get(keyword, keyword), tuple(args), rest)


def a2port(text: str) -> int:
    """misc.c a2port: 1-65535 or a TCP service name; -1 if neither (0 is refused by the caller)."""
    if re.fullmatch(r"[ \t\n\v\f\r]*[+-]?[0-9]+", text):
        value = int(text)
        return value if 0 <= value <= 65535 else -1
    try:
        return socket.getservbyname(text, "tcp")
    except OSError:
        return -1


def convtime(text: str) -> int:
    """misc.c convtime: `90`, `1m30s`, `1h` ... in seconds; -1 when invalid."""
    units = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
    if not text:
        return -1
    total, pos = 0, 0
    for m in re.finditer(r"[ \t\n\v\f\r]*([+-]?[0-9]+)([sSmMhHdDwW]?)", text):
        if m.start() != pos:
            return -1
        seconds = int(m.group(1))
        if seconds < 0 or seconds > 2**31 - 1:
            return -1
        total += seconds * units[m.group(2).lower()]
        if total > 2**31 - 1:
            return -1
        pos = m.end()
    return total if pos == len(text) else -1


def check_tokens(line: Line, value: str, allowed: frozenset[str], dollar: bool) -> None:
    """misc.c percent_dollar_expand would fail on this value: an unknown %-token, a lone %, or an unset or
    malformed ${VAR}. Checked when the line is read, for every line (OpenSSH fails when the value is used)."""
    if "%" not in value and "${" not in value:
        return
    for m in _TOKENS.finditer(value.replace("%%", "")):
        if m.group(1) == "":
            raise line.error(f"{line.keyword} {value!r}: invalid format (a lone '%' at the end; write %% for %)")
        if m.group(1) not in allowed:
            raise line.error(f"{line.keyword} {value!r}: unknown token %{m.group(1)}")
    if not dollar:
        return
    import os

    for m in _VARS.finditer(value):
        if not m.group(2):
            raise line.error(f"{line.keyword} {value!r}: environment variable missing closing '}}'")
        if not m.group(1):
            raise line.error(f"{line.keyword} {value!r}: zero-length environment variable")
        if m.group(1) not in os.environ:
            raise line.error(f"{line.keyword} {value!r}: environment variable ${{{m.group(1)}}} has no value")


def parse_jump_hop(hop: str) -> tuple[str | None, str, int | None] | None:
    """misc.c parse_ssh_uri / parse_user_host_port: ([user], host, [port]) of one hop, or None if invalid."""
    if hop.startswith("ssh://"):
        hop = hop[6:].rstrip("/")
        if not hop or "/" in hop:
            return None
    user = None
    if "@" in hop:
        user, hop = hop.rsplit("@", 1)
        if not user:
            return None
    if hop.startswith("["):
        host, close, rest = hop[1:].partition("]")
        if not close or (rest and not rest.startswith(":")):
            return None
        port_text = rest[1:]
    else:
        host, _, port_text = hop.partition(":") if ":" in hop else (hop, "", "")
    if not host:
        return None
    port = None
    if port_text:
        port = a2port(port_text)
        if port <= 0:
            return None
    return user, host, port


def value_of(line: Line) -> object:
    """The line's value as the resolver applies it, after OpenSSH's checks (for Host, Match and Include:
    their words). Raises BadInputError naming the line."""
    kind = KEYWORDS[line.keyword]
    args = line.args
    if kind in ("other", "command"):
        return line.rest.lstrip(WHITESPACE + "=") if kind == "command" else args
    if kind in ("host", "include", "files"):
        if "" in args:
            raise line.error(f"keyword {line.keyword} empty argument")
        if kind == "files":
            if any(a.lower() == "none" for a in args) and len(args) > 1:
                raise line.error(f'keyword {line.keyword} "none" argument must appear alone.')
            if line.keyword == "userknownhostsfile":
                for a in args:
                    check_tokens(line, a, FILE_TOKENS, dollar=True)
        return args
    if kind == "match":
        return args
    if kind == "proxyjump":
        return _proxy_jump(line)
    if not args or args[0] == "":
        raise line.error("missing argument.")
    if len(args) > 1:
        raise line.error(f"keyword {line.keyword} extra arguments at end of line")
    value = args[0]
    if kind == "flag":
        if value.lower() not in ("yes", "true", "no", "false"):
            raise line.error(f'unsupported option "{value}".')
        return "yes" if value.lower() in ("yes", "true") else "no"
    if kind == "strict":
        if value.lower() not in _STRICT:
            raise line.error(f'unsupported option "{value}".')
        return _STRICT[value.lower()]
    if kind == "port":
        port = a2port(value)
        if port <= 0:
            raise line.error(f"Bad port '{value}'.")
        return port
    if kind == "time":
        seconds = -1 if value == "none" else convtime(value)
        if seconds == -1 and value != "none":
            raise line.error("invalid time value.")
        return None if value == "none" else seconds
    if kind == "hostname":
        check_tokens(line, value, frozenset("h"), dollar=False)
    elif kind == "path":
        check_tokens(line, value, FILE_TOKENS, dollar=True)
    return value


def _proxy_jump(line: Line) -> str:
    """readconf.c parse_jump: `none`, or a comma list of [user@]host[:port] and ssh:// URIs, each checked."""
    text = line.rest.lstrip(WHITESPACE + "=").split("#", 1)[0].strip(WHITESPACE)
    text = re.split(r"[ \t\r\n]", text, maxsplit=1)[0]
    if text.lower() == "none":
        return "none"
    hops = text.split(",")
    parsed = [parse_jump_hop(h) for h in hops]
    last = parsed[-1]
    if not text or last is None or any(p is None for p in parsed):
        raise line.error(f'Invalid ProxyJump "{text}"')
    user, host, port = last  # written back as `ssh -G` prints it: [user@]host[:port], an IPv6 host in brackets
    host = f"[{host}]" if ":" in host else host
    return ",".join([*hops[:-1], f"{user + '@' if user else ''}{host}{f':{port}' if port else ''}"])
