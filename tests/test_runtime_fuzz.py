"""Any Unicode string gets an answer or a clear ValueError: never a crash, never a hang."""

from __future__ import annotations

import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import edge_runtime

SPECIALS = {"<pad>", "<unk>", "<bos>", "<eos>"}

# Every code point, control characters included; hypothesis never draws
# surrogates as characters, so lone surrogates are added by code point.
any_char = st.one_of(
    st.characters(min_codepoint=0, max_codepoint=0x10FFFF, exclude_categories=()),
    st.integers(0xD800, 0xDFFF).map(chr),
)
any_text = st.text(any_char, max_size=200)
# Text that looks like tweets, so the fuzzing reaches words and partial words, not only noise.
tweetish = st.lists(
    st.sampled_from(
        [
            "see",
            "you",
            "tomo",
            "I",
            "LOVE",
            "don’t",
            "@bob",
            "http://x.co",
            "&amp;",
            "😀",
            "مرحبا",
            "שלום",
            "\u202e",
            "\x00",
            "\ud800",
            " ",
            "\n",
            "\t",
            ",",
            "'",
            "&#39;",
            "_",
        ]
    ),  # fmt: skip
    max_size=40,
).map("".join)


@pytest.fixture(scope="module")
def model(tiny_bundle):
    return edge_runtime.load(tiny_bundle)


def _check_answer(model, text):
    suggestions = model.suggest(text, k=5)
    assert len(suggestions) <= 5
    assert all(s.word in model.vocab.index and s.word not in SPECIALS for s in suggestions)
    typed = model.typed(text)
    assert all(s.word.startswith(typed.partial) for s in suggestions)
    words = model.complete(text, n_words=3, beam_width=2)
    assert len(words) <= 3 and not set(words) & SPECIALS


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(text=st.one_of(any_text, tweetish))
def test_any_text_gets_an_answer(model, text):
    _check_answer(model, text)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(chunks=st.lists(st.one_of(any_text, tweetish), max_size=8), backspaces=st.integers(0, 3))
def test_any_keystrokes_keep_a_session_consistent(model, chunks, backspaces):
    session = model.session()
    for chunk in chunks:
        session.type(chunk)
    # Typed in pieces or at once, the text is the same to the model.
    assert session.suggest(4) == model.suggest("".join(chunks), k=4)
    for _ in range(backspaces):
        session.backspace()
    assert all(s.word not in SPECIALS for s in session.suggest(3))
    session.complete(2)


@pytest.mark.parametrize(
    "text",
    [
        "",
        "   \t\n ",
        "😀😀😀 🙈",
        "مرحبا بالعالم",
        "שלום עולם see",
        "\x00\x01\x1b[31m\x7f see you",
        "\ud800\udfff lone \udc00 surrogates \ud83d",
        "\u202eevil\u202c rtl override",
        "e\u0301 combining",
        "ǅ ß İ ﬁ",
    ],
)
def test_hard_inputs(model, text):
    _check_answer(model, text)
    session = model.session()
    session.type(text)
    session.suggest(3)


@pytest.mark.parametrize("text", ["see you tomorrow " * 6_000, "x" * 100_000, "😀," * 50_000, "a " * 50_000])
def test_a_100000_character_text_answers_quickly(model, text):
    assert len(text) >= 100_000
    start = time.perf_counter()
    _check_answer(model, text)
    session = model.session()
    session.type(text)
    session.suggest(3)
    assert time.perf_counter() - start < 10.0  # generous for a loaded CI machine; about 0.1 s unloaded
