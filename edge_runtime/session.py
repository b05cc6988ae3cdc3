"""An incremental session: the state of what a user has typed, updated per keystroke.

    session = model.session()
    session.type("see you ")        # commits "see", "you": one model step each
    session.type("tomor")           # the word in progress: no model step
    session.suggest(3)              # completions of "tomor"
    session.add_word("tomorrow")    # accept a suggestion: replaces "tomor", one step
    session.complete(3)             # the phrase after "see you tomorrow"
    session.backspace()             # removes "tomorrow", restores the state before it
    session.reset()                 # back to an empty text

Cost: a finished word is one model step, whatever the length of the text
before it, because the state carries the text; nothing is re-run. The text
after the last whitespace stays pending until a whitespace follows it, since
later keystrokes can still change how it normalises ("@bo" -> "@bob" is a
mention, "http" -> "http://x.co" a link); suggest() and complete() feed its
finished words without committing them.

Backspace restores saved states for the last `history` words (one state and
one row of log-probabilities each: about 4 V + 8 L H bytes). Deleting further
back re-feeds the last MAX_CONTEXT_WORDS remaining words from <bos>. A text
pasted in one piece with more than MAX_CONTEXT_WORDS words starts its state
from its last MAX_CONTEXT_WORDS words, as a one-shot Model.suggest does.

A session is not thread-safe; each thread makes its own from a shared Model.
"""

from __future__ import annotations

from collections import deque

from edge_runtime.model import MAX_CONTEXT_WORDS, Model, Suggestion
from edge_runtime.typed import Typed, split_at_last_space

DEFAULT_HISTORY = 64  # backspaces that restore a saved state instead of re-feeding


class Session:
    def __init__(self, model: Model, history: int = DEFAULT_HISTORY):
        if isinstance(history, bool) or not isinstance(history, int) or history < 1:
            raise ValueError(f"history must be a positive integer, got {history!r}")
        self.model = model
        self.history = history
        self.reset()

    def reset(self) -> None:
        """Forget everything typed: back to the state after <bos>."""
        # (log-probabilities of the next token, state) after each committed word.
        self._saved: deque = deque([self.model.start()], maxlen=self.history + 1)
        # Enough words to re-feed once the saved states run out.
        self._words: deque[str] = deque(maxlen=self.history + MAX_CONTEXT_WORDS)
        self._pending = ""

    @property
    def words(self) -> list[str]:
        """The committed words the session remembers (normalised; at most history + MAX_CONTEXT_WORDS)."""
        return list(self._words)

    @property
    def pending(self) -> str:
        """Text typed since the last whitespace, not yet committed, as typed."""
        return self._pending

    @property
    def partial(self) -> str:
        """The normalised word being typed, or "" between words."""
        return self.model.typed(self._pending).partial

    def type(self, text: str) -> None:
        """Append typed characters; every word followed by whitespace is committed."""
        if not isinstance(text, str):
            raise ValueError(f"text must be a str, got {type(text).__name__}")
        finished, self._pending = split_at_last_space(self._pending + text)
        if finished:
            self._commit(self.model.typed(finished).words)

    def add_word(self, word: str) -> None:
        """Accept `word` (e.g. a suggestion): it replaces the word being typed and is committed.

        Finished words still pending ("hello," in "hello,wor") are committed first.
        """
        if not isinstance(word, str):
            raise ValueError(f"word must be a str, got {type(word).__name__}")
        normalised = self.model.normalise(word).split()
        if len(normalised) != 1:
            raise ValueError(f"add_word takes one word, got {word!r} ({len(normalised)} words after normalisation)")
        pending = self.model.typed(self._pending)
        self._pending = ""
        self._commit([*pending.words, normalised[0]])

    def backspace(self) -> str | None:
        """Delete the last word: the pending text if any, else the last committed word.

        Returns what was deleted (None if the session was empty).
        """
        if self._pending:
            deleted, self._pending = self._pending, ""
            return deleted
        if not self._words:
            return None
        deleted = self._words.pop()
        if len(self._saved) > 1:
            self._saved.pop()
        else:
            # Saved states exhausted: rebuild from the words still remembered.
            self._saved = deque([self.model.feed(list(self._words)[-MAX_CONTEXT_WORDS:])], maxlen=self.history + 1)
        return deleted

    def suggest(self, k: int = 3) -> list[Suggestion]:
        """The k likeliest next words, or completions of the word being typed."""
        log_probs, _, typed = self._current()
        return self.model.rank(log_probs, k, prefix=typed.partial)

    def complete(self, n_words: int = 3, beam_width: int = 1, *, stop_at_end: bool = True) -> list[str]:
        """The likeliest next `n_words` words (see Model.complete)."""
        log_probs, state, typed = self._current()
        return self.model.search(log_probs, state, n_words, beam_width, prefix=typed.partial, stop_at_end=stop_at_end)

    def state(self):
        """(log-probabilities of the next token, state) after the committed words."""
        return self._saved[-1]

    def _commit(self, words: list[str]) -> None:
        if len(words) > MAX_CONTEXT_WORDS:
            # A long paste: only its last words shape the state (see the module docstring).
            self._words.clear()
            self._saved = deque([self.model.start()], maxlen=self.history + 1)
            words = words[-MAX_CONTEXT_WORDS:]
        for word in words:
            self._saved.append(self.model.feed([word], start=self._saved[-1]))
            self._words.append(word)

    def _current(self) -> tuple:
        """Log-probabilities and state after committed and pending finished words, and the pending split."""
        typed: Typed = self.model.typed(self._pending)
        if len(typed.words) >= MAX_CONTEXT_WORDS:
            log_probs, state = self.model.feed(typed.words[-MAX_CONTEXT_WORDS:])
        else:
            log_probs, state = self.model.feed(typed.words, start=self._saved[-1])
        return log_probs, state, typed
