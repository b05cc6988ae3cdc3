"""Beam search over a step function, shared by the runtime and the evaluation.

A step function maps (token id, state) to (log-probabilities of the next
token, next state); it is all the search needs of a model, so an exported
file, a PyTorch checkpoint and the n-gram baseline decode the same way.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

# (log-probabilities, beam width, position) -> [(token, log-probability)], best first.
Expansions = Callable[[np.ndarray, int, int], list[tuple[int, float]]]


def beam_search(step, log_probs: np.ndarray, state, n_words: int, beam_width: int, expansions: Expansions,
                end_id: int) -> list[int]:  # fmt: skip
    """The token ids of the likeliest continuation of up to `n_words` tokens from (log_probs, state).

    `expansions` gives the tokens a hypothesis may continue with; `end_id`
    ends a hypothesis early and is not returned. beam_width 1 is greedy.
    """
    # A hypothesis: (summed log-probability, token ids, next log-probabilities, state).
    alive = [(0.0, [], log_probs, state)]
    finished: list[tuple[float, list[int]]] = []
    for position in range(n_words):
        candidates = []
        for total, tokens, lp, st in alive:
            for token, token_lp in expansions(lp, beam_width, position):
                candidates.append((total + token_lp, tokens, token, st))
        candidates.sort(key=lambda c: c[0], reverse=True)

        alive = []
        last = position == n_words - 1
        for total, tokens, token, st in candidates[:beam_width]:
            if token == end_id:
                finished.append((total, tokens))
            elif last:
                finished.append((total, [*tokens, token]))
            else:
                next_lp, next_st = step(token, st)
                alive.append((total, [*tokens, token], next_lp, next_st))

        # Log-probabilities only fall, so no live beam can overtake the best finished phrase.
        if not alive or (finished and max(f[0] for f in finished) >= alive[0][0]):
            break
    finished.extend((total, tokens) for total, tokens, _, _ in alive)
    if not finished:
        return []
    return max(finished, key=lambda f: f[0])[1]


def top_k(scores: np.ndarray, k: int) -> np.ndarray:
    """Indices of the k largest scores, largest first (equal scores by index)."""
    k = min(k, scores.shape[0])
    if k <= 0:
        return np.empty(0, dtype=np.int64)
    part = np.argpartition(-scores, k - 1)[:k] if k < scores.shape[0] else np.arange(scores.shape[0])
    return part[np.lexsort((part, -scores[part]))]


def banned_expansions(banned: np.ndarray) -> Expansions:
    """Expansions by the best tokens that `banned` (a boolean mask over the vocabulary) leaves."""

    def expansions(log_probs: np.ndarray, width: int, position: int) -> list[tuple[int, float]]:
        scores = np.where(banned, -np.inf, log_probs)
        top = top_k(scores, width)
        return [(int(i), float(log_probs[i])) for i in top if np.isfinite(scores[i])]

    return expansions
