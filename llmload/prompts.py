"""Seeded synthetic prompts of a requested approximate token length, with no download.

Text is drawn from a fixed list of common English words, which nearly every
LLM tokenizer (and the simulator's rule: one token per word or punctuation
mark) encodes as about one token each. A sentence is 6-14 words plus a period,
so ``n`` tokens is about ``n`` words and punctuation together.
"""

from __future__ import annotations

import random

WORDS = (
    "the of and to in is that for it as with was on be by this are or from at which an have not they "
    "but had one all were there their can more when we about what time so been other would people into "
    "some could them two than first then way these like its water over also new after only work most "
    "such world years made may long three very where back good through well much before right how great "
    "year day old every same small large system number part place state house home point government "
    "power city team light music story river model market energy table window garden paper morning "
    "question answer service history family school country computer memory language problem result "
    "design study nature machine network signal engine simple quick bright quiet happy early local "
    "summer winter mountain ocean forest letter picture bridge station village doctor teacher student "
    "writer friend reason method process report review detail example feature effect value measure"
).split()
QUESTIONS = (
    "What is the best way to learn {a}?",
    "Explain how {a} works.",
    "Write a short poem about {a}.",
    "Why does {a} matter for {b}?",
    "Give me three tips for {a}.",
    "Tell me a story about {a} and {b}.",
    "How do I compare {a} with {b}?",
    "Describe {a} in simple words.",
)


def synthetic_text(n_tokens: int, rng: random.Random) -> str:
    """Return English-like text of about ``n_tokens`` tokens."""
    words: list[str] = []
    budget = max(n_tokens, 1)
    while budget > 0:
        length = min(rng.randint(6, 14), max(budget - 1, 1))
        sentence = [rng.choice(WORDS) for _ in range(length)]
        sentence[0] = sentence[0].capitalize()
        words.append(" ".join(sentence) + ".")
        budget -= length + 1
    return " ".join(words)


def short_question(rng: random.Random) -> str:
    """Return a chat question of 5-11 words, like the prompts of the Backprop study."""
    template = rng.choice(QUESTIONS)
    return template.format(a=rng.choice(WORDS[60:]), b=rng.choice(WORDS[60:]))


def question_of_length(n_tokens: int, rng: random.Random) -> str:
    """Return a question padded with context to about ``n_tokens`` tokens."""
    question = short_question(rng)
    overhead = len(question.split()) + 1
    if n_tokens <= overhead + 2:
        return question
    return f"{synthetic_text(n_tokens - overhead, rng)} {question}"


def summarization_prompt(n_tokens: int, rng: random.Random) -> str:
    """Return a summarization request around a synthetic document of about ``n_tokens`` tokens."""
    header = "Summarize the following document in a few paragraphs:\n\n"
    return header + synthetic_text(max(n_tokens - 10, 1), rng)
