"""The Prometheus read-back's decisions on series as Prometheus returns them (the query itself runs against a
real server in tests/integration/test_prometheus*.py): drain state from the scheduler first, from a
controller-mode exporter's families otherwise; never healthy without a state."""

from __future__ import annotations

from jueying_cli.exporter.readback import _Node, _row, _take, _with_scheduler
from jueying_cli.inventory.model import Node
from jueying_cli.scheduler.base import NodeState
from jueying_cli.status.view import SchedulerView
from jueying_cli.vocab import Backend, NodeStatus, SchedulerState

NODE = Node(name="gpu01", vars={"expected_gpus": 8})


def _seen(*series: tuple[dict[str, str], float]) -> _Node:
    found: dict[str, _Node] = {}
    for labels, value in series:
        _take(found, {"node": "gpu01", **labels}, value)
    return found["gpu01"]


HEALTHY = ({"__name__": "jueying_node_state", "state": "ok"}, 1.0)
GPUS = ({"__name__": "jueying_node_gpus"}, 8.0)


def test_the_exported_drain_is_used_when_the_scheduler_was_not_read() -> None:
    seen = _seen(HEALTHY, GPUS, ({"__name__": "jueying_node_scheduler_state", "state": "drained"}, 1.0),
                 ({"__name__": "jueying_node_drain_info", "backend": "slurm", "reason": "fan"}, 1.0))
    row = _with_scheduler(_row(NODE, seen), seen, None)
    assert (row.state, row.scheduler, row.drain_reason) == (NodeStatus.DRAINED, Backend.SLURM, "fan")


def test_the_scheduler_read_now_wins_over_the_exported_one() -> None:
    seen = _seen(HEALTHY, GPUS, ({"__name__": "jueying_node_scheduler_state", "state": "drained"}, 1.0),
                 ({"__name__": "jueying_node_drain_info", "backend": "slurm", "reason": "fan"}, 1.0))
    now = SchedulerView(Backend.SLURM, NodeState("gpu01", SchedulerState.IDLE, False))
    row = _with_scheduler(_row(NODE, seen), seen, now)
    assert (row.state, row.scheduler_state, row.drain_reason) == (NodeStatus.OK, SchedulerState.IDLE, None)


def test_a_node_without_a_state_series_has_no_data_whatever_else_it_has() -> None:
    seen = _seen(GPUS, ({"__name__": "jueying_node_gpu_utilization_avg_percent"}, 50.0))
    assert _row(NODE, seen).state == NodeStatus.NO_DATA
    assert _row(NODE, None).state == NodeStatus.NO_DATA
    assert _row(NODE, _seen(({"__name__": "jueying_node_state", "state": "drained"}, 1.0), GPUS)).state \
        == NodeStatus.DRAINED  # an older exporter's state: still shown, not healthy
