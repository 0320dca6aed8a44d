"""Check findings (checks.flap.Finding) as status rows carry them (status.summary.HealthFinding), by node, for
`status` and `status --watch`. (The Prometheus families keep a node's state apart from its check level:
`jueying_node_state` is built without these, `jueying_node_level` from the findings.)"""

from __future__ import annotations

from collections.abc import Iterable

from jueying_cli.checks.flap import REACHABILITY, Finding
from jueying_cli.status.summary import HealthFinding
from jueying_cli.vocab import Level


def health_by_node(findings: Iterable[Finding]) -> dict[str, list[HealthFinding]]:
    """Each node's non-OK results, confirmed or pending; reachability results are left out (a node that gave
    no facts has a row saying so)."""
    health: dict[str, list[HealthFinding]] = {}
    for f in findings:
        r = f.result
        if r.level != Level.OK and r.check != REACHABILITY:
            health.setdefault(r.node, []).append(HealthFinding(r.check, r.level, r.gpu, r.message, f.confirmed,
                                                               f.consecutive, f.confirm_runs))
    return health
