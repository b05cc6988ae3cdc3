"""What the user has typed, as the model sees it: finished words and the word in progress.

"see you tomor" is the finished words ["see", "you"] and the partial word
"tomor"; "see you " and "see you," have no partial word. Deciding this after
normalisation matters: "@bo" is a mention being typed (no word at all), and
"http://x.co" is a link, not the word "co".
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class Typed:
    words: list[str]  # finished words, normalised
    partial: str  # the normalised word being typed, or "" when the text ends between words


def split_typed(text: str, normalise: Callable[[str], str]) -> Typed:
    """Split `text` into finished words and the word still being typed.

    The last word is unfinished when one more letter would extend it: the
    text and the text plus "a" then normalise to the same words but for that
    letter. This asks the normaliser itself, so mentions, links, entities and
    apostrophes are decided by the same rules training used.
    """
    words = normalise(text).split()
    if not words or not text or text[-1].isspace():
        return Typed(words, "")
    extended = normalise(text + "a").split()
    if len(extended) == len(words) and extended[-1] == words[-1] + "a":
        return Typed(words[:-1], words[-1])
    return Typed(words, "")


def split_at_last_space(text: str) -> tuple[str, str]:
    """(everything up to and including the last whitespace, the rest).

    Text before the last whitespace is finished: no later keystroke can
    change how it normalises, because mentions, links and HTML entities
    never span whitespace. str.split() finds the tail in C, even in a
    100,000-character text with no spaces.
    """
    if not text or text[-1].isspace():
        return text, ""
    tail = text.split()[-1] if not text.isspace() else ""
    return text[: len(text) - len(tail)], tail
