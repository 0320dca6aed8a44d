"""Output: tables (the only rich import lives in render.table), the JSON envelope, Prometheus text."""
