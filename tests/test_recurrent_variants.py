"""The LSTM with attention over a window of its outputs and the CNN+LSTM, from training to a completing bundle.

Each is checked where its state could go wrong: the one-step graph against
the full-sequence forward (past the window, several texts at once), the
exported files against PyTorch, a whole bundle through the runtime, a few
training steps, and a config without a window.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from conftest import export_tiny_bundle, tiny_config, tiny_recurrent_lm

from training.errors import UserError

ARCHS = ["lstm-attention", "cnn-lstm"]
WINDOW = 3  # past the window within the 9-step test sequences


def _model(arch: str, window: int = WINDOW, tie: bool = True, num_layers: int = 1, vocab_size: int = 60, seed: int = 0):
    """An untrained model, its embeddings scaled up so that top-1 is rarely a near tie."""
    import torch

    from training.config import ModelConfig
    from training.models import build_model

    torch.manual_seed(seed)
    config = ModelConfig(arch=arch, vocab_size=vocab_size, embedding_dim=16, hidden_size=16, num_layers=num_layers,
                         window=window, tie_embeddings=tie, dropout=0.0)  # fmt: skip
    model = build_model(config).eval()
    with torch.no_grad():
        model.embedding.weight.mul_(20.0)
    return model


# --- the step graph -------------------------------------------------------


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("tie", [True, False])
@pytest.mark.parametrize("window", [1, WINDOW])
def test_step_module_reproduces_the_full_sequence_forward(arch, tie, window):
    """Stepping the exported module from the zero state gives the full forward's logits, step after step."""
    import torch

    from export.step_graph import torch_step_module, weights_of

    model = _model(arch, window=window, tie=tie, num_layers=2)
    weights = weights_of(model)
    step = torch_step_module(weights)
    ids = torch.randint(0, 60, (3, 9))
    expected, final = model(ids)
    state = model.init_state(3)
    # The model's zero state is the layout's: same names' shapes, batch on axis 1.
    assert [tuple(s.shape) for s in state] == [tuple(3 if d == "batch" else d for d in shape)
                                               for _, shape in weights.state_layout]  # fmt: skip
    assert all(shape[1] == "batch" for _, shape in weights.state_layout)
    with torch.no_grad():
        for t in range(ids.shape[1]):
            logits, *state = step(ids[:, t].int(), *state)
            torch.testing.assert_close(logits, expected[:, t], atol=1e-5, rtol=0)
    for got, want in zip(state, final):
        torch.testing.assert_close(got, want, atol=1e-5, rtol=0)


@pytest.mark.parametrize("arch", ARCHS)
def test_a_forward_continued_from_its_state_is_the_whole_forward(arch):
    """hidden() picks up where a state left off: what greedy completion and the reference runner rely on."""
    import torch

    model = _model(arch)
    ids = torch.randint(0, 60, (2, 10))
    whole, _ = model(ids)
    first, state = model(ids[:, :4])
    parts = [first]
    for t in range(4, 10):
        logits, state = model(ids[:, t : t + 1], state)
        parts.append(logits)
    torch.testing.assert_close(torch.cat(parts, dim=1), whole, atol=1e-5, rtol=0)


def test_the_attention_window_sees_only_its_last_w_outputs():
    """An output more than W steps back does not move the attention (the LSTM state still carries it)."""
    import torch

    model = _model("lstm-attention")
    ids = torch.randint(0, 60, (1, 8))
    out, _ = model.hidden(ids)
    keys = torch.cat([torch.zeros(1, WINDOW, 16), model.rnn(model.embedding(ids))[0]], dim=1)
    query = model.query(keys[:, -1])
    # The last position's attention, by hand over the last W outputs only.
    window = keys[:, -WINDOW:]
    weights = torch.softmax((window @ query[0]) / math.sqrt(16), dim=-1)
    context = weights @ window[0]
    expected = torch.tanh(model.combine(torch.cat([keys[0, -1], context[0]])))
    torch.testing.assert_close(out[0, -1], expected, atol=1e-5, rtol=0)


# --- the exported files ---------------------------------------------------


@pytest.mark.parametrize("arch", ARCHS)
def test_exported_files_match_pytorch(arch, tmp_path):
    """fp32 ONNX and TFLite within 1e-4 of PyTorch; int8 ONNX, int8 and 16x8 TFLite agreeing on top-1."""
    pytest.importorskip("tensorflow")
    from export.data import calibration_samples
    from export.onnx_export import export_onnx, quantize_onnx_dynamic
    from export.runners import OnnxRunner, TfliteRunner, TorchRunner, next_logits
    from export.step_graph import weights_of
    from export.tflite_export import export_tflite

    model = _model(arch, tie=True, vocab_size=80)
    weights = weights_of(model)
    names = weights.state_names
    sequences = np.random.default_rng(0).integers(4, 80, (4, 9)).tolist()
    expected = next_logits(TorchRunner(model), sequences)

    onnx = export_onnx(weights, tmp_path / "m.onnx", opset=17)
    samples = calibration_samples(TorchRunner(model), np.random.default_rng(1).integers(4, 80, (10, 9)).tolist(), 80)
    fp32 = [OnnxRunner(onnx, names), TfliteRunner(export_tflite(weights, tmp_path / "m.tflite"), names)]
    int8 = {
        "int8 onnx": OnnxRunner(quantize_onnx_dynamic(onnx, tmp_path / "m.int8.onnx"), names),
        "int8 tflite": TfliteRunner(export_tflite(weights, tmp_path / "m.int8.tflite", "int8-dynamic"), names),
        "16x8 tflite": TfliteRunner(export_tflite(weights, tmp_path / "m.full.tflite", "int8-full", samples), names),
    }
    for runner in fp32:
        for want, got in zip(expected, next_logits(runner, sequences)):
            np.testing.assert_allclose(got, want, atol=1e-4, rtol=0)
    for name, runner in int8.items():
        got = next_logits(runner, sequences)
        top1 = np.mean(np.concatenate([a.argmax(-1) == b.argmax(-1) for a, b in zip(expected, got)]))
        assert top1 >= 0.9, f"{name}: top-1 agreement {top1:.2%}"


# --- a whole bundle -------------------------------------------------------


@pytest.fixture(scope="module", params=ARCHS)
def variant_bundle(request, tmp_path_factory):
    """(bundle folder, model, vocab): a tiny model of the arch exported by export_bundle, every file verified."""
    pytest.importorskip("tensorflow")
    model, vocab = tiny_recurrent_lm(request.param, window=WINDOW)
    folder = export_tiny_bundle(tmp_path_factory.mktemp(request.param), model, vocab)
    return folder, model, vocab


def test_bundle_manifest_declares_the_state_layout(variant_bundle):
    from edge_runtime.manifest import load_manifest
    from export.step_graph import weights_of

    folder, model, _ = variant_bundle
    manifest = load_manifest(folder)
    layout = weights_of(model).state_layout
    inputs = {i["name"]: i["shape"] for i in manifest.graph["inputs"]}
    outputs = {o["name"]: o["shape"] for o in manifest.graph["outputs"]}
    assert manifest.state_pairs == [(name, f"{name}_out") for name, _ in layout]
    assert all(inputs[name] == shape == outputs[f"{name}_out"] for name, shape in layout)
    raw = json.loads((folder / "manifest.json").read_text())
    assert raw["model"]["arch"] == model.config.arch and raw["model"]["window"] == WINDOW
    assert [f.path for f in manifest.files] == [
        "model.onnx", "model.int8.onnx", "model.tflite", "model.int8.tflite", "model.int8-full.tflite"
    ]  # fmt: skip


def test_bundle_files_verify_against_pytorch(variant_bundle):
    folder, _, _ = variant_bundle
    report = json.loads((folder / "verify.json").read_text())
    assert report["ok"], [(f["path"], f["max_logit_diff"], f["top1_agreement"]) for f in report["files"]]
    assert all(f["max_logit_diff"] <= 1e-3 for f in report["files"] if f["quantization"] == "fp32")


@pytest.mark.parametrize("model_file", ["model.onnx", "model.int8.tflite"])
def test_runtime_completes_as_pytorch_does(variant_bundle, model_file):
    """Greedy and beam completions through edge_runtime equal PyTorch's, the state carried through the prefix."""
    import edge_runtime
    from training.scorers import StepScorer, TorchScorer

    folder, model, vocab = variant_bundle
    runtime = edge_runtime.load(folder, model_file=model_file)
    prefixes = [[vocab.bos_id, *vocab.encode(text.split())] for text in ("i love the", "good morning", "you")]
    for beam_width in (1, 4):
        expected = TorchScorer(model, vocab).complete(prefixes, [4, 4, 4], beam_width=beam_width)
        got = StepScorer(runtime).complete(prefixes, [4, 4, 4], beam_width=beam_width)
        assert got == expected, f"beam {beam_width}"
        # The trailing space: "the" is a typed word, not a partial one to complete.
        phrase = runtime.complete("i love the ", 4, beam_width=beam_width, stop_at_end=False)
        assert phrase == vocab.decode(expected[0])


def test_an_arch_without_full_integer_support_skips_that_file_and_says_why(tmp_path, monkeypatch, caplog):
    """The bundle then lists, verifies and ships the other files; no 16x8 file is written at all."""
    pytest.importorskip("tensorflow")
    from edge_runtime.manifest import load_manifest
    from export.step_graph import ConvStepWeights

    reason = "no integer kernel for one of its ops"
    monkeypatch.setattr(ConvStepWeights, "full_integer_unsupported", property(lambda self: reason))
    model, vocab = tiny_recurrent_lm("cnn-lstm", window=WINDOW)
    with caplog.at_level("INFO", logger="edgecomplete.export"):
        folder = export_tiny_bundle(tmp_path, model, vocab, formats=("tflite",))
    assert [f.path for f in load_manifest(folder).files] == ["model.tflite", "model.int8.tflite"]
    assert [f["path"] for f in json.loads((folder / "verify.json").read_text())["files"]] == [
        "model.tflite", "model.int8.tflite"
    ]  # fmt: skip
    assert not (folder / "model.int8-full.tflite").exists()
    assert f"skip: model.int8-full.tflite for arch cnn-lstm: {reason}" in caplog.text


# --- training and config --------------------------------------------------


@pytest.mark.parametrize("arch", ARCHS)
def test_variant_trains_through_the_trainer(arch, tweets_file, tmp_path):
    from training import checkpoint
    from training.models import build_model
    from training.trainer import evaluate_loss, prepare_data, train

    config = tiny_config(tweets_file, tmp_path, arch=arch, window=WINDOW, epochs=1, max_steps=60, warmup_steps=10,
                         eval_every=30, checkpoint_every=30)  # fmt: skip
    ckpt = checkpoint.load(train(config))
    assert checkpoint.config_of(ckpt).model.arch == arch
    vocab, _, val, _ = prepare_data(config)
    trained = evaluate_loss(checkpoint.model_of(ckpt), val, vocab.pad_id)
    untrained = evaluate_loss(build_model(config.model), val, vocab.pad_id)
    assert trained < untrained - 1.0


@pytest.mark.parametrize("arch", ARCHS)
def test_a_variant_without_a_window_is_refused(arch, tmp_path):
    from training.config import load_config

    path = tmp_path / "config.json"
    path.write_text(json.dumps({"model": {"arch": arch, "window": 0}}))
    with pytest.raises(UserError) as raised:
        load_config(path)
    message = str(raised.value)
    assert message == f"window must be at least 1 for arch '{arch}', got 0: set model.window"
    assert "\n" not in message
