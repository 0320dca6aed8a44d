"""One-shot facts collection: the local probe in-process, or the probe shipped to every node in one SSH
round trip (collect/payload.py); psutil is used when the node has it, /proc and /sys otherwise."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence

from jueying_cli.collect.payload import DEFAULT_PROBE_TIMEOUT_S, NO_PYTHON_RC, probe_command
from jueying_cli.errors import FactsError
from jueying_cli.facts.collected import NodeFacts
from jueying_cli.facts.model import Facts
from jueying_cli.inventory.model import Node
from jueying_cli.outcome import Outcome
from jueying_cli.transport.base import Transport
from jueying_cli.vocab import OutcomeStatus


def parse_outcome(node: Node, outcome: Outcome) -> NodeFacts:
    """Turn a probe run into facts; garbage output becomes `failed` with the reason, never a crash. The facts
    hold every field of the document (Facts.to_document() writes it back), so the raw JSON is not kept."""
    if outcome.status != OutcomeStatus.OK:
        if outcome.rc == NO_PYTHON_RC:
            reason = outcome.stderr.strip().splitlines()[-1] if outcome.stderr.strip() else "python3 not found"
            outcome = _replace(outcome, OutcomeStatus.FAILED, reason)
        elif outcome.status == OutcomeStatus.FAILED and outcome.stderr.strip():
            code = f" (exit {outcome.rc})" if outcome.rc is not None else ""
            last = outcome.stderr.strip().splitlines()[-1][:200]
            outcome = _replace(outcome, OutcomeStatus.FAILED, f"probe failed{code}: {last}")
        return NodeFacts(node, outcome, None)
    try:
        facts = Facts.from_document(json.loads(outcome.stdout))
    except json.JSONDecodeError as exc:
        why = f"probe output is not JSON ({exc.msg} at char {exc.pos})"
        return NodeFacts(node, _replace(outcome, OutcomeStatus.FAILED, why), None)
    except FactsError as exc:
        return NodeFacts(node, _replace(outcome, OutcomeStatus.FAILED, f"probe output rejected: {exc}"), None)
    # The raw JSON is no longer needed: at a thousand nodes it is ~15 MB.
    return NodeFacts(node, Outcome(outcome.node, outcome.status, rc=outcome.rc, stderr=outcome.stderr[:2000],
                                   duration_s=outcome.duration_s), facts)


def _replace(outcome: Outcome, status: OutcomeStatus, error: str) -> Outcome:
    return Outcome(outcome.node, status, rc=outcome.rc, stdout=outcome.stdout[:2000], stderr=outcome.stderr[:2000],
                   duration_s=outcome.duration_s, error=error, truncated=outcome.truncated)


def collect_local() -> tuple[str, Facts]:
    """(node name, facts) for the machine jueying runs on, in-process (no subprocess, no SSH)."""
    from jueying_cli.probe import collect

    facts = Facts.from_document(collect())
    return facts.host.hostname, facts


def collect_nodes(transport: Transport, nodes: Sequence[Node], *, fanout: int, deadline_s: float | None,
                  timeout_s: float = DEFAULT_PROBE_TIMEOUT_S, with_gpus: bool = True,
                  on_result: Callable[[NodeFacts], None] | None = None) -> tuple[list[NodeFacts], bool]:
    """Facts from every node (local ones in-process). Returns (results in node order, interrupted)."""
    from jueying_cli.transport.fanout import run_many

    by_name = {n.name: n for n in nodes}
    results: dict[str, NodeFacts] = {}
    remote = [n for n in nodes if not n.is_local]
    for node in nodes:
        if node.is_local:
            started = time.monotonic()
            _, facts = collect_local()
            took = time.monotonic() - started
            results[node.name] = NodeFacts(node, Outcome(node.name, OutcomeStatus.OK, rc=0, duration_s=took), facts)
            if on_result:
                on_result(results[node.name])
    interrupted = False
    if remote:
        command = probe_command(timeout_s, with_gpus)

        def on_outcome(outcome: Outcome) -> None:
            parsed = results[outcome.node] = parse_outcome(by_name[outcome.node], outcome)
            if on_result:
                on_result(parsed)

        result = run_many(transport, remote, command, fanout=fanout, deadline_s=deadline_s, on_outcome=on_outcome)
        interrupted = result.interrupted
        for name, outcome in result.outcomes.items():
            if name not in results:  # marked timeout at the deadline or on Ctrl-C
                results[name] = parse_outcome(by_name[name], outcome)
    return [results[n.name] for n in nodes], interrupted
