"""The synthetic prompt generator: seeded determinism, the promised lengths and shape, edge cases.

A "token" here is what the module's docstring counts: one per word and one per
punctuation mark (the simulator's rule, and about what real tokenizers do for
these common words).
"""

from __future__ import annotations

import random
import re

import pytest

from llmload import prompts

HEADER = "Summarize the following document in a few paragraphs:\n\n"
TOKEN = re.compile(r"[A-Za-z]+|[^\w\s]")
WORDS = frozenset(prompts.WORDS)
QUESTION_WORDS = frozenset(prompts.WORDS[60:])
SEEDS = range(40)


def tokens(text: str) -> int:
    return len(TOKEN.findall(text))


def sentences(text: str) -> list[list[str]]:
    """Split synthetic text into sentences (lists of words without the period), checking the separators."""
    assert text.endswith(".") and text == text.strip() and "  " not in text
    out: list[list[str]] = [[]]
    for word in text.split(" "):
        if word.endswith("."):
            out[-1].append(word[:-1])
            out.append([])
        else:
            out[-1].append(word)
    assert out.pop() == []
    return out


def assert_synthetic_shape(text: str) -> list[list[str]]:
    """Every sentence: a capitalized first word, words from WORDS, one period; 6-14 words except the last."""
    parts = sentences(text)
    for i, sentence in enumerate(parts):
        first, rest = sentence[0], sentence[1:]
        assert first[0].isupper() and first[1:].islower() and first.lower() in WORDS, sentence
        assert all(word in WORDS for word in rest), sentence
        if i < len(parts) - 1:
            assert 6 <= len(sentence) <= 14, sentence
        else:
            assert 1 <= len(sentence) <= 14, sentence
    return parts


def question_pattern(template: str) -> re.Pattern[str]:
    return re.compile(re.escape(template).replace(r"\{a\}", "([a-z]+)").replace(r"\{b\}", "([a-z]+)"))


PATTERNS = [question_pattern(t) for t in prompts.QUESTIONS]


def matching_template(question: str) -> int:
    """Return the index of the one template ``question`` fills, checking its words come from WORDS[60:]."""
    matches = [(i, m) for i, pattern in enumerate(PATTERNS) if (m := pattern.fullmatch(question))]
    assert len(matches) == 1, question
    index, match = matches[0]
    assert all(word in QUESTION_WORDS for word in match.groups()), question
    return index


# -- determinism -------------------------------------------------------------------------------

GENERATORS = {
    "synthetic_text": lambda rng: prompts.synthetic_text(200, rng),
    "short_question": prompts.short_question,
    "question_of_length": lambda rng: prompts.question_of_length(120, rng),
    "summarization_prompt": lambda rng: prompts.summarization_prompt(500, rng),
}


@pytest.mark.parametrize("name", GENERATORS)
def test_same_seed_gives_the_same_text_and_other_seeds_other_texts(name):
    generate = GENERATORS[name]
    assert [generate(random.Random(seed)) for seed in SEEDS] == [generate(random.Random(seed)) for seed in SEEDS]
    # The seeds are not collapsed onto a few outputs (short questions have fewer possible values).
    distinct = len({generate(random.Random(seed)) for seed in SEEDS})
    assert distinct == len(SEEDS) if name != "short_question" else distinct >= 30


@pytest.mark.parametrize("name", GENERATORS)
def test_only_the_given_generator_is_used_and_it_advances(name):
    generate = GENERATORS[name]
    random.seed(1)
    first = [generate(random.Random(5)) for _ in range(2)]
    random.seed(2)  # the module-level generator plays no part
    assert [generate(random.Random(5)) for _ in range(2)] == first
    rng = random.Random(5)
    sequence = [generate(rng) for _ in range(3)]
    assert sequence[0] == first[0]
    assert len(set(sequence)) == 3  # each call draws afresh from the same generator


def test_outputs_are_pinned_for_a_seed():
    """The same --llm-seed gives the same workload from one run (and release) to the next."""
    assert prompts.short_question(random.Random(0)) == "How do I compare report with question?"
    assert prompts.synthetic_text(20, random.Random(0)) == (
        "Energy with years signal result story much language part doctor its network. Where we they review such happy."
    )
    assert prompts.question_of_length(12, random.Random(3)) == (
        "House reason memory example. Why does quiet matter for network?"
    )
    assert prompts.summarization_prompt(20, random.Random(0)) == (
        HEADER + "Energy with years signal result story much language part."
    )


# -- word list and templates -------------------------------------------------------------------


def test_word_list_is_distinct_lowercase_words_and_templates_have_placeholders():
    assert len(prompts.WORDS) == len(WORDS) == 165
    assert all(re.fullmatch(r"[a-z]+", word) for word in prompts.WORDS)
    assert len(prompts.QUESTIONS) == 8
    assert all("{a}" in template for template in prompts.QUESTIONS)
    assert all(template[-1] in "?." for template in prompts.QUESTIONS)


# -- synthetic_text ----------------------------------------------------------------------------


@pytest.mark.parametrize("n_tokens", [2, 3, 7, 8, 14, 15, 16, 17, 50, 99, 100, 257, 1000, 4000])
def test_synthetic_text_has_n_tokens_in_sentences_of_6_to_14_words(n_tokens):
    for seed in SEEDS:
        text = prompts.synthetic_text(n_tokens, random.Random(seed))
        parts = assert_synthetic_shape(text)
        count = tokens(text)
        assert count == sum(len(s) + 1 for s in parts)  # words plus one period per sentence
        # Exactly n, except when the budget left for the last sentence was a single token:
        # that sentence is then one word and its period, one token over.
        if count != n_tokens:
            assert count == n_tokens + 1 and len(parts) > 1 and len(parts[-1]) == 1, (n_tokens, seed, text)


def test_synthetic_text_is_exact_for_most_seeds():
    counts = [tokens(prompts.synthetic_text(300, random.Random(seed))) for seed in range(200)]
    assert set(counts) <= {300, 301}
    assert counts.count(300) > 150


@pytest.mark.parametrize("n_tokens", [-10, -1, 0, 1, 2])
def test_synthetic_text_of_at_most_two_tokens_is_one_word_sentence(n_tokens):
    for seed in SEEDS:
        text = prompts.synthetic_text(n_tokens, random.Random(seed))
        assert re.fullmatch(r"[A-Z][a-z]+\.", text), text
        assert text[:-1].lower() in WORDS


def test_synthetic_text_of_one_sentence_up_to_15_tokens():
    for n_tokens in range(2, 16):
        for seed in SEEDS:
            parts = sentences(prompts.synthetic_text(n_tokens, random.Random(seed)))
            # 6-14 words are drawn, capped by the budget: n - 1 words plus the period.
            assert len(parts) == 1 or (n_tokens >= 8 and len(parts[0]) < n_tokens - 1)
            if n_tokens <= 7:
                assert [len(s) for s in parts] == [n_tokens - 1]


# -- short_question ----------------------------------------------------------------------------


def test_short_question_fills_a_template_with_common_words():
    used = set()
    for seed in range(400):
        question = prompts.short_question(random.Random(seed))
        used.add(matching_template(question))
        # 4 ("Explain how X works.") to 8 words; with the final mark, 5 to 9 tokens.
        assert 4 <= len(question.split()) <= 8
        assert 5 <= tokens(question) <= 9
        assert question[0].isupper() and question[-1] in "?."
    assert used == set(range(len(prompts.QUESTIONS)))


# -- question_of_length ------------------------------------------------------------------------


def test_question_of_length_ends_with_the_question_and_has_about_n_tokens():
    for seed in SEEDS:
        question = prompts.short_question(random.Random(seed))
        overhead = tokens(question)
        for n_tokens in (overhead + 3, overhead + 4, 32, 64, 100, 500, 2000):
            text = prompts.question_of_length(n_tokens, random.Random(seed))
            context = text[: -len(question) - 1]
            assert text == f"{context} {question}"
            assert_synthetic_shape(context)
            assert tokens(text) in (n_tokens, n_tokens + 1), (seed, n_tokens, text)


def test_question_of_length_too_short_for_context_is_the_bare_question():
    for seed in SEEDS:
        question = prompts.short_question(random.Random(seed))
        limit = tokens(question) + 2  # the question's words and mark, plus two
        for n_tokens in (-5, 0, 1, 5, limit - 1, limit):
            assert prompts.question_of_length(n_tokens, random.Random(seed)) == question
        assert prompts.question_of_length(limit + 1, random.Random(seed)) != question


# -- summarization_prompt ----------------------------------------------------------------------


@pytest.mark.parametrize("n_tokens", [12, 13, 50, 1000, 1001, 4000])
def test_summarization_prompt_is_the_header_and_a_document_of_about_n_tokens(n_tokens):
    assert tokens(HEADER) == 9
    for seed in SEEDS:
        text = prompts.summarization_prompt(n_tokens, random.Random(seed))
        assert text.startswith(HEADER)
        document = text[len(HEADER) :]
        assert_synthetic_shape(document)
        # The document is asked for n - 10 tokens (it may run one over); with the header, n - 1 or n.
        assert tokens(document) in (n_tokens - 10, n_tokens - 9)
        assert tokens(text) in (n_tokens - 1, n_tokens)


@pytest.mark.parametrize("n_tokens", [-3, 0, 1, 10, 11])
def test_summarization_prompt_for_tiny_lengths_keeps_a_one_word_document(n_tokens):
    for seed in SEEDS:
        text = prompts.summarization_prompt(n_tokens, random.Random(seed))
        assert text.startswith(HEADER)
        assert re.fullmatch(r"[A-Z][a-z]+\.", text[len(HEADER) :]), text
