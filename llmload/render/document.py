"""Results documents: their schema versions, reading a file, and reading version 1 as version 2.

``llmload.results/2`` changed the meaning of one key: a body's
``slo.attainment`` is SLO-met over all finished requests (failed ones count
as misses), where version 1 divided by successful requests only; version 2
keeps that older ratio as ``slo.attainment_of_ok``. Every other key kept its
meaning (docs/results.md). ``read`` returns a version-2 document for a file
of either version, so the report and ``llmload compare`` need no version
checks of their own.
"""

from __future__ import annotations

import os
from typing import Any

import orjson

from llmload.errors import ConfigError

SCHEMA = "llmload.results/2"
SCHEMA_V1 = "llmload.results/1"
READABLE_SCHEMAS = (SCHEMA, SCHEMA_V1)


def upgrade(doc: dict[str, Any]) -> dict[str, Any]:
    """Return ``doc`` as a version-2 document (a version-2 document is returned as it is)."""
    if doc.get("schema") != SCHEMA_V1:
        return doc
    out = {**doc, "schema": SCHEMA, "upgraded_from": SCHEMA_V1}
    out["groups"] = [_upgrade_body(group) for group in doc.get("groups") or []]
    if isinstance(doc.get("total"), dict):
        out["total"] = _upgrade_body(doc["total"])
    return out


def _upgrade_body(body: dict[str, Any]) -> dict[str, Any]:
    slo = body.get("slo")
    requests = body.get("requests")
    if not isinstance(slo, dict) or not isinstance(requests, dict):
        return body
    finished = (requests.get("ok") or 0) + (requests.get("failed") or 0)
    met = slo.get("met") or 0
    return {
        **body,
        "slo": {**slo, "attainment": met / finished if finished else None, "attainment_of_ok": slo.get("attainment")},
    }


def read(path: str) -> dict[str, Any]:
    """Read a results document of any readable version, as version 2; a bad file is one ConfigError line."""
    try:
        with open(path, "rb") as handle:
            doc = orjson.loads(handle.read())
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such results file") from None
    except IsADirectoryError:
        raise ConfigError(f"{path}: a directory, not a results file") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read ({exc.strerror})") from None
    except orjson.JSONDecodeError as exc:
        raise ConfigError(f"{path}: not valid JSON ({exc})") from None
    if not isinstance(doc, dict) or doc.get("schema") not in READABLE_SCHEMAS:
        expected = " or ".join(repr(s) for s in READABLE_SCHEMAS)
        raise ConfigError(f"{path}: not an llmload results file (expected schema {expected})")
    return upgrade(doc)


def check_writable(path: str, *, option: str = "--llm-results") -> None:
    """Fail early, with one line naming ``option``, when ``path`` cannot be written."""
    directory = os.path.dirname(os.path.abspath(path))
    try:
        os.makedirs(directory, exist_ok=True)
    except OSError as exc:
        raise ConfigError(f"{option} {path}: cannot create directory {directory}: {exc.strerror}") from None
    if os.path.isdir(path) or not os.access(directory, os.W_OK):
        raise ConfigError(f"{option} {path}: not a writable file path")


def write(doc: dict[str, Any], path: str) -> None:
    """Write a results document atomically (temporary file, then rename)."""
    check_writable(path)
    tmp = f"{path}.tmp"
    with open(tmp, "wb") as handle:
        handle.write(orjson.dumps(doc, option=orjson.OPT_INDENT_2))
    os.replace(tmp, path)
