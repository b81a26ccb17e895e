"""Train a small byte-level BPE tokenizer locally, for tests of ``--llm-tokenizer`` (nothing is downloaded).

The same recipe as ``llmload/target/_build_model.py`` (whose seeded corpus and
special tokens it reuses): a ByteLevel pre-tokenizer and decoder, trained on a
synthetic English-like corpus, and a TemplateProcessing post-processor that
adds ``<|begin_of_text|>`` in front of every text, as Llama 3's does.
"""

from __future__ import annotations

from pathlib import Path

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

from llmload.target._build_model import BOS, SPECIAL_TOKENS, synthetic_corpus


def train_tokenizer(path: Path, *, vocab_size: int = 2000, seed: int = 0) -> Path:
    """Train a byte-level BPE on a seeded corpus, save ``path/tokenizer.json``, return that file's path."""
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=2,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(synthetic_corpus(seed, sentences=3000), trainer=trainer)
    bos_id = tokenizer.token_to_id(BOS)
    tokenizer.post_processor = processors.TemplateProcessing(
        single=f"{BOS} $A", pair=f"{BOS} $A {BOS} $B", special_tokens=[(BOS, bos_id)]
    )
    path.mkdir(parents=True, exist_ok=True)
    out = path / "tokenizer.json"
    tokenizer.save(str(out))
    return out
