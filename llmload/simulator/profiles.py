"""GPU and model profiles the simulator's performance model is built from.

A GPU profile gives the three hardware figures the model needs (memory
bandwidth, FP16 tensor throughput, memory size) plus the engine defaults vLLM
picks for that class of card; a model profile gives the transformer's shape.
Figures are vendor-quoted peaks; the efficiency factors that turn them into
achieved speed live in :mod:`llmload.simulator.perfmodel` and are shared by
every GPU.
"""

from __future__ import annotations

from dataclasses import dataclass

from llmload.errors import ConfigError

GIB = 1024**3

#: The profile name that switches the performance model off for fixed timings.
FIXED_PROFILE = "fixed"


@dataclass(frozen=True)
class GPUProfile:
    """One GPU as the performance model sees it."""

    name: str
    description: str
    memory_bandwidth_gbps: float
    """Peak memory bandwidth in GB/s (10^9 bytes per second)."""
    fp16_tflops: float
    """Quoted peak FP16 tensor throughput in TFLOPS (10^12 FLOP per second)."""
    memory_gib: float
    """Device memory in GiB."""
    max_num_batched_tokens: int = 2048
    """Per-step token budget; vLLM's V1 API-server default is 2048 below 70 GiB, 8192 above."""
    max_num_seqs: int = 256
    """Most requests decoded together; vLLM V1's API-server default is 1024 on GPUs of 70 GiB
    or more other than the A100, 256 below."""

    @property
    def memory_bytes(self) -> float:
        """Device memory in bytes."""
        return self.memory_gib * GIB


@dataclass(frozen=True)
class ModelProfile:
    """One decoder-only transformer as the performance model sees it."""

    name: str
    description: str
    parameters: float
    layers: int
    hidden: int
    heads: int
    kv_heads: int
    head_dim: int
    dtype_bytes: int
    max_model_len: int

    @property
    def weight_bytes(self) -> float:
        """Bytes of weights read once per forward step."""
        return self.parameters * self.dtype_bytes

    @property
    def kv_bytes_per_token(self) -> int:
        """KV-cache bytes one token occupies: K and V, every layer, every KV head."""
        return 2 * self.layers * self.kv_heads * self.head_dim * self.dtype_bytes

    @property
    def flops_per_token(self) -> float:
        """Dense matmul FLOPs per token (two per parameter: multiply and add)."""
        return 2.0 * self.parameters


GPU_PROFILES: dict[str, GPUProfile] = {
    p.name: p
    for p in (
        GPUProfile(
            name="rtx3090",
            description="NVIDIA GeForce RTX 3090 (24 GB GDDR6X)",
            memory_bandwidth_gbps=936.0,
            fp16_tflops=142.0,
            memory_gib=24.0,
        ),
        GPUProfile(
            name="a100-40gb",
            description="NVIDIA A100 40GB SXM (HBM2)",
            memory_bandwidth_gbps=1555.0,
            fp16_tflops=312.0,
            memory_gib=40.0,
        ),
        GPUProfile(
            name="h100-80gb",
            description="NVIDIA H100 80GB SXM (HBM3)",
            memory_bandwidth_gbps=3350.0,
            fp16_tflops=989.0,
            memory_gib=80.0,
            max_num_batched_tokens=8192,
            max_num_seqs=1024,
        ),
    )
}

MODEL_PROFILES: dict[str, ModelProfile] = {
    p.name: p
    for p in (
        ModelProfile(
            name="llama-3.1-8b",
            description="Llama 3.1 8B Instruct, FP16/BF16",
            parameters=8.03e9,
            layers=32,
            hidden=4096,
            heads=32,
            kv_heads=8,
            head_dim=128,
            dtype_bytes=2,
            max_model_len=131072,
        ),
    )
}


def get_gpu_profile(name: str) -> GPUProfile:
    """Return the GPU profile called ``name`` or raise ConfigError listing the choices."""
    try:
        return GPU_PROFILES[name]
    except KeyError:
        choices = ", ".join([*GPU_PROFILES, FIXED_PROFILE])
        raise ConfigError(f"unknown simulator profile {name!r}; expected one of {choices}") from None


def get_model_profile(name: str) -> ModelProfile:
    """Return the model profile called ``name`` or raise ConfigError listing the choices."""
    try:
        return MODEL_PROFILES[name]
    except KeyError:
        choices = ", ".join(MODEL_PROFILES)
        raise ConfigError(f"unknown model profile {name!r}; expected one of {choices}") from None
