"""Exact-length prompts and shared leading blocks (``llmload.token_text``), on a locally trained tokenizer."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
from tokenizers import Regex, Tokenizer, pre_tokenizers

from llmload.errors import ConfigError
from llmload.simulator.tokens import COMPLETION_OVERHEAD, count_prompt_tokens
from llmload.token_text import TextMaker, TokenizerText, WordText, load_text_maker
from tests.support.tokenizer import train_tokenizer

# Llama 3's pre-tokenizer split (tokenizer.json of Meta-Llama-3), ahead of a ByteLevel without its own regex.
LLAMA3_SPLIT = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}"
    r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)


@pytest.fixture(scope="module")
def tokenizer_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return train_tokenizer(tmp_path_factory.mktemp("tokenizer"))


@pytest.fixture(scope="module")
def maker(tokenizer_file: Path) -> TokenizerText:
    return TokenizerText(str(tokenizer_file), seed=0)


def token_ids(path: Path, text: str) -> list[int]:
    return list(Tokenizer.from_file(str(path)).encode(text, add_special_tokens=True).ids)


def common_prefix(a: list[int], b: list[int]) -> int:
    n = 0
    while n < min(len(a), len(b)) and a[n] == b[n]:
        n += 1
    return n


def test_the_trained_tokenizer_adds_a_bos_and_has_enough_words(maker: TokenizerText) -> None:
    assert maker.exact is True
    assert maker.special_tokens == 1
    assert maker.vocabulary >= 50
    assert maker.count("") == 1


def test_prompts_have_exactly_the_requested_tokens(maker: TokenizerText) -> None:
    rng = random.Random(7)
    sizes = [2, 3, 4, 511, 512, 513, 514, 1025, 3000] + [rng.randint(2, 3000) for _ in range(150)]
    prompts = []
    for n in sizes:
        hash_ids = [rng.randrange(20) for _ in range(rng.randint(0, 6))]
        prompts.append(maker.prompt(n, hash_ids=hash_ids, block_tokens=rng.choice([16, 64, 512]), rng=rng))
    assert maker.count_many(prompts) == sizes
    assert [maker.count(p) for p in prompts[:20]] == sizes[:20]


def test_text_and_blocks_have_exactly_the_requested_content_tokens(maker: TokenizerText) -> None:
    rng = random.Random(3)
    sizes = [0, 1, 2, 17, 300, 2048]
    texts = [maker.text(n, rng) for n in sizes] + [maker.block(5, n) for n in sizes]
    assert maker.count_many(texts) == [n + 1 for n in sizes] * 2
    assert all(t == "" or t.startswith(" ") for t in texts)


def test_prompts_sharing_leading_block_ids_share_text_and_token_ids(maker: TokenizerText, tokenizer_file: Path) -> None:
    rng = random.Random(11)
    a = maker.prompt(2000, hash_ids=[1, 2, 3], rng=rng)
    b = maker.prompt(2000, hash_ids=[1, 2, 9], rng=rng)
    c = maker.prompt(2000, hash_ids=[1, 2, 3], rng=rng)
    shared = maker.block(1, 512) + maker.block(2, 512)
    assert a.startswith(shared) and b.startswith(shared)
    assert a[len(shared) :].startswith(maker.block(3, 512))
    assert b[len(shared) :].startswith(maker.block(9, 512))
    ids_a, ids_b, ids_c = (token_ids(tokenizer_file, p) for p in (a, b, c))
    assert len(ids_a) == len(ids_b) == 2000
    assert common_prefix(ids_a, ids_b) == 1 + 2 * 512  # the BOS and exactly two blocks
    assert common_prefix(ids_a, ids_c) == 1 + 3 * 512  # the random rest differs
    assert a != c


def test_the_last_block_is_cut_to_what_is_left_and_is_the_start_of_the_whole_block(maker: TokenizerText) -> None:
    rng = random.Random(5)
    prompt = maker.prompt(700, hash_ids=[4, 8, 15], block_tokens=512, rng=rng)
    assert prompt == maker.block(4, 512) + maker.block(8, 699 - 512)
    assert maker.block(8, 512).startswith(maker.block(8, 699 - 512))
    assert maker.count(prompt) == 700
    short = maker.prompt(100, hash_ids=[4], block_tokens=512, rng=rng)
    assert short == maker.block(4, 99)


def test_blocks_are_the_same_across_instances_with_the_same_seed(tokenizer_file: Path, maker: TokenizerText) -> None:
    again = TokenizerText(str(tokenizer_file.parent), seed=0)
    other = TokenizerText(str(tokenizer_file), seed=1)
    assert again.block(42, 300) == maker.block(42, 300)
    assert other.block(42, 300) != maker.block(42, 300)
    assert maker.block(42, 300) != maker.block(43, 300)
    first = again.prompt(900, hash_ids=[1, 2], block_tokens=256, rng=random.Random(9))
    assert first == maker.prompt(900, hash_ids=[1, 2], block_tokens=256, rng=random.Random(9))


def test_block_text_is_cached(maker: TokenizerText) -> None:
    assert maker.block(77, 64) is maker.block(77, 64)


def test_too_short_a_prompt_or_block_size_is_refused(maker: TokenizerText) -> None:
    with pytest.raises(ConfigError, match="at least 2"):
        maker.prompt(1, rng=random.Random(0))
    with pytest.raises(ConfigError, match="block size"):
        maker.prompt(10, hash_ids=[1], block_tokens=0, rng=random.Random(0))


def test_a_llama3_style_pre_tokenizer_is_exact_too(tmp_path: Path, tokenizer_file: Path) -> None:
    tokenizer = Tokenizer.from_file(str(tokenizer_file))
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(LLAMA3_SPLIT), behavior="isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    # Truncation saved in a tokenizer.json must not cut the counts.
    tokenizer.enable_truncation(max_length=64)
    tokenizer.save(str(tmp_path / "tokenizer.json"))
    maker = TokenizerText(str(tmp_path))
    rng = random.Random(2)
    sizes = [2, 65, 1000, 2500]
    assert maker.count_many([maker.prompt(n, hash_ids=[1, 2], rng=rng) for n in sizes]) == sizes


def bad_tokenizer_error(path: Path) -> str:
    with pytest.raises(ConfigError) as caught:
        TokenizerText(str(path))
    message = str(caught.value)
    assert message.startswith(f"--llm-tokenizer: {path}: ") and "\n" not in message
    return message


def test_a_missing_file_is_a_config_error(tmp_path: Path) -> None:
    assert "no such file" in bad_tokenizer_error(tmp_path / "nowhere.json")


def test_a_folder_without_tokenizer_json_is_a_config_error(tmp_path: Path) -> None:
    assert "no tokenizer.json" in bad_tokenizer_error(tmp_path)


@pytest.mark.parametrize("content", [json.dumps({"model": "not a tokenizer"}), "not json at all", ""])
def test_a_file_that_is_not_a_tokenizer_is_a_config_error(tmp_path: Path, content: str) -> None:
    path = tmp_path / "tokenizer.json"
    path.write_text(content)
    assert "not a Hugging Face tokenizer.json" in bad_tokenizer_error(path)


def test_a_tokenizer_with_too_few_words_is_a_config_error(tmp_path: Path) -> None:
    path = train_tokenizer(tmp_path, vocab_size=300)
    assert "at least 50 needed" in bad_tokenizer_error(path)


def test_word_text_is_exact_under_the_simulator_rule() -> None:
    maker = WordText(seed=0)
    assert maker.exact is False and maker.special_tokens == COMPLETION_OVERHEAD
    rng = random.Random(4)
    for n in [2, 3, 513, 1500] + [rng.randint(2, 3000) for _ in range(60)]:
        prompt = maker.prompt(n, hash_ids=[rng.randrange(5) for _ in range(3)], block_tokens=256, rng=rng)
        assert count_prompt_tokens(prompt) == n == maker.count(prompt)
        assert prompt.replace(" ", "").isalnum()
    assert count_prompt_tokens(maker.text(40, rng)) == 41
    a = maker.prompt(600, hash_ids=[1, 2], block_tokens=256, rng=rng)
    b = maker.prompt(600, hash_ids=[1, 3], block_tokens=256, rng=rng)
    assert a.startswith(maker.block(1, 256)) and b.startswith(maker.block(1, 256))
    assert WordText(seed=0).block(2, 256) == maker.block(2, 256) != WordText(seed=1).block(2, 256)


def test_load_text_maker_picks_by_path(tokenizer_file: Path) -> None:
    word: TextMaker = load_text_maker("", seed=0)
    exact: TextMaker = load_text_maker(str(tokenizer_file), seed=0)
    assert isinstance(word, WordText)
    assert isinstance(exact, TokenizerText)
