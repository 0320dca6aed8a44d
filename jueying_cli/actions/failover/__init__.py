"""Failover: replace a failed node by a healthy spare from its pool. `playbook` (the role's steps, validated
whole before anything runs), `spares` (which spares fit and are healthy), `run` (drain, steps, verify,
rollback, record)."""
