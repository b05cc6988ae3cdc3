"""A loaded bundle: step the model, suggest the next or current word, complete a phrase.

    model = edge_runtime.load("artifacts/default")       # model.int8.onnx, backend chosen automatically
    model.suggest("see you tomor", k=3)                  # [Suggestion(word='tomorrow', score=-0.4), ...]
    model.complete("see you", n_words=3, beam_width=4)   # ['tomorrow', 'at', 'the']
    model.complete("see you", n_words=3, mbr=MBR())      # most expected overlap with what follows (edge_runtime.mbr)

The step API, for evaluation and custom decoding:

    state = model.initial_state()                        # zero state, before any token
    log_probs, state = model.step(model.vocab.bos_id, state)   # a text starts with <bos>
    log_probs, state = model.step(model.vocab.index["see"], state)

`log_probs` is float32 [V], a normalised log-softmax over the vocabulary;
`state` maps each state input of the graph (manifest `graph.state`, e.g.
"h" and "c") to a float32 array of its manifest shape with batch 1 ([L, 1, H]
for those); `step` never changes the state it is given, so a state can be
kept and stepped again (backspace, beams).

Scores of suggestions are natural-log probabilities of the word at that
position. A current-word suggestion's score is the probability of the whole
word, not renormalised over the words that share the typed letters, so
scores compare across calls.

Generation never emits <pad>, <unk> or <bos>; <eos> ends a phrase early
(unless `stop_at_end=False`, which bans it too and always gives `n_words`).
Beam search ranks phrases by their summed log-probability, so a phrase that
ends early competes with longer ones as the model scores it. MBR samples
continuations with a generator seeded from its settings, so one text always
gets one completion.

A one-shot call (`suggest`, `complete`) feeds at most the last
MAX_CONTEXT_WORDS words of the text. The recurrent state could carry more,
but a pasted 100,000-character text must answer in milliseconds, and what an
LSTM trained on tweets (about 13 words) keeps of a word hundreds of steps
back is negligible. A Session carries its state without this limit.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edge_runtime import backends
from edge_runtime.manifest import BundleError, Manifest, load_manifest
from edge_runtime.mbr import MBR, mbr_search
from edge_runtime.search import beam_search, top_k
from edge_runtime.text import normaliser
from edge_runtime.typed import Typed, split_typed
from edge_runtime.vocab import BOS, PAD, UNK, Vocab

DEFAULT_MODEL_FILE = "model.int8.onnx"
MAX_CONTEXT_WORDS = 256


@dataclass(frozen=True)
class Suggestion:
    word: str
    score: float  # natural-log probability of `word` at this position


def load(
    bundle_dir: str | Path,
    model_file: str = DEFAULT_MODEL_FILE,
    backend: str = backends.AUTO,
    *,
    threads: int = 1,
) -> Model:
    """Load `model_file` of the bundle in `bundle_dir` with `backend`.

    backend: auto (by the file's format and the interpreters installed),
    onnxruntime, ai-edge-litert or tflite-runtime. threads: intra-op
    threads of the interpreter; one suits a keyboard sharing the CPU.
    The file's sha256 is checked against the manifest before it is loaded.
    """
    manifest = load_manifest(bundle_dir)
    entry = manifest.file(model_file)
    name = backends.choose(entry.format, backend)
    path = manifest.verify_file(entry)
    vocab = _load_vocab(manifest)
    normalise = _normaliser_of(manifest)
    runner = backends.open_backend(name, path, manifest, threads=threads)
    return Model(manifest, vocab, runner, model_file, normalise)


def _load_vocab(manifest: Manifest) -> Vocab:
    tokenizer = manifest.tokenizer
    path = manifest.folder / tokenizer.get("vocab_file", "vocab.json")
    if not path.is_file():
        raise BundleError(f"vocabulary file {path} is missing: re-export the bundle")
    try:
        vocab = Vocab.load(path)
    except ValueError as e:
        raise BundleError(f"{e}: re-export the bundle") from None
    if tokenizer.get("vocab_size") != len(vocab):
        raise BundleError(
            f"{path} has {len(vocab)} tokens but its manifest says vocab_size {tokenizer.get('vocab_size')}: "
            "re-export the bundle"
        )
    expected = {"pad": vocab.pad_id, "unk": vocab.unk_id, "bos": vocab.bos_id, "eos": vocab.eos_id}
    if tokenizer.get("special_tokens", expected) != expected:
        raise BundleError(
            f"{manifest.folder} manifest special_tokens {tokenizer.get('special_tokens')} differ from "
            f"this edge_runtime's {expected}: upgrade edge_runtime"
        )
    return vocab


def _normaliser_of(manifest: Manifest):
    name = manifest.tokenizer.get("normalisation")
    try:
        return normaliser(name)
    except ValueError as e:
        raise BundleError(f"{manifest.folder}: {e}") from None


class Model:
    """One model file of a bundle, loaded into one interpreter.

    Share one Model between threads; give each thread its own Session.
    """

    def __init__(self, manifest: Manifest, vocab: Vocab, backend, model_file: str, normalise):
        self.manifest = manifest
        self.vocab = vocab
        self.model_file = model_file
        self.backend_name: str = backend.name
        self.backend_version: str = backend.version
        self.normalise = normalise
        self._backend = backend
        self._state_shapes = _state_shapes(manifest)

        # Never suggested or generated; <eos> is allowed only to end a phrase.
        self._never = np.array([vocab.index[t] for t in (PAD, UNK, BOS)], dtype=np.int64)
        self._not_words = np.array(vocab.special_ids, dtype=np.int64)

        # The state after <bos>, where every text starts; one step at load
        # also checks the graph's shapes against the vocabulary.
        self._start = self._checked_start()

    def __repr__(self) -> str:
        return (
            f"Model({self.manifest.folder}/{self.model_file}, {self.backend_name} {self.backend_version}, "
            f"{len(self.vocab)} words)"
        )

    # -- the step API --------------------------------------------------

    def initial_state(self) -> dict[str, np.ndarray]:
        """The zero state, before any token (batch 1); feed <bos> first to start a text."""
        return {name: np.zeros(shape, dtype=np.float32) for name, shape in self._state_shapes.items()}

    def step(self, token_id: int, state: dict[str, np.ndarray]) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """Feed one token: log-probabilities [V] of the next token, and the next state."""
        scores, next_state = self._run(token_id, state)
        return _log_softmax(scores), next_state

    def start(self) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """(log-probabilities, state) after <bos>: the start of every text."""
        return self._start

    def feed(self, words: list[str], start=None) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """Feed `words` (normalised) from `start` (default: after <bos>); out-of-vocabulary words go in as <unk>."""
        log_probs, state = start if start is not None else self._start
        if not words:
            return log_probs, state
        # Only the last step's scores are wanted: the softmax of the others would be wasted.
        for token_id in self.vocab.encode(words):
            scores, state = self._run(token_id, state)
        return _log_softmax(scores), state

    def _run(self, token_id: int, state: dict[str, np.ndarray]) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """Raw scores [V] (logits or log-probabilities, as the graph gives them) and the next state."""
        if not 0 <= token_id < len(self.vocab):
            raise ValueError(f"token id {token_id} is outside the vocabulary (0..{len(self.vocab) - 1})")
        scores, next_state = self._backend.run(np.array([token_id], dtype=np.int32), state)
        return scores[0], next_state

    # -- text in, words out --------------------------------------------

    def typed(self, text: str) -> Typed:
        """`text` as finished words and the word being typed, normalised as in training."""
        if not isinstance(text, str):
            raise ValueError(f"text must be a str, got {type(text).__name__}")
        return split_typed(text, self.normalise)

    def suggest(self, text: str, k: int = 3) -> list[Suggestion]:
        """The k likeliest words after `text`; if `text` ends mid-word, the likeliest completions of that word.

        A partial word that no vocabulary word starts with gets no suggestions ([]).
        """
        typed = self.typed(text)
        log_probs, _ = self.feed(typed.words[-MAX_CONTEXT_WORDS:])
        return self.rank(log_probs, k, prefix=typed.partial)

    def complete(
        self,
        text: str,
        n_words: int = 3,
        beam_width: int = 1,
        *,
        stop_at_end: bool = True,
        mbr: MBR | None = None,
    ) -> list[str]:
        """The likeliest next `n_words` words after `text` (fewer if the text ends first).

        beam_width 1 is greedy. With `mbr` (edge_runtime.MBR), the phrase with
        the highest expected word overlap with what follows, from sampled
        continuations: better ROUGE, samples x n_words steps at most. If
        `text` ends mid-word the first word completes it (the whole word is
        returned, "tomor" -> "tomorrow").
        """
        typed = self.typed(text)
        log_probs, state = self.feed(typed.words[-MAX_CONTEXT_WORDS:])
        return self.search(log_probs, state, n_words, beam_width, prefix=typed.partial, stop_at_end=stop_at_end,
                           mbr=mbr)  # fmt: skip

    def session(self, history: int | None = None):
        """A new incremental Session on this model (see edge_runtime.session)."""
        from edge_runtime.session import DEFAULT_HISTORY, Session

        return Session(self, history=DEFAULT_HISTORY if history is None else history)

    # -- ranking and search over log-probabilities -------------------------

    def rank(self, log_probs: np.ndarray, k: int, prefix: str = "") -> list[Suggestion]:
        """Top-k words of `log_probs`, best first; with `prefix`, only words that start with it."""
        _check_positive("k", k)
        candidates = self._candidates(prefix)
        if candidates is None:
            scores = log_probs.copy()
            scores[self._not_words] = -np.inf
            ids = top_k(scores, min(k, len(self.vocab) - len(self._not_words)))
        else:
            ids = candidates[top_k(log_probs[candidates], min(k, len(candidates)))]
        return [Suggestion(self.vocab.tokens[i], float(log_probs[i])) for i in ids]

    def search(
        self,
        log_probs: np.ndarray,
        state: dict[str, np.ndarray],
        n_words: int,
        beam_width: int = 1,
        *,
        prefix: str = "",
        stop_at_end: bool = True,
        mbr: MBR | None = None,
    ) -> list[str]:
        """Up to `n_words` words from (log_probs, state): beam search (beam_width 1 is greedy) or `mbr`."""
        _check_non_negative("n_words", n_words)
        _check_positive("beam_width", beam_width)
        if mbr is not None and beam_width != 1:
            raise ValueError("beam_width and mbr are two decodings: give one")
        first = self._candidates(prefix)
        if first is not None and len(first) == 0:
            return []

        if mbr is not None:

            def restrict(lp: np.ndarray, position: int) -> np.ndarray:
                return self._restricted(lp, first if position == 0 else None, stop_at_end)

            return self.vocab.decode(mbr_search(self.step, log_probs, state, n_words, mbr, restrict, self.vocab.eos_id))

        def expansions(lp: np.ndarray, width: int, position: int) -> list[tuple[int, float]]:
            return self._expansions(lp, width, first if position == 0 else None, stop_at_end)

        best = beam_search(self.step, log_probs, state, n_words, beam_width, expansions, self.vocab.eos_id)
        return self.vocab.decode(best)

    def _expansions(self, log_probs: np.ndarray, width: int, allowed, stop_at_end: bool) -> list[tuple[int, float]]:
        if allowed is not None:
            # Completing the typed word: a word, never <eos>.
            top = allowed[top_k(log_probs[allowed], min(width, len(allowed)))]
        else:
            scores = self._restricted(log_probs, None, stop_at_end)
            top = top_k(scores, width)
            # With a beam wider than the words left, the banned tokens' -inf would fill it.
            top = top[np.isfinite(scores[top])]
        return [(int(i), float(log_probs[i])) for i in top]

    def _restricted(self, log_probs: np.ndarray, allowed, stop_at_end: bool) -> np.ndarray:
        """`log_probs` with -inf for what may not be generated: outside `allowed` if given, else the banned tokens."""
        if allowed is not None:
            scores = np.full_like(log_probs, -np.inf)
            scores[allowed] = log_probs[allowed]
            return scores
        scores = log_probs.copy()
        scores[self._never] = -np.inf
        if not stop_at_end:
            scores[self.vocab.eos_id] = -np.inf
        return scores

    def _candidates(self, prefix: str) -> np.ndarray | None:
        """Ids of the words that start with `prefix`, or None for no prefix (every word)."""
        if not prefix:
            return None
        return self.vocab.words_with_prefix(prefix)

    def _checked_start(self):
        log_probs, state = self.step(self.vocab.bos_id, self.initial_state())
        path = self.manifest.folder / self.model_file
        if log_probs.shape != (len(self.vocab),):
            raise BundleError(
                f"{path} scores {log_probs.shape[0]} tokens but its vocabulary has {len(self.vocab)}: "
                "re-export the bundle"
            )
        for name, shape in self._state_shapes.items():
            if state[name].shape != shape:
                raise BundleError(f"{path} returns state {name!r} of shape {state[name].shape}, expected {shape}")
        return log_probs, state


def _state_shapes(manifest: Manifest) -> dict[str, tuple[int, ...]]:
    """Shape of each state input with batch 1: [L, "batch", H] in the manifest becomes (L, 1, H), and so on."""
    declared = {i["name"]: i["shape"] for i in manifest.graph.get("inputs", [])}
    shapes = {}
    for name, _ in manifest.state_pairs:
        if name not in declared:
            raise BundleError(f"{manifest.folder} manifest lists state {name!r} but no graph input of that name")
        shapes[name] = tuple(1 if isinstance(d, str) or d is None or d < 0 else int(d) for d in declared[name])
    return shapes


def _log_softmax(scores: np.ndarray) -> np.ndarray:
    # Applied to log-probability outputs too: it leaves normalised ones as
    # they are and renormalises what int8 rounding has moved.
    scores = scores.astype(np.float32, copy=False)
    shifted = scores - scores.max()
    return shifted - np.log(np.exp(shifted).sum(dtype=np.float32))


def _check_positive(name: str, value) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")


def _check_non_negative(name: str, value) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 0:
        raise ValueError(f"{name} must be a non-negative integer, got {value!r}")
