"""Fit the n-gram baseline on the same split and vocabulary rule as the LSTM."""

from __future__ import annotations

import logging
from pathlib import Path

from training.corpus import build_vocab, split_texts
from training.ngram import NgramConfig, NgramModel

log = logging.getLogger("edgecomplete.ngram")


def fit_ngram(sources: list[str], config: NgramConfig, out_dir: str | Path) -> Path:
    """Fit on the train split of `sources`; returns the saved model's path."""
    config.validate()
    splits = split_texts(sources)
    vocab = build_vocab(splits.train, config.vocab_size, config.min_count)
    log.info("fitting %d-gram (%s) on %d texts", config.order, config.smoothing, len(splits.train))
    model = NgramModel.fit(splits.train, vocab, config)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    path = out / "ngram.pkl.gz"
    model.save(path)
    return path
