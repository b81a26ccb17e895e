"""The vLLM server command line, its environment, and its start/health/stop cycle (with a fake vLLM)."""

from __future__ import annotations

import os
import socket
import time
from pathlib import Path

import pytest

from llmload.errors import TargetError
from llmload.target.vllm import (
    SERVER_ENV,
    ServerConfig,
    StartCancelled,
    free_port,
    log_path_for,
    port_in_use,
    server_command,
    server_env,
    start_server,
    stop_server,
    wait_ready,
)


def child_pid(log: Path) -> int:
    for line in log.read_text().splitlines():
        if line.startswith("child pid "):
            return int(line.split()[-1])
    raise AssertionError(f"no child pid in {log}")


def test_server_command_line():
    config = ServerConfig(
        python=Path("/venv/bin/python"),
        model_path=Path("/cache/models/tiny"),
        served_model_name="llmload-tiny",
        port=8123,
        max_model_len=2048,
        max_num_seqs=128,
        dtype="float32",
        extra_args=("--seed", "7"),
    )
    assert server_command(config) == [
        "/venv/bin/python",
        "-m",
        "vllm.entrypoints.openai.api_server",
        "--model",
        "/cache/models/tiny",
        "--served-model-name",
        "llmload-tiny",
        "--host",
        "127.0.0.1",
        "--port",
        "8123",
        "--disable-uvicorn-access-log",
        "--dtype",
        "float32",
        "--max-model-len",
        "2048",
        "--max-num-seqs",
        "128",
        "--enforce-eager",
        "--seed",
        "7",
    ]
    assert config.base_url == "http://127.0.0.1:8123"


def test_optional_flags_are_left_to_vllm():
    config = ServerConfig(python=Path("py"), model_path=Path("m"), served_model_name="m", port=1, enforce_eager=False)
    command = server_command(config)
    for flag in ("--dtype", "--max-model-len", "--max-num-seqs", "--enforce-eager"):
        assert flag not in command
    assert ServerConfig(
        python=Path("py"), model_path=Path("m"), served_model_name="m", port=1, host="::1"
    ).base_url == ("http://[::1]:1")


def test_server_env_pins_loopback_offline_and_a_small_kv_cache():
    env = server_env({"PATH": "/bin", "VLLM_HOST_IP": "10.0.0.1"})
    assert env["PATH"] == "/bin"
    assert env["VLLM_HOST_IP"] == "127.0.0.1"
    assert env["VLLM_CPU_KVCACHE_SPACE"] == "1"
    assert env["HF_HUB_OFFLINE"] == "1"
    assert env["VLLM_NO_USAGE_STATS"] == "1"
    assert set(SERVER_ENV) <= set(env)


def test_log_path_is_per_port(tmp_path: Path):
    assert log_path_for(tmp_path, 8123) == tmp_path / "logs" / "vllm-8123.log"


def test_free_port_is_free_and_port_in_use_sees_listeners():
    port = free_port()
    assert 0 < port < 65536
    assert not port_in_use("127.0.0.1", port)
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        assert port_in_use("127.0.0.1", listener.getsockname()[1])


def _config(fake_python: Path) -> ServerConfig:
    return ServerConfig(python=fake_python, model_path=Path("/m"), served_model_name="m", port=free_port())


def test_start_wait_and_stop_the_whole_process_group(fake_python: Path, tmp_path: Path, process_alive):
    config = _config(fake_python)
    log = tmp_path / "vllm.log"
    process = start_server(config, log)
    try:
        waited = wait_ready(process, config, log, timeout=30, interval=0.05)
        assert 0 < waited < 30
        assert os.getpgid(process.pid) == process.pid  # its own session and group
        child = child_pid(log)
        assert process_alive(child)
    finally:
        stop_server(process, timeout=10)
    assert process.returncode is not None
    assert not process_alive(child), "the engine-core stand-in outlived the server"
    assert log.read_text().startswith(f"$ {fake_python} -m vllm.entrypoints.openai.api_server --model /m")


def test_a_server_that_dies_reports_its_reason(fake_python: Path, tmp_path: Path, monkeypatch):
    monkeypatch.setenv("FAKE_VLLM_FAIL", "1")
    config = _config(fake_python)
    log = tmp_path / "vllm.log"
    process = start_server(config, log)
    try:
        with pytest.raises(TargetError) as info:
            wait_ready(process, config, log, timeout=30, interval=0.05)
    finally:
        stop_server(process)
    assert str(info.value) == (
        f"vLLM exited with code 1 before it was ready: ValueError: fake failure for the test (log: {log})"
    )


def test_a_server_that_never_gets_ready_times_out(fake_python: Path, tmp_path: Path, monkeypatch):
    monkeypatch.setenv("FAKE_VLLM_DELAY", "60")
    config = _config(fake_python)
    log = tmp_path / "vllm.log"
    process = start_server(config, log)
    try:
        started = time.monotonic()
        with pytest.raises(TargetError, match=r"^vLLM was not ready after 1 s; last log line: "):
            wait_ready(process, config, log, timeout=1, interval=0.05)
        assert time.monotonic() - started < 5
    finally:
        stop_server(process, timeout=5)


def test_waiting_can_be_cancelled(fake_python: Path, tmp_path: Path, monkeypatch):
    monkeypatch.setenv("FAKE_VLLM_DELAY", "60")
    config = _config(fake_python)
    log = tmp_path / "vllm.log"
    process = start_server(config, log)
    try:
        with pytest.raises(StartCancelled):
            wait_ready(process, config, log, timeout=30, interval=0.05, cancelled=lambda: True)
    finally:
        stop_server(process, timeout=5)


def test_stop_kills_a_server_that_ignores_sigterm(tmp_path: Path):
    stubborn = tmp_path / "stubborn"
    stubborn.write_text("#!/bin/sh\ntrap '' TERM\nwhile true; do sleep 0.1; done\n")
    stubborn.chmod(0o755)
    config = ServerConfig(python=stubborn, model_path=Path("/m"), served_model_name="m", port=1)
    process = start_server(config, tmp_path / "log")
    time.sleep(0.2)
    started = time.monotonic()
    assert stop_server(process, timeout=0.5) == -9
    assert time.monotonic() - started < 10


def test_starting_a_missing_interpreter_is_a_target_error(tmp_path: Path):
    config = ServerConfig(python=tmp_path / "nope", model_path=Path("/m"), served_model_name="m", port=1)
    with pytest.raises(TargetError, match="cannot run"):
        start_server(config, tmp_path / "log")


def test_old_server_logs_are_pruned(tmp_path: Path):
    from llmload.target.vllm import prune_logs

    for index in range(25):
        log = tmp_path / f"vllm-{1000 + index}.log"
        log.write_text("x")
        os.utime(log, (1_000_000 + index, 1_000_000 + index))
    (tmp_path / "vllm-install.log").write_text("kept: not a server log")
    (tmp_path / "build-tiny.log").write_text("kept")
    prune_logs(tmp_path, keep=20)
    left = sorted(path.name for path in tmp_path.glob("vllm-1*.log"))
    assert left == [f"vllm-{1000 + index}.log" for index in range(5, 25)]
    assert (tmp_path / "vllm-install.log").exists()
