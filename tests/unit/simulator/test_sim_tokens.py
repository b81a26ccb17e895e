"""The simulator's tokenization rule and seeded vocabulary."""

from __future__ import annotations

import pytest

from llmload.images import generated
from llmload.simulator.tokens import (
    CHAT_MESSAGE_OVERHEAD,
    CHAT_REQUEST_OVERHEAD,
    ApiInputError,
    Vocabulary,
    count_chat_tokens,
    count_prompt_tokens,
    count_text_tokens,
)


@pytest.mark.parametrize(
    ("text", "tokens"),
    [
        ("", 0),
        ("Hello", 1),
        ("Hello, world!", 4),
        ("What's 2+2?", 7),
        ("  spaced   out  ", 2),
        ("naïve café", 2),
        ("a_b-c", 3),
    ],
)
def test_text_tokens_are_word_runs_and_single_symbols(text, tokens):
    assert count_text_tokens(text) == tokens


def test_chat_overhead_per_request_and_per_message():
    assert (CHAT_REQUEST_OVERHEAD, CHAT_MESSAGE_OVERHEAD) == (26, 5)
    one = [{"role": "user", "content": "What is the capital of France?"}]
    assert count_chat_tokens(one) == 26 + 5 + 7
    two = [{"role": "system", "content": "Be brief."}, *one]
    assert count_chat_tokens(two) == 26 + 5 + 3 + 5 + 7
    image = generated(100, 60, "png", 0, 0)  # 4 x 3 patches of 28 px
    parts = [
        {
            "role": "user",
            "content": [{"type": "text", "text": "Hi there"}, {"type": "image_url", "image_url": {"url": image.url}}],
        }
    ]
    assert count_chat_tokens(parts) == 26 + 5 + 2 + 12
    with pytest.raises(ApiInputError, match="base64 data URLs only"):
        count_chat_tokens(
            [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "http://x/a.png"}}]}]
        )
    assert count_chat_tokens([{"role": "assistant", "content": None}]) == 31


def test_completion_prompts():
    assert count_prompt_tokens("Once upon a time") == 1 + 4
    assert count_prompt_tokens(["Once upon a time"]) == 5
    assert count_prompt_tokens([1, 2, 3]) == 3
    assert count_prompt_tokens([[1, 2, 3]]) == 3


@pytest.mark.parametrize("bad", [None, "", [], ["a", "b"], 5, [1.5]])
def test_bad_prompts(bad):
    if bad == "":
        assert count_prompt_tokens(bad) == 1  # empty text is just BOS, as vLLM accepts it
        return
    with pytest.raises(ApiInputError):
        count_prompt_tokens(bad)


@pytest.mark.parametrize("bad", [None, [], "hi", [{"content": "x"}], [{"role": "user", "content": 3}]])
def test_bad_messages(bad):
    with pytest.raises(ApiInputError):
        count_chat_tokens(bad)


def test_vocabulary_is_seeded_and_retokenizes_to_the_token_count():
    a, b, c = Vocabulary(seed=7), Vocabulary(seed=7), Vocabulary(seed=8)
    offsets = [a.start_offset() for _ in range(5)]
    assert offsets == [b.start_offset() for _ in range(5)]
    assert a.text(offsets[0], 50) == b.text(offsets[0], 50) != c.text(offsets[0], 50)
    text = a.text(offsets[1], 300)
    assert count_text_tokens(text) == 300
    frags = a.fragments(offsets[1], 0, 3)
    assert b"".join(frags).decode().replace('""', "|").strip('"').split("|") == text.split(" ")[:1] + [
        " " + w for w in text.split(" ")[1:3]
    ]
    assert a.fragments(offsets[1], 2, 1) == [frags[2]]
