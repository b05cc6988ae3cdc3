"""Benchmark prompts: real held-out texts of typical length.

Texts come from the test split (training.corpus.split_of), so no model saw
them in training. "Typical" is the median word count of the test texts that
the quality protocol keeps (at least 4 words); prompts are texts of exactly
that length, in file order, each cut as the quality protocol cuts it: the
last m = max(1, round(n / 4)) words are the target, the rest the prefix.
"""

from __future__ import annotations

import statistics
from pathlib import Path

from training.corpus import read_texts
from training.errors import UserError

MIN_WORDS = 4


def cut(words: list[str]) -> dict:
    """A prompt: prefix words, target words and m, as the quality protocol splits a text."""
    m = max(1, round(len(words) / 4))
    return {"prefix": words[:-m], "target": words[-m:], "m": m}


def typical_prompts(data: str | Path, count: int) -> tuple[list[dict], dict]:
    """`count` test-split texts of median length as prompts, and a note of how they were chosen."""
    texts = [t for t in read_texts([data], split="test") if len(t) >= MIN_WORDS]
    if not texts:
        raise UserError(f"{data} has no test-split texts of at least {MIN_WORDS} words to use as prompts")
    length = int(statistics.median(len(t) for t in texts))
    chosen = [t for t in texts if len(t) == length][:count]
    note = {"source": str(data), "split": "test", "words": length, "count": len(chosen), "test_texts": len(texts)}
    return [cut(t) for t in chosen], note


def prompts_from_texts(texts: list[str]) -> list[dict]:
    """Prompts from given texts (tests, a user's own sample); each is normalised first."""
    from edge_runtime.text import words

    prompts = [cut(words(t)) for t in texts]
    if any(len(p["prefix"]) < 1 for p in prompts):
        raise UserError("every prompt text needs at least 2 words: a prefix and a target")
    return prompts
