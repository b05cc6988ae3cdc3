"""ROUGE of one model's completions under several decodings, on one split.

    python -m training.decoding_sweep artifacts/default --file model.int8.tflite --split val --widths 1 2 4 8
    python -m training.decoding_sweep artifacts/default/model.pt --split val --limit 1500 --widths 1 \\
        --mbr 32,1.0,1 32,1.0,8

`--widths` are beam widths (1 is greedy); each `--mbr` is
SAMPLES,TEMPERATURE,BIGRAM_WEIGHT[,ESTIMATOR] of minimum-Bayes-risk decoding
(edge_runtime.mbr; the estimator is "expected", the default, or "counts").
Decoding moves the completions only (next-word accuracy, keystroke savings
and perplexity do not depend on it), so the
sweep scores completions alone, each decoding on the same texts. Choose on
the validation split; the test split then scores that choice once.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict
from pathlib import Path

from edge_runtime.mbr import MBR
from training.errors import UserError


def sweep(model_path: str, data: str, split: str, widths: list[int], model_file: str | None = None,
          mbr: list[MBR] | None = None, limit: int | None = None) -> dict:  # fmt: skip
    """{"n": texts, "widths": {width: scores}, "mbr": [{settings, scores}]} for the model at `model_path`."""
    from training.corpus import read_texts
    from training.evaluate import MIN_WORDS, cases_of, completion_metrics, load_scorer

    if any(w < 1 for w in widths):
        raise UserError(f"--widths must be positive integers, got {widths}")
    if not widths and not mbr:
        raise UserError("nothing to sweep: give --widths, --mbr or both")
    scorer, description = load_scorer(model_path, model_file)
    cases = cases_of([t for t in read_texts([data], split=split) if len(t) >= MIN_WORDS])[:limit]
    if not cases:
        raise UserError(f"no {split} text of {data} has at least {MIN_WORDS} words: nothing to score")
    scores, mbr_scores = {}, []
    for width in widths:
        scores[width], _ = completion_metrics(scorer, cases, width)
        _print(f"beam {width:>3}", scores[width])
    for settings in mbr or []:
        result, _ = completion_metrics(scorer, cases, mbr=settings)
        mbr_scores.append({"settings": asdict(settings), **result})
        _print(
            f"MBR {settings.samples} samples, T {settings.temperature}, bigram weight {settings.bigram_weight}", result
        )
    return {"model": {"path": model_path, **description}, "data": data, "split": split, "n": len(cases),
            "widths": scores, "mbr": mbr_scores}  # fmt: skip


def _print(name: str, scores: dict) -> None:
    print(f"{name}: ROUGE-1 {scores['rouge1']:.4f}  ROUGE-2 {scores['rouge2']:.4f}  ROUGE-L {scores['rougeL']:.4f}",
          file=sys.stderr, flush=True)  # fmt: skip


def parse_mbr(text: str) -> MBR:
    """SAMPLES,TEMPERATURE,BIGRAM_WEIGHT[,ESTIMATOR] as MBR settings."""
    try:
        samples, temperature, weight, *estimator = text.split(",")
        if len(estimator) > 1:
            raise ValueError("too many fields")
        return MBR(int(samples), float(temperature), float(weight), estimator=estimator[0] if estimator else "expected")
    except ValueError as e:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not SAMPLES,TEMPERATURE,BIGRAM_WEIGHT[,ESTIMATOR] ({e})"
        ) from None


def main(argv: list[str] | None = None) -> int:
    from training.corpus import data_root

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("model", help="checkpoint, n-gram folder or bundle")
    parser.add_argument("--file", dest="model_file", help="with a bundle: which model file")
    parser.add_argument("--data", default=str(data_root() / "sentiment140" / "tweets.txt"))
    parser.add_argument("--split", default="val", choices=["train", "val", "test", "all"])
    parser.add_argument("--limit", type=int, help="score only the first N texts of the split")
    parser.add_argument("--widths", type=int, nargs="*", default=[1, 2, 4, 8])
    parser.add_argument(
        "--mbr", type=parse_mbr, nargs="*", default=[], metavar="SAMPLES,TEMPERATURE,BIGRAM_WEIGHT[,ESTIMATOR]"
    )
    parser.add_argument("--out", help="also write the JSON report here")
    args = parser.parse_args(argv)
    if args.limit is not None and args.limit < 1:
        parser.error(f"--limit must be at least 1, got {args.limit}")
    try:
        report = sweep(args.model, args.data, args.split, args.widths, args.model_file, args.mbr, args.limit)
    except (UserError, ValueError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    text = json.dumps(report, indent=2)
    if args.out:
        Path(args.out).write_text(text + "\n", encoding="utf-8")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
