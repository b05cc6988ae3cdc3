import numpy as np
import pytest

from training.corpus import build_vocab
from training.evaluate import evaluate
from training.ngram import NgramConfig, NgramModel

TEXTS = [
    ["i", "love", "my", "dog"],
    ["i", "love", "my", "cat"],
    ["i", "love", "my", "dog", "so", "much"],
    ["you", "love", "my", "dog"],
    ["we", "miss", "you"],
]


@pytest.mark.parametrize("smoothing", ["kneser-ney", "stupid-backoff"])
def test_distribution_is_normalised_and_learns_the_obvious(smoothing):
    vocab = build_vocab(TEXTS, max_size=50)
    model = NgramModel.fit(TEXTS, vocab, NgramConfig(order=3, smoothing=smoothing))
    p = model.distribution(vocab.encode(["i", "love"]))
    assert p.sum() == pytest.approx(1.0)
    assert (p[[vocab.unk_id, vocab.eos_id, *range(4, len(vocab))]] > 0).all()
    assert vocab.tokens[int(np.argmax(p))] == "my"
    after_my = model.distribution(vocab.encode(["love", "my"]))
    assert vocab.tokens[int(np.argmax(after_my))] == "dog"


def test_kneser_ney_prefers_words_seen_in_many_contexts():
    # "francisco" is frequent but only after "san"; "glasses" follows many words.
    texts = [["san", "francisco"]] * 6 + [[w, "glasses"] for w in ("my", "his", "her", "reading")]
    vocab = build_vocab(texts, max_size=50)
    model = NgramModel.fit(texts, vocab, NgramConfig(order=2, smoothing="kneser-ney"))
    p = model.distribution(vocab.encode(["new"]))  # unseen context: continuation unigram
    assert p[vocab.index["glasses"]] > p[vocab.index["francisco"]]


def test_greedy_completion_and_protocol(tmp_path):
    vocab = build_vocab(TEXTS, max_size=50)
    model = NgramModel.fit(TEXTS * 3, vocab, NgramConfig(order=3))
    completion = model.complete([[vocab.bos_id, *vocab.encode(["i", "love"])]], [2])
    assert vocab.decode(completion[0]) == ["my", "dog"]
    report = evaluate(model, [["i", "love", "my", "dog"]])
    assert report["rouge1"] == 1.0

    model.save(tmp_path / "ngram.pkl.gz")
    loaded = NgramModel.load(tmp_path / "ngram.pkl.gz")
    np.testing.assert_array_equal(loaded.distribution([4, 5]), model.distribution([4, 5]))


def test_beam_completion_is_at_least_as_likely_as_greedy():
    vocab = build_vocab(TEXTS, max_size=50)
    model = NgramModel.fit(TEXTS * 3, vocab, NgramConfig(order=3))
    prefixes = [[vocab.bos_id, *vocab.encode(p)] for p in (["i"], ["i", "love"], ["the"])]

    def log_prob(prefix, tokens):
        context = list(prefix[1:])
        total = 0.0
        for token in tokens:
            total += float(np.log(model.distribution(context)[token]))
            context.append(token)
        return total

    greedy = model.complete(prefixes, [3, 2, 3])
    beam = model.complete(prefixes, [3, 2, 3], beam_width=4)
    assert [len(b) for b in beam] == [3, 2, 3]
    assert all(t not in vocab.special_ids for b in beam for t in b)
    for prefix, g, b in zip(prefixes, greedy, beam):
        assert log_prob(prefix, b) >= log_prob(prefix, g) - 1e-9


def test_bad_config_is_refused():
    from training.errors import UserError

    with pytest.raises(UserError, match="unknown smoothing"):
        NgramConfig(smoothing="laplace").validate()
