"""Language models behind one interface, so one protocol scores them all.

A scorer gives, for a batch of token-id sequences (each starting with
<bos>), the next-token log-probabilities after every position, and
completions of prefixes, greedy or by beam search. The PyTorch checkpoint,
the n-gram baseline and an exported bundle (through edge_runtime) each have
one.
"""

from __future__ import annotations

from typing import Protocol

import numpy as np

from edge_runtime.mbr import MBR
from edge_runtime.vocab import Vocab


class Scorer(Protocol):
    vocab: Vocab

    def next_log_probs(self, sequences: list[list[int]]) -> list[np.ndarray]:
        """For each sequence of n ids, log-probabilities [n, V] of the next token."""
        ...

    def complete(self, prefixes: list[list[int]], n_words: list[int], beam_width: int = 1,
                 mbr: MBR | None = None) -> list[list[int]]:  # fmt: skip
        """Completion of each prefix (starting with <bos>) by exactly n words.

        beam_width 1 is greedy; with `mbr`, minimum-Bayes-risk decoding (edge_runtime.mbr).
        """
        ...


def banned_mask(vocab: Vocab) -> np.ndarray:
    """True for the ids a completion must never produce.

    <unk> never counts as a match and <eos> would end the text early; the
    protocol asks for exactly m words, so both are banned with <pad> and <bos>.
    """
    mask = np.zeros(len(vocab), dtype=bool)
    mask[vocab.special_ids] = True
    return mask


def beam_complete(start, step, prefixes, n_words, beam_width: int, banned: np.ndarray) -> list[list[int]]:
    """Each prefix completed by exactly its n words, by beam search (edge_runtime.search).

    start(prefix) -> (log_probs, state) after the prefix; step(token, state)
    -> (log_probs, state). The banned tokens, <eos> among them, are never
    generated, so every hypothesis runs to n words.
    """
    from edge_runtime.search import banned_expansions, beam_search

    expansions = banned_expansions(banned)
    results = []
    for prefix, n in zip(prefixes, n_words):
        log_probs, state = start(prefix)
        results.append(beam_search(step, log_probs, state, n, beam_width, expansions, end_id=-1))
    return results


def mbr_complete(start, step, prefixes, n_words, settings: MBR, banned: np.ndarray) -> list[list[int]]:
    """Each prefix completed by exactly its n words, by minimum-Bayes-risk decoding (edge_runtime.mbr)."""
    from edge_runtime.mbr import mbr_search

    def restrict(log_probs: np.ndarray, position: int) -> np.ndarray:
        return np.where(banned, -np.inf, log_probs)

    results = []
    for prefix, n in zip(prefixes, n_words):
        log_probs, state = start(prefix)
        results.append(mbr_search(step, log_probs, state, n, settings, restrict, end_id=-1))
    return results


class TorchScorer:
    """A checkpoint's model (training.models.build_model), batched: the fastest way to score it on a CPU."""

    def __init__(self, model, vocab: Vocab, batch_size: int = 256):
        self.model = model.eval()
        self.vocab = vocab
        self.batch_size = batch_size
        self.banned = banned_mask(vocab)

    def next_log_probs(self, sequences):
        import torch

        results: list[np.ndarray] = [None] * len(sequences)  # type: ignore[list-item]
        for batch in length_sorted_batches(sequences, self.batch_size):
            width = max(len(sequences[i]) for i in batch)
            ids = torch.full((len(batch), width), self.vocab.pad_id, dtype=torch.long)
            for row, i in enumerate(batch):
                ids[row, : len(sequences[i])] = torch.tensor(sequences[i])
            with torch.no_grad():
                log_probs = torch.log_softmax(self.model(ids)[0].float(), dim=-1).numpy()
            for row, i in enumerate(batch):
                results[i] = log_probs[row, : len(sequences[i])]
        return results

    def complete(self, prefixes, n_words, beam_width=1, mbr=None):
        import torch

        if mbr is not None:
            return mbr_complete(*self._step_functions(), prefixes, n_words, mbr, self.banned)
        if beam_width > 1:
            return beam_complete(*self._step_functions(), prefixes, n_words, beam_width, self.banned)
        results: list[list[int]] = [None] * len(prefixes)  # type: ignore[list-item]
        banned = torch.from_numpy(self.banned)
        for batch in length_sorted_batches(prefixes, self.batch_size):
            # Sorted by length, a batch holds prefixes of one length mostly;
            # run each length group on its own so no padding enters the state.
            for length_group in group_by_length(batch, prefixes):
                ids = torch.tensor([prefixes[i] for i in length_group])
                steps = max(n_words[i] for i in length_group)
                with torch.no_grad():
                    hidden, state = self.model.hidden(ids)
                    generated = []
                    for _ in range(steps):
                        logits = self.model.logits(hidden[:, -1]).float().masked_fill(banned, -torch.inf)
                        next_ids = logits.argmax(dim=-1)
                        generated.append(next_ids)
                        hidden, state = self.model.hidden(next_ids[:, None], state)
                tokens = torch.stack(generated, dim=1).tolist()
                for row, i in enumerate(length_group):
                    results[i] = tokens[row][: n_words[i]]
        return results

    def _step_functions(self):
        """start(prefix) and step(token, state) on one text at a time, for beam search and MBR.

        Stepped one by one, a test split takes minutes where greedy's batches take seconds.
        """
        import torch

        def scored(hidden, state):
            return torch.log_softmax(self.model.logits(hidden[0, -1]).float(), dim=-1).numpy(), state

        def start(prefix):
            with torch.no_grad():
                return scored(*self.model.hidden(torch.tensor([prefix])))

        def step(token, state):
            with torch.no_grad():
                return scored(*self.model.hidden(torch.tensor([[token]]), state))

        return start, step


class StepScorer:
    """Any model with edge_runtime's step API: initial_state() and step(id, state)."""

    def __init__(self, model):
        self.model = model
        self.vocab = model.vocab
        self.banned = banned_mask(self.vocab)

    def next_log_probs(self, sequences):
        results = []
        for seq in sequences:
            state = self.model.initial_state()
            rows = []
            for token in seq:
                log_probs, state = self.model.step(token, state)
                rows.append(log_probs)
            results.append(np.stack(rows))
        return results

    def complete(self, prefixes, n_words, beam_width=1, mbr=None):
        if mbr is not None:
            return mbr_complete(self._after, self.model.step, prefixes, n_words, mbr, self.banned)
        if beam_width > 1:
            return beam_complete(self._after, self.model.step, prefixes, n_words, beam_width, self.banned)
        results = []
        for prefix, n in zip(prefixes, n_words):
            log_probs, state = self._after(prefix)
            out = []
            for _ in range(n):
                token = int(np.argmax(np.where(self.banned, -np.inf, log_probs)))
                out.append(token)
                log_probs, state = self.model.step(token, state)
            results.append(out)
        return results

    def _after(self, prefix):
        """Log-probabilities and state after stepping through `prefix`."""
        state = self.model.initial_state()
        for token in prefix:
            log_probs, state = self.model.step(token, state)
        return log_probs, state


def length_sorted_batches(sequences, batch_size: int) -> list[list[int]]:
    """Indices of `sequences` in batches of `batch_size`, shortest first: little padding per batch."""
    order = sorted(range(len(sequences)), key=lambda i: len(sequences[i]))
    return [order[i : i + batch_size] for i in range(0, len(order), batch_size)]


def group_by_length(batch, sequences) -> list[list[int]]:
    """The indices of `batch` split by their sequence's length, so no padding enters a recurrent state."""
    groups: dict[int, list[int]] = {}
    for i in batch:
        groups.setdefault(len(sequences[i]), []).append(i)
    return list(groups.values())
