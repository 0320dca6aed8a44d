"""Nodes behind a ProxyJump host: one SSH connection to the jump host carries a direct-tcpip channel for
each node, and the node's own SSH connection runs inside that channel. Two things paramiko gets wrong on
such a shared connection are handled here.

ForwardedSocket: paramiko's Channel decides under its lock that it is still open, releases the lock, and only
then sends the packet (paramiko issue #1115, still open in 5.1). A node's connection writing its last packet
while another thread closes that connection can therefore put a data packet on the wire after the channel's
CLOSE. OpenSSH answers data for a channel it has already freed by disconnecting the whole connection
("data packet referred to nonexistent channel N", channels.c channel_from_packet_id), and every node behind
that jump host loses its connection at once, commands already running included. The socket a node's
connection writes to holds one lock across each send and the close, so a close waits for the packet being
sent and nothing is sent after it. The jump host may also close a channel first (the node went away) while
a packet is on its way out: paramiko's reply to that CLOSE is held until the packet is sent, the same way.

Connection: a paramiko Transport that remembers what the peer said. When the jump host refuses a channel,
paramiko keeps only the reason code's name in ONE exception per connection, which concurrent opens overwrite
or take from each other; when it disconnects, paramiko only logs the reason. An operator needs the jump
host's own words ("Connection refused", "administratively prohibited", "data packet referred to ...").

Hand-written: no maintained library multiplexes SSH connections over a paramiko connection; this relies on
four private paramiko names (_next_channel, _parse_channel_open_failure, _parse_disconnect and
_channel_handler_table) and falls back to paramiko's own messages and behaviour when they are missing.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from contextlib import suppress
from typing import Any

import paramiko
from paramiko.common import MSG_CHANNEL_CLOSE
from paramiko.message import Message

# RFC 4254 5.1 reason codes for a refused channel open
OPEN_RESOURCE_SHORTAGE = 4
_OPEN_REASONS = {1: "administratively prohibited", 2: "connect failed", 3: "unknown channel type",
                 4: "resource shortage"}
# A refusal for lack of resources is temporary (a server's channel limit, e.g. Dropbear's MAX_CHANNELS, frees
# up as other nodes finish): tried again after 0.1, 0.2, 0.4 ... s, at most this many times in all.
OPEN_ATTEMPTS = 6
_BACKOFF_S = 0.1


class RefusedOpen(Exception):
    """The jump host refused a direct-tcpip channel; `code` is the RFC 4254 reason code, `text` its words."""

    def __init__(self, code: int, text: str) -> None:
        super().__init__(f"{text} ({_OPEN_REASONS.get(code, f'reason {code}')})" if text else
                         _OPEN_REASONS.get(code, f"reason {code}"))
        self.code = code
        self.text = text


_HandleClose = Callable[[paramiko.Channel, Message], None]
_BASE_CLOSE: _HandleClose | None = getattr(paramiko.Transport, "_channel_handler_table", {}).get(MSG_CHANNEL_CLOSE)


def _close_after_send(chan: paramiko.Channel, m: Message) -> None:
    """The jump host closed a channel: paramiko's reply (EOF, CLOSE) waits for a packet being sent on it."""
    sock = getattr(chan.get_transport(), "forwarded", {}).get(chan.get_id())
    if sock is not None:
        sock.closed_by_peer(m)
    elif _BASE_CLOSE is not None:
        _BASE_CLOSE(chan, m)


class Connection(paramiko.Transport):
    """A paramiko Transport that keeps the peer's reasons: `disconnect_reason` once it disconnected, and the
    reason a channel open was refused (`open_forward`). Used for every SSH connection jueying makes."""

    if _BASE_CLOSE is not None:
        _channel_handler_table = {**paramiko.Transport._channel_handler_table,  # type: ignore[attr-defined]
                                  MSG_CHANNEL_CLOSE: _close_after_send}

    def __init__(self, sock: Any) -> None:
        super().__init__(sock)
        self.disconnect_reason: str | None = None
        self.forwarded: dict[int, ForwardedSocket] = {}  # channel id -> the socket a node's connection uses
        self._refusals: dict[int, tuple[int, str]] = {}
        self._opening = threading.local()

    # paramiko internals, overridden to record what paramiko drops
    def _next_channel(self) -> int:
        chanid: int = super()._next_channel()  # type: ignore[misc]
        self._opening.chanid = chanid  # open_channel asks for its id in the opening thread
        return chanid

    def _parse_channel_open_failure(self, m: Message) -> None:
        chanid, code, text = m.get_int(), m.get_int(), m.get_text()
        self._refusals[chanid] = (code, text)
        m.rewind()
        super()._parse_channel_open_failure(m)  # type: ignore[misc]

    def _parse_disconnect(self, m: Message) -> None:
        code, text = m.get_int(), m.get_text()
        self.disconnect_reason = f"{text} (code {code})" if text else f"code {code}"
        m.rewind()
        super()._parse_disconnect(m)  # type: ignore[misc]

    def open_forward(self, address: str, port: int, timeout: float, deadline: float, via: str) -> ForwardedSocket:
        """A direct-tcpip channel to address:port, as a socket for the node's own connection (`via`: the jump
        host's name, for messages). A refusal for lack of resources is tried again with a bounded backoff
        (never past `deadline`, a time.monotonic() instant); any other refusal raises RefusedOpen with the jump
        host's own reason. A lost connection or a timeout raises what paramiko raised."""
        delay = _BACKOFF_S
        for attempt in range(OPEN_ATTEMPTS):
            self._opening.chanid = None
            try:
                channel = self.open_channel("direct-tcpip", (address, port), ("127.0.0.1", 0),
                                            timeout=max(0.1, min(timeout, deadline - time.monotonic())))
            except (paramiko.SSHException, EOFError, OSError) as exc:
                # paramiko raises whichever refusal it saw last on this connection, or none ("Unable to open
                # channel.") when a concurrent open took it: the refusal recorded for our channel id decides.
                chanid = self._opening.chanid
                refused = self._refusals.pop(chanid, None) if chanid is not None else None
                if refused is None:
                    raise
                code, text = refused
                if (code != OPEN_RESOURCE_SHORTAGE or attempt + 1 == OPEN_ATTEMPTS
                        or time.monotonic() + delay >= deadline):
                    raise RefusedOpen(code, text) from exc
                time.sleep(delay)  # the jump host is short of channels for now: back off, bounded
                delay *= 2
                continue
            sock = ForwardedSocket(channel, via)
            self.forwarded[channel.get_id()] = sock
            return sock
        raise AssertionError("unreachable")  # the last attempt returns or raises

    def lost(self) -> str | None:
        """Why this connection is gone ('…' when it said nothing), or None while it is up."""
        if self.is_active():
            return None
        return self.disconnect_reason or "the connection closed without a reason"


class ForwardedSocket:
    """The socket-like end of a direct-tcpip channel that a node's paramiko connection reads and writes:
    each send and the close hold one lock, so the channel's CLOSE never overtakes a packet (module doc)."""

    def __init__(self, channel: paramiko.Channel, via: str) -> None:
        self.channel = channel
        self.via = via  # the jump host's name
        self._send_lock = threading.Lock()  # held across a whole send, and across close
        self._state = threading.Lock()  # guards _sending, _pending_close and _shut; held briefly
        self._sending = False
        self._pending_close: Message | None = None
        self._shut = False

    @property
    def jump(self) -> Connection | None:
        transport = self.channel.get_transport()
        return transport if isinstance(transport, Connection) else None

    def send(self, data: bytes) -> int:
        with self._send_lock:
            with self._state:
                if self._shut:
                    raise OSError("Socket is closed")
                self._sending = True
            try:
                return self.channel.send(data)
            finally:
                with self._state:
                    self._sending = False
                    pending, self._pending_close = self._pending_close, None
                if pending is not None:  # still under _send_lock: no packet can follow the answer
                    self._answer_close(pending)  # the jump host's close, answered after our packet

    def closed_by_peer(self, m: Message) -> None:
        """Called by the jump connection's reader when the jump host closed this channel. With a send under
        way, that send answers the close once its packet is out (the reader must never wait for it);
        otherwise the answer goes now, and no new send starts before it is out."""
        with self._state:
            if self._sending:
                self._pending_close = m
                return
            self._answer_close(m)

    def _answer_close(self, m: Message) -> None:
        self._shut = True
        jump = self.jump
        if jump is not None:
            jump.forwarded.pop(self.channel.get_id(), None)
        if _BASE_CLOSE is not None:
            _BASE_CLOSE(self.channel, m)

    def lost(self) -> str | None:
        """Why the jump connection under this channel is gone, or None while it is up."""
        jump = self.jump
        return jump.lost() if jump is not None else None

    def recv(self, nbytes: int) -> bytes:
        return self.channel.recv(nbytes)

    def close(self) -> None:
        with self._send_lock:  # waits for the packet being sent, if any
            with self._state:
                self._shut = True
            jump = self.jump
            if jump is not None:
                jump.forwarded.pop(self.channel.get_id(), None)
            # a jump connection already gone has nothing left to close
            with suppress(paramiko.SSHException, EOFError, OSError):
                self.channel.close()

    def settimeout(self, timeout: float | None) -> None:
        self.channel.settimeout(timeout)

    def gettimeout(self) -> float | None:
        return self.channel.gettimeout()

    def fileno(self) -> int:
        return self.channel.fileno()

    def getpeername(self) -> Any:
        return self.channel.getpeername()

    @property
    def _closed(self) -> bool:  # paramiko's Transport.stop_thread reads it off its socket
        return self._shut or self.channel.closed
