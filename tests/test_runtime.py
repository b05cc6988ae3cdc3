"""edge_runtime on tiny bundles: numbers against a numpy reference, suggestions, search, sessions, threads, CLI."""

from __future__ import annotations

import threading

import numpy as np
import pytest
from click.testing import CliRunner
from conftest import reference_step, tiny_weights

import edge_runtime
from edge_runtime.model import Suggestion

ALL_FILES = ["model.onnx", "model.int8.onnx", "model.tflite", "model.int8.tflite"]
# int8 weights move log-probabilities by a few hundredths on the tiny model; fp32 by rounding only.
TOLERANCE = {"model.onnx": 1e-4, "model.tflite": 1e-4, "model.int8.onnx": 0.3, "model.int8.tflite": 0.3}


def _log_softmax(x):
    x = x - x.max()
    return x - np.log(np.exp(x).sum())


@pytest.fixture(scope="module")
def model(tiny_bundle):
    return edge_runtime.load(tiny_bundle, "model.onnx")


@pytest.mark.parametrize("model_file", ALL_FILES)
def test_step_matches_the_numpy_reference(tiny_bundle_all, model_file):
    model = edge_runtime.load(tiny_bundle_all, model_file)
    weights = tiny_weights("lstm")
    expected_backend = "onnxruntime" if model_file.endswith(".onnx") else "ai-edge-litert"
    assert (model.backend_name, model.model_file) == (expected_backend, model_file)

    state, reference = model.initial_state(), {n: np.zeros((1, 1, 16)) for n in ("h", "c")}
    for token in [model.vocab.bos_id, 5, 9, model.vocab.unk_id, 20, 5]:
        log_probs, state = model.step(token, state)
        logits, reference = reference_step(weights, token, reference)
        assert log_probs.dtype == np.float32 and log_probs.shape == (len(model.vocab),)
        assert np.exp(log_probs).sum() == pytest.approx(1.0, abs=1e-4)
        np.testing.assert_allclose(log_probs, _log_softmax(logits), atol=TOLERANCE[model_file])


@pytest.mark.parametrize("model_file", ALL_FILES)
def test_exported_bundle_matches_pytorch(exported_bundle, model_file):
    import torch
    from conftest import tiny_recurrent_lm

    model = edge_runtime.load(exported_bundle, model_file)
    reference, vocab = tiny_recurrent_lm()
    assert model.vocab.tokens == vocab.tokens
    ids = [vocab.bos_id, *vocab.encode(["i", "love", "my", "work", "so", "much", "zebra"])]
    with torch.no_grad():
        expected = torch.log_softmax(reference(torch.tensor([ids]))[0][0], dim=-1).numpy()
    state = model.initial_state()
    for position, token in enumerate(ids):
        log_probs, state = model.step(token, state)
        np.testing.assert_allclose(log_probs, expected[position], atol=TOLERANCE[model_file] * 2)
        assert np.argmax(log_probs) == np.argmax(expected[position]) or model_file.startswith("model.int8")


def test_gru_and_log_prob_outputs(tmp_path):
    from conftest import make_bundle

    make_bundle(tmp_path / "gru", arch="gru", scores="log_probs", seed=3)
    model = edge_runtime.load(tmp_path / "gru", "model.onnx")
    assert list(model.initial_state()) == ["h"]
    log_probs, _ = model.step(model.vocab.bos_id, model.initial_state())
    logits, _ = reference_step(tiny_weights("gru", seed=3), model.vocab.bos_id, {"h": np.zeros((1, 1, 16))})
    np.testing.assert_allclose(log_probs, _log_softmax(logits), atol=1e-4)


def test_step_leaves_its_state_alone(model):
    state = model.initial_state()
    before = {k: v.copy() for k, v in state.items()}
    _, after = model.step(model.vocab.bos_id, state)
    for name in before:
        np.testing.assert_array_equal(state[name], before[name])
        assert not np.array_equal(after[name], before[name])


def test_suggest_ranks_the_next_word_by_the_model(model):
    suggestions = model.suggest("see you ", k=5)
    log_probs, _ = model.feed(["see", "you"])
    best = [model.vocab.tokens[i] for i in np.argsort(-log_probs) if i >= 4][:5]
    assert [s.word for s in suggestions] == best
    assert all(isinstance(s, Suggestion) for s in suggestions)
    assert [s.score for s in suggestions] == sorted((s.score for s in suggestions), reverse=True)
    assert suggestions[0].score == pytest.approx(float(log_probs[model.vocab.index[best[0]]]))
    assert not {s.word for s in model.suggest("", k=len(model.vocab))} & {"<pad>", "<unk>", "<bos>", "<eos>"}


def test_mid_word_suggestions_complete_the_typed_letters(model):
    words = [s.word for s in model.suggest("see you to", k=10)]
    assert sorted(words) == ["to", "today", "tomato", "tomorrow"]
    log_probs, _ = model.feed(["see", "you"])
    scores = {w: float(log_probs[model.vocab.index[w]]) for w in words}
    assert words == sorted(scores, key=lambda w: -scores[w])
    # Normalised as in training: capitals and typographic apostrophes.
    assert [s.word for s in model.suggest("I CAN’", k=3)] == ["can't"]
    assert model.suggest("see you tomorrowx", k=3) == []


@pytest.mark.parametrize(
    ("text", "finished", "partial"),
    [
        ("see you tomor", ["see", "you"], "tomor"),
        ("see you ", ["see", "you"], ""),
        ("see you,", ["see", "you"], ""),
        ("hello,wor", ["hello"], "wor"),
        ("ping @bo", ["ping"], ""),
        ("go to http://x.co", ["go", "to"], ""),
        ("I DON’", ["i"], "don'"),
        ("", [], ""),
        ("   ", [], ""),
    ],
)
def test_finished_words_and_the_word_being_typed(model, text, finished, partial):
    typed = model.typed(text)
    assert (typed.words, typed.partial) == (finished, partial)


def test_out_of_vocabulary_words_go_in_as_unk(model):
    a = model.suggest("zebra xylophone ", k=3)
    log_probs, _ = model.feed(["<unk>", "<unk>"])
    assert a == model.rank(log_probs, 3)


def test_greedy_completion_follows_the_argmax(model):
    words = model.complete("i love ", n_words=4)
    log_probs, state = model.feed(["i", "love"])
    expected = []
    for _ in range(4):
        masked = log_probs.copy()
        masked[[0, 1, 2]] = -np.inf
        token = int(np.argmax(masked))
        if token == model.vocab.eos_id:
            break
        expected.append(model.vocab.tokens[token])
        log_probs, state = model.step(token, state)
    assert words == expected


def test_beam_search_scores_at_least_as_well_as_greedy(model):
    def phrase_score(prefix, words):
        log_probs, state = model.feed(prefix)
        total = 0.0
        for w in words:
            token = model.vocab.index[w]
            total += float(log_probs[token])
            log_probs, state = model.step(token, state)
        return total + (0.0 if len(words) == 6 else float(log_probs[model.vocab.eos_id]))

    for prefix in (["i"], ["see", "you"], ["good"], ["my", "day", "was"]):
        text = " ".join(prefix) + " "
        greedy = model.complete(text, n_words=6)
        beam = model.complete(text, n_words=6, beam_width=5)
        assert phrase_score(prefix, beam) >= phrase_score(prefix, greedy) - 1e-5
        assert model.complete(text, n_words=6, beam_width=1) == greedy


def test_generation_never_emits_special_tokens(model):
    for width in (1, 3, 100):
        for text in ("", "i love ", "tom", "<unk> <pad>"):
            words = model.complete(text, n_words=8, beam_width=width, stop_at_end=False)
            assert len(words) == 8
            assert not set(words) & {"<pad>", "<unk>", "<bos>", "<eos>"}


def test_completion_of_a_partial_word_starts_with_it(model):
    words = model.complete("see you tomo", n_words=3, beam_width=2)
    assert words[0] in ("tomorrow", "tomato")
    assert model.complete("see you tomorrowx", n_words=3) == []
    assert model.complete("see you ", n_words=0) == []


def test_eos_ends_the_phrase(tmp_path):
    from conftest import make_bundle

    # A model biased hard towards <eos>: every phrase ends at once.
    make_bundle(tmp_path / "b")
    model = edge_runtime.load(tmp_path / "b", "model.onnx")
    log_probs = np.full(len(model.vocab), -10.0, np.float32)
    log_probs[model.vocab.eos_id] = -0.001
    assert model.search(log_probs, model.initial_state(), 5) == []
    assert len(model.search(log_probs, model.initial_state(), 5, stop_at_end=False)) == 5


# -- sessions ---------------------------------------------------------------


def test_session_equals_one_shot_calls(model):
    session = model.session()
    text = ""
    for chunk in ["see", " you", " tomo", "rrow ", "at", " the ", "go", "od ", "night"]:
        session.type(chunk)
        text += chunk
        assert session.suggest(4) == model.suggest(text, k=4), text
        assert session.complete(3, beam_width=2) == model.complete(text, n_words=3, beam_width=2), text
    assert session.words == ["see", "you", "tomorrow", "at", "the", "good"]
    assert session.partial == "night"


def test_each_word_is_one_step(model, monkeypatch):
    session = model.session()
    session.type("i love my " * 20)
    calls = []
    real_run = model._backend.run
    monkeypatch.setattr(model._backend, "run", lambda t, s: calls.append(t) or real_run(t, s))
    session.type("work ")
    assert len(calls) == 1
    session.type("hom")  # a partial word costs no step
    session.suggest(3)
    assert len(calls) == 1


def test_backspace_restores_the_state_before_the_word(model):
    session = model.session()
    session.type("good morning ")
    before = session.state()
    session.add_word("you")
    assert session.words == ["good", "morning", "you"]
    assert session.backspace() == "you"
    after = session.state()
    assert np.array_equal(before[0], after[0])
    assert all(np.array_equal(before[1][k], after[1][k]) for k in before[1])

    session.type("tom")
    assert session.backspace() == "tom"  # the word being typed goes first
    assert session.suggest(3) == model.suggest("good morning ", k=3)
    session.reset()
    assert session.words == [] and session.suggest(3) == model.suggest("", k=3)
    assert session.backspace() is None


def test_backspace_beyond_saved_history_refeeds(model):
    session = model.session(history=2)
    session.type("i love my day so ")
    for _ in range(3):
        session.backspace()
    assert session.words == ["i", "love"]
    assert session.suggest(5) == model.suggest("i love ", k=5)


def test_add_word_accepts_a_suggestion(model):
    session = model.session()
    session.type("see you tomo")
    session.add_word(session.suggest(1)[0].word)
    assert session.words == ["see", "you", "tomorrow"] and session.partial == ""
    with pytest.raises(ValueError, match="one word"):
        session.add_word("two words")
    with pytest.raises(ValueError, match="one word"):
        session.add_word("!!")


def test_long_paste_is_capped_and_session_stays_usable(model):
    session = model.session()
    session.type("good " * 5000)
    assert len(session.words) <= session.history + edge_runtime.MAX_CONTEXT_WORDS
    assert session.suggest(3) == model.suggest("good " * edge_runtime.MAX_CONTEXT_WORDS, k=3)


# -- threads ----------------------------------------------------------------


@pytest.mark.parametrize("model_file", ["model.int8.onnx", "model.int8.tflite"])
def test_two_threads_get_what_each_gets_alone(exported_bundle, model_file):
    model = edge_runtime.load(exported_bundle, model_file)
    scripts = [["i ", "love ", "my ", "work ", "so "] * 6, ["see ", "you ", "tomorrow ", "good ", "night "] * 6]

    def run(script):
        session, out = model.session(), []
        for word in script:
            session.type(word)
            out.append((session.suggest(3), session.complete(2, beam_width=2)))
        return out

    alone = [run(s) for s in scripts]
    together: list = [None, None]
    barrier = threading.Barrier(2)

    def worker(i):
        barrier.wait()
        together[i] = run(scripts[i])

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert together == alone


# -- the CLI ----------------------------------------------------------------


def test_cli_suggests_and_completes(tiny_bundle):
    from edgecomplete.cli import main

    model = edge_runtime.load(tiny_bundle)
    result = CliRunner().invoke(main, ["complete", str(tiny_bundle), "see you to", "--suggest", "2"])
    assert result.exit_code == 0, result.output
    expected = [f"{s.word}\t{s.score:.3f}" for s in model.suggest("see you to", k=2)]
    assert result.output.splitlines() == expected

    result = CliRunner().invoke(main, ["complete", str(tiny_bundle), "i love", "--words", "3", "--beam", "2"])
    assert result.exit_code == 0, result.output
    assert result.output.strip() == " ".join(model.complete("i love", n_words=3, beam_width=2))


def test_cli_refuses_both_modes(tiny_bundle):
    from edgecomplete.cli import main

    result = CliRunner().invoke(main, ["complete", str(tiny_bundle), "hi", "--suggest", "2", "--words", "2"])
    assert result.exit_code == 2
    assert "use --suggest or --words, not both" in result.output
