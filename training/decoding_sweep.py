"""ROUGE of one model's completions at several beam widths, on one split.

    python -m training.decoding_sweep artifacts/default --file model.int8.tflite --split val --widths 1 2 4 8

Decoding moves the completions only (next-word accuracy, keystroke savings
and perplexity do not depend on it), so the sweep scores completions alone,
each width on the same texts. Choose a width on the validation split; the
test split then scores that choice once.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from training.errors import UserError


def sweep(model_path: str, data: str, split: str, widths: list[int], model_file: str | None = None) -> dict:
    """{"n": texts, "widths": {width: {rouge1, rouge2, rougeL, ...}}} for the model at `model_path`."""
    from training.corpus import read_texts
    from training.evaluate import MIN_WORDS, cases_of, completion_metrics, load_scorer

    if not widths or any(w < 1 for w in widths):
        raise UserError(f"--widths must be positive integers, got {widths}")
    scorer, description = load_scorer(model_path, model_file)
    cases = cases_of([t for t in read_texts([data], split=split) if len(t) >= MIN_WORDS])
    if not cases:
        raise UserError(f"no {split} text of {data} has at least {MIN_WORDS} words: nothing to score")
    scores = {}
    for width in widths:
        scores[width], _ = completion_metrics(scorer, cases, width)
        print(f"beam {width:>3}: ROUGE-1 {scores[width]['rouge1']:.4f}  ROUGE-2 {scores[width]['rouge2']:.4f}  "
              f"ROUGE-L {scores[width]['rougeL']:.4f}", file=sys.stderr, flush=True)  # fmt: skip
    return {"model": {"path": model_path, **description}, "data": data, "split": split, "n": len(cases),
            "widths": scores}  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    from training.corpus import data_root

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("model", help="checkpoint, n-gram folder or bundle")
    parser.add_argument("--file", dest="model_file", help="with a bundle: which model file")
    parser.add_argument("--data", default=str(data_root() / "sentiment140" / "tweets.txt"))
    parser.add_argument("--split", default="val", choices=["train", "val", "test", "all"])
    parser.add_argument("--widths", type=int, nargs="+", default=[1, 2, 4, 8])
    parser.add_argument("--out", help="also write the JSON report here")
    args = parser.parse_args(argv)
    try:
        report = sweep(args.model, args.data, args.split, args.widths, args.model_file)
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
