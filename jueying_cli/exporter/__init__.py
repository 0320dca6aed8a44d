"""jueying in Prometheus: `jueying exporter` (metrics.py serves, loop.py collects), the textfile of
`jueying check --prometheus`, and `jueying status --source prometheus=URL` (readback.py)."""
