"""Generate llmload's Prometheus alerting and recording rules (the YAML files in dashboards/rules/).

    python dashboards/rules.py --period 30d --objective 0.99 --out FILE  # one set (to stdout without --out)
    python dashboards/rules.py --shipped                                 # rewrite the shipped sets
    python dashboards/rules.py --shipped --check                         # exit 1 if a shipped file is stale

The SLO alerts are the Google SRE workbook's multiwindow, multi-burn-rate alerts, whose windows are
written for a 30-day SLO period. For another period every window and every ``for:`` is multiplied by
the scale factor ``period / 30d`` (a 6h soak: 1/120, so 1h becomes 30s), and none is shorter than
``MIN_SCRAPES`` scrape intervals (``--scrape-interval``), so that every ``rate`` has samples to work
with; windows over llmload_server_* series are also at least ``MIN_SCRAPES`` of llmload's 5 s scrapes
of the server. Each file's header and each alert's annotations state the factor. docs/alerts.md describes
every rule; tests/rules/*.test.yml are their ``promtool test rules`` unit tests, and
tests/unit/test_rules.py checks that the shipped files match this script.

``rule_groups(period, objective, ...)`` returns the groups as a dict (what Prometheus reads);
``render(...)`` returns the YAML text of a file.
"""

from __future__ import annotations

import argparse
import re
import sys
import textwrap
from dataclasses import dataclass
from decimal import Decimal
from fractions import Fraction
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
RULES_DIR = HERE / "rules"

DAY_MS = 86_400_000
UNITS_MS = {"y": 365 * DAY_MS, "w": 7 * DAY_MS, "d": DAY_MS, "h": 3_600_000, "m": 60_000, "s": 1000, "ms": 1}
WORKBOOK_PERIOD = "30d"  # the SLO period the SRE workbook's windows are written for
MIN_SCRAPES = 4  # no window or `for:` is shorter than this many scrape intervals
DEFAULT_PERIOD = "30d"
DEFAULT_OBJECTIVE = 0.99  # llmload's --llm-slo-objective default
DEFAULT_SCRAPE_INTERVAL = "15s"
# llmload re-exports each backend's /metrics (llmload_server_*) every 5 s (llmload.server_metrics.SCRAPE_INTERVAL_S),
# so windows over those series are at least MIN_SCRAPES of these too.
SERVER_SCRAPE_INTERVAL = "5s"

# Thresholds of the non-SLO alerts (docs/alerts.md states them).
ERROR_RATIO_THRESHOLD = 0.05  # share of finished requests failing with one error class
KV_CACHE_THRESHOLD = 0.9  # share of the server's KV cache in use

FINISHED = "llmload_requests_total"  # summed over outcome: every finished request, ok or failed


@dataclass(frozen=True)
class SLO:
    key: str  # recording-rule and alert-name part
    title: str  # in annotations
    alert: str  # alert-name part
    met: str  # counter of finished requests meeting this SLO
    threshold: str  # gauge with the configured threshold; exists only when the SLO is set


SLOS = (
    SLO(
        "stream_rate",
        "stream-rate",
        "StreamRate",
        "llmload_slo_stream_rate_met_requests_total",
        "llmload_slo_stream_rate_tokens_per_second",
    ),
    SLO("ttft", "TTFT", "TTFT", "llmload_slo_ttft_met_requests_total", "llmload_slo_ttft_seconds"),
)


@dataclass(frozen=True)
class Burn:
    factor: float  # burn rate: multiples of the error budget spent per period
    long: str  # workbook windows (30d period)
    short: str


# SRE workbook, chapter 5 ("Alerting on SLOs"), recommended parameters for a 30-day period.
PAGE = (Burn(14.4, "1h", "5m"), Burn(6, "6h", "30m"))
TICKET = (Burn(3, "1d", "2h"), Burn(1, "3d", "6h"))

SHIPPED = {
    "llmload-rules.yml": {"period": "30d"},
    "llmload-rules-soak-6h.yml": {"period": "6h", "scrape_interval": "1s", "evaluation_interval": "1s"},
}


# -- durations ----------------------------------------------------------------------------------------


def parse_duration(text: str) -> int:
    """Milliseconds of a Prometheus duration (``30d``, ``1h30m``, ``2s500ms``)."""
    parts = re.findall(r"(\d+)(ms|[ywdhms])", text)
    if not text or "".join(n + u for n, u in parts) != text:
        raise ValueError(f"not a Prometheus duration: {text!r}")
    total = sum(int(n) * UNITS_MS[u] for n, u in parts)
    if total <= 0:
        raise ValueError(f"duration must be positive: {text!r}")
    return total


def format_duration(ms: int) -> str:
    """The Prometheus duration of ``ms`` milliseconds, largest units first (days at most)."""
    out = []
    for unit in ("d", "h", "m", "s", "ms"):
        n, ms = divmod(ms, UNITS_MS[unit])
        if n:
            out.append(f"{n}{unit}")
    return "".join(out) or "0s"


def percent(share: Decimal) -> str:
    return f"{(share * 100).normalize():f}%"


def format_fraction(f: Fraction) -> str:
    return str(f.numerator) if f.denominator == 1 else f"{f.numerator}/{f.denominator}"


@dataclass(frozen=True)
class Scale:
    """Scales the workbook's durations to an SLO period, with a floor of ``MIN_SCRAPES`` scrape intervals."""

    period: str
    scrape_interval: str

    @property
    def factor(self) -> Fraction:
        return Fraction(parse_duration(self.period), parse_duration(WORKBOOK_PERIOD))

    @property
    def floor_ms(self) -> int:
        return MIN_SCRAPES * parse_duration(self.scrape_interval)

    @property
    def server_floor_ms(self) -> int:
        return max(self.floor_ms, MIN_SCRAPES * parse_duration(SERVER_SCRAPE_INTERVAL))

    def __call__(self, workbook: str) -> str:
        scaled = round(parse_duration(workbook) * self.factor)  # to the millisecond, Prometheus' resolution
        return format_duration(max(scaled, self.floor_ms))

    def server(self, workbook: str) -> str:
        """A window over llmload_server_* series, which change once per llmload scrape of the server."""
        return format_duration(max(parse_duration(self(workbook)), self.server_floor_ms))

    def describe(self) -> str:
        return f"{format_fraction(self.factor)} = {self.period} / {WORKBOOK_PERIOD}"


# -- rules --------------------------------------------------------------------------------------------


def expr(text: str) -> str:
    return textwrap.dedent(text).strip()


def slo_ratio_name(slo: SLO, window: str) -> str:
    return f"backend:llmload_{slo.key}_slo_errors:ratio_rate{window}"


def error_ratio_name(window: str) -> str:
    return f"backend_error:llmload_requests_failed:ratio_rate{window}"


def slo_ratio(slo: SLO, window: str) -> dict[str, Any]:
    """Share of finished requests that miss ``slo`` over ``window``, per backend (only while the SLO is set).

    (finished - met) / finished = 1 - met / finished; a request that failed meets no SLO. ``or 0 * ...``
    makes a backend whose requests all miss (so that its met counter may not exist yet) a ratio of 1
    rather than no result; ``and on () <threshold gauge>`` records nothing while the SLO is not set.
    """
    finished = f"sum by (backend) (rate({FINISHED}[{window}]))"
    met = f"sum by (backend) (rate({slo.met}[{window}]))"
    return {
        "record": slo_ratio_name(slo, window),
        "expr": expr(
            f"""
            1 - ({met} or 0 * {finished})
                / {finished}
            and on () {slo.threshold}
            """
        ),
    }


def error_ratio(window: str) -> dict[str, Any]:
    return {
        "record": error_ratio_name(window),
        "expr": expr(
            f"""
            sum by (backend, error) (rate({FINISHED}{{outcome="failed"}}[{window}]))
            / on (backend) group_left ()
            sum by (backend) (rate({FINISHED}[{window}]))
            """
        ),
    }


def alert(
    name: str,
    expression: str,
    *,
    severity: str,
    summary: str,
    description: str,
    scale: Scale,
    for_: str | None = None,
) -> dict[str, Any]:
    rule: dict[str, Any] = {"alert": name, "expr": expression}
    if for_ is not None:
        rule["for"] = for_
    rule["labels"] = {"severity": severity}
    rule["annotations"] = {
        "summary": summary,
        "description": description,
        "slo_period": scale.period,
        "scale_factor": format_fraction(scale.factor),
    }
    return rule


def burn_condition(slo: SLO, burns: tuple[Burn, ...], scale: Scale, budget: str) -> str:
    branches = []
    for b in burns:
        long, short = slo_ratio_name(slo, scale(b.long)), slo_ratio_name(slo, scale(b.short))
        branches.append(f"(\n  {long} > {b.factor:g} * {budget}\nand\n  {short} > {b.factor:g} * {budget}\n)")
    return "\nor\n".join(branches)


def burn_alerts(slo: SLO, scale: Scale, objective: Decimal, budget: str) -> list[dict[str, Any]]:
    rules = []
    for kind, burns, severity in (("Page", PAGE, "page"), ("Ticket", TICKET, "ticket")):
        pairs = " or ".join(f"{b.factor:g}x over both {scale(b.long)} and {scale(b.short)}" for b in burns)
        longs = " or ".join(scale(b.long) for b in burns)
        speed = "fast" if kind == "Page" else "slowly"
        rules.append(
            alert(
                f"LLMLoad{slo.alert}SLOBudgetBurn{kind}",
                burn_condition(slo, burns, scale, budget),
                severity=severity,
                summary=(
                    f"{{{{ $labels.backend }}}} burns the {slo.title} SLO error budget {speed}: "
                    f"{{{{ $value | humanizePercentage }}}} of finished requests missed the SLO over {longs}"
                ),
                description=(
                    f"Objective: {percent(objective)} of finished requests meet the {slo.title} SLO "
                    f"(error budget {percent(Decimal(budget))} per {scale.period}). Fires at a budget burn rate of "
                    f"{pairs} (the SRE workbook's windows scaled by {scale.describe()}). "
                    "Failed requests count as misses. Check the backend's load (users, in-flight requests), "
                    "its queue time and KV cache on the Client vs server dashboard, and llmload_requests_total "
                    "by error."
                ),
                scale=scale,
            )
        )
    return rules


def rule_groups(
    period: str = DEFAULT_PERIOD,
    objective: float | str = DEFAULT_OBJECTIVE,
    scrape_interval: str = DEFAULT_SCRAPE_INTERVAL,
    evaluation_interval: str | None = None,
) -> dict[str, Any]:
    """llmload's rule groups for an SLO ``period`` and ``objective`` (what a Prometheus rule file holds).

    ``scrape_interval`` sets the floor of every window and ``for:`` (``MIN_SCRAPES`` intervals);
    ``evaluation_interval``, when given, becomes each group's ``interval``.
    """
    try:
        objective_d = Decimal(str(objective))
        valid = 0 < objective_d < 1
    except ArithmeticError:  # not a number, or NaN
        valid = False
    if not valid:
        raise ValueError(f"objective must be above 0 and below 1 (e.g. 0.99), got {objective!r}")
    budget = str(1 - objective_d)
    scale = Scale(format_duration(parse_duration(period)), format_duration(parse_duration(scrape_interval)))
    if evaluation_interval is not None:
        evaluation_interval = format_duration(parse_duration(evaluation_interval))

    windows = sorted({scale(w) for b in PAGE + TICKET for w in (b.long, b.short)}, key=parse_duration)
    slo_recording = [slo_ratio(slo, w) for slo in SLOS for w in windows]
    err_w = scale("5m")

    slo_alerts = [r for slo in SLOS for r in burn_alerts(slo, scale, objective_d, budget)]

    p99_for = scale("5m")
    gen_for = scale("2m")
    client_alerts = [
        alert(
            "LLMLoadTTFTP99AboveSLO",
            expr(
                """
                llmload_ttft_percentile_seconds{window!="run", percentile="99"}
                > on (job, instance) group_left ()
                llmload_slo_ttft_seconds
                """
            ),
            for_=p99_for,
            severity="ticket",
            summary=(
                "TTFT p99 of {{ $labels.backend }} ({{ $labels.model }}, {{ $labels.user_class }}) is "
                "{{ $value | humanizeDuration }}, above the TTFT SLO"
            ),
            description=(
                f"The exact TTFT p99 over llmload's sliding window (window={{{{ $labels.window }}}}) has been above "
                f"the configured TTFT SLO (llmload_slo_ttft_seconds) for {p99_for}. Check the backend's queue time "
                "and prefill load (prompt tokens/s) on the Client vs server dashboard."
            ),
            scale=scale,
        ),
        alert(
            "LLMLoadErrorRatioHigh",
            f"{error_ratio_name(err_w)} > {ERROR_RATIO_THRESHOLD:g}",
            for_=scale("5m"),
            severity="ticket",
            summary=(
                "{{ $value | humanizePercentage }} of finished requests to {{ $labels.backend }} fail with "
                f"{{{{ $labels.error }}}} (over {err_w})"
            ),
            description=(
                f"More than {ERROR_RATIO_THRESHOLD * 100:g}% of the backend's finished requests failed with this "
                f"error class over {err_w}, for {scale('5m')}. http_429: rate limited; http_5xx: server errors; "
                "connect/timeout: unreachable or overloaded; disconnect/incomplete_stream/malformed_event: streams "
                "broken mid-way. Check the server log and llmload's error samples in the report."
            ),
            scale=scale,
        ),
        alert(
            "LLMLoadGeneratorUntrustworthy",
            "llmload_generator_trustworthy == 0",
            for_=gen_for,
            severity="ticket",
            summary="Load generator {{ $labels.worker }} is not trustworthy: its latencies include its own delays",
            description=(
                f"llmload's self-check has flagged this worker for {gen_for} (CPU saturated, event-loop lag or "
                "late socket reads), so the latencies it measures are inflated and results from this period are "
                "not valid. Check llmload_generator_cpu_percent, llmload_generator_loop_lag_p99_seconds and "
                "llmload_generator_read_lateness_seconds; add workers or lower the users per worker."
            ),
            scale=scale,
        ),
        alert(
            "LLMLoadWorkerMissing",
            "llmload_workers_missing > 0",
            for_=gen_for,
            severity="ticket",
            summary="{{ $value }} llmload worker(s) missing",
            description=(
                f"The master has missed worker heartbeats for {gen_for}: the offered load is lower than "
                "configured. Check the worker processes (or pods) and the master's log (worker_lost events)."
            ),
            scale=scale,
        ),
    ]

    down_for = scale("2m")
    restart_w = scale.server("10m")
    kv_for = scale("15m")
    queue_w = scale.server("10m")
    queue_for = scale("10m")
    preempt_w = scale.server("5m")
    server_alerts = [
        alert(
            "LLMLoadBackendUnreachable",
            "llmload_server_up == 0",
            for_=down_for,
            severity="page",
            summary="Backend {{ $labels.backend }} is unreachable: llmload cannot scrape its /metrics",
            description=(
                f"llmload's scrapes of the server's /metrics have failed for {down_for}. Check that the server "
                "process is up and reachable from llmload, and the connect/timeout errors of its requests."
            ),
            scale=scale,
        ),
        alert(
            "LLMLoadBackendRestarted",
            expr(
                f"""
                max by (backend) (increase(llmload_server_restarts_total[{restart_w}])) > 0
                or
                max by (backend) (resets(llmload_server_prompt_tokens_total[{restart_w}])) > 0
                """
            ),
            severity="ticket",
            summary=f"Backend {{{{ $labels.backend }}}} restarted (its counters reset) in the last {restart_w}",
            description=(
                "The server's own counters went back to zero: it restarted. Requests in flight failed, its caches "
                "are cold, and results that span the restart mix two server lifetimes. Check the server log for "
                "the cause (out of memory, crash, redeployment)."
            ),
            scale=scale,
        ),
        alert(
            "LLMLoadKVCacheHigh",
            f"llmload_server_kv_cache_usage_ratio > {KV_CACHE_THRESHOLD:g}",
            for_=kv_for,
            severity="info",
            summary="KV cache of {{ $labels.backend }} is {{ $value | humanizePercentage }} full",
            description=(
                f"More than {KV_CACHE_THRESHOLD * 100:g}% of the server's KV cache has been in use for {kv_for}: "
                "the backend is at its concurrency limit, new requests wait and running ones may be preempted. "
                "Check requests waiting and preemptions; lower the users or give the server more KV cache."
            ),
            scale=scale,
        ),
        alert(
            "LLMLoadWaitingQueueGrowing",
            expr(
                f"""
                deriv(llmload_server_requests_waiting[{queue_w}]) > 0
                and
                llmload_server_requests_waiting > 0
                """
            ),
            for_=queue_for,
            severity="ticket",
            summary='Waiting queue of {{ $labels.backend }} keeps growing ({{ $value | printf "%.3g" }} requests/s)',
            description=(
                f"The server's queue of waiting requests has grown (deriv over {queue_w} above 0) for {queue_for}: "
                "requests arrive faster than the backend serves them, and TTFT grows without bound. Lower the "
                "load, or check the server's throughput and KV cache."
            ),
            scale=scale,
        ),
        alert(
            "LLMLoadPreemptions",
            f"increase(llmload_server_preemptions_total[{preempt_w}]) > 0",
            severity="info",
            summary='Backend {{ $labels.backend }} preempted {{ $value | printf "%.0f" }} requests in ' + preempt_w,
            description=(
                "The server evicted running requests from its KV cache to make room, and recomputes them later: "
                "their latencies jump. Check the KV cache usage; lower the users or the context lengths."
            ),
            scale=scale,
        ),
    ]

    # Each recording rule sits in the group of the alerts that read it: rules of a group run in order,
    # so an alert sees this evaluation's ratios (groups run independently, at different offsets).
    groups = [
        {"name": "llmload-slo", "rules": slo_recording + slo_alerts},
        {"name": "llmload-client", "rules": [error_ratio(err_w), *client_alerts]},
        {"name": "llmload-server", "rules": server_alerts},
    ]
    if evaluation_interval is not None:
        groups = [{"name": g["name"], "interval": evaluation_interval, "rules": g["rules"]} for g in groups]
    return {"groups": groups}


# -- YAML ---------------------------------------------------------------------------------------------
# A small block-style emitter for the shapes above (PyYAML is not a dependency of llmload).

PLAIN = re.compile(r"[A-Za-z_][A-Za-z0-9_:./-]*|(\d+(ms|[ywdhms]))+")
YAML_WORDS = {"y", "n", "yes", "no", "on", "off", "true", "false", "null"}


def scalar(value: str | float) -> str:
    if isinstance(value, bool) or not isinstance(value, str):
        raise TypeError(f"only strings are written: {value!r}")
    if PLAIN.fullmatch(value) and value.lower() not in YAML_WORDS and not value.endswith(":"):
        return value
    return "'" + value.replace("'", "''") + "'"


def to_yaml(value: Any, indent: int = 0) -> list[str]:
    pad = " " * indent
    lines: list[str] = []
    if isinstance(value, dict):
        for key, item in value.items():
            if isinstance(item, str) and "\n" in item:
                lines.append(f"{pad}{key}: |-")
                lines.extend(f"{pad}  {line}" if line else "" for line in item.split("\n"))
            elif isinstance(item, dict | list):
                lines.append(f"{pad}{key}:")
                lines.extend(to_yaml(item, indent + 2))
            else:
                lines.append(f"{pad}{key}: {scalar(item)}")
    elif isinstance(value, list):
        for item in value:
            block = to_yaml(item, indent + 2)
            lines.append(f"{pad}- {block[0].lstrip()}")
            lines.extend(block[1:])
    else:
        raise TypeError(f"cannot write {value!r}")
    return lines


def render(
    period: str = DEFAULT_PERIOD,
    objective: float | str = DEFAULT_OBJECTIVE,
    scrape_interval: str = DEFAULT_SCRAPE_INTERVAL,
    evaluation_interval: str | None = None,
) -> str:
    """The rule file for these parameters: a header comment that states the scaling, then the groups."""
    doc = rule_groups(period, objective, scrape_interval, evaluation_interval)
    scale = Scale(format_duration(parse_duration(period)), format_duration(parse_duration(scrape_interval)))
    workbook = sorted({w for b in PAGE + TICKET for w in (b.long, b.short)}, key=parse_duration)
    floored = {w for w in workbook if round(parse_duration(w) * scale.factor) < scale.floor_ms}
    mapping = ", ".join(f"{w}->{scale(w)}" + (" (floor)" if w in floored else "") for w in workbook)
    command = f"python dashboards/rules.py --period {scale.period} --objective {objective} "
    command += f"--scrape-interval {scale.scrape_interval}"
    if evaluation_interval is not None:
        command += f" --evaluation-interval {evaluation_interval}"
    floor, server_floor = format_duration(scale.floor_ms), format_duration(scale.server_floor_ms)
    header = [
        f"llmload alerting and recording rules: SLO period {scale.period}, objective {objective}.",
        f"Generated by `{command}`; edit the script, not this file.",
        f"Scale factor {scale.describe()}: every SRE-workbook window and `for:` is multiplied by it,",
        f"with a floor of {MIN_SCRAPES} x the {scale.scrape_interval} scrape interval = {floor}"
        f" ({server_floor} for windows over llmload_server_* series,",
        f"which llmload re-exports every {SERVER_SCRAPE_INTERVAL}).",
        f"SLO windows: {mapping}.",
    ]
    if evaluation_interval is not None:
        header.append(f"Groups are evaluated every {evaluation_interval}.")
    header.append("Rules and thresholds: docs/alerts.md. Unit tests: tests/rules/ (promtool test rules).")
    return "".join(f"# {line}\n" for line in header) + "\n".join(to_yaml(doc)) + "\n"


def render_shipped() -> dict[Path, str]:
    return {RULES_DIR / name: render(**params) for name, params in SHIPPED.items()}


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--period", default=DEFAULT_PERIOD, help="SLO period (default 30d, the workbook's)")
    parser.add_argument("--objective", default=str(DEFAULT_OBJECTIVE), help="SLO objective (default 0.99)")
    parser.add_argument(
        "--scrape-interval",
        default=DEFAULT_SCRAPE_INTERVAL,
        help=f"Prometheus' scrape interval of llmload; windows are at least {MIN_SCRAPES} of them (default 15s)",
    )
    parser.add_argument("--evaluation-interval", default=None, help="each group's `interval` (default: global)")
    parser.add_argument("--out", default="-", help="output file (default: stdout)")
    parser.add_argument("--shipped", action="store_true", help="rewrite the shipped files in dashboards/rules/")
    parser.add_argument("--check", action="store_true", help="with --shipped: exit 1 if a file is out of date")
    args = parser.parse_args(argv)
    if args.shipped:
        stale = []
        for path, text in render_shipped().items():
            if args.check:
                if not path.exists() or path.read_text() != text:
                    stale.append(path.name)
            else:
                path.parent.mkdir(exist_ok=True)
                path.write_text(text)
        if stale:
            print(f"out of date (run python dashboards/rules.py --shipped): {', '.join(stale)}", file=sys.stderr)
            return 1
        return 0
    if args.check:
        parser.error("--check needs --shipped")
    try:
        text = render(args.period, args.objective, args.scrape_interval, args.evaluation_interval)
    except ValueError as exc:
        parser.error(str(exc))
    if args.out == "-":
        sys.stdout.write(text)
    else:
        Path(args.out).write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
