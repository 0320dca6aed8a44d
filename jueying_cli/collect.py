"""Facts collection entry points: local (in-process probe); remote arrives with the fleet engine."""

from __future__ import annotations

from jueying_cli.models import Facts


def collect_local() -> tuple[str, Facts]:
    """(node name, facts) for the machine jueying runs on."""
    from jueying_cli.probe import collect

    facts = Facts.from_document(collect())
    return facts.host.hostname, facts
