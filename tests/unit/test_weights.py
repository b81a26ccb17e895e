"""The weight rule shared by the backends file and --llm-lora, and the smooth weighted round robin."""

from __future__ import annotations

from collections import Counter

import pytest

from llmload.errors import ConfigError
from llmload.options import LLMOptions
from llmload.weights import SmoothWeightedRoundRobin, parse_named_weights


def test_named_weights_default_to_one_and_allow_a_zero():
    assert parse_named_weights("a=3, b ,c=0", option="llm-lora") == (("a", 3.0), ("b", 1.0), ("c", 0.0))


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("a=0,b=0", "--llm-lora: every weight is 0"),
        ("a=1,a=2", "--llm-lora: 'a' is listed twice"),
        ("a=x", "--llm-lora a: weight must be a number >= 0, got 'x'"),
        ("a=-1", "--llm-lora a: weight must be a number >= 0, got -1.0"),
        ("=2", "--llm-lora: an entry has no name in '=2'"),
        (" , ", "--llm-lora: expected name=weight,... got ' , '"),
    ],
)
def test_bad_weights_are_one_clear_line(text, message):
    with pytest.raises(ConfigError) as caught:
        parse_named_weights(text, option="llm-lora")
    assert str(caught.value) == message


def test_round_robin_gives_exact_interleaved_shares():
    picker = SmoothWeightedRoundRobin([("a", 3.0), ("b", 1.0), ("z", 0.0)])
    picks = [picker.next() for _ in range(8)]
    assert Counter(picks) == {"a": 6, "b": 2} and "z" not in picks
    assert picks[:4].count("b") == 1  # interleaved: every 4 picks hold one b


def test_lora_option_is_validated_with_the_other_options():
    class Parsed:
        llm_lora = "base-a=2,base-b"

    assert LLMOptions.from_parsed(Parsed()).lora == (("base-a", 2.0), ("base-b", 1.0))
    assert LLMOptions.from_parsed(object()).lora == ()
    Parsed.llm_lora = "x=0"
    with pytest.raises(ConfigError, match="every weight is 0"):
        LLMOptions.from_parsed(Parsed())
