"""Start, health-wait and stop a vLLM OpenAI-compatible server process.

The server runs as ``python -m vllm.entrypoints.openai.api_server`` (the
``vllm serve`` script of the CPU build looks up the distribution name ``vllm``
and fails), in its own session so that Ctrl-C in the terminal reaches only
llmload, which then stops vLLM's whole process group (the API server and its
engine-core child). Its output goes to ``<cache>/logs/vllm-<port>.log``.
"""

from __future__ import annotations

import http.client
import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from llmload.errors import TargetError
from llmload.target.logtail import last_meaningful_line

DEFAULT_HOST = "127.0.0.1"
# Environment every vLLM we start gets: bind and advertise loopback only, no
# downloads, no telemetry, and a 1 GiB KV cache on CPU (plenty for a tiny model).
SERVER_ENV = {
    "VLLM_HOST_IP": "127.0.0.1",
    "VLLM_CPU_KVCACHE_SPACE": "1",
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "VLLM_NO_USAGE_STATS": "1",
    "DO_NOT_TRACK": "1",
    "PYTHONUNBUFFERED": "1",
}


@dataclass(frozen=True)
class ServerConfig:
    """Everything needed to build a vLLM server command line."""

    python: Path
    """Interpreter that imports vLLM."""
    model_path: Path
    """Directory of the model to serve."""
    served_model_name: str
    """Name clients use in ``"model"``."""
    port: int
    host: str = DEFAULT_HOST
    max_model_len: int | None = None
    max_num_seqs: int | None = None
    dtype: str | None = None
    enforce_eager: bool = True
    """Skip graph capture and compilation: starts in seconds instead of minutes."""
    extra_args: tuple[str, ...] = field(default=())
    """Passed through to vLLM after ours (a later flag wins)."""

    @property
    def base_url(self) -> str:
        """Return the server's root URL."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"


def server_command(config: ServerConfig) -> list[str]:
    """Return the command line that starts vLLM's OpenAI-compatible server."""
    command = [
        str(config.python),
        "-m",
        "vllm.entrypoints.openai.api_server",
        "--model",
        str(config.model_path),
        "--served-model-name",
        config.served_model_name,
        "--host",
        config.host,
        "--port",
        str(config.port),
        "--disable-uvicorn-access-log",
    ]
    if config.dtype:
        command += ["--dtype", config.dtype]
    if config.max_model_len:
        command += ["--max-model-len", str(config.max_model_len)]
    if config.max_num_seqs:
        command += ["--max-num-seqs", str(config.max_num_seqs)]
    if config.enforce_eager:
        command.append("--enforce-eager")
    return command + list(config.extra_args)


def server_env(base: dict[str, str] | None = None) -> dict[str, str]:
    """Return the environment for the server: ``base`` (default: ours) plus ``SERVER_ENV``."""
    env = dict(os.environ if base is None else base)
    env.update(SERVER_ENV)
    return env


def log_path_for(cache_dir: Path, port: int) -> Path:
    """Return where the log of the server on ``port`` is kept."""
    return Path(cache_dir) / "logs" / f"vllm-{port}.log"


def prune_logs(log_dir: Path, *, keep: int = 20) -> None:
    """Delete all but the ``keep`` newest ``vllm-<port>.log`` files (each run on a free port adds one)."""
    logs = [path for path in Path(log_dir).glob("vllm-*.log") if path.stem[len("vllm-") :].isdigit()]
    logs.sort(key=lambda path: path.stat().st_mtime, reverse=True)
    for old in logs[keep:]:
        old.unlink(missing_ok=True)


def free_port(host: str = DEFAULT_HOST) -> int:
    """Return a TCP port that is free on ``host`` right now."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


def port_in_use(host: str, port: int) -> bool:
    """Tell whether something already listens on ``host:port``."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.5)
        return sock.connect_ex((host, port)) == 0


def start_server(config: ServerConfig, log_path: Path) -> subprocess.Popen:
    """Start vLLM in a new session with its output in ``log_path``; return the process."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    prune_logs(log_path.parent)
    with open(log_path, "wb") as log:
        log.write(("$ " + " ".join(server_command(config)) + "\n").encode())
        log.flush()
        try:
            return subprocess.Popen(
                server_command(config),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=server_env(),
                start_new_session=True,
            )
        except OSError as exc:
            raise TargetError(f"cannot run {config.python}: {exc}") from exc


def health_ok(host: str, port: int, *, timeout: float = 2.0) -> bool:
    """Tell whether ``GET /health`` answers 200."""
    conn = http.client.HTTPConnection(host, port, timeout=timeout)
    try:
        conn.request("GET", "/health")
        response = conn.getresponse()
        response.read()
        return response.status == 200
    except (OSError, http.client.HTTPException):
        return False
    finally:
        conn.close()


def failure_reason(log_path: Path) -> str:
    """Return the one line of ``log_path`` that best explains why vLLM failed."""
    return last_meaningful_line(log_path) or "no output"


class StartCancelled(TargetError):
    """The wait for the server was cancelled (Ctrl-C or SIGTERM while it started)."""


def wait_ready(
    process: subprocess.Popen,
    config: ServerConfig,
    log_path: Path,
    *,
    timeout: float = 180.0,
    interval: float = 0.5,
    cancelled: Callable[[], bool] | None = None,
) -> float:
    """Poll ``/health`` until it answers 200; return the seconds waited or raise TargetError.

    ``cancelled`` is a callable checked between polls; when it returns true the
    wait ends with ``StartCancelled``.
    """
    started = time.monotonic()
    while True:
        if cancelled is not None and cancelled():
            raise StartCancelled("cancelled while vLLM was starting")
        rc = process.poll()
        if rc is not None:
            raise TargetError(
                f"vLLM exited with code {rc} before it was ready: {failure_reason(log_path)} (log: {log_path})"
            )
        if health_ok(config.host, config.port):
            return time.monotonic() - started
        if time.monotonic() - started > timeout:
            raise TargetError(
                f"vLLM was not ready after {timeout:.0f} s; last log line: {failure_reason(log_path)} (log: {log_path})"
            )
        time.sleep(interval)


def stop_server(process: subprocess.Popen, *, timeout: float = 30.0) -> int | None:
    """Stop vLLM's whole process group: SIGTERM, then SIGKILL after ``timeout``; return its exit code."""
    pgid = process.pid  # start_new_session made it a group leader
    if process.poll() is None:
        _signal_group(pgid, signal.SIGTERM)
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            _signal_group(pgid, signal.SIGKILL)
            process.wait(timeout=10)
    # The engine core may outlive the API server by a moment; leave nothing behind.
    deadline = time.monotonic() + 5
    while _group_alive(pgid) and time.monotonic() < deadline:
        time.sleep(0.1)
    if _group_alive(pgid):
        _signal_group(pgid, signal.SIGKILL)
    return process.returncode


def _signal_group(pgid: int, sig: int) -> None:
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def _group_alive(pgid: int) -> bool:
    """Tell whether a live (not zombie) process remains in group ``pgid``."""
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    proc = Path("/proc")
    if not proc.is_dir():
        return True
    # killpg also succeeds for zombies that nobody has reaped yet (a container's
    # PID 1 may never reap them): look at each process's state instead.
    for stat in proc.glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if len(fields) > 2 and fields[2] == str(pgid) and fields[0] != "Z":
            return True
    return False
