"""Asking a Prometheus server: one instant query over its HTTP API (/api/v1/query), for `status`, `check` and
`capacity --source prometheus=URL`. Hand-written over urllib (stdlib): one GET and a JSON body, bounded in
size; a client library would add a dependency for these few lines.
"""

from __future__ import annotations

import json
import math
import urllib.error
import urllib.parse
import urllib.request

from jueying_cli.errors import JueyingError

MAX_BODY = 512 * 1024 * 1024  # bytes of one answer; more is not a status, it is a hostile server
MAX_READING = 1e15  # no count, byte total, watt or degree of one node comes near this


class PrometheusError(JueyingError):
    """The server could not be asked, or its answer is not a query result."""


def query(url: str, promql: str, timeout_s: float) -> tuple[list[dict[str, object]], float]:
    """(result vector, evaluation time) of an instant query; PrometheusError otherwise."""
    endpoint = url.rstrip("/") + "/api/v1/query?" + urllib.parse.urlencode({"query": promql})
    if not endpoint.startswith(("http://", "https://")):
        raise PrometheusError(f"not an http(s) URL: {url}")
    try:
        with urllib.request.urlopen(endpoint, timeout=timeout_s) as answer:  # noqa: S310 - scheme checked above
            body = answer.read(MAX_BODY + 1)
    except urllib.error.HTTPError as exc:
        raise PrometheusError(f"Prometheus at {url} answered HTTP {exc.code}: {exc.reason}") from None
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise PrometheusError(f"cannot query Prometheus at {url}: {reason}") from None
    if len(body) > MAX_BODY:
        raise PrometheusError(f"Prometheus at {url} sent more than {MAX_BODY} bytes")
    try:
        doc = json.loads(body)
        data = doc["data"]
        if doc.get("status") != "success" or data.get("resultType") != "vector":
            raise ValueError(doc.get("error") or "not a vector")
        results = data["result"]
        stamp = float(results[0]["value"][0]) if results else 0.0
        return list(results), stamp
    except (ValueError, KeyError, TypeError, IndexError) as exc:
        raise PrometheusError(f"Prometheus at {url} sent no query result ({exc})") from None


def reading(value: object) -> float | None:
    """A sample's value as a reading of a node: a number, finite, from 0 to MAX_READING; None otherwise (NaN,
    infinities, negative or absurd values from a broken or hostile exporter are no reading)."""
    try:
        number = float(value)  # type: ignore[arg-type] # a str from the JSON answer; anything else fails here
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) and 0.0 <= number <= MAX_READING else None
