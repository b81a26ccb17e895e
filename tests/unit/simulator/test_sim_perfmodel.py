"""Performance-model arithmetic: exact figures for the RTX 3090 / Llama 3.1 8B profile."""

from __future__ import annotations

import pytest

from llmload.errors import ConfigError
from llmload.simulator.perfmodel import Calibration, PerfModel
from llmload.simulator.profiles import GIB, GPU_PROFILES, get_gpu_profile, get_model_profile


@pytest.fixture
def perf() -> PerfModel:
    return PerfModel(gpu=get_gpu_profile("rtx3090"), model=get_model_profile("llama-3.1-8b"))


def test_model_shape_figures(perf):
    m = perf.model
    assert m.weight_bytes == 8.03e9 * 2
    assert m.kv_bytes_per_token == 2 * 32 * 8 * 128 * 2 == 131072
    assert m.flops_per_token == 2 * 8.03e9


def test_kv_capacity_is_memory_left_after_weights_in_16_token_blocks(perf):
    left = 0.9 * 24 * GIB - 16.06e9
    assert perf.kv_cache_bytes == pytest.approx(left)
    assert perf.num_kv_blocks == int(left // (16 * 131072)) == 3401
    assert perf.kv_cache_tokens == 3401 * 16 == 54416
    assert perf.max_model_len == 54416  # capped by the KV cache, like vLLM would require


def test_capacity_orders_gpus():
    model = get_model_profile("llama-3.1-8b")
    tokens = [
        PerfModel(gpu=GPU_PROFILES[n], model=model).kv_cache_tokens for n in ("rtx3090", "a100-40gb", "h100-80gb")
    ]
    assert tokens == sorted(tokens) and len(set(tokens)) == 3


def test_step_time_terms_exact(perf):
    c = Calibration()
    bw = 936e9 * c.bandwidth_efficiency
    weights = 16.06e9 / bw
    kv = 1000 * 131072 / bw
    decode = 10 * 2 * 8.03e9 / (142e12 * c.decode_compute_efficiency)
    assert perf.weights_read_s == pytest.approx(weights, rel=1e-12)
    assert perf.step_s(num_decode=10, context_tokens=1000) == pytest.approx(
        c.step_overhead_s + weights + kv + decode, rel=1e-12
    )
    # The calibrated single-stream step of the 3090 is about 22 ms (45 tok/s).
    assert 0.021 < perf.step_s(num_decode=1, context_tokens=100) < 0.023


def test_step_time_is_close_to_linear_in_batch(perf):
    t1 = perf.step_s(num_decode=1, context_tokens=130)
    t100 = perf.step_s(num_decode=100, context_tokens=100 * 130)
    t50 = perf.step_s(num_decode=50, context_tokens=50 * 130)
    assert t50 == pytest.approx((t1 + t100) / 2, rel=0.01)
    assert 0.060 < t100 < 0.070


def test_prefill_flops_exact(perf):
    attention = 4 * 32 * 32 * 128 * (10 * 5 + 10 * 11 / 2)
    assert perf.prefill_flops(10, 5) == 10 * 2 * 8.03e9 + attention
    assert perf.prefill_compute_s(142e12 * 0.6) == pytest.approx(1.0)


def test_token_budget_follows_gpu_class():
    model = get_model_profile("llama-3.1-8b")
    assert PerfModel(gpu=GPU_PROFILES["rtx3090"], model=model).token_budget == 2048
    assert PerfModel(gpu=GPU_PROFILES["h100-80gb"], model=model).token_budget == 8192
    assert PerfModel(gpu=GPU_PROFILES["h100-80gb"], model=model, max_num_batched_tokens=512).token_budget == 512


def test_overrides_and_errors():
    gpu, model = get_gpu_profile("rtx3090"), get_model_profile("llama-3.1-8b")
    small = PerfModel(gpu=gpu, model=model, kv_cache_tokens_override=1000)
    assert small.num_kv_blocks == 62 and small.max_model_len == 992
    with pytest.raises(ConfigError, match="does not fit"):
        PerfModel(gpu=gpu, model=model, gpu_memory_utilization=0.5)
    with pytest.raises(ConfigError, match="unknown simulator profile 'v100'.*rtx3090.*fixed"):
        get_gpu_profile("v100")
    with pytest.raises(ConfigError, match="unknown model profile"):
        get_model_profile("gpt-9")
