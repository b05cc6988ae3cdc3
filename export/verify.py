"""Verification: run PyTorch and every exported file on the same real texts and compare.

Two measures per file. Agreement, teacher-forced: at each position of the
test texts every model is fed the true previous words, each carrying its own
state from its own outputs as a device would, and its logits are compared
with PyTorch's (largest absolute difference, top-1 agreement, top-3
overlap). Quality: ROUGE-1 of greedy completions under the quality protocol
(DESIGN.md, scored by training.evaluate's own code), on the same texts for
every model.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from edge_runtime.vocab import Vocab
from export.deps import quiet_logs
from export.runners import complete, next_logits

log = logging.getLogger("edgecomplete.export")

CHUNK_TEXTS = 256  # texts compared at a time: bounds memory at CHUNK_TEXTS x length x V floats per model


class VerificationError(Exception):
    """An fp32 file that does not reproduce PyTorch: the graph is wrong, not the input."""

    def __init__(self, message: str, report: dict):
        super().__init__(message)
        self.report = report


@dataclass
class FileCheck:
    path: str
    format: str
    quantization: str
    size_bytes: int
    positions: int
    max_logit_diff: float
    top1_agreement: float
    top3_overlap: float  # mean share of PyTorch's top 3 that the file also ranks in its top 3
    rouge1: float | None
    rouge1_delta: float | None  # this file's ROUGE-1 minus PyTorch's, same texts
    ok: bool
    criterion: str  # what `ok` was judged by


class _Agreement:
    """Running agreement statistics of one file against the reference."""

    def __init__(self):
        self.positions = 0
        self.max_diff = 0.0
        self.top1 = 0
        self.top3 = 0.0

    def add(self, reference: np.ndarray, logits: np.ndarray) -> None:
        # reference, logits: [n, V]
        self.positions += len(reference)
        self.max_diff = max(self.max_diff, float(np.abs(reference - logits).max()))
        self.top1 += int((reference.argmax(-1) == logits.argmax(-1)).sum())
        ref3 = np.argpartition(-reference, 3, axis=-1)[:, :3]
        got3 = np.argpartition(-logits, 3, axis=-1)[:, :3]
        self.top3 += sum(len(set(a) & set(b)) / 3 for a, b in zip(ref3.tolist(), got3.tolist()))


def agreement_texts(sequences: list[list[int]], positions: int) -> list[list[int]]:
    """The first sequences that together hold at least `positions` positions (all of them if fewer)."""
    chosen, total = [], 0
    for sequence in sequences:
        if total >= positions:
            break
        chosen.append(sequence)
        total += len(sequence)
    return chosen


def agreement(reference, runners: dict[str, object], sequences: list[list[int]]) -> dict[str, _Agreement]:
    """Teacher-forced comparison of each runner's logits with the reference's."""
    stats = {name: _Agreement() for name in runners}
    for start in range(0, len(sequences), CHUNK_TEXTS):
        chunk = sequences[start : start + CHUNK_TEXTS]
        expected = next_logits(reference, chunk)
        for name, runner in runners.items():
            for ref, got in zip(expected, next_logits(runner, chunk)):
                stats[name].add(ref, got)
    return stats


class _RunnerScorer:
    """training.scorers' Scorer face on a runner, so the quality protocol's own code scores it."""

    def __init__(self, runner, vocab: Vocab):
        from training.scorers import banned_mask

        self.runner = runner
        self.vocab = vocab
        self.banned = banned_mask(vocab)

    def complete(self, prefixes, n_words, beam_width=1, mbr=None):
        # Verification compares each file with PyTorch on the protocol's default decoding.
        if beam_width != 1 or mbr is not None:
            raise ValueError("export verification scores greedy completions only")
        return complete(self.runner, prefixes, n_words, self.banned)


def rouge1(runner, vocab: Vocab, cases) -> float | None:
    """Mean ROUGE-1 F1 of greedy completions of `cases` (training.evaluate's protocol)."""
    from training.evaluate import completion_metrics

    if not cases:
        return None
    with quiet_logs():  # rouge-score logs a line per scorer it builds
        scores, _ = completion_metrics(_RunnerScorer(runner, vocab), cases)
    return scores["rouge1"]


def check_file(
    entry: dict, stats: _Agreement, file_rouge1: float | None, reference_rouge1: float | None, config
) -> FileCheck:
    """Judge one file: fp32 by its largest logit difference, int8 by its top-1 agreement."""
    top1 = stats.top1 / max(stats.positions, 1)
    if entry["quantization"] == "fp32":
        ok = stats.max_diff <= config.fp32_tolerance
        criterion = f"max_logit_diff <= {config.fp32_tolerance:g}"
    else:
        ok = top1 >= config.int8_min_top1
        criterion = f"top1_agreement >= {config.int8_min_top1:g}"
    delta = None if file_rouge1 is None or reference_rouge1 is None else file_rouge1 - reference_rouge1
    return FileCheck(
        path=entry["path"],
        format=entry["format"],
        quantization=entry["quantization"],
        size_bytes=entry["size_bytes"],
        positions=stats.positions,
        max_logit_diff=stats.max_diff,
        top1_agreement=top1,
        top3_overlap=stats.top3 / max(stats.positions, 1),
        rouge1=file_rouge1,
        rouge1_delta=delta,
        ok=ok,
        criterion=criterion,
    )


def verify(model, vocab: Vocab, folder: Path, entries: list[dict], texts: list[list[str]], config) -> dict:
    """Compare every model file in `entries` (manifest file records) with the PyTorch model.

    Returns the verify.json report; raises nothing, the caller decides.
    """
    from export.runners import TorchRunner, runner_for
    from export.step_graph import weights_of

    state_names = weights_of(model).state_names
    reference = TorchRunner(model)
    runners = {e["path"]: runner_for(folder / e["path"], state_names) for e in entries}

    sequences = agreement_texts([[vocab.bos_id, *vocab.encode(t)] for t in texts], config.verify_positions)
    log.info(
        "verify: %d positions of %d test texts, every file against PyTorch", sum(map(len, sequences)), len(sequences)
    )
    stats = agreement(reference, runners, sequences)

    from training.evaluate import cases_of

    cases = cases_of(texts)[: config.rouge_texts]
    log.info("verify: ROUGE-1 of greedy completions of %d test texts", len(cases))
    reference_rouge1 = rouge1(reference, vocab, cases)
    checks = [
        check_file(e, stats[e["path"]], rouge1(runners[e["path"]], vocab, cases), reference_rouge1, config)
        for e in entries
    ]
    return {
        "positions": stats[entries[0]["path"]].positions if entries else 0,
        "texts": len(sequences),
        "rouge_texts": len(cases),
        "pytorch": {"rouge1": reference_rouge1},
        "files": [asdict(c) for c in checks],
        "ok": all(c.ok for c in checks),
    }


def fp32_failures(report: dict) -> list[dict]:
    return [f for f in report["files"] if f["quantization"] == "fp32" and not f["ok"]]


def format_table(report: dict) -> str:
    """A short fixed-width table of the report, one line per file."""
    lines = [
        f"{'file':<22} {'quant':<13} {'size':>10} {'max|dlogit|':>11} "
        f"{'top1':>7} {'top3':>7} {'rouge1':>7} {'drouge1':>8}"
    ]
    reference = report["pytorch"]["rouge1"]
    lines.append(f"{'pytorch':<22} {'fp32':<13} {'':>10} {'':>11} {'':>7} {'':>7} {_num(reference, 4):>7} {'':>8}")
    for f in report["files"]:
        lines.append(
            f"{f['path']:<22} {f['quantization']:<13} {f['size_bytes']:>10,} {f['max_logit_diff']:>11.2e} "
            f"{f['top1_agreement']:>7.2%} {f['top3_overlap']:>7.2%} {_num(f['rouge1'], 4):>7} "
            f"{_num(f['rouge1_delta'], 4, signed=True):>8}  {_verdict(f)}"
        )
    lines.append(
        f"{report['positions']:,} positions of {report['texts']:,} test texts; "
        f"ROUGE-1 on {report['rouge_texts']:,} texts"
    )
    return "\n".join(lines)


def _verdict(check: dict) -> str:
    if check["ok"]:
        return "ok"
    # Only an fp32 mismatch fails the export; a weak int8 file is flagged and kept.
    return ("FAIL: " if check["quantization"] == "fp32" else "LOW: ") + f"needs {check['criterion']}"


def _num(value: float | None, digits: int, signed: bool = False) -> str:
    if value is None:
        return "-"
    return f"{value:+.{digits}f}" if signed else f"{value:.{digits}f}"
