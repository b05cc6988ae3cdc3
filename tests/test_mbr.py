"""Minimum-Bayes-risk completion on distributions whose best phrase is known."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest
from test_evaluate import MarkovModel

import edge_runtime
from edge_runtime.mbr import MBR, ExpectedCounts, assemble, mbr_search, ngram_posteriors, sample_continuations
from edge_runtime.vocab import SPECIALS, Vocab
from training.evaluate import evaluate

# After "a" the likeliest word is "x" (0.4), but "z" follows both "y" and
# "w": it occurs in 60% of continuations. Greedy says "x" then one of four
# words each at 0.25; the phrase of highest expected overlap is "y z" or "w z".
VOCAB = Vocab([*SPECIALS, "a", "x", "y", "w", "z", "u", "v", "t", "s"])
TABLE = {
    "<bos>": {"a": 1.0},
    "a": {"x": 0.4, "y": 0.3, "w": 0.3},
    "x": {"u": 0.25, "v": 0.25, "t": 0.25, "s": 0.25},
    "y": {"z": 1.0},
    "w": {"z": 1.0},
    **{word: {"a": 1.0} for word in ("z", "u", "v", "t", "s")},
}


def ids(*words):
    return [VOCAB.index[w] for w in words]


def search(n_words=2, end_id=-1, **settings):
    model = MarkovModel(VOCAB, TABLE)
    log_probs, state = model.step(VOCAB.index["a"], None)
    banned = np.zeros(len(VOCAB), dtype=bool)
    banned[VOCAB.special_ids] = True

    def restrict(lp, position):
        return np.where(banned, -np.inf, lp)

    return mbr_search(model.step, log_probs, state, n_words, MBR(**settings), restrict, end_id)


@pytest.mark.parametrize("estimator", ["expected", "counts"])
def test_mbr_chooses_the_consensus_phrase_greedy_misses(estimator):
    phrase = search(samples=400, temperature=1.0, estimator=estimator)
    assert phrase in (ids("y", "z"), ids("w", "z"))


def test_expected_counts_credit_each_prefix_with_its_whole_distribution():
    model = MarkovModel(VOCAB, TABLE)
    log_probs, state = model.step(VOCAB.index["a"], None)
    expected = ExpectedCounts(samples=10, end_id=-1)
    samples = sample_continuations(model.step, log_probs, state, 2, 10, 1.0, lambda lp, _: lp,
                                   np.random.default_rng(0), -1, expected.visit)  # fmt: skip
    unigrams, bigrams = expected.posteriors()
    took = Counter()
    for tokens, count in samples:
        took[VOCAB.tokens[tokens[0]]] += count / 10
    # The first word's posteriors are the model's own, whichever words the samples took;
    # the second's follow from the share of samples that reached each first word.
    assert unigrams[VOCAB.index["x"]] == pytest.approx(0.4, abs=1e-4)
    assert unigrams[VOCAB.index["y"]] == pytest.approx(0.3, abs=1e-4)
    assert unigrams[VOCAB.index["z"]] == pytest.approx(took["y"] + took["w"], abs=1e-4)
    assert unigrams[VOCAB.index["u"]] == pytest.approx(took["x"] * 0.25, abs=1e-4)
    assert bigrams[(VOCAB.index["y"], VOCAB.index["z"])] == pytest.approx(took["y"], abs=1e-4)


def test_mbr_through_the_protocol_beats_greedy_on_the_consensus_target():
    from training.scorers import StepScorer

    scorer = StepScorer(MarkovModel(VOCAB, TABLE))
    texts = [["a", "a", "a", "a", "a", "a", "w", "z"], ["a", "a", "a", "a", "a", "a", "y", "z"]]
    greedy = evaluate(scorer, texts)
    mbr = evaluate(scorer, texts, mbr=MBR(samples=400, temperature=1.0))
    assert greedy["rouge1"] == 0.0
    # One of the two targets matched whole, the other by its "z": (1 + 0.5) / 2.
    assert mbr["rouge1"] == pytest.approx(0.75)
    assert mbr["mbr"] == {"samples": 400, "temperature": 1.0, "bigram_weight": 8.0, "seed": 0, "estimator": "expected"}
    # Decoding moves the completions only.
    assert (mbr["top1"], mbr["perplexity"]) == (greedy["top1"], greedy["perplexity"])


def test_a_low_temperature_approaches_greedy():
    # At T = 0.05 nearly every sample is the mode's path: "x" then the first of the four tied words.
    assert search(samples=64, temperature=0.05)[0] == VOCAB.index["x"]


def test_the_same_seed_gives_the_same_phrase_and_samples_add_up():
    assert search(samples=16, seed=3) == search(samples=16, seed=3)
    model = MarkovModel(VOCAB, TABLE)
    steps = Counter()

    def counted_step(token, state):
        steps[token] += 1
        return model.step(token, state)

    log_probs, state = model.step(VOCAB.index["a"], None)
    samples = sample_continuations(
        counted_step, log_probs, state, 3, 50, 1.0, lambda lp, _: lp, np.random.default_rng(0), -1
    )
    assert sum(count for _, count in samples) == 50
    assert all(len(tokens) == 3 for tokens, _ in samples)
    # One step per distinct prefix shorter than the phrase, not one per sample and word.
    prefixes = {tokens[:i] for tokens, _ in samples for i in (1, 2)}
    assert sum(steps.values()) == len(prefixes)


def test_posteriors_count_a_word_once_per_sample():
    unigrams, bigrams = ngram_posteriors([((5, 5, 6), 3), ((6, 7, 6), 1)])
    assert unigrams == {5: 0.75, 6: 1.0, 7: 0.25}
    assert bigrams == {(5, 5): 0.75, (5, 6): 0.75, (6, 7): 0.25, (7, 6): 0.25}


def test_assembly_orders_words_by_their_pairs():
    unigrams = Counter({4: 0.9, 5: 0.8, 6: 0.1})
    bigrams = Counter({(5, 4): 0.7})
    assert assemble(unigrams, bigrams, 2, bigram_weight=1.0) == [5, 4]
    assert assemble(unigrams, bigrams, 0, bigram_weight=1.0) == []
    # Fewer distinct words than places: a word repeats rather than the phrase falling short.
    assert len(assemble(Counter({4: 1.0}), Counter(), 3, bigram_weight=1.0)) == 3


def test_an_early_end_shortens_the_phrase_to_the_median_sample():
    table = {**TABLE, "a": {"<eos>": 0.9, "x": 0.1}}
    model = MarkovModel(VOCAB, table)
    log_probs, state = model.step(VOCAB.index["a"], None)
    phrase = mbr_search(model.step, log_probs, state, 3, MBR(samples=32), lambda lp, _: lp, VOCAB.eos_id)
    assert phrase == []


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"samples": 0}, "samples must be a positive integer"),
        ({"samples": True}, "samples must be a positive integer"),
        ({"temperature": 0.0}, "temperature must be a positive number"),
        ({"temperature": float("nan")}, "temperature must be a positive number"),
        ({"bigram_weight": -1.0}, "bigram_weight must be a non-negative number"),
        ({"estimator": "mean"}, "estimator must be one of"),
    ],
)
def test_bad_settings_are_refused(settings, message):
    with pytest.raises(ValueError, match=message):
        MBR(**settings)


def test_runtime_mbr_completion(tiny_bundle):
    model = edge_runtime.load(tiny_bundle, "model.onnx")
    settings = edge_runtime.MBR(samples=8)
    for text in ("", "i love ", "<unk> <pad>"):
        words = model.complete(text, n_words=5, mbr=settings, stop_at_end=False)
        assert len(words) == 5
        assert not set(words) & {"<pad>", "<unk>", "<bos>", "<eos>"}
        assert model.complete(text, n_words=5, mbr=settings, stop_at_end=False) == words
    assert model.complete("see you tomo", n_words=3, mbr=settings)[0] in ("tomorrow", "tomato")
    assert model.complete("see you tomorrowx", n_words=3, mbr=settings) == []
    with pytest.raises(ValueError, match="beam_width and mbr are two decodings"):
        model.complete("i love ", n_words=3, beam_width=2, mbr=settings)


def test_checkpoint_and_bundle_mbr_alike(exported_bundle):
    """The same seed gives PyTorch's and the exported fp32 file's MBR completions alike."""
    from training import checkpoint
    from training.scorers import StepScorer, TorchScorer

    ckpt = checkpoint.load(exported_bundle.parent / "model.pt")
    torch_scorer = TorchScorer(checkpoint.model_of(ckpt), checkpoint.vocab_of(ckpt))
    step_scorer = StepScorer(edge_runtime.load(exported_bundle, "model.onnx"))
    vocab = torch_scorer.vocab
    prefixes = [[vocab.bos_id, *vocab.encode(text.split())] for text in ("i see you", "so happy", "the")]
    settings = MBR(samples=16, temperature=0.7)
    got = torch_scorer.complete(prefixes, [3, 2, 4], mbr=settings)
    assert got == step_scorer.complete(prefixes, [3, 2, 4], mbr=settings)
    assert [len(c) for c in got] == [3, 2, 4]


def test_cli_completes_by_mbr_and_refuses_bad_settings(tiny_bundle):
    from click.testing import CliRunner

    from edgecomplete.cli import main

    model = edge_runtime.load(tiny_bundle)
    args = ["complete", str(tiny_bundle), "i love", "--words", "3"]
    result = CliRunner().invoke(main, [*args, "--mbr-samples", "8", "--mbr-temperature", "0.5"])
    assert result.exit_code == 0, result.output
    assert result.output.strip() == " ".join(model.complete("i love", n_words=3, mbr=MBR(8, temperature=0.5)))

    for extra, message in (
        (["--mbr-samples", "0"], "MBR samples must be a positive integer"),
        (["--mbr-temperature", "0.5"], "need --mbr-samples"),
        (["--mbr-samples", "8", "--beam", "2"], "beam_width and mbr are two decodings"),
    ):
        result = CliRunner().invoke(main, [*args, *extra])
        assert result.exit_code == 2, result.output
        assert message in result.output
        assert "Traceback" not in result.output
