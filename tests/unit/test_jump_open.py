"""Opening a direct-tcpip channel on a jump connection (transport/ssh/jump.py): what the jump host refused
and why, and a bounded retry when it is short of resources. OpenSSH never answers `resource shortage` to
direct-tcpip (Dropbear does, past its channel limit), so the peer here is paramiko's own SSH server on
loopback, answering each channel open as the test says; it forwards nothing anywhere."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Iterator

import paramiko
import pytest
from paramiko.common import (
    AUTH_SUCCESSFUL,
    OPEN_FAILED_ADMINISTRATIVELY_PROHIBITED,
    OPEN_FAILED_CONNECT_FAILED,
    OPEN_FAILED_RESOURCE_SHORTAGE,
    OPEN_SUCCEEDED,
)

from jueying_cli.transport.ssh.jump import OPEN_ATTEMPTS, Connection, ForwardedSocket, RefusedOpen

Answer = Callable[[int], int]  # destination port -> paramiko's OPEN_* code


class _JumpHost(paramiko.ServerInterface):
    def __init__(self, answer: Answer) -> None:
        self.answer = answer
        self.asked = 0

    def get_allowed_auths(self, username: str) -> str:
        return "none"

    def check_auth_none(self, username: str) -> int:
        return AUTH_SUCCESSFUL

    def check_channel_direct_tcpip_request(self, chanid: int, origin: tuple[str, int],
                                           destination: tuple[str, int]) -> int:
        self.asked += 1
        return self.answer(destination[1])


@pytest.fixture()
def jump_host() -> Iterator[Callable[[Answer], tuple[Connection, _JumpHost]]]:
    listener = socket.create_server(("127.0.0.1", 0))
    opened: list[paramiko.Transport] = []
    host_key = paramiko.ECDSAKey.generate()

    def connect(answer: Answer) -> tuple[Connection, _JumpHost]:
        server = _JumpHost(answer)
        client = Connection(socket.create_connection(listener.getsockname()))
        peer, _ = listener.accept()
        serving = paramiko.Transport(peer)
        serving.add_server_key(host_key)
        opened.extend([client, serving])
        started = threading.Thread(target=serving.start_server, kwargs={"server": server})
        started.start()
        client.start_client(timeout=10)
        started.join(10)
        client.auth_none("operator")
        assert client.is_authenticated()
        return client, server

    yield connect
    for transport in opened:
        transport.close()
    listener.close()


def test_a_jump_host_short_of_channels_is_asked_again_until_it_has_one(jump_host) -> None:
    answers = [OPEN_FAILED_RESOURCE_SHORTAGE, OPEN_FAILED_RESOURCE_SHORTAGE]
    conn, server = jump_host(lambda port: answers.pop(0) if answers else OPEN_SUCCEEDED)
    sock = conn.open_forward("127.0.0.1", 22, 10, time.monotonic() + 60, "jump")
    assert isinstance(sock, ForwardedSocket) and server.asked == 3
    sock.close()


def test_the_retry_is_bounded_in_attempts_and_by_the_deadline(jump_host) -> None:
    conn, server = jump_host(lambda port: OPEN_FAILED_RESOURCE_SHORTAGE)
    with pytest.raises(RefusedOpen) as refused:
        conn.open_forward("127.0.0.1", 22, 10, time.monotonic() + 60, "jump")  # ~3 s of backoff in all
    assert refused.value.code == OPEN_FAILED_RESOURCE_SHORTAGE and "resource shortage" in str(refused.value)
    assert server.asked == OPEN_ATTEMPTS
    server.asked = 0
    with pytest.raises(RefusedOpen):
        conn.open_forward("127.0.0.1", 22, 10, time.monotonic() + 0.05, "jump")  # no time for a second try
    assert server.asked == 1


def test_any_other_refusal_is_final_and_says_why(jump_host) -> None:
    conn, server = jump_host(lambda port: OPEN_FAILED_ADMINISTRATIVELY_PROHIBITED)
    with pytest.raises(RefusedOpen) as refused:
        conn.open_forward("127.0.0.1", 22, 10, time.monotonic() + 60, "jump")
    assert server.asked == 1 and str(refused.value) == "administratively prohibited"


def test_concurrent_opens_each_get_their_own_answer(jump_host) -> None:
    """paramiko keeps one refusal per connection, which concurrent opens take from each other: each open
    here must still learn its own answer (refused or not), never another's or none."""
    conn, _ = jump_host(lambda port: OPEN_SUCCEEDED if port % 2 == 0 else OPEN_FAILED_CONNECT_FAILED)
    results: dict[int, object] = {}

    def open_one(port: int) -> None:
        try:
            results[port] = conn.open_forward("127.0.0.1", port, 10, time.monotonic() + 60, "jump")
        except Exception as exc:  # noqa: BLE001 - the test looks at what each open got
            results[port] = exc

    for _ in range(5):
        threads = [threading.Thread(target=open_one, args=(port,)) for port in range(2000, 2016)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(30)
        for port, result in results.items():
            if port % 2 == 0:
                assert isinstance(result, ForwardedSocket), (port, result)
                result.close()
            else:
                assert isinstance(result, RefusedOpen) and result.code == OPEN_FAILED_CONNECT_FAILED, (port, result)
        results.clear()
