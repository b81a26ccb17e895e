"""Build a random-weight Llama model and a locally trained tokenizer (runs in the vLLM venv).

Run by ``llmload.target.model`` with the vLLM venv's Python, which has torch,
transformers, tokenizers and safetensors; this file imports nothing from
llmload. Usage::

    python _build_model.py --out DIR --spec '{"hidden_size": 128, ...}'

What it writes into ``DIR``:

* ``tokenizer.json`` / ``tokenizer_config.json``: a byte-level BPE trained on
  a seeded synthetic English-like corpus (so any text encodes, none is
  unknown), Llama-3-like special tokens, a Llama-3-like chat template inside
  ``tokenizer_config.json``, and a post-processor adding ``<|begin_of_text|>``.
  When the model's vocabulary is larger than what the trainer learns (the 8B
  shape's 128256), the rest is filled with made-up words (" kalomi") so every
  token id the model can sample decodes to text;
* ``config.json`` and ``generation_config.json`` (``save_pretrained``);
* the weights as safetensors shards, written tensor by tensor from a model
  built on the ``meta`` device: normal(0, 0.02) for matrices and embeddings,
  ones for norms, one seeded generator per tensor. At most one shard is in
  memory, so the 8B shape (16 GB) never needs 16 GB of RAM, let alone twice;
* ``llmload-model.json`` last, recording the spec: the build is finished.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    # transformers is installed only in the vLLM venv this script runs in, not in llmload's own.
    from tokenizers import Tokenizer
    from transformers import LlamaConfig  # type: ignore[import-not-found]

    #: The model description from ``ModelShape.spec()``, as parsed JSON.
    Spec = dict[str, Any]

BOS = "<|begin_of_text|>"
EOS_TEXT = "<|end_of_text|>"
EOT = "<|eot_id|>"
SPECIAL_TOKENS = [BOS, EOS_TEXT, "<|start_header_id|>", "<|end_header_id|>", EOT]

# Llama 3's template, less the tool-calling and date preamble.
CHAT_TEMPLATE = (
    "{{- bos_token }}"
    "{%- for message in messages %}"
    "{%- if message['content'] is string %}{%- set content = message['content'] %}"
    "{%- else %}{%- set content = message['content'] | map(attribute='text') | join('') %}{%- endif %}"
    "{{- '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n' + content | trim + '<|eot_id|>' }}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}{%- endif %}"
)

_WORDS = (
    "the of and to a in is it you that he was for on are with as his they be at one have this from or had by "
    "word but what some we can out other were all there when up use your how said an each she which do their "
    "time if will way about many then them write would like so these her long make thing see him two has look "
    "more day could go come did number sound no most people my over know water than call first who may down side "
    "been now find any new work part take get place made live where after back little only round man year came "
    "show every good me give our under name very through just form sentence great think say help low line differ "
    "turn cause much mean before move right boy old too same tell does set three want air well also play small end "
    "put home read hand port large spell add even land here must big high such follow act why ask men change went "
    "light kind off need house picture try us again animal point mother world near build self earth father head "
    "stand own page should country found answer school grow study still learn plant cover food sun four between "
    "state keep eye never last let thought city tree cross farm hard start might story saw far sea draw left late "
    "run while press close night real life few north open seem together next white children begin got walk example "
    "ease paper group always music those both mark often letter until mile river car feet care second book carry "
    "took science eat room friend began idea fish mountain stop once base hear horse cut sure watch color face wood "
    "main enough plain girl usual young ready above ever red list though feel talk bird soon body dog family direct "
    "pose leave song measure door product black short numeral class wind question happen complete ship area half "
    "rock order fire south problem piece told knew pass since top whole king space heard best hour better true "
    "during hundred five remember step early hold west ground interest reach fast verb sing listen six table travel "
    "less morning ten simple several vowel toward war lay against pattern slow center love person money serve appear "
    "road map rain rule govern pull cold notice voice unit power town fine certain fly fall lead cry dark machine "
    "note wait plan figure star box noun field rest correct able pound done beauty drive stood contain front teach "
    "week final gave green oh quick develop ocean warm free minute strong special mind behind clear tail produce "
    "fact street inch multiply nothing course stay wheel full force blue object decide surface deep moon island foot "
    "system busy test record boat common gold possible plane stead dry wonder laugh thousand ago ran check game shape "
    "equate hot miss brought heat snow tire bring yes distant fill east paint language among model server token "
    "request latency stream answer explain summary question context prompt"
).split()
_SYLLABLES_START = "b c d f g h j k l m n p r s t v w z br ch cl dr fl gr pl pr sh st th tr".split()
_SYLLABLES_VOWEL = "a e i o u ai ea ee oo ou".split()
_SYLLABLES_END = ["", "", "", "n", "r", "s", "l", "m", "t", "nd", "st"]


def synthetic_corpus(seed: int, sentences: int = 6000) -> list[str]:
    """Return seeded English-like sentences (with punctuation, numbers and newlines)."""
    rng = random.Random(seed)
    lines = []
    for _ in range(sentences):
        words = [rng.choice(_WORDS) for _ in range(rng.randint(4, 18))]
        if rng.random() < 0.2:
            words.insert(rng.randrange(len(words)), str(rng.randint(0, 2025)))
        if rng.random() < 0.3:
            words.insert(rng.randrange(1, len(words)), ",")
        text = " ".join(words).replace(" ,", ",")
        text = text[0].upper() + text[1:] + rng.choice([".", ".", ".", "?", "!", ":"])
        if rng.random() < 0.1:
            text = "- " + text
        lines.append(text)
    return lines


def padding_words(count: int, taken: set[str], seed: int) -> list[str]:
    """Return ``count`` distinct made-up byte-level tokens such as "Ġkalomi", none in ``taken``."""
    rng = random.Random(seed + 1)
    words: list[str] = []
    seen = set(taken)
    while len(words) < count:
        syllables = rng.randint(1, 4)
        word = "".join(
            rng.choice(_SYLLABLES_START) + rng.choice(_SYLLABLES_VOWEL) + rng.choice(_SYLLABLES_END)
            for _ in range(syllables)
        )
        token = ("Ġ" if rng.random() < 0.8 else "") + word
        if token not in seen:
            seen.add(token)
            words.append(token)
    return words


def build_tokenizer(spec: Spec) -> Tokenizer:
    """Train the byte-level BPE tokenizer and pad its vocabulary to the model's."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=spec["tokenizer_vocab_size"],
        min_frequency=2,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(synthetic_corpus(spec["seed"]), trainer=trainer)
    missing = spec["vocab_size"] - tokenizer.get_vocab_size()
    if missing < 0:
        raise SystemExit(
            f"ValueError: trained {tokenizer.get_vocab_size()} tokens, more than vocab_size {spec['vocab_size']}"
        )
    if missing:
        # Extra BPE vocabulary entries that no merge produces: never emitted by
        # encoding, but every id the model samples decodes to a word.
        data = json.loads(tokenizer.to_str())
        vocab = data["model"]["vocab"]
        next_id = max(vocab.values()) + 1
        for word in padding_words(missing, set(vocab), spec["seed"]):
            vocab[word] = next_id
            next_id += 1
        tokenizer = Tokenizer.from_str(json.dumps(data))
    bos_id = tokenizer.token_to_id(BOS)
    tokenizer.post_processor = processors.TemplateProcessing(
        single=f"{BOS} $A", pair=f"{BOS} $A {BOS} $B", special_tokens=[(BOS, bos_id)]
    )
    if tokenizer.get_vocab_size() != spec["vocab_size"]:
        raise SystemExit(
            f"ValueError: tokenizer has {tokenizer.get_vocab_size()} tokens, expected {spec['vocab_size']}"
        )
    return tokenizer


def save_tokenizer(tokenizer: Tokenizer, out: Path, spec: Spec) -> dict[str, int]:
    """Save the tokenizer with its chat template in tokenizer_config.json; return the special ids."""
    from transformers import PreTrainedTokenizerFast

    fast = PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        bos_token=BOS,
        eos_token=EOT,
        chat_template=CHAT_TEMPLATE,
        model_max_length=spec["max_position_embeddings"],
        clean_up_tokenization_spaces=False,
    )
    fast.save_pretrained(str(out), save_jinja_files=False)
    config_path = out / "tokenizer_config.json"
    config = json.loads(config_path.read_text(encoding="utf-8"))
    if config.get("chat_template") != CHAT_TEMPLATE:
        config["chat_template"] = CHAT_TEMPLATE
        config_path.write_text(json.dumps(config, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    ids = {name: tokenizer.token_to_id(name) for name in (BOS, EOS_TEXT, EOT)}
    missing = [name for name, token_id in ids.items() if token_id is None]
    if missing:
        raise SystemExit(f"the trained tokenizer lacks {', '.join(missing)}")
    return {name: int(token_id) for name, token_id in ids.items() if token_id is not None}


def save_config(out: Path, spec: Spec, ids: dict[str, int]) -> LlamaConfig:
    """Save config.json and generation_config.json; return the LlamaConfig."""
    from transformers import GenerationConfig, LlamaConfig

    eos_ids = [ids[EOT], ids[EOS_TEXT]]
    config = LlamaConfig(
        vocab_size=spec["vocab_size"],
        hidden_size=spec["hidden_size"],
        intermediate_size=spec["intermediate_size"],
        num_hidden_layers=spec["num_hidden_layers"],
        num_attention_heads=spec["num_attention_heads"],
        num_key_value_heads=spec["num_key_value_heads"],
        head_dim=spec["hidden_size"] // spec["num_attention_heads"],
        max_position_embeddings=spec["max_position_embeddings"],
        rope_theta=spec["rope_theta"],
        rope_scaling=spec["rope_scaling"],
        rms_norm_eps=1e-5,
        hidden_act="silu",
        tie_word_embeddings=spec["tie_word_embeddings"],
        bos_token_id=ids[BOS],
        eos_token_id=eos_ids,
    )
    # transformers 5 calls it `dtype`; 4.x (which a CUDA vllm may pin) `torch_dtype`.
    import transformers

    dtype_key = "dtype" if int(transformers.__version__.split(".")[0]) >= 5 else "torch_dtype"
    setattr(config, dtype_key, spec["torch_dtype"])
    config.architectures = ["LlamaForCausalLM"]
    config.save_pretrained(str(out))
    GenerationConfig(bos_token_id=ids[BOS], eos_token_id=eos_ids).save_pretrained(str(out))
    return config


def tensor_plan(config: LlamaConfig, spec: Spec) -> list[tuple[str, tuple[int, ...]]]:
    """Return (name, shape) of every tensor to save, from a model built on the meta device."""
    import torch  # type: ignore[import-not-found]  # in the vLLM venv only
    from transformers import LlamaForCausalLM

    with torch.device("meta"):
        model = LlamaForCausalLM(config)
    plan = [(name, tuple(tensor.shape)) for name, tensor in model.state_dict().items()]
    if spec["tie_word_embeddings"]:
        plan = [(name, shape) for name, shape in plan if name != "lm_head.weight"]
    return plan


def save_weights(out: Path, plan: list[tuple[str, tuple[int, ...]]], spec: Spec) -> list[str]:
    """Write random weights into safetensors shards of at most ``shard_bytes``; return the file names."""
    import torch
    from safetensors.torch import save_file  # type: ignore[import-not-found]  # in the vLLM venv only

    dtype = getattr(torch, spec["torch_dtype"])
    itemsize = torch.empty((), dtype=dtype).element_size()
    shards: list[list[tuple[str, tuple[int, ...]]]] = [[]]
    size = 0
    for name, shape in plan:
        nbytes = itemsize * _numel(shape)
        if shards[-1] and size + nbytes > spec["shard_bytes"]:
            shards.append([])
            size = 0
        shards[-1].append((name, shape))
        size += nbytes
    names = (
        ["model.safetensors"]
        if len(shards) == 1
        else [f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors" for i in range(len(shards))]
    )
    weight_map: dict[str, str] = {}
    total = 0
    index = 0
    # No strict=: a Python given with --python may predate 3.10 (names has one entry per shard).
    for file_name, shard in zip(names, shards):  # noqa: B905
        tensors = {}
        for name, shape in shard:
            generator = torch.Generator().manual_seed(spec["seed"] * 100_003 + index)
            index += 1
            if name.endswith("norm.weight"):
                tensor = torch.ones(shape, dtype=dtype)
            else:
                tensor = torch.empty(shape, dtype=dtype)
                tensor.normal_(0.0, 0.02, generator=generator)
            tensors[name] = tensor
            weight_map[name] = file_name
            total += tensor.numel() * itemsize
        save_file(tensors, str(out / file_name), metadata={"format": "pt"})
        del tensors
        print(f"wrote {file_name}", flush=True)
    if len(names) > 1:
        index_data = {"metadata": {"total_size": total}, "weight_map": dict(sorted(weight_map.items()))}
        (out / "model.safetensors.index.json").write_text(json.dumps(index_data, indent=2) + "\n", encoding="utf-8")
    return names


def _numel(shape: tuple[int, ...]) -> int:
    count = 1
    for dim in shape:
        count *= dim
    return count


def main(argv: list[str] | None = None) -> int:
    """Build the model described by ``--spec`` into ``--out``."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, type=Path)
    parser.add_argument("--spec", required=True, help="JSON object from ModelShape.spec()")
    args = parser.parse_args(argv)
    spec = json.loads(args.spec)
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()

    import torch
    import transformers

    torch.manual_seed(spec["seed"])
    tokenizer = build_tokenizer(spec)
    ids = save_tokenizer(tokenizer, out, spec)
    config = save_config(out, spec, ids)
    files = save_weights(out, tensor_plan(config, spec), spec)
    marker = {
        "spec": spec,
        "files": files,
        "special_token_ids": ids,
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "build_seconds": round(time.monotonic() - started, 1),
    }
    # Written last: its presence with a matching spec means the build is complete.
    (out / "llmload-model.json").write_text(json.dumps(marker, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    print(f"built {spec['name']} in {marker['build_seconds']} s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
