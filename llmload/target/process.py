"""``VLLMProcess``: a real vLLM server for tests, benchmarks and ``llmload target vllm``.

::

    with VLLMProcess(shape="tiny") as server:
        conn = http.client.HTTPConnection(server.host, server.port)
        ...  # POST /v1/chat/completions with "model": server.model

Starting installs the cached vLLM venv and builds the model if needed (see
``venv`` and ``model``), picks a free port unless one is given, starts the
server and waits for ``/health``. A failure raises ``TargetError`` with one
line: the reason from vLLM's log and where the full log is.
"""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from llmload.errors import TargetError
from llmload.target.model import ensure_model, get_shape
from llmload.target.venv import Say, VLLMPython, default_cache_dir, ensure_vllm_python
from llmload.target.vllm import (
    DEFAULT_HOST,
    ServerConfig,
    failure_reason,
    free_port,
    log_path_for,
    port_in_use,
    start_server,
    stop_server,
    wait_ready,
)

DEFAULT_STARTUP_TIMEOUT_S = 180.0


def _stderr(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def default_model_name(shape_name: str) -> str:
    """Return the served model name used when none is given."""
    return f"llmload-{shape_name}"


class VLLMProcess:
    """A vLLM OpenAI-compatible server serving a random-weight model, as a context manager."""

    def __init__(
        self,
        *,
        shape: str = "tiny",
        cache_dir: Path | str | None = None,
        extra_args: tuple[str, ...] | list[str] = (),
        host: str = DEFAULT_HOST,
        port: int | None = None,
        served_model_name: str | None = None,
        max_model_len: int | None = None,
        max_num_seqs: int | None = None,
        python: str | None = None,
        startup_timeout: float = DEFAULT_STARTUP_TIMEOUT_S,
        say: Say = _stderr,
        model_path: Path | str | None = None,
    ) -> None:
        """Describe the server; nothing starts until ``start()`` or ``with``.

        ``port`` None or 0 picks a free port. ``extra_args`` go to vLLM after
        llmload's own flags. ``python`` is an interpreter that imports vLLM
        (default: ``$LLMLOAD_VLLM_PYTHON`` or the cached venv). ``say`` gets
        the progress lines. ``model_path`` serves that model folder instead of
        building the shape's random model (the shape still sets the dtype and limits).
        """
        self.shape = get_shape(shape)
        self.cache_dir = Path(cache_dir).expanduser() if cache_dir else default_cache_dir()
        self.extra_args = tuple(extra_args)
        self.host = host
        self.port = int(port or 0)
        self.model = served_model_name or default_model_name(self.shape.name)
        self.max_model_len = max_model_len or self.shape.default_max_model_len
        self.max_num_seqs = max_num_seqs or self.shape.max_num_seqs
        self.python = python
        self.startup_timeout = startup_timeout
        self.say = say
        self.vllm: VLLMPython | None = None
        self.model_path: Path | None = Path(model_path) if model_path else None
        self.log_path: Path | None = None
        self.startup_s: float | None = None
        """Seconds from starting the server process to the first healthy ``/health``."""
        self._process: subprocess.Popen | None = None

    @property
    def base_url(self) -> str:
        """Return the server's root URL, e.g. ``http://127.0.0.1:40123`` (no ``/v1``)."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    @property
    def pid(self) -> int | None:
        """Return the server's process id (also its process group id), or None before start."""
        return self._process.pid if self._process else None

    @property
    def version(self) -> str | None:
        """Return the vLLM version serving, or None before start."""
        return self.vllm.version if self.vllm else None

    def prepare(self) -> None:
        """Find or install vLLM and build the model, without starting the server."""
        if self.vllm is None:
            self.vllm = ensure_vllm_python(cache_dir=self.cache_dir, python=self.python, say=self.say)
        if self.model_path is None:
            self.model_path = ensure_model(
                python=self.vllm.python, cache_dir=self.cache_dir, shape=self.shape, say=self.say
            )

    def start(self, *, cancelled: Callable[[], bool] | None = None) -> VLLMProcess:
        """Start the server and wait until ``/health`` answers; raise ``TargetError`` if it does not.

        ``cancelled`` is a callable polled while waiting; when it returns true
        the server is stopped and ``StartCancelled`` is raised.
        """
        if self._process is not None:
            raise TargetError(f"vLLM is already running (pid {self._process.pid})")
        self.prepare()
        if self.port == 0:
            self.port = free_port(self.host)
        elif port_in_use(self.host, self.port):
            raise TargetError(
                f"port {self.port} on {self.host} is already in use; choose another with --port (0 = any free port)"
            )
        config = self._config()
        self.log_path = log_path_for(self.cache_dir, self.port)
        self.say(f"llmload target: starting vLLM {self.version} on {self.base_url} (log: {self.log_path})")
        self._process = start_server(config, self.log_path)
        try:
            self.startup_s = wait_ready(
                self._process, config, self.log_path, timeout=self.startup_timeout, cancelled=cancelled
            )
        except BaseException:
            # Failed, timed out or interrupted (Ctrl-C, SIGTERM): leave no server behind.
            self.stop()
            raise
        return self

    def _config(self) -> ServerConfig:
        assert self.vllm is not None and self.model_path is not None
        return ServerConfig(
            python=self.vllm.python,
            model_path=self.model_path,
            served_model_name=self.model,
            port=self.port,
            host=self.host,
            max_model_len=self.max_model_len,
            max_num_seqs=self.max_num_seqs,
            dtype=self.shape.torch_dtype,
            extra_args=self.extra_args,
        )

    def poll(self) -> int | None:
        """Return the server's exit code, or None while it runs (or before start)."""
        return self._process.poll() if self._process else None

    def wait(self, timeout: float | None = None, *, cancelled: Callable[[], bool] | None = None) -> int | None:
        """Wait for the server to exit; return its exit code, or None after ``timeout`` or once ``cancelled()``."""
        if self._process is None:
            return None
        deadline = None if timeout is None else time.monotonic() + timeout
        while self._process.poll() is None:
            if deadline is not None and time.monotonic() >= deadline:
                return None
            if cancelled is not None and cancelled():
                return None
            time.sleep(0.2)
        return self._process.returncode

    def exit_reason(self) -> str:
        """Return the one line of the log that explains why the server stopped."""
        return failure_reason(self.log_path) if self.log_path else ""

    def stop(self) -> int | None:
        """Stop the server's whole process group (SIGTERM, then SIGKILL); return its exit code."""
        if self._process is None:
            return None
        process, self._process = self._process, None
        return stop_server(process)

    def __enter__(self) -> VLLMProcess:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def __repr__(self) -> str:
        state = f"pid {self.pid}" if self._process else "stopped"
        return f"<VLLMProcess {self.shape.name} {self.model!r} {self.base_url} {state}>"
