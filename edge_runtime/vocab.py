"""The word vocabulary and its special tokens, as training and device share it."""

from __future__ import annotations

import bisect
import json
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np

PAD, UNK, BOS, EOS = "<pad>", "<unk>", "<bos>", "<eos>"
SPECIALS = (PAD, UNK, BOS, EOS)


class Vocab:
    """Maps words to token ids; ids 0..3 are the special tokens."""

    def __init__(self, tokens: Sequence[str]):
        tokens = list(tokens)
        if tuple(tokens[: len(SPECIALS)]) != SPECIALS:
            raise ValueError(f"a vocabulary must start with the special tokens {SPECIALS}")
        if len(set(tokens)) != len(tokens):
            raise ValueError("a vocabulary must not list a token twice")
        self.tokens = tokens
        self.index = {token: i for i, token in enumerate(tokens)}
        self.pad_id, self.unk_id, self.bos_id, self.eos_id = range(len(SPECIALS))
        self._sorted: tuple[list[str], np.ndarray] | None = None  # words in string order, and their ids

    def __len__(self) -> int:
        return len(self.tokens)

    def encode(self, words: Iterable[str]) -> list[int]:
        """Token ids of `words`; a word outside the vocabulary becomes <unk>."""
        return [self.index.get(w, self.unk_id) for w in words]

    def decode(self, ids: Iterable[int]) -> list[str]:
        return [self.tokens[i] for i in ids]

    @property
    def special_ids(self) -> list[int]:
        return list(range(len(SPECIALS)))

    def words_with_prefix(self, prefix: str) -> np.ndarray:
        """Ids of the (non-special) words that start with `prefix`, in id order.

        The words sorted once, on first use: those sharing a prefix are one
        contiguous run of that order, found by two binary searches. Sorting
        takes milliseconds where a table of every prefix of every word took
        seconds, which a keyboard would pay on its first keystroke mid-word.
        """
        if self._sorted is None:
            order = sorted(range(len(SPECIALS), len(self.tokens)), key=self.tokens.__getitem__)
            self._sorted = ([self.tokens[i] for i in order], np.array(order, dtype=np.int64))
        words, ids = self._sorted
        start = bisect.bisect_left(words, prefix)
        # No word holds U+10FFFF (a noncharacter), so every word with the prefix sorts below prefix + it.
        end = bisect.bisect_left(words, prefix + "\U0010ffff", start)
        return np.sort(ids[start:end])

    def to_json(self) -> dict:
        return {
            "tokens": self.tokens,
            "special_tokens": {"pad": PAD, "unk": UNK, "bos": BOS, "eos": EOS},
        }

    @classmethod
    def from_json(cls, data: dict) -> Vocab:
        if not isinstance(data, dict) or not isinstance(data.get("tokens"), list):
            raise ValueError("a vocabulary file must be a JSON object with a 'tokens' list")
        return cls(data["tokens"])

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_json(), ensure_ascii=False), encoding="utf-8")

    @classmethod
    def load(cls, path: str | Path) -> Vocab:
        try:
            return cls.from_json(json.loads(Path(path).read_text(encoding="utf-8")))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
            raise ValueError(f"cannot read vocabulary {path}: {e}") from None
