"""The shape table and the model cache's bookkeeping (no torch needed)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from llmload.errors import TargetError
from llmload.target import model
from llmload.target.model import CPU_HEAD_SIZES, MARKER, SHAPES, build_command, get_shape, is_built, model_dir


def test_tiny_shape_fits_the_cpu_attention_backend():
    tiny = SHAPES["tiny"]
    assert (tiny.hidden_size, tiny.num_attention_heads, tiny.num_hidden_layers, tiny.vocab_size) == (128, 4, 2, 1024)
    assert tiny.head_dim == 32
    assert tiny.head_dim in CPU_HEAD_SIZES
    assert tiny.tokenizer_vocab_size == tiny.vocab_size
    assert 2048 <= tiny.max_position_embeddings <= 4096
    assert tiny.default_max_model_len <= tiny.max_position_embeddings


def test_llama_31_8b_shape_is_exact():
    big = SHAPES["llama-3.1-8b"]
    assert big.hidden_size == 4096
    assert big.num_hidden_layers == 32
    assert big.num_attention_heads == 32
    assert big.num_key_value_heads == 8
    assert big.intermediate_size == 14336
    assert big.vocab_size == 128256
    assert big.head_dim == 128
    assert big.rope_theta == 500000.0
    assert big.rope_scaling["rope_type"] == "llama3"
    assert big.tie_word_embeddings is False
    # Meta's published parameter count for Llama 3.1 8B.
    assert big.parameter_count() == 8_030_261_248
    assert big.weight_bytes() == 2 * 8_030_261_248


def test_tiny_parameter_count_by_hand():
    # embeddings 1024*128 (tied head) + 2 layers * (q,k,v,o 4*128*128 + mlp 3*128*512 + 2 norms*128) + final norm
    assert SHAPES["tiny"].parameter_count() == 1024 * 128 + 2 * (4 * 128 * 128 + 3 * 128 * 512 + 2 * 128) + 128


def test_unknown_shape_lists_the_choices():
    with pytest.raises(TargetError, match=r"unknown model shape 'gpt-5'; expected one of tiny, llama-3.1-8b"):
        get_shape("gpt-5")


def test_spec_carries_the_architecture_not_the_serving_options():
    spec = SHAPES["tiny"].spec()
    assert spec["name"] == "tiny"
    assert spec["builder_version"] == model.BUILDER_VERSION
    assert "default_max_model_len" not in spec
    assert "max_num_seqs" not in spec
    assert "description" not in spec
    json.dumps(spec)  # crosses a process boundary as JSON


def test_model_dir_is_per_shape(tmp_path: Path):
    assert model_dir(tmp_path, SHAPES["tiny"]) == tmp_path / "models" / "tiny"
    assert model_dir(tmp_path, SHAPES["llama-3.1-8b"]) == tmp_path / "models" / "llama-3.1-8b"


def test_is_built_requires_a_marker_with_the_same_spec(tmp_path: Path):
    tiny = SHAPES["tiny"]
    assert not is_built(tmp_path, tiny)
    (tmp_path / MARKER).write_text("not json")
    assert not is_built(tmp_path, tiny)
    (tmp_path / MARKER).write_text(json.dumps({"spec": {**tiny.spec(), "builder_version": -1}}))
    assert not is_built(tmp_path, tiny)
    (tmp_path / MARKER).write_text(json.dumps({"spec": tiny.spec()}))
    assert is_built(tmp_path, tiny)


def test_build_command_runs_the_script_with_the_given_python(tmp_path: Path):
    command = build_command("/venv/bin/python", tmp_path / "out", SHAPES["tiny"])
    assert command[0] == "/venv/bin/python"
    assert Path(command[1]).name == "_build_model.py"
    assert Path(command[1]).is_file()
    assert command[2:4] == ["--out", str(tmp_path / "out")]
    assert command[4] == "--spec"
    assert json.loads(command[5]) == SHAPES["tiny"].spec()


def test_ensure_model_builds_once_then_reuses(fake_python: Path, tmp_path: Path):
    said = []
    path = model.ensure_model(python=fake_python, cache_dir=tmp_path, shape=SHAPES["tiny"], say=said.append)
    assert path == tmp_path / "models" / "tiny"
    assert is_built(path, SHAPES["tiny"])
    assert not (tmp_path / "models" / ".tiny.building").exists()
    assert said[0].startswith("llmload target: building the random-weight tiny model (2.6 MB)")
    said.clear()
    assert model.ensure_model(python=fake_python, cache_dir=tmp_path, shape=SHAPES["tiny"], say=said.append) == path
    assert said == []


def test_ensure_model_failure_is_one_line_with_the_log(fake_python: Path, tmp_path: Path, monkeypatch):
    monkeypatch.setattr(model, "BUILD_SCRIPT", tmp_path / "not_the_build_script.py")
    with pytest.raises(TargetError) as info:
        model.ensure_model(python=fake_python, cache_dir=tmp_path, shape=SHAPES["tiny"], say=lambda line: None)
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith("building the tiny model failed: fake_vllm: unexpected arguments")
    assert message.endswith(f"(log: {tmp_path / 'logs' / 'build-tiny.log'})")
    assert not (tmp_path / "models" / "tiny").exists()
