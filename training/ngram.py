"""Word n-gram baseline: the classic keyboard model the LSTM has to beat.

Two smoothings over the same counts:

- `kneser-ney`: interpolated Kneser-Ney (Chen and Goodman, 1998) with one
  absolute discount per order; lower orders use continuation counts; the
  unigram floor is add-one over continuation counts, so no word gets zero.
- `stupid-backoff` (Brants et al., 2007): relative frequency of the longest
  seen context, else 0.4 times the next shorter one. Its scores are
  normalised per context here so that perplexity is defined.

Contexts are padded with <bos>, so every position has N-1 words of context.
"""

from __future__ import annotations

import gzip
import pickle
from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edge_runtime.vocab import Vocab
from training.errors import UserError
from training.scorers import banned_mask, beam_complete, mbr_complete

SMOOTHINGS = ("kneser-ney", "stupid-backoff")
FORMAT = "edgecomplete-ngram"
BACKOFF = 0.4  # Brants et al.'s constant
DISCOUNT = 0.75  # the usual single KN discount when counts-of-counts are not fitted


@dataclass
class NgramConfig:
    order: int = 3  # trigram: the classic keyboard model
    smoothing: str = "stupid-backoff"
    vocab_size: int = 10_000  # same vocabulary as the neural models, for a fair comparison
    min_count: int = 2

    def validate(self) -> None:
        if self.order < 1:
            raise UserError(f"n-gram order must be at least 1, got {self.order}")
        if self.smoothing not in SMOOTHINGS:
            raise UserError(f"unknown smoothing {self.smoothing!r}: use one of {', '.join(SMOOTHINGS)}")


class NgramModel:
    """Counts per order; context tuple -> (next-token ids, counts) arrays."""

    def __init__(self, config: NgramConfig, vocab: Vocab, tables: list[dict], unigram: np.ndarray):
        self.config = config
        self.vocab = vocab
        self.tables = tables  # tables[k]: contexts of k words, k = 1 .. order-1
        self.unigram = unigram  # [V] floor distribution
        self.banned = banned_mask(vocab)

    @classmethod
    def fit(cls, texts: list[list[str]], vocab: Vocab, config: NgramConfig) -> NgramModel:
        config.validate()
        n = config.order
        grams: Counter = Counter()
        for text in texts:
            ids = [vocab.bos_id] * (n - 1) + vocab.encode(text) + [vocab.eos_id]
            grams.update(tuple(ids[i - n + 1 : i + 1]) for i in range(n - 1, len(ids)))
        tables: list[dict] = [{} for _ in range(n)]
        counts = dict(grams)
        for k in range(n - 1, -1, -1):
            # Order k+1 grams: raw counts at the top order; below it, Kneser-Ney
            # continuation counts (distinct left extensions), or raw counts again
            # for stupid backoff.
            by_context: dict = defaultdict(lambda: ([], []))
            for gram, c in counts.items():
                ids, cs = by_context[gram[:-1]]
                ids.append(gram[-1])
                cs.append(c)
            tables[k] = {ctx: (np.array(ids), np.array(cs, dtype=np.float64)) for ctx, (ids, cs) in by_context.items()}
            if k:
                counts = _lower_order(counts, kneser_ney=config.smoothing == "kneser-ney")
        unigram = np.ones(len(vocab))
        ids, cs = tables[0].get((), (np.array([], dtype=int), np.array([])))
        unigram[ids] += cs
        # <pad> and <bos> never follow anything; <unk> and <eos> do.
        unigram[[vocab.pad_id, vocab.bos_id]] = 0.0
        return cls(config, vocab, tables[1:], unigram / unigram.sum())

    def distribution(self, context: list[int]) -> np.ndarray:
        """P(next | context) over the vocabulary, [V], summing to 1."""
        n = self.config.order
        context = ([self.vocab.bos_id] * (n - 1) + list(context))[-(n - 1) :] if n > 1 else []
        p = self.unigram.copy()
        for k in range(1, n):
            entry = self.tables[k - 1].get(tuple(context[len(context) - k :]))
            if entry is None:
                continue
            ids, cs = entry
            total = cs.sum()
            if self.config.smoothing == "kneser-ney":
                p *= DISCOUNT * len(ids) / total
                p[ids] += np.maximum(cs - DISCOUNT, 0.0) / total
            else:
                p *= BACKOFF
                p[ids] = cs / total
                p /= p.sum()
        return p

    def _log_distribution(self, context: list[int]) -> np.ndarray:
        return np.log(np.maximum(self.distribution(context), 1e-30))

    # Scorer interface
    def next_log_probs(self, sequences):
        results = []
        for seq in sequences:
            # seq starts with <bos>; the padding supplies the rest of the context.
            rows = [self._log_distribution(list(seq[1 : i + 1])) for i in range(len(seq))]
            results.append(np.stack(rows).astype(np.float32))
        return results

    def complete(self, prefixes, n_words, beam_width=1, mbr=None):
        # The state is the context so far; <bos> is not part of it.
        def step(token, context):
            context = [*context, token]
            return self._log_distribution(context), context

        def start(prefix):
            return self._log_distribution(prefix[1:]), list(prefix[1:])

        if mbr is not None:
            return mbr_complete(start, step, prefixes, n_words, mbr, self.banned)
        if beam_width > 1:
            return beam_complete(start, step, prefixes, n_words, beam_width, self.banned)
        results = []
        for prefix, n in zip(prefixes, n_words):
            context = list(prefix[1:])
            out = []
            for _ in range(n):
                p = np.where(self.banned, -1.0, self.distribution(context))
                token = int(np.argmax(p))
                out.append(token)
                context.append(token)
            results.append(out)
        return results

    def save(self, path: str | Path) -> None:
        data = {
            "format": FORMAT,
            "config": self.config.__dict__,
            "vocab": self.vocab.tokens,
            "tables": self.tables,
            "unigram": self.unigram,
        }
        with gzip.open(path, "wb") as f:
            pickle.dump(data, f, protocol=pickle.HIGHEST_PROTOCOL)

    @classmethod
    def load(cls, path: str | Path) -> NgramModel:
        try:
            with gzip.open(path, "rb") as f:
                data = pickle.load(f)
        except (OSError, EOFError, pickle.UnpicklingError) as e:
            raise UserError(f"{path} is not a readable n-gram model ({e})") from None
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            raise UserError(f"{path} is not an edgecomplete n-gram model")
        return cls(NgramConfig(**data["config"]), Vocab(data["vocab"]), data["tables"], data["unigram"])


def _lower_order(counts: dict, kneser_ney: bool) -> dict:
    lower: Counter = Counter()
    for gram, c in counts.items():
        lower[gram[1:]] += 1 if kneser_ney else c
    return dict(lower)
