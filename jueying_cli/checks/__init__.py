"""Health checks: pure functions from a node's facts (and the fleet's) to results with level and action.

    results = run_checks([(node, facts), ...], load_check_config(path), inventory, now=time.time())

model (Level, Action, CheckResult), xid (the XID catalog), gpu / host / fleet (the checks), registry
(CHECKS), config (check sets and overrides), run (run_checks).
"""

from __future__ import annotations

from jueying_cli.checks.config import CheckConfig, Override, builtin_config, load_check_config
from jueying_cli.checks.model import CheckResult, CheckSpec, NodeContext, Param, severity, strongest_action, worst
from jueying_cli.checks.registry import CHECKS
from jueying_cli.checks.run import run_checks
from jueying_cli.checks.xid import XID_CATALOG, XidInfo
from jueying_cli.vocab import Action, Level

__all__ = [
    "CHECKS",
    "XID_CATALOG",
    "Action",
    "CheckConfig",
    "CheckResult",
    "CheckSpec",
    "Level",
    "NodeContext",
    "Override",
    "Param",
    "XidInfo",
    "builtin_config",
    "load_check_config",
    "run_checks",
    "severity",
    "strongest_action",
    "worst",
]
