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
        except (UserError, ValueError, FileNotFoundError) as e:
            click.echo(f"error: {e}", err=True)
            sys.exit(2)
        except KeyboardInterrupt:
            click.echo("interrupted", err=True)
            sys.exit(130)

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


@main.command("eval")
@click.argument("model_path", metavar="MODEL")
@click.option("--data", "data_path", required=True, help="Text file, Sentiment140 CSV or folder to score.")
@click.option("--split", default="all", show_default=True, type=click.Choice(["train", "val", "test", "all"]),
              help="Score only the texts of this hash split.")  # fmt: skip
@click.option("--limit", type=int, help="Score at most this many texts (the first, in file order).")
@click.option("--file", "model_file", help="With a bundle: which model file to run (default: model.int8.onnx).")
@click.option("--backend", help="With a bundle: onnxruntime, ai-edge-litert or tflite-runtime.")
@click.option("--out", "out_path", type=click.Path(), help="Also write the JSON report to this file.")
@_clean_errors
def eval_(model_path, data_path, split, limit, model_file, backend, out_path):
    """Score a model by the quality protocol; prints one JSON object.

    MODEL is a checkpoint, the folder that holds one, or a bundle folder.

    \b
    Example:
      edgecomplete eval artifacts/default --data ../shared/data/sentiment140/tweets.txt --split test
    """
    from training.evaluate import evaluate_path

    report = evaluate_path(model_path, data_path, split=split, limit=limit, model_file=model_file, backend=backend)
    text = json.dumps(report, indent=2)
    if out_path:
        from pathlib import Path

        Path(out_path).write_text(text + "\n")
    click.echo(text)


if __name__ == "__main__":
    main()
