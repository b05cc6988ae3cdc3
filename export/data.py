"""Real texts for calibration and verification, and the steps that calibrate int8 ranges."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edge_runtime.vocab import Vocab


@dataclass
class ExportTexts:
    calibration: list[list[str]]  # val split: tunes int8 ranges
    verification: list[list[str]]  # test split: compares every file with PyTorch
    source: str


def default_data() -> Path:
    from training.corpus import data_root

    return data_root() / "sentiment140" / "tweets.txt"


def load_texts(data: str, calibration_texts: int) -> ExportTexts:
    """The val and test texts of `data` (default: the shared Sentiment140 tweets), read in one pass."""
    from training.corpus import split_texts
    from training.errors import UserError

    source = Path(data) if data else default_data()
    splits = split_texts([source])
    if not splits.val or not splits.test:
        raise UserError(f"{source} has no val or no test texts to calibrate and verify on: give more data")
    return ExportTexts(calibration=splits.val[:calibration_texts], verification=splits.test, source=str(source))


def encode(texts: list[list[str]], vocab: Vocab) -> list[list[int]]:
    """Each text as <bos> w1 .. wn: the model predicts w1 .. wn and <eos> after these positions."""
    return [[vocab.bos_id, *vocab.encode(text)] for text in texts]


def calibration_samples(runner, sequences: list[list[int]], count: int, seed: int = 0) -> list[list[np.ndarray]]:
    """`count` real steps, each [token_ids [1], *state (batch 1)], the state being what the model carried there.

    Quantization sets each activation's range from these, so the state
    inputs must hold values a real text produces, not zeros or noise.
    """
    steps: list[list[np.ndarray]] = []
    for sequence in sequences:
        state = runner.initial_state(1)
        for token in sequence:
            token_ids = np.array([token], np.int32)
            steps.append([token_ids, *state])
            _, state = runner.step(token_ids, state)
    rng = np.random.default_rng(seed)
    chosen = rng.choice(len(steps), size=min(count, len(steps)), replace=False)
    return [steps[i] for i in sorted(chosen)]
