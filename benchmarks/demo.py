"""The product's main job on the shipped default model, end to end (`make demo`).

    python -m benchmarks.demo --data ../shared/data

1. Export artifacts/default's checkpoint as a bundle with --quantize, which
   verifies every file against PyTorch (skipped when artifacts/default is a
   bundle with no checkpoint: that bundle is used as it is).
2. Benchmark the bundle, the checkpoint and DistilGPT2 on `native` and the
   `pi4` profile.
3. Print the table and a few completions of held-out texts.

Everything goes to --out (default out/demo). About ten minutes on two
cores, most of it DistilGPT2: exported once (then cached) and slow in
PyTorch.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from pathlib import Path

from training.errors import UserError

DEFAULT_MODEL = "artifacts/default"


def export_default(model_dir: Path, out: Path, tweets: Path) -> tuple[Path, Path | None]:
    """(bundle, checkpoint): a fresh verified bundle when model_dir has a checkpoint, else model_dir itself."""
    from edge_runtime.manifest import is_bundle
    from export.bundle import VERIFY_FILE, export_bundle
    from export.config import ExportConfig
    from export.verify import format_table

    checkpoint = model_dir / "model.pt"
    if not checkpoint.is_file():
        if not is_bundle(model_dir):
            raise UserError(f"{model_dir} holds neither a checkpoint (model.pt) nor a bundle: train or export one")
        logging.info("demo: %s has no checkpoint; benchmarking its bundle as shipped", model_dir)
        return model_dir, None

    # Fewer verification positions than a release export: the demo shows the check, it does not certify.
    config = ExportConfig(quantize=True, force=True, data=str(tweets), verify_positions=5_000, rouge_texts=500)
    bundle = export_bundle(checkpoint, out / "bundle", config)
    print(format_table(json.loads((Path(bundle) / VERIFY_FILE).read_text(encoding="utf-8"))))
    return Path(bundle), checkpoint


def show_completions(bundle: Path, prompts: list[dict]) -> None:
    import edge_runtime

    model = edge_runtime.load(bundle, model_file="model.int8.onnx")
    print(f"\nCompletions by {bundle}/model.int8.onnx ({model.backend_name}), held-out texts:")
    for prompt in prompts:
        prefix = " ".join(prompt["prefix"])
        completion = " ".join(model.complete(prefix + " ", n_words=prompt["m"], stop_at_end=False))
        suggestions = ", ".join(s.word for s in model.suggest(prefix + " ", k=3))
        print(
            f"  {prefix} -> {completion}   [next word: {suggestions}; the text went on: {' '.join(prompt['target'])}]"
        )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Export, verify and benchmark the default model against DistilGPT2.")
    parser.add_argument("--data", default=os.environ.get("EDGECOMPLETE_DATA", "../shared/data"), help="shared data")
    parser.add_argument("--model", default=DEFAULT_MODEL, help="checkpoint or bundle folder (default: %(default)s)")
    parser.add_argument("--out", default="out/demo", help="output folder (default: %(default)s)")
    parser.add_argument("--targets", default="native,pi4", help="targets to benchmark (default: %(default)s)")
    args = parser.parse_args(argv)
    logging.basicConfig(stream=sys.stderr, level=logging.INFO, format="%(message)s")

    from benchmarks.bench import run_bench
    from benchmarks.config import BenchConfig
    from benchmarks.prompts import typical_prompts

    data, out = Path(args.data), Path(args.out)
    tweets = data / "sentiment140" / "tweets.txt"
    start = time.monotonic()
    try:
        if not tweets.is_file():
            raise UserError(f"{tweets} not found: pass --data pointing at the shared data folder")
        out.mkdir(parents=True, exist_ok=True)
        bundle, checkpoint = export_default(Path(args.model), out, tweets)
        config = BenchConfig(
            bundle=str(bundle),
            out_dir=str(out / "bench"),
            targets=[t for t in args.targets.split(",") if t],
            checkpoint=str(checkpoint or ""),
            gpt2_dir=str(data / "gpt2"),
            data=str(tweets),
            repeats=2,  # two passes keep the PyTorch DistilGPT2 runs to a minute per target
            eval_texts=300,
        )
        run_bench(config)
        show_completions(bundle, typical_prompts(tweets, 5)[0])
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"\nreport: {out / 'bench' / 'bench.md'} ({(time.monotonic() - start) / 60:.1f} min)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
