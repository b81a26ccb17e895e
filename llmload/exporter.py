"""Prometheus exporter: serves ``llmload.collector``'s metrics at ``/metrics`` on the master or a local run.

``--llm-prometheus-port PORT`` starts an HTTP server on the master (or a local
run; never on a worker) at Locust's ``init``. It serves its own
``CollectorRegistry``, never the global one, with one ``LLMLoadCollector``
(``llmload.collector``), which builds every value at scrape time. At Locust's
``quit`` the server stays up for ``--llm-prometheus-grace`` seconds so the
last scrape sees the final values, then stops.

Metric names and labels are listed in docs/prometheus-grafana.md.
"""

from __future__ import annotations

import logging
import signal
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import gevent
import gevent.event
from prometheus_client import CollectorRegistry, start_http_server

from llmload.collector import LLMLoadCollector
from llmload.errors import ConfigError
from llmload.extension import Extension, exit_on_config_error
from llmload.options import parse_number
from llmload.series import BUCKET_SCHEMES, MAX_GROUPS

if TYPE_CHECKING:
    from locust.env import Environment

    from llmload.plugin import LLMLoadPlugin

logger = logging.getLogger("llmload")

RECOMMENDED_PORT = 9646
DEFAULT_HOST = "127.0.0.1"
DEFAULT_GRACE_S = 10.0
DEFAULT_BUCKETS = "coarse"


# -- the HTTP server ---------------------------------------------------------------------------------


@dataclass
class ExporterHandle:
    """A running ``/metrics`` server: ``url`` to scrape, ``stop()`` to shut it down."""

    host: str
    port: int
    registry: CollectorRegistry
    _server: Any
    _thread: Any

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}/metrics"

    def stop(self) -> None:
        """Stop serving and close the socket (idempotent)."""
        server, self._server = self._server, None
        if server is None:
            return
        server.shutdown()
        server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)


def start_exporter(
    plugin: LLMLoadPlugin,
    *,
    port: int,
    host: str = DEFAULT_HOST,
    max_groups: int = MAX_GROUPS,
    buckets: str = DEFAULT_BUCKETS,
) -> ExporterHandle:
    """Serve ``plugin``'s metrics on ``host:port`` (0 = a free port) from a registry of its own."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(LLMLoadCollector(plugin, max_groups=max_groups, buckets=buckets))
    server, thread = start_http_server(port, addr=host, registry=registry)
    bound_port = server.server_address[1]
    return ExporterHandle(host=host, port=bound_port, registry=registry, _server=server, _thread=thread)


# -- options and Locust wiring -----------------------------------------------------------------------


def add_arguments(parser: Any) -> None:
    """Register the exporter's options (and the server-metrics flag) on Locust's parser."""
    parser.add_argument(
        "--llm-prometheus-port",
        env_var="LOCUST_LLM_PROMETHEUS_PORT",
        default="",
        help=f"Serve token metrics for Prometheus on this port of the master (recommended {RECOMMENDED_PORT}; "
        "0 = a free port, logged; default: off)",
    )
    parser.add_argument(
        "--llm-prometheus-host",
        env_var="LOCUST_LLM_PROMETHEUS_HOST",
        default=DEFAULT_HOST,
        help=f"Address the Prometheus exporter binds (default {DEFAULT_HOST})",
    )
    parser.add_argument(
        "--llm-prometheus-grace",
        env_var="LOCUST_LLM_PROMETHEUS_GRACE",
        default=str(DEFAULT_GRACE_S),
        help="Seconds /metrics stays up after the test so the last scrape sees final values (default 10)",
    )
    parser.add_argument(
        "--llm-prometheus-buckets",
        env_var="LOCUST_LLM_PROMETHEUS_BUCKETS",
        default=DEFAULT_BUCKETS,
        help="Buckets of the TTFT/ITL/E2E histograms (heatmaps, cross-group estimates): coarse (1-2-5 steps, "
        "about 100 series per group) or fine (steps of at most 1.25x, about 190 per group). Default coarse",
    )


@dataclass(frozen=True)
class ExporterOptions:
    """The validated exporter options; ``port`` is None when the exporter is off."""

    port: int | None = None
    host: str = DEFAULT_HOST
    grace_s: float = DEFAULT_GRACE_S
    buckets: str = DEFAULT_BUCKETS

    @classmethod
    def from_parsed(cls, parsed: Any) -> ExporterOptions:
        """Validate Locust's parsed options; a bad value raises a one-line ``ConfigError``."""
        port_text = str(getattr(parsed, "llm_prometheus_port", "") or "").strip()
        port = parse_number(
            port_text, option="--llm-prometheus-port", low=0, high=65535, expected="a port 0-65535 (0 = any free port)"
        )
        if port is not None and port != int(port):
            raise ConfigError(f"--llm-prometheus-port: expected a port 0-65535 (0 = any free port), got {port_text!r}")
        host = str(getattr(parsed, "llm_prometheus_host", "") or DEFAULT_HOST)
        grace = parse_number(
            getattr(parsed, "llm_prometheus_grace", DEFAULT_GRACE_S),
            option="--llm-prometheus-grace",
            default=DEFAULT_GRACE_S,
            low=0,
            high=3600,
            expected="seconds between 0 and 3600",
        )
        assert grace is not None
        buckets = str(getattr(parsed, "llm_prometheus_buckets", None) or DEFAULT_BUCKETS).strip().lower()
        if buckets not in BUCKET_SCHEMES:
            raise ConfigError(f"--llm-prometheus-buckets: expected coarse or fine, got {buckets!r}")
        return cls(port=None if port is None else int(port), host=host, grace_s=grace, buckets=buckets)


class Exporter(Extension):
    """The exporter of one master or local Locust process: started at init, stopped after ``quit``."""

    def __init__(self, plugin: LLMLoadPlugin, options: ExporterOptions) -> None:
        self.plugin = plugin
        self.options = options
        self.handle: ExporterHandle | None = None

    def start(self) -> ExporterHandle:
        """Bind and serve; a port that cannot be bound is a one-line ``ConfigError``."""
        assert self.options.port is not None
        try:
            self.handle = start_exporter(
                self.plugin, port=self.options.port, host=self.options.host, buckets=self.options.buckets
            )
        except OSError as exc:
            where = f"{self.options.host}:{self.options.port}"
            raise ConfigError(f"--llm-prometheus-port: cannot listen on {where} ({exc.strerror or exc})") from None
        logger.info("llmload: Prometheus metrics at %s", self.handle.url)
        return self.handle

    def _on_quit(self, **_kwargs: Any) -> None:
        if self.handle is None:
            return
        grace = self.options.grace_s
        if grace > 0:
            logger.info("llmload: keeping %s up %g s for a last scrape (Ctrl-C to skip)", self.handle.url, grace)
            done = gevent.event.Event()
            # Locust no longer reacts to SIGINT while it shuts down: let Ctrl-C end the wait.
            watcher = gevent.signal_handler(signal.SIGINT, done.set)
            try:
                done.wait(timeout=grace)
            finally:
                watcher.cancel()
        self.stop()

    def stop(self) -> None:
        """Stop the server now."""
        if self.handle is not None:
            self.handle.stop()
            self.handle = None


def register(environment: Environment, plugin: LLMLoadPlugin) -> None:
    """Start the exporter on the master or local process when ``--llm-prometheus-port`` is set."""
    parsed = environment.parsed_options
    if parsed is None or plugin.is_worker:
        return
    try:
        options = ExporterOptions.from_parsed(parsed)
        if options.port is not None:
            exporter = plugin.extensions.add(Exporter(plugin, options))
            exporter.start()
            environment.events.quit.add_listener(exporter._on_quit)
    except ConfigError as exc:
        exit_on_config_error(exc)
