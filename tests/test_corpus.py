import pytest

from edge_runtime.text import normalise
from edge_runtime.vocab import SPECIALS
from training.corpus import build_vocab, oov_rate, read_texts, split_of, split_texts
from training.errors import UserError


def test_split_is_deterministic_and_keeps_near_duplicates_together():
    variants = ["I love it!!", "@bob i LOVE it", "i love it http://t.co/x", "I love it."]
    assert len({normalise(v) for v in variants}) == 1
    assert len({split_of(normalise(v)) for v in variants}) == 1
    assert split_of("some text") == split_of("some text")


def test_split_shares_are_roughly_85_5_10(tweets_file):
    counts = split_texts([tweets_file]).counts()
    total = sum(counts.values())
    assert 0.80 < counts["train"] / total < 0.90
    assert 0.07 < counts["test"] / total < 0.13


def test_no_normalised_text_straddles_splits(tweets_file, tmp_path):
    # Add near-duplicates of real tweets so the check has something to catch.
    lines = tweets_file.read_text(encoding="utf-8").splitlines()[:500]
    noisy = [f"@someone {line.upper()} http://t.co/abc !!" for line in lines]
    path = tmp_path / "dupes.txt"
    path.write_text("\n".join(lines + noisy) + "\n", encoding="utf-8")
    splits = split_texts([path])
    seen = {name: {" ".join(t) for t in getattr(splits, name)} for name in ("train", "val", "test")}
    assert not seen["train"] & seen["val"]
    assert not seen["train"] & seen["test"]
    assert not seen["val"] & seen["test"]


def test_reads_text_files_csv_and_folders(tmp_path):
    (tmp_path / "a.txt").write_text("one two\n\nthree four\n", encoding="utf-8")
    sub = tmp_path / "sub"
    sub.mkdir()
    row = '"0","1","Mon Apr 06","NO_QUERY","user","caf\xe9 time &amp; fun"\n'
    (sub / "b.csv").write_bytes(row.encode("latin-1"))
    texts = read_texts([tmp_path])
    assert texts == [["one", "two"], ["three", "four"], ["café", "time", "fun"]]


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("missing.txt", None, "data file not found"),
        ("empty.txt", b"", "the data is empty"),
        ("latin.txt", "caf\xe9\n".encode("latin-1"), "is not UTF-8"),
        ("bad.csv", b'"a","b","c"\n', "has 3 columns; a Sentiment140 CSV has 6"),
    ],
)
def test_bad_data_is_a_user_error(tmp_path, name, content, message):
    path = tmp_path / name
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(UserError, match=message):
        read_texts([path])


def test_vocab_is_built_from_frequencies_with_specials_first():
    texts = [["b", "a", "b"], ["c", "b", "a"], ["d"]]
    vocab = build_vocab(texts, max_size=6, min_count=1)
    assert vocab.tokens == [*SPECIALS, "b", "a"]
    assert vocab.encode(["a", "zzz"]) == [5, vocab.unk_id]
    assert oov_rate([["a", "c"]], vocab) == 0.5
    assert list(vocab.words_with_prefix("b")) == [4]


def test_vocab_smaller_than_specials_is_refused():
    with pytest.raises(UserError, match="vocab size 3 leaves no room"):
        build_vocab([["a"]], max_size=3)
