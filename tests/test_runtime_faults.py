"""Faults a device meets: each is one clear ValueError naming the file or the package, never a traceback."""

from __future__ import annotations

import importlib.util
import json
import shutil

import pytest
from click.testing import CliRunner

import edge_runtime
from edge_runtime import BundleError


@pytest.fixture
def bundle(tiny_bundle, tmp_path):
    """A private copy of the tiny bundle, to damage."""
    return shutil.copytree(tiny_bundle, tmp_path / "bundle")


def _edit_manifest(bundle, change):
    path = bundle / "manifest.json"
    data = json.loads(path.read_text())
    change(data)
    path.write_text(json.dumps(data))


def test_altered_model_file_fails_its_hash(bundle):
    path = bundle / "model.int8.onnx"
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(BundleError, match=r"model\.int8\.onnx does not match the sha256 in its manifest"):
        edge_runtime.load(bundle)


def test_bundle_hash_is_sha256(tmp_path):
    import hashlib

    from edge_runtime.manifest import sha256_of

    path = tmp_path / "blob"
    path.write_bytes(bytes(range(256)) * 9000)  # crosses the 1 MiB read blocks
    assert sha256_of(path) == hashlib.sha256(path.read_bytes()).hexdigest()


def test_newer_manifest_format_is_refused(bundle):
    _edit_manifest(bundle, lambda d: d.update(format_version=99))
    with pytest.raises(
        BundleError, match="bundle format 99, newer than this edge_runtime reads .*upgrade edge_runtime"
    ):
        edge_runtime.load(bundle)


def test_missing_model_file_is_named(bundle):
    (bundle / "model.int8.onnx").unlink()
    with pytest.raises(BundleError, match=r"model file .*model\.int8\.onnx is missing"):
        edge_runtime.load(bundle)


def test_model_file_not_in_the_manifest_is_named(bundle):
    with pytest.raises(BundleError, match="no model file 'model.fp16.onnx' in its manifest .*it lists model.onnx"):
        edge_runtime.load(bundle, "model.fp16.onnx")


def test_missing_vocabulary_is_named(bundle):
    (bundle / "vocab.json").unlink()
    with pytest.raises(BundleError, match=r"vocabulary file .*vocab\.json is missing"):
        edge_runtime.load(bundle)


def test_vocabulary_of_the_wrong_size_is_refused(bundle):
    _edit_manifest(bundle, lambda d: d["tokenizer"].update(vocab_size=12))
    with pytest.raises(BundleError, match="manifest says vocab_size 12"):
        edge_runtime.load(bundle)


def test_unknown_normalisation_is_refused(bundle):
    _edit_manifest(bundle, lambda d: d["tokenizer"].update(normalisation="tweet-v9"))
    with pytest.raises(BundleError, match="unknown text normalisation 'tweet-v9'"):
        edge_runtime.load(bundle)


def test_graph_without_the_manifest_outputs_is_refused(bundle):
    def rename(d):
        d["graph"]["state"][0]["output"] = "hidden_next"

    _edit_manifest(bundle, rename)
    with pytest.raises(BundleError, match="has no output named 'hidden_next' as its manifest says"):
        edge_runtime.load(bundle, "model.onnx")


def test_not_a_bundle(tmp_path):
    with pytest.raises(BundleError, match="is not a bundle: it has no manifest.json"):
        edge_runtime.load(tmp_path)
    (tmp_path / "manifest.json").write_text("{not json")
    with pytest.raises(BundleError, match="manifest.json is not valid JSON"):
        edge_runtime.load(tmp_path)


@pytest.mark.parametrize(
    ("model_file", "backend", "package"),
    [("model.onnx", "onnxruntime", "onnxruntime"), ("model.onnx", "auto", "onnxruntime")],
)
def test_interpreter_not_installed_names_the_package(bundle, monkeypatch, model_file, backend, package):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == package else real(name, *a))
    with pytest.raises(ValueError, match=f"pip install {package}"):
        edge_runtime.load(bundle, model_file, backend=backend)


def test_no_tflite_interpreter_names_both_packages(exported_bundle, monkeypatch):
    real = importlib.util.find_spec
    gone = {"ai_edge_litert", "tflite_runtime"}
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name in gone else real(name, *a))
    with pytest.raises(ValueError, match="pip install ai-edge-litert or tflite-runtime"):
        edge_runtime.load(exported_bundle, "model.tflite")
    with pytest.raises(ValueError, match="backend tflite-runtime is not installed: pip install tflite-runtime"):
        edge_runtime.load(exported_bundle, "model.tflite", backend="tflite-runtime")


def test_backend_that_cannot_run_the_format(bundle):
    with pytest.raises(ValueError, match="backend ai-edge-litert cannot run .onnx files: use onnxruntime"):
        edge_runtime.load(bundle, "model.onnx", backend="ai-edge-litert")
    with pytest.raises(ValueError, match="unknown backend 'tensorrt'"):
        edge_runtime.load(bundle, "model.onnx", backend="tensorrt")


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda m: m.suggest("hi", k=0), "k must be a positive integer, got 0"),
        (lambda m: m.suggest("hi", k=True), "k must be a positive integer"),
        (lambda m: m.complete("hi", n_words=-1), "n_words must be a non-negative integer, got -1"),
        (lambda m: m.complete("hi", beam_width=0), "beam_width must be a positive integer, got 0"),
        (lambda m: m.suggest(None), "text must be a str, got NoneType"),
        (lambda m: m.suggest(b"bytes"), "text must be a str, got bytes"),
        (lambda m: m.step(10**6, m.initial_state()), "token id 1000000 is outside the vocabulary"),
        (lambda m: m.session().type(3), "text must be a str, got int"),
        (lambda m: m.session(history=0), "history must be a positive integer"),
    ],
)
def test_bad_arguments_are_value_errors(tiny_bundle, call, message):
    model = edge_runtime.load(tiny_bundle)
    with pytest.raises(ValueError, match=message):
        call(model)


def test_cli_turns_faults_into_one_line(bundle):
    from edgecomplete.cli import main

    (bundle / "model.int8.onnx").write_bytes(b"not a model")
    result = CliRunner().invoke(main, ["complete", str(bundle), "hello"])
    assert result.exit_code == 2
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: model file ") and "sha256" in lines[0], result.output
    assert "Traceback" not in result.output


def test_model_file_the_interpreter_cannot_read_is_named(bundle):
    from edge_runtime.manifest import sha256_of

    path = bundle / "model.int8.onnx"
    path.write_bytes(b"\x08\x01 this is no onnx graph")
    _edit_manifest(bundle, lambda d: [f.update(sha256=sha256_of(path)) for f in d["files"] if f["path"] == path.name])
    with pytest.raises(BundleError, match=r"onnxruntime cannot load .*model\.int8\.onnx"):
        edge_runtime.load(bundle)
