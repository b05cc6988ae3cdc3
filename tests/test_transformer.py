"""The transformer LM: its cached forward, its one-step graph with a key-value cache as state, training, export.

Tiny models are built here. The export checks use one briefly trained on a
slice of the shared tweets, so that its scores are peaked as a real
model's are and int8 top-1 agreement measures the quantization, not ties.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from training.config import ModelConfig

VOCAB_SIZE = 1_000
DIM = 48
WINDOW = 8  # shorter than most test texts, so the cache's shifting is exercised
TRAIN_STEPS = 150


def _config(**overrides) -> ModelConfig:
    fields = dict(arch="transformer", vocab_size=60, embedding_dim=16, num_layers=2, num_heads=4, ffn_size=32,
                  window=5, dropout=0.0)  # fmt: skip
    fields.update(overrides)
    return ModelConfig(**fields)


def _spread(model):
    """Larger weights than the initialisation's, so an untrained model's logits are far apart."""
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(3)
    return model.eval()


def _encode(texts, vocab, width: int) -> torch.Tensor:
    """<bos> w1 .. wn <eos> per text, cut or padded to `width` ids: [B, width]."""
    ids = torch.full((len(texts), width), vocab.pad_id)
    for row, text in enumerate(texts):
        seq = [vocab.bos_id, *vocab.encode(text), vocab.eos_id][:width]
        ids[row, : len(seq)] = torch.tensor(seq)
    return ids


@pytest.fixture(scope="module")
def trained(tweets_file):
    """A small TransformerLM trained for TRAIN_STEPS steps, and its vocabulary."""
    from training.corpus import build_vocab, split_texts
    from training.transformer import TransformerLM

    torch.manual_seed(0)
    texts = split_texts([tweets_file]).train
    vocab = build_vocab(texts, VOCAB_SIZE)
    config = _config(vocab_size=len(vocab), embedding_dim=DIM, ffn_size=2 * DIM, window=WINDOW)
    model = TransformerLM(config)
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    rng = np.random.default_rng(0)
    for _ in range(TRAIN_STEPS):
        batch = [texts[i] for i in rng.integers(0, len(texts), 32)]
        ids = _encode(batch, vocab, 2 + max(map(len, batch)))
        logits, _ = model(ids[:, :-1])
        loss = torch.nn.functional.cross_entropy(
            logits.reshape(-1, len(vocab)), ids[:, 1:].reshape(-1), ignore_index=vocab.pad_id
        )
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return model.eval(), vocab


# --- the model ----------------------------------------------------------------


def test_cached_forward_equals_the_full_forward():
    """hidden() over a prefix, then one token at a time with the state, gives the full forward's numbers.

    That is how training.scorers completes a prefix; the texts are longer than
    the window, so positions past it must have dropped out of the cache.
    """
    from training.transformer import TransformerLM

    torch.manual_seed(1)
    model = _spread(TransformerLM(_config()))
    ids = torch.randint(0, 60, (3, 13))
    with torch.no_grad():
        expected, final = model(ids)
        prefix, state = model(ids[:, :4])
        steps = [prefix]
        for t in range(4, 13):
            logits, state = model(ids[:, t : t + 1], state)
            steps.append(logits)
        chunked, chunk_state = model(ids[:, 6:], model(ids[:, :6])[1])
    torch.testing.assert_close(torch.cat(steps, dim=1), expected, atol=1e-4, rtol=0)
    torch.testing.assert_close(chunked, expected[:, 6:], atol=1e-4, rtol=0)
    for part, part_stepped, part_chunked in zip(final, state, chunk_state):
        torch.testing.assert_close(part_stepped, part, atol=1e-4, rtol=0)
        torch.testing.assert_close(part_chunked, part, atol=1e-4, rtol=0)


def test_attention_sees_exactly_the_window():
    """A token W or more positions back changes nothing; one W - 1 back does."""
    from training.transformer import TransformerLM

    torch.manual_seed(2)
    model = _spread(TransformerLM(_config(num_layers=1)))
    ids = torch.randint(0, 60, (1, 9))
    with torch.no_grad():
        base = model(ids)[0][0, -1]
        far, near = ids.clone(), ids.clone()
        far[0, 8 - 5] = (ids[0, 3] + 1) % 60  # distance W from the last position
        near[0, 8 - 4] = (ids[0, 4] + 1) % 60  # distance W - 1
        torch.testing.assert_close(model(far)[0][0, -1], base, atol=1e-6, rtol=0)
        assert (model(near)[0][0, -1] - base).abs().max() > 1e-3


def test_zero_state_is_the_start_of_a_text():
    from training.transformer import TransformerLM

    torch.manual_seed(3)
    model = _spread(TransformerLM(_config()))
    ids = torch.randint(0, 60, (2, 6))
    state = model.init_state(2)
    assert [tuple(s.shape) for s in state] == [(2, 2, 5, 16), (2, 2, 5, 16), (1, 2, 5)]
    assert all(not s.any() for s in state)
    with torch.no_grad():
        torch.testing.assert_close(model(ids, state)[0], model(ids)[0], atol=1e-4, rtol=0)


def test_parameter_count_of_the_experiment_config():
    """configs/experiments/transformer256.json: d_model 256 with a 10k vocabulary, under 4.5M parameters."""
    from conftest import REPO

    from training.config import load_config
    from training.models import build_model, count_parameters

    config = load_config(REPO / "configs" / "experiments" / "transformer256.json")
    model = build_model(config.model)
    assert type(model).__name__ == "TransformerLM"
    assert 3_000_000 <= count_parameters(model) <= 4_500_000
    assert config.out_dir == "runs/exp/transformer256"


def test_the_trainer_trains_it(tweets_file, tmp_path):
    """60 steps of training.trainer.train (batch_loss on hidden() and logits()), saved and loaded back."""
    from conftest import tiny_config

    from training import checkpoint
    from training.models import build_model
    from training.trainer import evaluate_loss, prepare_data, train

    config = tiny_config(tweets_file, tmp_path, arch="transformer", window=WINDOW, num_layers=2, num_heads=4,
                         ffn_size=64, lr=3e-3, epochs=1, max_steps=60, warmup_steps=10, eval_every=30,
                         checkpoint_every=30)  # fmt: skip
    ckpt = checkpoint.load(train(config))
    model = checkpoint.model_of(ckpt)
    assert type(model).__name__ == "TransformerLM" and model.config.window == WINDOW
    vocab, _, val, _ = prepare_data(config)
    trained = evaluate_loss(model, val, vocab.pad_id)
    untrained = evaluate_loss(build_model(config.model), val, vocab.pad_id)
    assert trained < untrained - 1.0, (untrained, trained)


@pytest.mark.parametrize(
    ("model", "expected"),
    [
        ({"embedding_dim": 30, "num_heads": 4}, "embedding_dim 30 is not divisible by num_heads 4"),
        ({"window": 0}, "window must be at least 1 for arch 'transformer', got 0"),
        ({"num_heads": 0}, "num_heads must be at least 1, got 0"),
        ({"ffn_size": 0}, "ffn_size must be at least 1, got 0"),
    ],
)
def test_bad_transformer_config_is_one_line_error(tmp_path, tweets_file, model, expected):
    from click.testing import CliRunner

    from edgecomplete.cli import main

    fields = {"arch": "transformer", "embedding_dim": 32, "window": 8, "num_heads": 4, **model}
    config = {"data": [str(tweets_file)], "out_dir": str(tmp_path / "run"), "model": fields}
    path = tmp_path / "config.json"
    path.write_text(json.dumps(config))
    result = CliRunner().invoke(main, ["train", "--config", str(path)])
    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and expected in lines[0], result.output
    assert not (tmp_path / "run").exists()


# --- the step graph -------------------------------------------------------------


@pytest.mark.parametrize("tie", [True, False])
def test_step_module_equals_the_full_forward(tie):
    """The step graph's torch module, batch 3, over more steps than the window: the model's logits and state."""
    from export.step_graph import torch_step_module, weights_of, zero_state
    from training.transformer import TransformerLM

    torch.manual_seed(5)
    model = _spread(TransformerLM(_config(tie_embeddings=tie)))
    weights = weights_of(model)
    assert weights.state_layout == [("k", [2, "batch", 5, 16]), ("v", [2, "batch", 5, 16]),
                                    ("filled", [1, "batch", 5])]  # fmt: skip
    # The model's zero state is the layout's.
    assert [s.shape for s in zero_state(weights, 3)] == [tuple(s.shape) for s in model.init_state(3)]
    step = torch_step_module(weights)
    ids = torch.randint(0, 60, (3, 12))
    with torch.no_grad():
        expected, final = model(ids)
        state = model.init_state(3)
        for t in range(ids.shape[1]):
            logits, *state = step(ids[:, t].int(), *state)
            torch.testing.assert_close(logits, expected[:, t], atol=1e-4, rtol=0)
    for got, want in zip(state, final):
        torch.testing.assert_close(got, want, atol=1e-4, rtol=0)


def test_exported_files_match_pytorch(trained, tweets_file, tmp_path):
    """fp32 ONNX and TFLite reproduce PyTorch; dynamic-range int8 ONNX and TFLite agree with it on top-1.

    The test texts run past the window, so the cache's shift is part of every comparison.
    """
    pytest.importorskip("tensorflow")
    from export.onnx_export import export_onnx, quantize_onnx_dynamic, share_tied_table
    from export.runners import OnnxRunner, TfliteRunner, TorchRunner, next_logits
    from export.step_graph import weights_of
    from export.tflite_export import export_tflite
    from training.corpus import split_texts

    model, vocab = trained
    weights = weights_of(model)
    names = weights.state_names
    texts = [t for t in split_texts([tweets_file]).test if len(t) > WINDOW][:40]
    sequences = [[vocab.bos_id, *vocab.encode(t)] for t in texts]
    expected = next_logits(TorchRunner(model), sequences)

    onnx = export_onnx(weights, tmp_path / "m.onnx", opset=17)
    int8_onnx = quantize_onnx_dynamic(onnx, tmp_path / "m.int8.onnx")
    assert share_tied_table(int8_onnx, weights.embedding)  # the tied table stored once, as in the LSTM's file
    tflite = export_tflite(weights, tmp_path / "m.tflite")
    int8_tflite = export_tflite(weights, tmp_path / "m.int8.tflite", "int8-dynamic")
    for path in (onnx, tflite):
        runner = OnnxRunner(path, names) if path.suffix == ".onnx" else TfliteRunner(path, names)
        for want, got in zip(expected, next_logits(runner, sequences)):
            np.testing.assert_allclose(got, want, atol=1e-4, rtol=0)
    for path, fp32 in ((int8_onnx, onnx), (int8_tflite, tflite)):
        runner = OnnxRunner(path, names) if path.suffix == ".onnx" else TfliteRunner(path, names)
        got = next_logits(runner, sequences)
        top1 = np.mean(np.concatenate([a.argmax(-1) == b.argmax(-1) for a, b in zip(expected, got)]))
        assert top1 >= 0.98, f"{path.name}: top-1 agreement {top1:.2%}"
        assert path.stat().st_size <= 0.40 * fp32.stat().st_size, path.name


# --- a whole bundle -----------------------------------------------------------


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    """(bundle folder, model, vocab): a tiny transformer over conftest's tiny vocabulary, exported and verified."""
    pytest.importorskip("tensorflow")
    from conftest import TINY_WORDS, export_tiny_bundle

    from edge_runtime.vocab import SPECIALS, Vocab
    from training.transformer import TransformerLM

    torch.manual_seed(6)
    vocab = Vocab([*SPECIALS, *TINY_WORDS])
    model = _spread(TransformerLM(_config(vocab_size=len(vocab), window=4)))
    folder = export_tiny_bundle(tmp_path_factory.mktemp("transformer"), model, vocab)
    return folder, model, vocab


def test_bundle_manifest_declares_the_cache_as_state(bundle):
    from edge_runtime.manifest import load_manifest

    folder, _, _ = bundle
    manifest = load_manifest(folder)
    assert manifest.state_pairs == [("k", "k_out"), ("v", "v_out"), ("filled", "filled_out")]
    inputs = {i["name"]: i["shape"] for i in manifest.graph["inputs"]}
    assert inputs == {"token_ids": ["batch"], "k": [2, "batch", 4, 16], "v": [2, "batch", 4, 16],
                      "filled": [1, "batch", 4]}  # fmt: skip
    raw = json.loads((folder / "manifest.json").read_text())
    assert raw["model"]["arch"] == "transformer" and raw["model"]["window"] == 4
    # No 16x8 file: declined for this arch, not written below the bar.
    assert [f.path for f in manifest.files] == ["model.onnx", "model.int8.onnx", "model.tflite", "model.int8.tflite"]
    report = json.loads((folder / "verify.json").read_text())
    for f in report["files"]:
        if f["quantization"] == "fp32":
            assert f["ok"] and f["max_logit_diff"] <= 1e-3 and f["top1_agreement"] == 1.0, f
        else:
            assert f["top1_agreement"] >= 0.9, f


@pytest.mark.parametrize("model_file", ["model.onnx", "model.int8.onnx"])
def test_runtime_completes_as_pytorch_does(bundle, model_file):
    """Greedy and beam completions through edge_runtime equal PyTorch's, past the window, the cache carried along."""
    import edge_runtime
    from training.scorers import StepScorer, TorchScorer

    folder, model, vocab = bundle
    runtime = edge_runtime.load(folder, model_file=model_file)
    texts = ("i love the", "good morning", "you", "see you tomorrow at the day lol")
    prefixes = [[vocab.bos_id, *vocab.encode(text.split())] for text in texts]
    for beam_width in (1, 4):
        expected = TorchScorer(model, vocab).complete(prefixes, [5] * len(prefixes), beam_width=beam_width)
        got = StepScorer(runtime).complete(prefixes, [5] * len(prefixes), beam_width=beam_width)
        assert got == expected, f"beam {beam_width}"
        phrase = runtime.complete("see you tomorrow at the day lol ", 5, beam_width=beam_width, stop_at_end=False)
        assert phrase == vocab.decode(expected[3])
