"""The `edgecomplete` command: thin wrappers over the stages' library code.

Every library failure a user can fix is a UserError (or ValueError from
edge_runtime); it is turned into one line on stderr and exit status 2 here,
in one place.
"""

from __future__ import annotations

import functools
import json
import logging
import sys

import click


def _clean_errors(fn):
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        from training.errors import UserError

        try:
            return fn(*args, **kwargs)
        except (UserError, ValueError, OSError) as e:
            click.echo(f"error: {e}", err=True)
            sys.exit(2)
        except KeyboardInterrupt:
            click.echo("interrupted", err=True)
            sys.exit(130)

    return wrapper


def _mbr_options(fn):
    """--mbr-samples and its settings, passed on as one `mbr` argument: an edge_runtime.MBR, or None."""

    @click.option(
        "--mbr-samples",
        type=int,
        help="Minimum-Bayes-risk decoding from this many sampled continuations, instead of beam search.",
    )
    @click.option("--mbr-temperature", type=float, help="Sampling temperature for --mbr-samples (default: MBR's).")
    @click.option("--mbr-bigram-weight", type=float,
                  help="Worth of a matching word pair relative to a matching word (default: MBR's).")  # fmt: skip
    @click.option("--mbr-seed", type=int, help="Seed of the samples, for --mbr-samples (default: 0).")
    @functools.wraps(fn)
    def wrapper(*args, mbr_samples, mbr_temperature, mbr_bigram_weight, mbr_seed, **kwargs):
        from edge_runtime.mbr import MBR

        given = {"temperature": mbr_temperature, "bigram_weight": mbr_bigram_weight, "seed": mbr_seed}
        given = {name: value for name, value in given.items() if value is not None}
        if mbr_samples is None:
            if given:
                raise click.UsageError("--mbr-temperature, --mbr-bigram-weight and --mbr-seed need --mbr-samples")
            return fn(*args, mbr=None, **kwargs)
        try:
            mbr = MBR(mbr_samples, **given)
        except ValueError as e:
            raise click.UsageError(str(e)) from None
        return fn(*args, mbr=mbr, **kwargs)

    return wrapper


@click.group()
def main():
    """On-device text autocompletion: train, evaluate, export, complete, benchmark."""
    logging.basicConfig(stream=sys.stderr, level=logging.INFO, format="%(message)s")


@main.command()
@click.option("--config", "config_path", type=click.Path(), help="JSON train config (see configs/).")
@click.option("--data", multiple=True, help="Corpus file or folder; repeat for several. Default: the shared tweets.")
@click.option("--out", "out_dir", help="Run folder for checkpoints and the trained model.")
@click.option("--epochs", type=int)
@click.option("--max-minutes", type=float, help="Wall-clock budget in minutes.")
@click.option("--resume", is_flag=True, help="Continue the interrupted run in --out where it stopped.")
@_clean_errors
def train(config_path, data, out_dir, epochs, max_minutes, resume):
    """Train a language model.

    \b
    Example:
      edgecomplete train --config configs/lstm256.json --out runs/lstm256
    """
    from training.config import TrainConfig, load_config
    from training.trainer import train as run_training

    config = load_config(config_path) if config_path else TrainConfig()
    for name, value in {"data": list(data), "out_dir": out_dir, "epochs": epochs, "max_minutes": max_minutes}.items():
        if value:
            setattr(config, name, value)
    path = run_training(config, resume=resume)
    click.echo(str(path))


@main.command()
@click.option("--data", multiple=True, help="Corpus file or folder; repeat for several. Default: the shared tweets.")
@click.option("--order", default=3, show_default=True, help="n of the n-gram.")
@click.option("--smoothing", default="stupid-backoff", show_default=True,
              type=click.Choice(["stupid-backoff", "kneser-ney"]))  # fmt: skip
@click.option("--vocab-size", default=10_000, show_default=True, help="Words in the vocabulary, specials included.")
@click.option("--out", "out_dir", required=True, help="Folder to write ngram.pkl.gz into.")
@_clean_errors
def ngram(data, order, smoothing, vocab_size, out_dir):
    """Fit the word n-gram baseline on the train split.

    \b
    Example:
      edgecomplete ngram --order 3 --out runs/trigram
      edgecomplete eval runs/trigram --data ../shared/data/sentiment140/tweets.txt --split test
    """
    from training.baseline import fit_ngram
    from training.ngram import NgramConfig
    from training.trainer import default_sources

    config = NgramConfig(order=order, smoothing=smoothing, vocab_size=vocab_size)
    click.echo(str(fit_ngram(list(data) or default_sources(), config, out_dir)))


@main.command("eval")
@click.argument("model_path", metavar="MODEL")
@click.option("--data", "data_path", required=True, help="Text file, Sentiment140 CSV or folder to score.")
@click.option("--split", default="all", show_default=True, type=click.Choice(["train", "val", "test", "all"]),
              help="Score only the texts of this hash split.")  # fmt: skip
@click.option("--limit", type=int, help="Score at most this many texts (the first, in file order).")
@click.option("--file", "model_file", help="With a bundle: which model file to run (default: model.int8.onnx).")
@click.option("--backend", help="With a bundle: onnxruntime, ai-edge-litert or tflite-runtime.")
@click.option("--out", "out_path", type=click.Path(), help="Also write the JSON report to this file.")
@click.option("--examples", default=0, show_default=True, help="Include this many texts with their completions.")
@click.option("--beam-width", default=1, show_default=True, type=int,
              help="Beam search over this many hypotheses; 1, greedy, is the protocol's default.")  # fmt: skip
@_mbr_options
@_clean_errors
def eval_(model_path, data_path, split, limit, model_file, backend, out_path, examples, beam_width, mbr):
    """Score a model by the quality protocol; prints one JSON object.

    MODEL is a checkpoint, the folder that holds one, or a bundle folder.

    \b
    Example:
      edgecomplete eval artifacts/default --data ../shared/data/sentiment140/tweets.txt --split test
    """
    from training.evaluate import evaluate_path

    report = evaluate_path(model_path, data_path, split=split, limit=limit, model_file=model_file, backend=backend,
                           examples=examples, beam_width=beam_width, mbr=mbr)  # fmt: skip
    text = json.dumps(report, indent=2)
    if out_path:
        from pathlib import Path

        Path(out_path).write_text(text + "\n")
    click.echo(text)


@main.command()
@click.argument("bundle")
@click.argument("text")
@click.option("--suggest", "k", type=int,
              help="Print the K likeliest next words, or completions of the word being typed. Default: 3.")  # fmt: skip
@click.option("--words", "n_words", type=int, help="Print the likeliest next N words as one line instead.")
@click.option("--beam", "beam_width", default=1, show_default=True, help="Beam width for --words; 1 is greedy.")
@_mbr_options
@click.option("--file", "model_file", default="model.int8.onnx", show_default=True, help="Which model file to run.")
@click.option("--backend", default="auto", show_default=True,
              type=click.Choice(["auto", "onnxruntime", "ai-edge-litert", "tflite-runtime"]))  # fmt: skip
@_clean_errors
def complete(bundle, text, k, n_words, beam_width, mbr, model_file, backend):
    """Suggest the next word, or complete a phrase, after TEXT with the model in BUNDLE.

    Suggestions print one per line: the word, a tab, its log-probability.
    When TEXT ends mid-word they complete that word.

    \b
    Example:
      edgecomplete complete artifacts/default "see you tomor"
      edgecomplete complete artifacts/default "good morning" --words 4 --beam 4
      edgecomplete complete artifacts/default "good morning" --words 4 --mbr-samples 32
    """
    import edge_runtime

    if k is not None and n_words is not None:
        raise click.UsageError("use --suggest or --words, not both")
    model = edge_runtime.load(bundle, model_file=model_file, backend=backend)
    if n_words is not None:
        click.echo(" ".join(model.complete(text, n_words=n_words, beam_width=beam_width, mbr=mbr)))
        return
    for suggestion in model.suggest(text, k=3 if k is None else k):
        click.echo(f"{suggestion.word}\t{suggestion.score:.3f}")


@main.command("export")
@click.argument("checkpoint_path", metavar="CHECKPOINT")
@click.option("--out", "out_dir", required=True, type=click.Path(), help="Bundle folder to create.")
@click.option("--quantize", is_flag=True, help="Also write the int8 file of each format.")
@click.option("--format", "fmt", default="all", show_default=True, type=click.Choice(["onnx", "tflite", "all"]),
              help="Which formats to write.")  # fmt: skip
@click.option("--onnx-quantization", type=click.Choice(["dynamic", "static"]),
              help="With --quantize: dynamic (default) or static (calibrated int8 activations).")  # fmt: skip
@click.option("--tflite-quantization", type=click.Choice(["both", "full", "dynamic"]),
              help="With --quantize: dynamic (model.int8.tflite, int8 weights; fast on CPUs), "
                   "full (model.int8-full.tflite, full-integer 16x8) or both (default).")  # fmt: skip
@click.option("--data", "data_path", help="Texts to calibrate and verify on. Default: the shared Sentiment140 tweets.")
@click.option("--verify-positions", type=int, help="Positions at which each file is compared with PyTorch.")
@click.option("--force", is_flag=True, help="Replace the bundle already in --out.")
@_clean_errors
def export_(checkpoint_path, out_dir, quantize, fmt, onnx_quantization, tflite_quantization, data_path,
            verify_positions, force):  # fmt: skip
    """Export a checkpoint as a verified bundle: ONNX and TFLite, fp32 and (--quantize) int8.

    CHECKPOINT is a checkpoint file or the run folder that holds model.pt.
    Every file is run beside the PyTorch model on the same test texts; the
    comparison is printed and saved as verify.json in the bundle. An fp32
    file that does not match PyTorch fails the export with exit status 1.

    \b
    Example:
      edgecomplete export runs/lstm256 --out artifacts/default --quantize
    """
    from export.bundle import VERIFY_FILE, export_bundle
    from export.config import FORMATS, ExportConfig
    from export.verify import VerificationError, format_table
    from training.errors import UserError

    if not quantize and (onnx_quantization or tflite_quantization):
        raise UserError("--onnx-quantization and --tflite-quantization choose how to quantize: add --quantize")
    config = ExportConfig(formats=FORMATS if fmt == "all" else (fmt,), quantize=quantize, force=force)
    for name, value in {
        "onnx_quantization": onnx_quantization,
        "tflite_quantization": tflite_quantization,
        "data": data_path,
        "verify_positions": verify_positions,
    }.items():
        if value is not None:
            setattr(config, name, value)
    try:
        path = export_bundle(checkpoint_path, out_dir, config)
    except VerificationError as e:
        click.echo(format_table(e.report))
        click.echo(f"error: {e}", err=True)
        sys.exit(1)
    from pathlib import Path

    click.echo(format_table(json.loads((Path(path) / VERIFY_FILE).read_text(encoding="utf-8"))))
    click.echo(str(path))


@main.command()
@click.argument("bundle")
@click.option("--targets", default="native", show_default=True,
              help="Comma-separated: native, pi4, pi-zero-2w, emulated-aarch64.")  # fmt: skip
@click.option(
    "--out", "out_dir", default="out/bench", show_default=True, help="Folder for bench.json, bench.md, charts."
)
@click.option("--file", "files", multiple=True, help="Bundle model file to measure; repeat for several. Default: all.")
@click.option("--checkpoint", help="PyTorch checkpoint to measure too. Default: model.pt in or beside the bundle.")
@click.option("--distilgpt2/--no-distilgpt2", default=True, show_default=True, help="Measure the DistilGPT2 baseline.")
@click.option("--distilgpt2-weights", default="random", show_default=True,
              help="random, hub, or a folder of pretrained DistilGPT2 weights.")  # fmt: skip
@click.option("--distilgpt2-dir", help="A DistilGPT2 export made elsewhere (one folder of --cache-dir), for boards.")
@click.option("--gpt2-dir", help="GPT-2 tokenizer and DistilGPT2 config. Default: <shared data>/gpt2.")
@click.option("--data", help="Texts whose test split gives the prompts. Default: the shared Sentiment140 tweets.")
@click.option("--prompts", type=int, help="Prompts of median length to run (default 20).")
@click.option("--repeats", type=int, help="Passes over the prompts for per-token latency (default 3).")
@click.option("--eval-texts", type=int, help="Test texts scored for quality per word model (default 500); "
                   "0 = none, show the eval*.json reports saved in the bundle.")  # fmt: skip
@click.option("--cache-dir", help="Where the exported DistilGPT2 is kept. Default: ~/.cache/edgecomplete.")
@click.option("--emulate-distilgpt2", is_flag=True, help="Also run DistilGPT2 under emulation (tens of minutes).")
@click.option("--quote-prompts/--no-quote-prompts", default=True, show_default=True,
              help="Keep the prompts' text in the report; off for a report published without the corpus.")  # fmt: skip
@_clean_errors
def bench(bundle, targets, out_dir, files, checkpoint, distilgpt2, distilgpt2_weights, distilgpt2_dir, gpt2_dir, data,
          prompts, repeats, eval_texts, cache_dir, emulate_distilgpt2, quote_prompts):  # fmt: skip
    """Measure every model on every target; writes bench.json, bench.md and charts, prints a table.

    Each model and target runs in its own process: size on disk, peak
    memory, load time, first-token, per-token (p50/p90/p99), completion and
    keystroke latency. The emulated-aarch64 target needs
    `python -m benchmarks.setup_aarch64` first.

    \b
    Example:
      edgecomplete bench artifacts/default --targets native,pi4 --out out/bench
    """
    from benchmarks.bench import run_bench
    from benchmarks.config import BenchConfig

    config = BenchConfig(bundle=bundle, out_dir=out_dir, targets=[t.strip() for t in targets.split(",") if t.strip()])
    config.files = list(files)
    config.distilgpt2, config.distilgpt2_weights = distilgpt2, distilgpt2_weights
    config.emulate_distilgpt2, config.quote_prompts = emulate_distilgpt2, quote_prompts
    given = {"checkpoint": checkpoint, "distilgpt2_dir": distilgpt2_dir, "gpt2_dir": gpt2_dir, "data": data,
             "prompts": prompts, "repeats": repeats, "eval_texts": eval_texts, "cache_dir": cache_dir}  # fmt: skip
    for name, value in given.items():
        if value is not None:
            setattr(config, name, value)
    run_bench(config)


if __name__ == "__main__":
    main()
