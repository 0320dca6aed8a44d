"""Baseline files: the expected attribute values per GPU model, saved from a fleet that is right
(--save-baseline) and compared with later (--baseline).

The file is JSON (which is also YAML, so an operator may edit it in either syntax; it is read through
yamlfile, which names file, line and field in every error):

    {"kind": "jueying-audit-baseline", "version": 1, "created_at": "2026-12-02T01:00:00Z",
     "models": {"NVIDIA H100 80GB HBM3": {"driver_version": "550.127.05", "gpu_count": "8", ...}}}

Saving keeps, per model, each attribute's majority value (more than half of the nodes of that model that
reported it); an attribute without a majority is left out and named in the warnings.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from jueying_cli.audit.attributes import ATTRIBUTES, BY_NAME
from jueying_cli.audit.drift import Baseline, NodeAudit
from jueying_cli.errors import BadInputError
from jueying_cli.yamlfile import LocatedDict, line_of, load_yaml

KIND = "jueying-audit-baseline"
VERSION = 1
MAX_MODELS = 1000
MAX_VALUE = 1000


def baseline_from(audits: Sequence[NodeAudit]) -> tuple[dict[str, dict[str, str]], list[str]]:
    """({model: {attribute: majority value}}, warnings naming attributes left out for want of a majority)."""
    models: dict[str, dict[str, str]] = {}
    warnings: list[str] = []
    groups: dict[str, list[NodeAudit]] = {}
    for a in audits:
        groups.setdefault(a.model, []).append(a)
    for model, members in sorted(groups.items()):
        expected: dict[str, str] = {}
        for attr in ATTRIBUTES:
            counts: dict[str, int] = {}
            for m in members:
                value = m.attributes.get(attr.name)
                if value is not None:
                    counts[value] = counts.get(value, 0) + 1
            if not counts:
                continue
            value, count = min(counts.items(), key=lambda kv: (-kv[1], kv[0]))
            if count * 2 > sum(counts.values()):
                expected[attr.name] = value
            else:
                split = ", ".join(f"{v} ({n})" for v, n in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])))
                warnings.append(f"{model}: {attr.name} has no majority ({split}); left out of the baseline")
        models[model] = expected
    return models, warnings


def save_baseline(path: Path, models: dict[str, dict[str, str]]) -> None:
    """Write the baseline atomically (a crash leaves the old file or the new one, never half of one)."""
    doc = {"kind": KIND, "version": VERSION, "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
           "models": models}
    text = json.dumps(doc, indent=2, ensure_ascii=False) + "\n"
    directory = path.parent if str(path.parent) else Path(".")
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=directory)
    except OSError as exc:
        raise BadInputError(f"cannot write the baseline: {exc.strerror or exc}", path=str(path)) from exc
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def load_baseline(path: Path) -> Baseline:
    """Read and check a baseline file; BadInputError with file, line and field for anything wrong."""
    doc = load_yaml(path)
    where = str(path)
    if not isinstance(doc, LocatedDict):
        raise BadInputError("a baseline must be a mapping with kind, version and models", path=where)
    for key in doc:
        if key not in ("kind", "version", "created_at", "models"):
            raise BadInputError(f"unknown key {key!r} (expected kind, version, created_at, models)", path=where,
                                line=doc.line_of(key), field=str(key))
    if doc.get("kind") != KIND:
        raise BadInputError(f"kind must be {KIND!r} (a file written by jueying audit --save-baseline)", path=where,
                            line=line_of(doc, "kind") or doc.line, field="kind")
    if doc.get("version") != VERSION:
        raise BadInputError(f"version must be {VERSION}, got {doc.get('version')!r}", path=where,
                            line=line_of(doc, "version") or doc.line, field="version")
    models = doc.get("models")
    if not isinstance(models, LocatedDict):
        raise BadInputError("must be a mapping of GPU model to {attribute: value}", path=where,
                            line=line_of(doc, "models") or doc.line, field="models")
    if len(models) > MAX_MODELS:
        raise BadInputError(f"more than {MAX_MODELS} models", path=where, line=models.line, field="models")
    parsed: dict[str, dict[str, str]] = {}
    for model, values in models.items():
        field = f"models.{model}"
        if not isinstance(values, LocatedDict):
            raise BadInputError("must be a mapping of attribute: value", path=where, line=models.line_of(model),
                                field=field)
        parsed[str(model)] = {}
        for attr, value in values.items():
            line = values.line_of(attr)
            if attr not in BY_NAME:
                raise BadInputError(f"unknown attribute (one of {', '.join(BY_NAME)})", path=where, line=line,
                                    field=f"{field}.{attr}")
            if isinstance(value, bool) or not isinstance(value, str | int | float) or len(str(value)) > MAX_VALUE:
                raise BadInputError(f"must be a text or a number, got {value!r:.80}", path=where, line=line,
                                    field=f"{field}.{attr}")
            parsed[str(model)][str(attr)] = str(value)
    return Baseline(parsed, str(path))
