"""The quality protocol on hand-made cases whose scores are known."""

import json
import math

import numpy as np
import pytest

from edge_runtime.mbr import MBR
from edge_runtime.vocab import SPECIALS, Vocab
from training.evaluate import cases_of, evaluate, make_case, ranks


class FixedScorer:
    """Scores every position with the same distribution: a known answer."""

    def __init__(self, vocab, probs):
        self.vocab = vocab
        self.log_probs = np.log(np.asarray(probs, dtype=np.float64))

    def next_log_probs(self, sequences):
        return [np.tile(self.log_probs, (len(s), 1)) for s in sequences]

    def complete(self, prefixes, n_words, beam_width=1, mbr=None):
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


class MarkovModel:
    """edge_runtime's step API over a table of next-word probabilities given the last word."""

    def __init__(self, vocab, table: dict[str, dict[str, float]]):
        self.vocab = vocab
        self.log_probs = {}
        for word, following in table.items():
            p = np.full(len(vocab), 1e-6)
            for nxt, q in following.items():
                p[vocab.index[nxt]] = q
            self.log_probs[vocab.index[word]] = np.log(p / p.sum())

    def initial_state(self):
        return None

    def step(self, token, state):
        return self.log_probs[token], token


# After "a", greedy takes "x" (0.5) and then at best 0.25; the beam finds "y z" (0.4 x 0.9).
MARKOV_VOCAB = Vocab([*SPECIALS, "a", "x", "y", "z", "w", "v", "u"])
MARKOV = {
    "<bos>": {"a": 1.0},
    "a": {"x": 0.5, "y": 0.4, "z": 0.1},
    "x": {"w": 0.25, "v": 0.25, "u": 0.25, "z": 0.25},
    "y": {"z": 0.9, "w": 0.1},
    **{w: {"a": 1.0} for w in ("z", "w", "v", "u")},
}


def test_beam_search_finds_the_likelier_phrase_that_greedy_misses():
    from training.scorers import StepScorer

    scorer = StepScorer(MarkovModel(MARKOV_VOCAB, MARKOV))
    texts = [["a", "a", "a", "a", "a", "a", "y", "z"]]  # 8 words: the target is the last 2
    greedy = evaluate(scorer, texts)
    beam = evaluate(scorer, texts, beam_width=2)
    assert (greedy["beam_width"], beam["beam_width"]) == (1, 2)
    assert greedy["rouge2"] == 0.0 and greedy["rouge1"] < 1.0
    assert beam["rouge1"] == beam["rouge2"] == 1.0
    # Decoding moves the completions only: next-word figures stay.
    assert (beam["top1"], beam["perplexity"]) == (greedy["top1"], greedy["perplexity"])


def test_beam_width_one_is_greedy():
    from training.scorers import StepScorer, beam_complete

    scorer = StepScorer(MarkovModel(MARKOV_VOCAB, MARKOV))
    prefixes = [[MARKOV_VOCAB.bos_id, *MARKOV_VOCAB.encode(p)] for p in (["a"], ["a", "y"], ["a", "x", "w"])]
    greedy = scorer.complete(prefixes, [3, 2, 4])
    assert beam_complete(scorer._after, scorer.model.step, prefixes, [3, 2, 4], 1, scorer.banned) == greedy
    assert [len(c) for c in scorer.complete(prefixes, [3, 2, 4], beam_width=3)] == [3, 2, 4]


def test_a_bad_beam_width_is_refused():
    from training.errors import UserError
    from training.scorers import StepScorer

    with pytest.raises(UserError, match="--beam-width must be a positive integer"):
        evaluate(StepScorer(MarkovModel(MARKOV_VOCAB, MARKOV)), [["a", "a", "y", "z"]], beam_width=0)


@pytest.mark.parametrize("beam_width", [1, 3])
def test_checkpoint_and_bundle_complete_alike(exported_bundle, beam_width):
    """PyTorch's batched greedy and its beam search give the exported fp32 file's completions."""
    import edge_runtime
    from training import checkpoint
    from training.scorers import StepScorer, TorchScorer

    ckpt = checkpoint.load(exported_bundle.parent / "model.pt")
    torch_scorer = TorchScorer(checkpoint.model_of(ckpt), checkpoint.vocab_of(ckpt))
    step_scorer = StepScorer(edge_runtime.load(exported_bundle, "model.onnx"))
    vocab = torch_scorer.vocab
    texts = ("i see you", "so happy", "the", "we love it at")
    prefixes = [[vocab.bos_id, *vocab.encode(text.split())] for text in texts]
    n_words = [3, 2, 4, 1]
    got = torch_scorer.complete(prefixes, n_words, beam_width=beam_width)
    assert got == step_scorer.complete(prefixes, n_words, beam_width=beam_width)
    assert [len(c) for c in got] == n_words


def test_decoding_sweep_scores_each_width_on_the_same_texts(tmp_path, capsys):
    from training import decoding_sweep
    from training.corpus import build_vocab, read_texts
    from training.evaluate import evaluate_path
    from training.ngram import NgramConfig, NgramModel

    words = ["i", "love", "my", "dog", "you", "see", "the", "cat", "at", "home"]
    texts = [" ".join(words[(i * j + i) % len(words)] for j in range(4 + i % 6)) for i in range(600)]
    data = tmp_path / "texts.txt"
    data.write_text("\n".join(texts), encoding="utf-8")
    train = read_texts([data], split="train")
    model = NgramModel.fit(train, build_vocab(train, 50), NgramConfig(order=3))
    model.save(tmp_path / "ngram.pkl.gz")

    out = tmp_path / "sweep.json"
    code = decoding_sweep.main([str(tmp_path), "--data", str(data), "--split", "val", "--widths", "1", "3",
                                "--mbr", "8,1.0,4", "8,1.0,4,counts", "--out", str(out)])  # fmt: skip
    assert code == 0
    report = json.loads(out.read_text())
    assert report == json.loads(capsys.readouterr().out)
    assert set(report["widths"]) == {"1", "3"}
    greedy = evaluate_path(tmp_path, data, split="val")
    assert report["n"] == greedy["n"] > 0
    assert report["widths"]["1"]["rouge1"] == greedy["rouge1"]
    mbr, counted = report["mbr"]
    assert (mbr["settings"]["samples"], mbr["settings"]["bigram_weight"]) == (8, 4.0)
    assert (mbr["settings"]["estimator"], counted["settings"]["estimator"]) == ("expected", "counts")
    mbr_eval = evaluate_path(tmp_path, data, split="val", mbr=MBR(8, 1.0, 4.0))
    assert mbr["rouge1"] == mbr_eval["rouge1"]

    assert decoding_sweep.main([str(tmp_path), "--data", str(data), "--split", "val", "--limit", "3", "--widths",
                                "1"]) == 0  # fmt: skip
    assert json.loads(capsys.readouterr().out)["n"] == 3
    with pytest.raises(SystemExit):
        decoding_sweep.main([str(tmp_path), "--data", str(data), "--mbr", "8,hot,4"])
    assert "is not SAMPLES,TEMPERATURE,BIGRAM_WEIGHT" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        decoding_sweep.main([str(tmp_path), "--data", str(data), "--mbr", "8,1.0,4,guess"])
    assert "estimator must be one of" in capsys.readouterr().err

    assert decoding_sweep.main([str(tmp_path / "missing"), "--data", str(data)]) == 2
    assert decoding_sweep.main([str(tmp_path), "--data", str(data), "--widths", "0"]) == 2
    errors = capsys.readouterr().err.splitlines()
    assert [line for line in errors if line.startswith("error:")] == errors[-2:]
