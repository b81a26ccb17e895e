"""Random-weight Llama-architecture models that vLLM can serve without downloads.

No weights can be downloaded here, and a load test does not need a clever
model, only a real one: the same architecture, the same compute per token and
a tokenizer with a chat template. Each shape in ``SHAPES`` is built once into
``<cache>/models/<shape>/`` by ``_build_model.py``, which runs inside the vLLM
venv's Python (it needs torch, transformers and tokenizers; this project does
not import them). A ``llmload-model.json`` written last marks a finished build;
a build whose recorded spec differs from the current one is redone.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from llmload.errors import TargetError
from llmload.target._lock import cache_lock
from llmload.target.logtail import last_meaningful_line
from llmload.target.venv import Say

BUILD_SCRIPT = Path(__file__).with_name("_build_model.py")
MARKER = "llmload-model.json"
# Bump when _build_model.py changes what it writes, so cached models are rebuilt.
BUILDER_VERSION = 1


@dataclass(frozen=True)
class ModelShape:
    """The architecture of one random-weight model and how to serve it."""

    name: str
    """Shape name, as given to ``--shape``."""
    hidden_size: int
    num_hidden_layers: int
    num_attention_heads: int
    num_key_value_heads: int
    intermediate_size: int
    vocab_size: int
    max_position_embeddings: int
    rope_theta: float
    torch_dtype: str
    """Dtype of the saved weights and of ``--dtype`` when serving."""
    default_max_model_len: int
    """``--max-model-len`` unless the user gives one."""
    max_num_seqs: int | None = None
    """``--max-num-seqs``; None keeps vLLM's default."""
    rope_scaling: dict | None = None
    tie_word_embeddings: bool = False
    tokenizer_vocab_size: int = 1024
    """Entries learned by the BPE trainer; the rest, up to ``vocab_size``, are padding words."""
    seed: int = 1234
    shard_bytes: int = 2 * 1024**3
    """Largest safetensors shard; the builder holds at most one shard in memory."""
    description: str = field(default="", compare=False)

    @property
    def head_dim(self) -> int:
        """Return the attention head size."""
        return self.hidden_size // self.num_attention_heads

    def parameter_count(self) -> int:
        """Return the number of weights, embeddings and norms included."""
        h, i, v, layers = self.hidden_size, self.intermediate_size, self.vocab_size, self.num_hidden_layers
        kv = self.num_key_value_heads * self.head_dim
        per_layer = h * h * 2 + h * kv * 2 + h * i * 3 + h * 2
        lm_head = 0 if self.tie_word_embeddings else v * h
        return v * h + layers * per_layer + h + lm_head

    def weight_bytes(self) -> int:
        """Return the size of the saved weights."""
        return self.parameter_count() * (2 if self.torch_dtype in ("bfloat16", "float16") else 4)

    def spec(self) -> dict[str, object]:
        """Return what the build script needs, as JSON-ready data."""
        data = asdict(self)
        data.pop("description")
        data.pop("default_max_model_len")
        data.pop("max_num_seqs")
        data["builder_version"] = BUILDER_VERSION
        return data


# Head sizes the CPU attention backend accepts: 32, 64, 80, 96, 112, 128, ...
CPU_HEAD_SIZES = (32, 64, 80, 96, 112, 128, 160, 192, 224, 256)

SHAPES: dict[str, ModelShape] = {
    "tiny": ModelShape(
        name="tiny",
        hidden_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=4,
        intermediate_size=512,
        vocab_size=1024,
        max_position_embeddings=4096,
        rope_theta=10000.0,
        torch_dtype="float32",
        default_max_model_len=2048,
        max_num_seqs=128,
        tie_word_embeddings=True,
        tokenizer_vocab_size=1024,
        description="about 0.66 M parameters; thousands of tokens/s on two CPU cores",
    ),
    "llama-3.1-8b": ModelShape(
        name="llama-3.1-8b",
        hidden_size=4096,
        num_hidden_layers=32,
        num_attention_heads=32,
        num_key_value_heads=8,
        intermediate_size=14336,
        vocab_size=128256,
        max_position_embeddings=131072,
        rope_theta=500000.0,
        rope_scaling={
            "rope_type": "llama3",
            "factor": 8.0,
            "low_freq_factor": 1.0,
            "high_freq_factor": 4.0,
            "original_max_position_embeddings": 8192,
        },
        torch_dtype="bfloat16",
        default_max_model_len=8192,
        tie_word_embeddings=False,
        tokenizer_vocab_size=1024,
        description="the exact Llama 3.1 8B shape (8.03 B parameters, 16 GB in bfloat16); for GPU machines",
    ),
}


def get_shape(name: str) -> ModelShape:
    """Return the shape called ``name`` or fail listing the valid ones."""
    try:
        return SHAPES[name]
    except KeyError:
        raise TargetError(f"unknown model shape {name!r}; expected one of {', '.join(SHAPES)}") from None


def model_dir(cache_dir: Path, shape: ModelShape) -> Path:
    """Return where ``shape`` is built inside the cache."""
    return Path(cache_dir) / "models" / shape.name


def is_built(path: Path, shape: ModelShape) -> bool:
    """Tell whether ``path`` holds a finished build of exactly ``shape``."""
    try:
        recorded = json.loads((Path(path) / MARKER).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    spec: object = recorded.get("spec")
    return spec == shape.spec()


def build_command(python: Path | str, out_dir: Path, shape: ModelShape) -> list[str]:
    """Return the command that builds ``shape`` into ``out_dir`` with the vLLM venv's Python."""
    return [str(python), str(BUILD_SCRIPT), "--out", str(out_dir), "--spec", json.dumps(shape.spec(), sort_keys=True)]


def ensure_model(*, python: Path | str, cache_dir: Path, shape: ModelShape, say: Say = print) -> Path:
    """Build ``shape`` into the cache unless it is already there, and return its directory."""
    final = model_dir(cache_dir, shape)
    if is_built(final, shape):
        return final
    with cache_lock(final.parent / f".{shape.name}.lock", what=f"building the {shape.name} model", say=say):
        if is_built(final, shape):  # built by another run while this one waited
            return final
        return _build(python=python, cache_dir=cache_dir, shape=shape, final=final, say=say)


def _build(*, python: Path | str, cache_dir: Path, shape: ModelShape, final: Path, say: Say) -> Path:
    final.parent.mkdir(parents=True, exist_ok=True)
    # Build beside the final place and rename, so an interrupted build never looks finished.
    staging = final.parent / f".{shape.name}.building"
    shutil.rmtree(staging, ignore_errors=True)
    log_path = Path(cache_dir) / "logs" / f"build-{shape.name}.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    say(f"llmload target: building the random-weight {shape.name} model ({_size(shape.weight_bytes())}) in {final}")
    started = time.monotonic()
    with open(log_path, "w", encoding="utf-8") as log:
        try:
            rc = subprocess.call(build_command(python, staging, shape), stdout=log, stderr=subprocess.STDOUT)
        except OSError as exc:
            raise TargetError(f"cannot run {python}: {exc}") from exc
    if rc != 0 or not is_built(staging, shape):
        reason = last_meaningful_line(log_path) or f"exit code {rc}"
        shutil.rmtree(staging, ignore_errors=True)
        raise TargetError(f"building the {shape.name} model failed: {reason} (log: {log_path})")
    shutil.rmtree(final, ignore_errors=True)
    staging.rename(final)
    say(f"llmload target: built {shape.name} in {time.monotonic() - started:.0f} s")
    return final


def _size(nbytes: int) -> str:
    return f"{nbytes / 1e9:.1f} GB" if nbytes >= 1e9 else f"{nbytes / 1e6:.1f} MB"
