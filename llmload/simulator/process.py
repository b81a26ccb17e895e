"""Run the simulator as a child process, for tests, benchmarks and ``llmload demo``.

    with SimulatorProcess(profile="fixed", extra_args=["--itl-ms", "0"]) as sim:
        ... sim.base_url ...

The child is ``python -m llmload sim --port 0 ...``; its listening line gives
the URL. ``stop()`` sends SIGTERM to that PID only, waits, and kills it if it
has not exited.
"""

from __future__ import annotations

import os
import re
import selectors
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import IO

from llmload.errors import TargetError

_LISTENING = re.compile(r"^llmload-sim listening on (http://\S+)\s*$")
_PACKAGE_ROOT = str(Path(__file__).resolve().parents[2])


class SimulatorProcess:
    """A running ``llmload sim`` child process."""

    def __init__(
        self,
        *,
        profile: str = "rtx3090",
        extra_args: Sequence[str] = (),
        env: Mapping[str, str] | None = None,
        start_timeout_s: float = 20.0,
        port: int = 0,
    ) -> None:
        self.profile = profile
        self.port = port
        """Port to bind (0: a free one); a fixed port lets a test restart a backend where clients expect it."""
        self.extra_args = tuple(extra_args)
        self.env = dict(env) if env is not None else None
        self.start_timeout_s = start_timeout_s
        self.base_url = ""
        self._proc: subprocess.Popen[bytes] | None = None
        self._stderr: IO[bytes] | None = None

    @property
    def pid(self) -> int:
        """The child's process id."""
        if self._proc is None:
            raise TargetError("the simulator is not running")
        return self._proc.pid

    @property
    def command(self) -> list[str]:
        """The child's command line."""
        return [
            sys.executable,
            "-m",
            "llmload",
            "sim",
            "--profile",
            self.profile,
            *self.extra_args,
            "--port",
            str(self.port),
        ]

    def start(self) -> SimulatorProcess:
        """Start the child and wait for its listening line."""
        env = dict(os.environ if self.env is None else self.env)
        # The child must import this same llmload, installed or not.
        env["PYTHONPATH"] = os.pathsep.join(p for p in (_PACKAGE_ROOT, env.get("PYTHONPATH", "")) if p)
        env.setdefault("PYTHONUNBUFFERED", "1")
        # If importing the llmload package pulls in Locust, keep gevent from
        # monkey-patching the simulator's sockets and selectors (about 30% slower).
        env.setdefault("LOCUST_SKIP_MONKEY_PATCH", "1")
        self._stderr = tempfile.TemporaryFile()
        self._proc = subprocess.Popen(self.command, stdout=subprocess.PIPE, stderr=self._stderr, env=env)
        try:
            self.base_url = self._wait_listening()
        except BaseException:
            self.stop()
            raise
        return self

    def _wait_listening(self) -> str:
        proc = self._proc
        assert proc is not None and proc.stdout is not None
        deadline = time.monotonic() + self.start_timeout_s
        line = b""
        with selectors.DefaultSelector() as sel:
            sel.register(proc.stdout, selectors.EVENT_READ)
            while time.monotonic() < deadline:
                if not sel.select(timeout=max(0.0, deadline - time.monotonic())):
                    break
                chunk = os.read(proc.stdout.fileno(), 4096)
                if not chunk:
                    break
                line += chunk
                if b"\n" in line:
                    match = _LISTENING.match(line.split(b"\n", 1)[0].decode(errors="replace"))
                    if match:
                        return match.group(1)
                    break
        code = proc.poll()
        state = f"exited with code {code}" if code is not None else f"no listening line in {self.start_timeout_s:g} s"
        raise TargetError(f"llmload sim did not start ({state}): {self._stderr_tail()}")

    def _stderr_tail(self) -> str:
        if self._stderr is None:
            return ""
        self._stderr.seek(0)
        text = self._stderr.read().decode(errors="replace").strip()
        return " | ".join(text.splitlines()[-3:]) or "(no stderr)"

    def stop(self, timeout_s: float = 5.0) -> int | None:
        """Send SIGTERM to the child, wait, kill it if needed; return its exit code."""
        proc = self._proc
        if proc is None:
            return None
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()
        if self._stderr is not None:
            self._stderr.close()
            self._stderr = None
        return proc.returncode

    def __enter__(self) -> SimulatorProcess:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
