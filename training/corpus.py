"""Corpora: read raw texts, normalise them, split them without leakage.

A source is a text file (one text per line, UTF-8), a Sentiment140 CSV (six
columns, latin-1, the text last) or a folder of such files, read recursively.
"""

from __future__ import annotations

import csv
import hashlib
import io
import os
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from edge_runtime.text import normalise
from edge_runtime.vocab import SPECIALS, Vocab
from training.errors import UserError

SPLITS = ("train", "val", "test")
# Shares of the 100 hash buckets: 85 / 5 / 10. Ten percent of Sentiment140 is
# about 8,900 texts, comfortably over the 5,000 the quality protocol asks for.
TEST_BUCKETS = range(0, 10)
VAL_BUCKETS = range(10, 15)

DATA_ENV = "EDGECOMPLETE_DATA"


def data_root() -> Path:
    """The shared data folder: $EDGECOMPLETE_DATA, else ../shared/data."""
    return Path(os.environ.get(DATA_ENV, "../shared/data"))


def split_of(normalised_text: str) -> str:
    """The split a text belongs to, from a hash of its normalised form.

    Near-duplicates (same text after lower-casing and dropping mentions,
    links and punctuation) normalise to the same string, hash to the same
    bucket and so can never straddle two splits.
    """
    digest = hashlib.blake2b(normalised_text.encode("utf-8"), digest_size=8).digest()
    bucket = int.from_bytes(digest, "big") % 100
    if bucket in TEST_BUCKETS:
        return "test"
    if bucket in VAL_BUCKETS:
        return "val"
    return "train"


def _source_files(path: Path) -> list[Path]:
    if path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix in {".txt", ".csv"})
        if not files:
            raise UserError(f"no .txt or .csv files under {path}: point --data at a corpus")
        return files
    if not path.exists():
        raise UserError(f"data file not found: {path}")
    return [path]


def _read_csv(path: Path) -> Iterator[str]:
    # Sentiment140's CSV is latin-1; every byte decodes, so no text is lost.
    with path.open(encoding="latin-1", newline="") as f:
        for row_number, row in enumerate(csv.reader(f), start=1):
            if len(row) != 6:
                raise UserError(
                    f"{path}: row {row_number} has {len(row)} columns; a Sentiment140 CSV has 6 "
                    "(polarity, id, date, query, user, text)"
                )
            yield row[5]


def _read_lines(path: Path) -> Iterator[str]:
    try:
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as e:
        raise UserError(
            f"{path} is not UTF-8 (byte {e.start}): convert it, or give a Sentiment140 CSV a .csv name"
        ) from None
    yield from io.StringIO(text)


def read_raw(path: str | Path) -> Iterator[str]:
    """Raw texts of one source, in file order."""
    for file in _source_files(Path(path)):
        reader = _read_csv if file.suffix == ".csv" else _read_lines
        yield from (line.rstrip("\r\n") for line in reader(file))


def read_texts(sources: Iterable[str | Path], split: str = "all") -> list[list[str]]:
    """Normalised texts of `sources` as word lists, those of one split or all.

    Empty texts are dropped. Raises UserError if nothing is left.
    """
    if split not in (*SPLITS, "all"):
        raise UserError(f"unknown split {split!r}: use one of train, val, test, all")
    texts = []
    for source in sources:
        for raw in read_raw(source):
            text = normalise(raw)
            if text and (split == "all" or split_of(text) == split):
                texts.append(text.split())
    if not texts:
        names = ", ".join(str(s) for s in sources)
        raise UserError(f"no texts in {names} (split {split}): the data is empty")
    return texts


@dataclass
class Splits:
    train: list[list[str]]
    val: list[list[str]]
    test: list[list[str]]

    def counts(self) -> dict[str, int]:
        return {name: len(getattr(self, name)) for name in SPLITS}


def split_texts(sources: Iterable[str | Path]) -> Splits:
    """Read every source once and deal its texts into the three splits."""
    by_split: dict[str, list[list[str]]] = {name: [] for name in SPLITS}
    for text in read_texts(sources):
        by_split[split_of(" ".join(text))].append(text)
    return Splits(**by_split)


def build_vocab(texts: Iterable[list[str]], max_size: int, min_count: int = 1) -> Vocab:
    """The `max_size` most frequent words (special tokens included).

    Ties are broken alphabetically so the vocabulary is deterministic.
    """
    if max_size <= len(SPECIALS):
        raise UserError(
            f"vocab size {max_size} leaves no room for words: it must exceed the {len(SPECIALS)} special tokens"
        )
    counts = Counter(w for text in texts for w in text)
    ranked = sorted((w for w, c in counts.items() if c >= min_count), key=lambda w: (-counts[w], w))
    return Vocab([*SPECIALS, *ranked[: max_size - len(SPECIALS)]])


def oov_rate(texts: Iterable[list[str]], vocab: Vocab) -> float:
    """Share of word tokens outside the vocabulary."""
    total = unknown = 0
    for text in texts:
        total += len(text)
        unknown += sum(1 for w in text if w not in vocab.index)
    return unknown / max(total, 1)
