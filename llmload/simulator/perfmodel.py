"""Step-time, prefill and KV-capacity arithmetic of the simulated engine.

One engine step runs a forward pass over every scheduled token: one decode
token for each running request plus the prompt chunks admitted this step. Its
duration is additive (no overlap of compute and memory traffic is assumed)::

    step_s = step_overhead_s
           + weight_bytes / (bandwidth * bandwidth_efficiency)          # weights, once
           + context_tokens * kv_bytes_per_token / (bandwidth * bandwidth_efficiency)
           + num_decode * 2 * params / (fp16_flops * decode_compute_efficiency)
           + prefill_flops / (fp16_flops * prefill_compute_efficiency)

    prefill_flops = 2 * params * c + 4 * layers * heads * head_dim * (c * o + c * (c + 1) / 2)

for a chunk of ``c`` prompt tokens that starts after ``o`` already computed ones
(causal attention). KV capacity is what is left of ``gpu_memory_utilization``
of the card after the weights, in 16-token blocks like vLLM's paged cache.

The :class:`Calibration` constants were fitted once, on the RTX 3090 figures
(docs/simulator.md), and are shared by every GPU profile.
"""

from __future__ import annotations

from dataclasses import dataclass

from llmload.errors import ConfigError
from llmload.simulator.profiles import GPUProfile, ModelProfile


@dataclass(frozen=True)
class Calibration:
    """Efficiency factors and fixed costs that turn peak figures into achieved speed."""

    step_overhead_s: float = 0.0015
    """Fixed cost of every step: scheduling, kernel launches, sampling set-up."""
    bandwidth_efficiency: float = 0.85
    """Share of peak memory bandwidth a decode step achieves."""
    decode_compute_efficiency: float = 0.26
    """Share of peak FP16 FLOPS per-sequence decode work achieves (skinny GEMMs, sampling)."""
    prefill_compute_efficiency: float = 0.60
    """Share of peak FP16 FLOPS prefill achieves (large GEMMs)."""
    frontend_latency_s: float = 0.015
    """API-server time before a request reaches the scheduler (template, tokenizer, IPC)."""


@dataclass(frozen=True)
class PerfModel:
    """The performance model of one GPU serving one model."""

    gpu: GPUProfile
    model: ModelProfile
    calibration: Calibration = Calibration()
    gpu_memory_utilization: float = 0.9
    block_size: int = 16
    max_num_seqs: int = 256
    max_num_batched_tokens: int | None = None
    """None: the GPU profile's default."""
    kv_cache_tokens_override: int | None = None
    """None: derived from memory; otherwise this many tokens of KV cache."""
    max_model_len_override: int | None = None

    def __post_init__(self) -> None:
        if not 0.0 < self.gpu_memory_utilization <= 1.0:
            raise ConfigError(f"gpu_memory_utilization must be in (0, 1], got {self.gpu_memory_utilization}")
        if self.max_num_seqs < 1:
            raise ConfigError(f"max_num_seqs must be >= 1, got {self.max_num_seqs}")
        if self.num_kv_blocks < 1:
            raise ConfigError(
                f"model {self.model.name} does not fit on {self.gpu.name} at gpu_memory_utilization "
                f"{self.gpu_memory_utilization}: no memory left for the KV cache"
            )

    # -- capacity -----------------------------------------------------------------

    @property
    def token_budget(self) -> int:
        """Tokens one step may process (decode tokens plus prefill chunks)."""
        return self.max_num_batched_tokens or self.gpu.max_num_batched_tokens

    @property
    def kv_cache_bytes(self) -> float:
        """Bytes left for the KV cache: the usable share of memory minus the weights."""
        return self.gpu_memory_utilization * self.gpu.memory_bytes - self.model.weight_bytes

    @property
    def num_kv_blocks(self) -> int:
        """KV-cache blocks of ``block_size`` tokens."""
        if self.kv_cache_tokens_override is not None:
            return self.kv_cache_tokens_override // self.block_size
        block_bytes = self.block_size * self.model.kv_bytes_per_token
        return max(0, int(self.kv_cache_bytes // block_bytes))

    @property
    def kv_cache_tokens(self) -> int:
        """Tokens the KV cache holds."""
        return self.num_kv_blocks * self.block_size

    @property
    def max_model_len(self) -> int:
        """Longest prompt plus output accepted: the model's, capped by the KV cache like vLLM."""
        if self.max_model_len_override is not None:
            return self.max_model_len_override
        return min(self.model.max_model_len, self.kv_cache_tokens)

    # -- time ---------------------------------------------------------------------

    @property
    def _bandwidth(self) -> float:
        return self.gpu.memory_bandwidth_gbps * 1e9 * self.calibration.bandwidth_efficiency

    @property
    def weights_read_s(self) -> float:
        """Time to stream the weights through the cores once."""
        return self.model.weight_bytes / self._bandwidth

    def kv_read_s(self, context_tokens: int) -> float:
        """Time to read the KV cache of ``context_tokens`` tokens."""
        return context_tokens * self.model.kv_bytes_per_token / self._bandwidth

    def decode_compute_s(self, num_seqs: int) -> float:
        """Compute time of one decode token for each of ``num_seqs`` sequences."""
        peak = self.gpu.fp16_tflops * 1e12 * self.calibration.decode_compute_efficiency
        return num_seqs * self.model.flops_per_token / peak

    def prefill_flops(self, tokens: int, offset: int = 0) -> float:
        """FLOPs of a prompt chunk of ``tokens`` tokens after ``offset`` computed ones."""
        m = self.model
        attention = 4.0 * m.layers * m.heads * m.head_dim * (tokens * offset + tokens * (tokens + 1) / 2)
        return tokens * m.flops_per_token + attention

    def prefill_compute_s(self, flops: float) -> float:
        """Compute time of ``flops`` prefill FLOPs."""
        return flops / (self.gpu.fp16_tflops * 1e12 * self.calibration.prefill_compute_efficiency)

    def step_s(self, *, num_decode: int, context_tokens: int, prefill_flops: float = 0.0) -> float:
        """Duration of one step decoding ``num_decode`` sequences holding ``context_tokens`` tokens."""
        return (
            self.calibration.step_overhead_s
            + self.weights_read_s
            + self.kv_read_s(context_tokens)
            + self.decode_compute_s(num_decode)
            + self.prefill_compute_s(prefill_flops)
        )

    def describe(self) -> dict[str, float | int | str]:
        """Return the derived figures shown by ``llmload sim --list-profiles``."""
        return {
            "gpu": self.gpu.name,
            "model": self.model.name,
            "kv_cache_tokens": self.kv_cache_tokens,
            "max_model_len": self.max_model_len,
            "decode_step_ms_batch_1": round(1e3 * self.step_s(num_decode=1, context_tokens=128), 2),
            "decode_step_ms_batch_64": round(1e3 * self.step_s(num_decode=64, context_tokens=64 * 128), 2),
            "decode_step_ms_batch_256": round(1e3 * self.step_s(num_decode=256, context_tokens=256 * 128), 2),
            "prefill_ms_1k_tokens": round(1e3 * self.prefill_compute_s(self.prefill_flops(1024)), 2),
        }
