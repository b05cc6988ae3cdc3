import pytest

from edge_runtime.text import normalise, normaliser, words


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("Hello World", "hello world"),
        ("I &quot;love&quot; it &amp; you", "i love it you"),
        ("@switchfoot http://twitpic.com/2y1zl - Awww, that's a bummer.", "awww that's a bummer"),
        ("see www.example.com/x?y=1 now", "see now"),
        ("don’t STOP", "don't stop"),
        ("snake_case and 42nd", "snake case and 42nd"),
        ("Ça va? naïve café", "ça va naïve café"),
        ("   \t\n ", ""),
        ("😀 wow!!! 😀", "wow"),
        ("I&#39;m here", "i'm here"),
    ],
)
def test_normalise(raw, expected):
    assert normalise(raw) == expected


def test_words_splits_on_single_spaces():
    assert words("a  b\tc") == ["a", "b", "c"]


def test_normalise_is_idempotent():
    text = "@bob Check http://x.co it's GREAT &lt;3 ..."
    assert normalise(normalise(text)) == normalise(text)


def test_unknown_normaliser_is_a_clear_error():
    with pytest.raises(ValueError, match="unknown text normalisation 'tweet-v9'"):
        normaliser("tweet-v9")
