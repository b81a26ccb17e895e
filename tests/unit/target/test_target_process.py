"""VLLMProcess and ``llmload target vllm`` driven end to end with a fake vLLM interpreter."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from llmload.cli import main
from llmload.errors import TargetError
from llmload.target.process import VLLMProcess

REPO = Path(__file__).resolve().parents[3]


def test_context_manager_exposes_the_server(fake_python: Path, cache_dir: Path, process_alive):
    said = []
    with VLLMProcess(python=str(fake_python), say=said.append, extra_args=["--seed", "1"]) as server:
        assert server.model == "llmload-tiny"
        assert server.base_url == f"http://127.0.0.1:{server.port}"
        assert server.port > 0
        assert server.pid and server.poll() is None
        assert server.log_path == cache_dir / "logs" / f"vllm-{server.port}.log"
        assert server.model_path == cache_dir / "models" / "tiny"
        assert server.version == "0.0.0-fake"
        assert server.startup_s is not None and server.startup_s > 0
        command = server.log_path.read_text().splitlines()[0]
        assert "--max-model-len 2048 --max-num-seqs 128 --enforce-eager --seed 1" in command
        assert "--dtype float32" in command
        pid = server.pid
    assert server.pid is None
    assert not process_alive(pid)
    assert said[-1].startswith("llmload target: starting vLLM 0.0.0-fake on http://127.0.0.1:")


def test_start_failure_leaves_nothing_running(fake_python: Path, cache_dir: Path, monkeypatch):
    monkeypatch.setenv("FAKE_VLLM_FAIL", "1")
    server = VLLMProcess(python=str(fake_python), say=lambda line: None)
    with pytest.raises(TargetError, match="ValueError: fake failure for the test"):
        server.start()
    assert server.pid is None


def test_a_busy_port_is_refused(fake_python: Path, cache_dir: Path):
    with VLLMProcess(python=str(fake_python), say=lambda line: None) as first:
        second = VLLMProcess(python=str(fake_python), port=first.port, say=lambda line: None)
        with pytest.raises(TargetError, match=rf"^port {first.port} on 127.0.0.1 is already in use"):
            second.start()


def test_options_are_validated_in_one_line(capsys):
    assert main(["target", "vllm", "--port", "70000"]) == 1
    assert capsys.readouterr().err == "llmload target: error: --port must be between 0 and 65535, not 70000\n"
    assert main(["target", "vllm", "--max-model-len", "0"]) == 1
    assert capsys.readouterr().err == "llmload target: error: --max-model-len must be positive, not 0\n"
    assert main(["target", "vllm", "--python", "/nowhere/python", "--install-only"]) == 1
    err = capsys.readouterr().err
    assert (
        err
        == "llmload target: error: /nowhere/python (from --python) cannot import vllm, transformers and tokenizers\n"
    )


def test_install_only_prepares_and_exits(fake_python: Path, cache_dir: Path, capsys):
    assert main(["target", "vllm", "--install-only", "--python", str(fake_python)]) == 0
    out = capsys.readouterr().out
    assert out == (
        f"llmload target: vLLM 0.0.0-fake ({fake_python}) and the tiny model "
        f"({cache_dir / 'models' / 'tiny'}) are ready\n"
    )


def _start_cli(fake_python: Path, cache_dir: Path, *extra: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "llmload", "target", "vllm", "--port", "0", "--python", str(fake_python), *extra],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "LLMLOAD_CACHE": str(cache_dir)},
    )


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_cli_serves_until_a_signal_then_exits_zero(fake_python: Path, cache_dir: Path, sig, process_alive):
    cli = _start_cli(fake_python, cache_dir, "--served-model-name", "m1")
    try:
        ready = cli.stdout.readline()
        assert ready.startswith("llmload target: vLLM ready at http://127.0.0.1:")
        assert ready.endswith(" (model m1)\n")
        cli.send_signal(sig)
        out, err = cli.communicate(timeout=30)
    finally:
        if cli.poll() is None:
            cli.kill()
            cli.wait()
    assert cli.returncode == 0, err
    assert "Traceback" not in err
    assert err.splitlines()[-1] == f"llmload target: vLLM stopped ({sig.name})"
    port = int(ready.split(":")[-1].split(" ")[0])
    log = (cache_dir / "logs" / f"vllm-{port}.log").read_text()
    child = int(next(line for line in log.splitlines() if line.startswith("child pid ")).split()[-1])
    assert not process_alive(child)


def test_cli_reports_a_server_that_dies_while_serving(fake_python: Path, cache_dir: Path, monkeypatch):
    monkeypatch.setenv("FAKE_VLLM_EXIT_AFTER", "1")
    cli = _start_cli(fake_python, cache_dir)
    out, err = cli.communicate(timeout=60)
    assert cli.returncode == 1
    assert out.startswith("llmload target: vLLM ready at")
    last = err.splitlines()[-1]
    assert last.startswith(
        "llmload target: error: vLLM exited unexpectedly with code 3: ValueError: fake crash while serving (log: "
    )
    assert "Traceback" not in err


def test_cli_cancelled_while_starting_exits_zero(fake_python: Path, cache_dir: Path, monkeypatch):
    monkeypatch.setenv("FAKE_VLLM_DELAY", "60")
    cli = _start_cli(fake_python, cache_dir)
    try:
        deadline = time.monotonic() + 30
        log_dir = cache_dir / "logs"
        while time.monotonic() < deadline and not list(log_dir.glob("vllm-*.log")):
            time.sleep(0.1)
        time.sleep(0.5)
        cli.send_signal(signal.SIGTERM)
        out, err = cli.communicate(timeout=30)
    finally:
        if cli.poll() is None:
            cli.kill()
            cli.wait()
    assert cli.returncode == 0, err
    assert out == ""
    assert err.splitlines()[-1] == "llmload target: cancelled; vLLM stopped"
