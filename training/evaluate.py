"""The quality protocol (DESIGN.md), the same for every model.

1. Texts are normalised (edge_runtime.text) and split into words.
2. Texts of at least 4 words are kept; of n words, the last m = max(1,
   round(n / 4)) are the target and the rest the prefix.
3. The model completes the prefix with exactly m words, greedily unless
   stated (beam search, minimum-Bayes-risk), its state carried through the
   whole prefix.
4. ROUGE-1/2/L F1 (rouge-score, no stemming), averaged, with a bootstrap 95%
   interval. <unk> is never generated, so it never counts as a match.
5. Next-word top-1/top-3 accuracy at every position of every text, keystroke
   savings with top-3 suggestions, and perplexity over words and <eos>.
"""

from __future__ import annotations

import logging
import math
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from edge_runtime.mbr import MBR
from edge_runtime.vocab import Vocab
from training.errors import UserError
from training.scorers import StepScorer

log = logging.getLogger("edgecomplete.eval")

MIN_WORDS = 4
TOP_K = 3
BOOTSTRAP_SAMPLES = 1000


@dataclass
class Case:
    prefix: list[str]
    target: list[str]


def make_case(words: list[str]) -> Case:
    """Prefix and target of one text; `round` halves to even, as the protocol says."""
    m = max(1, round(len(words) / 4))
    return Case(words[:-m], words[-m:])


def cases_of(texts: list[list[str]]) -> list[Case]:
    return [make_case(t) for t in texts if len(t) >= MIN_WORDS]


def bootstrap_interval(values: np.ndarray, seed: int = 0) -> list[float]:
    """95% percentile-bootstrap interval of the mean."""
    rng = np.random.default_rng(seed)
    means = values[rng.integers(0, len(values), size=(BOOTSTRAP_SAMPLES, len(values)))].mean(axis=1)
    return [float(np.percentile(means, 2.5)), float(np.percentile(means, 97.5))]


def rouge_scores(targets: list[list[str]], predictions: list[list[str]]) -> dict:
    from rouge_score import rouge_scorer

    scorer = rouge_scorer.RougeScorer(["rouge1", "rouge2", "rougeL"], use_stemmer=False)
    per_text = {name: [] for name in ("rouge1", "rouge2", "rougeL")}
    for target, prediction in zip(targets, predictions):
        scores = scorer.score(" ".join(target), " ".join(prediction))
        for name in per_text:
            per_text[name].append(scores[name].fmeasure)
    report = {}
    for name, values in per_text.items():
        values = np.array(values)
        report[name] = float(values.mean())
        report[f"{name}_ci95"] = bootstrap_interval(values)
    return report


def ranks(scores: np.ndarray, target_ids: np.ndarray) -> np.ndarray:
    """0-based rank of each target in its row of `scores` [n, V].

    Ties go against the target unless it has the lower id, the order in
    which argmax and a stable sort would show them: a model that scores
    every word alike gets no credit.
    """
    rows = np.arange(len(target_ids))
    own = scores[rows, target_ids][:, None]
    lower_id = np.arange(scores.shape[1])[None, :] < target_ids[:, None]
    return (scores > own).sum(axis=1) + ((scores == own) & lower_id).sum(axis=1)


def keystrokes_saved(word: str, word_id: int, log_probs: np.ndarray, vocab: Vocab) -> int:
    """Characters of `word` not typed when a correct top-3 suggestion is accepted.

    After each typed letter the suggestions are the three most likely
    vocabulary words that start with the letters typed so far; the user
    takes the word as soon as it is among them. Out-of-vocabulary words are
    never suggested, so they save nothing.
    """
    if word_id == vocab.unk_id:
        return 0
    score = log_probs[word_id]
    for typed in range(len(word)):
        candidates = vocab.words_with_prefix(word[:typed])
        better = log_probs[candidates] > score
        tied_ahead = (log_probs[candidates] == score) & (candidates < word_id)
        if int(better.sum() + tied_ahead.sum()) < TOP_K:
            return len(word) - typed
    return 0


def next_word_metrics(scorer, texts: list[list[str]]) -> dict:
    """Top-1/top-3 accuracy, keystroke savings and perplexity."""
    vocab = scorer.vocab
    special = np.array(vocab.special_ids)
    hits1 = hits3 = positions = 0
    saved = typed_chars = 0
    nll, nll_tokens = 0.0, 0
    sequences = [[vocab.bos_id, *vocab.encode(t)] for t in texts]
    for start in range(0, len(texts), 512):
        chunk = sequences[start : start + 512]
        for text, seq, log_probs in zip(texts[start : start + 512], chunk, scorer.next_log_probs(chunk)):
            targets = np.array([*seq[1:], vocab.eos_id])
            nll -= float(log_probs[np.arange(len(targets)), targets].sum())
            nll_tokens += len(targets)

            # Suggestions are words: special tokens are never shown.
            ranked = log_probs[: len(text)].copy()
            ranked[:, special] = -np.inf
            word_ids = targets[: len(text)]
            rank = ranks(ranked, word_ids)
            known = word_ids != vocab.unk_id
            hits1 += int(((rank < 1) & known).sum())
            hits3 += int(((rank < TOP_K) & known).sum())
            positions += len(text)

            for i, word in enumerate(text):
                saved += keystrokes_saved(word, int(word_ids[i]), ranked[i], vocab)
            typed_chars += len(" ".join(text))
    return {
        "top1": hits1 / positions,
        "top3": hits3 / positions,
        "keystroke_savings": saved / max(typed_chars, 1),
        "perplexity": math.exp(nll / nll_tokens),
        "positions": positions,
    }


def completion_metrics(scorer, cases: list[Case], beam_width: int = 1, mbr=None) -> tuple[dict, list[list[str]]]:
    vocab = scorer.vocab
    prefixes = [[vocab.bos_id, *vocab.encode(c.prefix)] for c in cases]
    generated = scorer.complete(prefixes, [len(c.target) for c in cases], beam_width=beam_width, mbr=mbr)
    predictions = [vocab.decode(ids) for ids in generated]
    return rouge_scores([c.target for c in cases], predictions), predictions


def evaluate(scorer, texts: list[list[str]], examples: int = 0, beam_width: int = 1, mbr: MBR | None = None) -> dict:
    """The whole protocol on normalised texts; one flat dict of figures.

    Completions are greedy, beam search over `beam_width` hypotheses, or
    minimum-Bayes-risk decoding with `mbr`: the protocol's "unless stated",
    which the report states as `beam_width` and `mbr`.
    `examples` first texts' prefix, target and completion are added for a
    reader to look at (off by default: they quote the corpus).
    """
    if isinstance(beam_width, bool) or not isinstance(beam_width, int) or beam_width < 1:
        raise UserError(f"--beam-width must be a positive integer, got {beam_width!r}")
    if mbr is not None and beam_width != 1:
        raise UserError("--beam-width and --mbr-samples are two decodings: give one")
    cases = cases_of(texts)
    if not cases:
        raise UserError(f"no text has at least {MIN_WORDS} words: nothing to score")
    kept = [c.prefix + c.target for c in cases]
    log.info("scoring %d texts: completions", len(cases))
    rouge, predictions = completion_metrics(scorer, cases, beam_width, mbr)
    log.info("scoring %d texts: next-word ranking", len(cases))
    report = {"n": len(cases), "beam_width": beam_width, "mbr": asdict(mbr) if mbr else None, **rouge,
              **next_word_metrics(scorer, kept)}  # fmt: skip
    report["examples"] = [
        {"prefix": " ".join(c.prefix), "target": " ".join(c.target), "completion": " ".join(p)}
        for c, p in list(zip(cases, predictions))[:examples]
    ]
    return report


def load_scorer(model_path: str | Path, model_file: str | None = None, backend: str | None = None):
    """A scorer for a checkpoint (file or folder), an n-gram model, or a bundle."""
    from edge_runtime.manifest import is_bundle

    path = Path(model_path)
    if is_bundle(path):
        import edge_runtime

        model = edge_runtime.load(path, model_file=model_file or "model.int8.onnx", backend=backend or "auto")
        return StepScorer(model), {"kind": "bundle", "file": model.model_file, "backend": model.backend_name}
    if model_file or backend:
        raise UserError("--file and --backend apply to a bundle folder only")
    ngram_path = path / "ngram.pkl.gz" if path.is_dir() else path
    if ngram_path.name.endswith(".pkl.gz") and ngram_path.is_file():
        from training.ngram import NgramModel

        model = NgramModel.load(ngram_path)
        return model, {"kind": "ngram", "order": model.config.order, "smoothing": model.config.smoothing}

    from training import checkpoint
    from training.scorers import TorchScorer

    ckpt = checkpoint.load(path)
    config = checkpoint.config_of(ckpt)
    return TorchScorer(checkpoint.model_of(ckpt), checkpoint.vocab_of(ckpt)), {
        "kind": "checkpoint",
        "arch": config.model.arch,
    }


def evaluate_path(
    model_path: str | Path,
    data_path: str | Path,
    split: str = "all",
    limit: int | None = None,
    model_file: str | None = None,
    backend: str | None = None,
    examples: int = 0,
    beam_width: int = 1,
    mbr: MBR | None = None,
) -> dict:
    """Score the model at `model_path` on the texts of `data_path`."""
    from training.corpus import read_texts

    if limit is not None and limit < 1:
        raise UserError(f"--limit must be at least 1, got {limit}")
    scorer, description = load_scorer(model_path, model_file, backend)
    texts = [t for t in read_texts([data_path], split=split) if len(t) >= MIN_WORDS]
    if limit:
        texts = texts[:limit]
    report = evaluate(scorer, texts, examples=examples, beam_width=beam_width, mbr=mbr)
    return {"model": {"path": str(model_path), **description}, "data": str(data_path), "split": split, **report}
