"""Write a random-weight LoRA adapter (PEFT layout) for the test suite's tiny Llama model.

Run with the vLLM venv's Python (it has torch and safetensors):

    python tests/support/build_lora.py MODEL_DIR OUT_DIR SEED

The adapter adapts every layer's q_proj and v_proj at rank 8; its weights are small random
numbers, so the model's answers change a little but its shape and tokenizer stay.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch
from safetensors.torch import save_file

RANK = 8


def main(model_dir: str, out_dir: str, seed: str) -> int:
    config = json.loads((Path(model_dir) / "config.json").read_text())
    hidden, layers = config["hidden_size"], config["num_hidden_layers"]
    generator = torch.Generator().manual_seed(int(seed))
    tensors = {}
    for layer in range(layers):
        for proj in ("q_proj", "v_proj"):
            base = f"base_model.model.model.layers.{layer}.self_attn.{proj}"
            tensors[f"{base}.lora_A.weight"] = torch.randn(RANK, hidden, generator=generator) * 0.01
            tensors[f"{base}.lora_B.weight"] = torch.randn(hidden, RANK, generator=generator) * 0.01
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(out / "adapter_model.safetensors"))
    adapter = {
        "peft_type": "LORA",
        "task_type": "CAUSAL_LM",
        "r": RANK,
        "lora_alpha": 16,
        "lora_dropout": 0.0,
        "target_modules": ["q_proj", "v_proj"],
        "base_model_name_or_path": model_dir,
        "bias": "none",
        "fan_in_fan_out": False,
        "modules_to_save": None,
    }
    (out / "adapter_config.json").write_text(json.dumps(adapter))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(*sys.argv[1:4]))
