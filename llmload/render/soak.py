"""The soak verdict in words: the console block, the cell of ``llmload compare``, shared labels.

A results document's ``soak`` section (docs/results.md, docs/soak.md) is shown
once the run had at least one full soak window (``shown``): shorter runs keep
the section in the JSON only, so that an ordinary short run's console and
comparison stay as they were.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from llmload.render.text import fixed_width, redact_url

# (drift figure, column title)
DRIFT_COLUMNS = (
    ("ttft_p99_s", "TTFT p99"),
    ("itl_p50_s", "ITL p50"),
    ("stream_rate_p50_tps", "rate p50"),
    ("goodput_rps", "goodput"),
)


def shown(doc: Mapping[str, Any]) -> dict[str, Any] | None:
    """The document's soak section when the run had at least one full window, else None."""
    soak = doc.get("soak")
    if not isinstance(soak, dict):
        return None
    windows = soak.get("windows") or []
    if not any(isinstance(w, dict) and not w.get("partial") for w in windows):
        return None
    return soak


def seconds(value: float | None) -> str:
    """A duration in whole seconds, or minutes and seconds from 10 minutes up ('-' for none)."""
    if value is None:
        return "-"
    if value >= 600:
        minutes, rest = divmod(round(value), 60)
        return f"{minutes} min {rest:02d} s"
    return f"{value:.0f} s"


def change(entry: Mapping[str, Any] | None) -> str:
    """A drift figure's relative change, ``+12.3%``, marked ``*`` when beyond the threshold."""
    if not entry or entry.get("direction") is None:
        return "-"
    mark = "*" if entry["direction"] in ("worse", "better") else ""
    ratio = entry.get("change")
    if ratio is None:  # from zero
        return f"from 0{mark}"
    return f"{ratio * 100:+.1f}%{mark}"


def breaches_text(backend: Mapping[str, Any]) -> str:
    """``2 (1 open), longest recovery 42 s`` or ``none``."""
    count = int(backend.get("breach_count") or 0)
    if not count:
        return "none"
    listed = backend.get("breaches") or []
    unrecovered = sum(1 for b in listed if isinstance(b, dict) and not b.get("recovered"))
    text = f"{count}" + (f" ({unrecovered} open)" if unrecovered else "")
    longest = backend.get("longest_time_to_recover_s")
    if longest is not None:
        text += f", longest recovery {seconds(longest)}"
    causes = sorted({str(b.get("cause")) for b in listed if isinstance(b, dict) and b.get("cause")})
    if causes:
        text += f" ({', '.join(causes)})"
    return text


def title(soak: Mapping[str, Any]) -> str:
    """The soak block's first line: the run's verdict, the windows, which two are compared, the thresholds."""
    window, interval = soak.get("window_s"), soak.get("interval_s")
    first, last = soak.get("first_steady_window"), soak.get("last_steady_window")
    relative = (soak.get("threshold") or {}).get("relative")
    objective = soak.get("objective")
    parts = [
        f"{seconds(window) if isinstance(window, (int, float)) else '?'} windows, {soak.get('full_windows', 0)} full"
    ]
    if first is not None and last is not None:
        rule = f"; * = beyond {relative * 100:g}% and a floor" if isinstance(relative, (int, float)) else ""
        parts.append(f"drift from window {first} to {last}{rule}")
    if isinstance(objective, (int, float)) and isinstance(interval, (int, float)):
        parts.append(f"breach: a {interval:g} s interval under {objective * 100:g}% SLO attainment")
    reason = soak.get("reason")
    verdict = str(soak.get("verdict") or "-") + (f" ({reason})" if reason else "")
    return f"Soak: {verdict} ({'; '.join(parts)})"


def format_soak(doc: Mapping[str, Any]) -> list[str]:
    """The console block under the token table: one line per backend; [] when not shown."""
    soak = shown(doc)
    if soak is None:
        return []
    rows = []
    for name, backend in sorted((soak.get("backends") or {}).items()):
        if not isinstance(backend, dict):
            continue
        drift = backend.get("drift") or {}
        rows.append(
            [
                redact_url(str(name)),
                str(backend.get("verdict") or "-"),
                *(change(drift.get(key)) for key, _ in DRIFT_COLUMNS),
                breaches_text(backend),
            ]
        )
    header = ["backend", "verdict", *(t for _, t in DRIFT_COLUMNS), "SLO breaches"]
    right = [False, False, True, True, True, True, False]
    return ["", title(soak), *(line.rstrip() for line in fixed_width(header, rows, right=right))]


def backend_soak(doc: Mapping[str, Any], backend: str) -> dict[str, Any] | None:
    """One backend's soak figures (verdict, drift, breaches) when the soak section is shown, else None."""
    soak = shown(doc)
    body = (soak.get("backends") or {}).get(backend) if soak is not None else None
    return body if isinstance(body, dict) else None


def verdict_text(body: Mapping[str, Any]) -> str:
    """``degraded; 2 SLO breaches, longest recovery 42 s`` (a cell of ``llmload compare``)."""
    verdict = str(body.get("verdict") or "-")
    count = int(body.get("breach_count") or 0)
    text = verdict if not count else f"{verdict}; {count} SLO breach{'es' if count > 1 else ''}"
    longest = body.get("longest_time_to_recover_s")
    if count and longest is not None:
        text += f", longest recovery {seconds(longest)}"
    if body.get("unrecovered"):
        text += ", not recovered at the end"
    return text
