"""Made tests/data/state/state-5e03a8e.db with the code of commit 5e03a8e (run at that commit:
`git checkout 5e03a8e && python tests/data/state/make_5e03a8e_db.py OUT`). Kept so the file's origin is
known; the migration test opens the .db file, never this script."""

import sys
from pathlib import Path

from jueying_cli.status import history_row  # noqa: F401 - proves this is the old layout
from jueying_cli.store import AuditEntry, HistoryRow, Store

out = Path(sys.argv[1])
store = Store(out)
store.record_history([
    HistoryRow("gpu001", 1_790_000_000.0, "ok", None, 8, 0, 0, 3, 0, 17, 0, "550.54.15", "12.4", "6.1.0-18-amd64"),
    HistoryRow("gpu001", 1_790_000_060.0, "degraded", "GPU 3 lost", 7, 1, 0, 3, 0, 17, 1, "550.54.15", "12.4",
               "6.1.0-18-amd64"),
    HistoryRow("gpu002", 1_790_000_000.0, "unreachable", "connection refused", None, None, None, None, None, None,
               None, None, None, None),
], retention_days=0)
store.track_findings(["gpu001"], [("gpu001", "ecc", 3, "ECC_DBE", 2), ("gpu001", "xid", -1, "XID_79", 2)],
                     1_790_000_000.0)
store.track_findings(["gpu001"], [("gpu001", "ecc", 3, "ECC_DBE", 2)], 1_790_000_060.0)
store.track_clean({"gpu002": True, "gpu001": False})
store.track_clean({"gpu002": True})
store.set_ledger(["gpu003"], drained=True, reason="jueying: xid 79 [ops]", user="ops", now=1_790_000_100.0)
store.set_ledger(["gpu004"], drained=False, reason=None, user=None, now=1_790_000_110.0)
ids = store.audit_intent([
    AuditEntry(at=1_790_000_100.0, actor="ops", action="drain", node="gpu003", backend="builtin",
               reason="jueying: xid 79 [ops]", before_state="in service", run_id="run1"),
    AuditEntry(at=1_790_000_200.0, actor="cron", action="drain", node="gpu005", backend="slurm",
               reason="jueying: auto: ecc ECC_DBE gpu3 [jueying-check]", before_state="IDLE", run_id="run2"),
])
store.audit_finish([(ids[0], "done", "drained (jueying ledger)", "jueying: xid 79 [ops]", None)])
store.close()
