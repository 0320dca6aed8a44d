"""Pick the transport per node: local for the embedded default (and `local: true`), SSH for the rest."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import TYPE_CHECKING

from jueying_cli.inventory.model import Node
from jueying_cli.outcome import Outcome
from jueying_cli.transport.base import Cancel, Command, Stream
from jueying_cli.transport.local import LocalTransport

if TYPE_CHECKING:
    from jueying_cli.transport.ssh.client import SshTransport
    from jueying_cli.transport.ssh.options import SshOptions


class RoutingTransport:
    """A StreamingTransport. SSH is created (and paramiko imported) only when a selected node needs it."""

    def __init__(self, ssh_options: SshOptions | None = None) -> None:
        self._local = LocalTransport()
        self._ssh_options = ssh_options
        self._ssh: SshTransport | None = None
        self._ssh_lock = threading.Lock()  # fan-out threads may be the first to need it

    def _ssh_transport(self) -> SshTransport:
        with self._ssh_lock:
            if self._ssh is None:
                from jueying_cli.transport.ssh.client import SshTransport

                self._ssh = SshTransport(self._ssh_options)
            return self._ssh

    def prepare(self, nodes: Sequence[Node]) -> None:
        """Build the SSH transport up front when any node needs it (so its start-up cost, ssh_config and
        known_hosts reading, is paid before the fan-out's clock starts)."""
        if any(not n.is_local for n in nodes):
            self._ssh_transport()

    def run(self, node: Node, command: Command, deadline: float, cancel: Cancel | None = None) -> Outcome:
        if node.is_local:
            return self._local.run(node, command, deadline, cancel)
        return self._ssh_transport().run(node, command, deadline, cancel)

    def open_stream(self, node: Node, command: Command, deadline: float) -> Stream:
        """A command left running on the node (SSH nodes only; see SshTransport.open_stream)."""
        return self._ssh_transport().open_stream(node, command, deadline)

    def drop(self, node: Node) -> None:
        """Forget the kept connection to a node that stopped answering."""
        if self._ssh is not None and not node.is_local:
            self._ssh.drop(node)

    def close(self) -> None:
        if self._ssh is not None:
            self._ssh.close()
