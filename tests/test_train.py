"""Training: learns, resumes exactly, runs data-parallel, refuses bad input."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner
from conftest import REPO, tiny_config

from edgecomplete.cli import main
from training import checkpoint
from training.config import TrainConfig
from training.models import RecurrentLM
from training.trainer import evaluate_loss, prepare_data, train


def test_tiny_lstm_learns(tiny_checkpoint, tweets_file):
    ckpt = checkpoint.load(tiny_checkpoint)
    config = checkpoint.config_of(ckpt)
    vocab, _, val, _ = prepare_data(config)
    trained = evaluate_loss(checkpoint.model_of(ckpt), val, vocab.pad_id)
    untrained = evaluate_loss(RecurrentLM(config.model), val, vocab.pad_id)
    assert trained < untrained - 1.0
    assert trained < math.log(len(vocab)) - 1.0
    for name in ("model.pt", "vocab.json", "config.json", "checkpoint.pt"):
        assert (tiny_checkpoint / name).is_file()
    assert json.loads((tiny_checkpoint / "config.json").read_text())["model"]["hidden_size"] == 32


def test_gru_variant_trains(tweets_file, tmp_path):
    path = train(tiny_config(tweets_file, tmp_path, arch="gru", epochs=1, tie_embeddings=False))
    assert checkpoint.config_of(checkpoint.load(path)).model.arch == "gru"


def test_resume_equals_an_uninterrupted_run(tweets_file, tmp_path):
    steps = 60
    whole = tiny_config(tweets_file, tmp_path / "whole", max_steps=steps, checkpoint_every=25)
    train(whole)

    # Stop at step 25 as if interrupted, then resume to the same step count.
    part = tiny_config(tweets_file, tmp_path / "part", max_steps=25, checkpoint_every=25)
    train(part)
    part.max_steps = steps
    train(part, resume=True)

    a = checkpoint.load(tmp_path / "whole" / "checkpoint.pt")
    b = checkpoint.load(tmp_path / "part" / "checkpoint.pt")
    assert a["state"]["step"] == b["state"]["step"] == steps
    for name, tensor in a["model"].items():
        torch.testing.assert_close(b["model"][name], tensor, rtol=0, atol=0, msg=name)


@pytest.mark.slow
def test_two_process_torchrun_trains_and_learns(tweets_file, tmp_path):
    config = tiny_config(tweets_file, tmp_path / "ddp", epochs=2)
    config_path = tmp_path / "config.json"
    config_path.write_text(json.dumps(config.to_dict()))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
         "-m", "edgecomplete.cli", "train", "--config", str(config_path)],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    ckpt = checkpoint.load(tmp_path / "ddp")
    vocab, _, val, _ = prepare_data(TrainConfig.from_dict(ckpt["config"]))
    assert evaluate_loss(checkpoint.model_of(ckpt), val, vocab.pad_id) < math.log(len(vocab)) - 1.0
    # Each rank takes every other batch, so two epochs take about as many
    # steps as one epoch on one process.
    _, train_seqs, _, _ = prepare_data(TrainConfig.from_dict(ckpt["config"]))
    batches_one_process = math.ceil(len(train_seqs) / config.batch_size)
    assert abs(ckpt["state"]["step"] - batches_one_process) <= 2


def run_cli(*args):
    result = CliRunner().invoke(main, [str(a) for a in args])
    return result.exit_code, result.output


def one_line_error(output: str, expected: str):
    lines = [line for line in output.strip().splitlines() if line.startswith("error:")]
    assert len(lines) == 1, output
    assert expected in lines[0], output
    assert "Traceback" not in output


@pytest.mark.parametrize(
    ("config", "expected"),
    [
        ({"epochs": 1, "learning_rate": 0.1}, "unknown config key 'learning_rate'"),
        ({"model": {"hidden_size": 0}}, "hidden_size must be at least 1, got 0"),
        ({"model": {"vocab_size": 3}}, "vocab size 3 leaves no room for words"),
        ({"model": {"arch": "transformer-xl"}}, "unknown arch 'transformer-xl'"),
    ],
)
def test_bad_config_is_one_line_error(tmp_path, tweets_file, config, expected):
    config = {"data": [str(tweets_file)], "out_dir": str(tmp_path / "run"), **config}
    path = tmp_path / "config.json"
    path.write_text(json.dumps(config))
    code, output = run_cli("train", "--config", path)
    assert code == 2
    one_line_error(output, expected)


def test_bad_data_is_one_line_error(tmp_path):
    bad = tmp_path / "latin.txt"
    bad.write_bytes("na\xefve\n".encode("latin-1"))
    code, output = run_cli("train", "--data", bad, "--out", tmp_path / "run")
    assert code == 2
    one_line_error(output, "is not UTF-8")
    code, output = run_cli("eval", tmp_path / "nothing", "--data", bad)
    assert code == 2
    one_line_error(output, "checkpoint not found")


def test_corrupt_checkpoint_is_refused_and_left_alone(tiny_checkpoint, tmp_path, tweets_file):
    truncated = tmp_path / "model.pt"
    truncated.write_bytes((tiny_checkpoint / "model.pt").read_bytes()[:5000])
    before = truncated.read_bytes()
    code, output = run_cli("eval", truncated, "--data", tweets_file, "--limit", 5)
    assert code == 2
    one_line_error(output, "is not a readable checkpoint")
    assert truncated.read_bytes() == before

    not_ours = tmp_path / "other.pt"
    torch.save({"weights": [1, 2]}, not_ours)
    code, output = run_cli("eval", not_ours, "--data", tweets_file)
    one_line_error(output, "is not an edgecomplete checkpoint")


def test_existing_run_is_never_overwritten(tiny_checkpoint, tweets_file):
    before = {p.name: p.read_bytes() for p in Path(tiny_checkpoint).iterdir()}
    code, output = run_cli("train", "--data", tweets_file, "--out", tiny_checkpoint, "--epochs", 1)
    assert code == 2
    one_line_error(output, "already holds a training run: pass --resume")
    assert {p.name: p.read_bytes() for p in Path(tiny_checkpoint).iterdir()} == before


def test_eval_prints_the_protocol_json(tiny_checkpoint, tweets_file):
    code, output = run_cli("eval", tiny_checkpoint, "--data", tweets_file, "--split", "test", "--limit", 50)
    assert code == 0, output
    report = json.loads(output[output.index("{") :])
    for key in ("n", "rouge1", "rouge2", "rougeL", "top1", "top3", "keystroke_savings", "perplexity"):
        assert key in report
    assert report["n"] == 50
    assert 0 <= report["rouge1"] <= 1 and report["perplexity"] > 1
