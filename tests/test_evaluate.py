"""The quality protocol on hand-made cases whose scores are known."""

import math

import numpy as np
import pytest

from edge_runtime.vocab import SPECIALS, Vocab
from training.evaluate import cases_of, evaluate, make_case, ranks


class FixedScorer:
    """Scores every position with the same distribution: a known answer."""

    def __init__(self, vocab, probs):
        self.vocab = vocab
        self.log_probs = np.log(np.asarray(probs, dtype=np.float64))

    def next_log_probs(self, sequences):
        return [np.tile(self.log_probs, (len(s), 1)) for s in sequences]

    def complete(self, prefixes, n_words):
        masked = self.log_probs.copy()
        masked[self.vocab.special_ids] = -np.inf
        return [[int(np.argmax(masked))] * n for n in n_words]


VOCAB = Vocab([*SPECIALS, "the", "then", "cat", "car"])
# <pad> <unk> <bos> <eos> the then cat car
PROBS = [0.0025, 0.0025, 0.0025, 0.0025, 0.39, 0.30, 0.20, 0.10]


@pytest.mark.parametrize(("n", "m"), [(4, 1), (5, 1), (6, 2), (10, 2), (14, 4), (16, 4), (18, 4)])
def test_target_is_a_quarter_rounded_half_to_even(n, m):
    case = make_case([str(i) for i in range(n)])
    assert len(case.target) == m
    assert case.prefix + case.target == [str(i) for i in range(n)]


def test_texts_under_four_words_are_dropped():
    assert len(cases_of([["a", "b", "c"], ["a", "b", "c", "d"]])) == 1


def test_protocol_figures_on_a_known_distribution():
    texts = [["the", "cat", "then", "car"], ["the", "the", "the", "the"]]
    report = evaluate(FixedScorer(VOCAB, PROBS), texts)
    assert report["n"] == 2
    # Completions are "the": wrong for the first text, right for the second.
    assert report["rouge1"] == pytest.approx(0.5)
    assert report["rouge2"] == 0.0
    # Ranks: the 0, cat 2, then 1, car 3, and "the" 0 four times.
    assert report["top1"] == pytest.approx(5 / 8)
    assert report["top3"] == pytest.approx(7 / 8)
    # Saved: the 3, cat 3, then 4, car 2 (after "c"), the 3 x 4; typed 16 + 15.
    assert report["keystroke_savings"] == pytest.approx((12 + 12) / 31)
    # Targets: the cat then car <eos>, the the the the <eos>.
    nll = -(5 * math.log(0.39) + math.log(0.20) + math.log(0.30) + math.log(0.10) + 2 * math.log(0.0025))
    assert report["perplexity"] == pytest.approx(math.exp(nll / 10))


def test_unknown_words_never_count():
    texts = [["the", "zebra", "the", "zebra"]]
    report = evaluate(FixedScorer(VOCAB, PROBS), texts)
    assert report["rouge1"] == 0.0
    assert report["top3"] == pytest.approx(0.5)


def test_ties_rank_against_the_target():
    uniform = np.zeros((1, 5))
    assert ranks(uniform, np.array([3])).tolist() == [3]
    assert ranks(uniform, np.array([0])).tolist() == [0]


def test_bootstrap_interval_brackets_the_mean():
    texts = [["the", "cat", "then", "car"], ["the", "the", "the", "the"]] * 20
    report = evaluate(FixedScorer(VOCAB, PROBS), texts)
    low, high = report["rouge1_ci95"]
    assert low <= report["rouge1"] <= high
    assert high - low > 0
