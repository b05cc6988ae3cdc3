"""Text normalisation shared by training, evaluation and the device.

The device must see user text exactly as training saw the corpus, so the one
definition lives here, at the bottom layer, and is named in the manifest.
The rules are the quality protocol's step 1 (DESIGN.md): HTML entities
unescaped, lower-cased, mentions and links dropped, letters, digits and
apostrophes kept, everything else a space.
"""

from __future__ import annotations

import html
import re

NORMALISATION = "tweet-v1"

_MENTION = re.compile(r"@\w+")
_LINK = re.compile(r"(?:https?://|www\.)\S+")
# \w is letters, digits and underscore in every script; underscore is not a
# letter, so it goes with the punctuation.
_NOT_WORD_CHAR = re.compile(r"[^\w']|_")
# Typographic apostrophes are apostrophes too; folding them keeps "don’t" and
# "don't" one word.
_APOSTROPHES = str.maketrans({"\u2019": "'", "\u02bc": "'"})


def normalise(text: str) -> str:
    """Return `text` as the model sees it: words separated by single spaces.

    >>> normalise("@bob I&#39;m at http://x.co/a SO happy!!")
    "i'm at so happy"
    """
    if not isinstance(text, str):
        raise ValueError(f"text must be a str, got {type(text).__name__}")
    text = html.unescape(text).translate(_APOSTROPHES).lower()
    text = _MENTION.sub(" ", text)
    text = _LINK.sub(" ", text)
    text = _NOT_WORD_CHAR.sub(" ", text)
    return " ".join(text.split())


def words(text: str) -> list[str]:
    """The words of `text` after normalisation."""
    return normalise(text).split()


NORMALISERS = {NORMALISATION: normalise}


def normaliser(name: str):
    """Look up a normaliser by the name a manifest records."""
    try:
        return NORMALISERS[name]
    except KeyError:
        known = ", ".join(sorted(NORMALISERS))
        raise ValueError(
            f"unknown text normalisation {name!r}; this edge_runtime knows {known}: "
            "upgrade edge_runtime or re-export the bundle"
        ) from None
