"""Shared test fixtures.

Training: a slice of the shared tweets and a tiny trained checkpoint.

Runtime: tiny bundles, a one-step LSTM or GRU with random weights written
as ONNX (onnx.helper) and TFLite (tensorflow) exactly as the bundle manifest
contract says, plus a numpy reference of the same step to check numbers
against. Small enough to build in a second or two.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from edge_runtime.manifest import FORMAT, FORMAT_VERSION, sha256_of
from edge_runtime.text import NORMALISATION
from edge_runtime.vocab import SPECIALS, Vocab

REPO = Path(__file__).resolve().parents[1]
TWEETS_LINES = 20_000  # enough for the 85/5/10 split shares to show and a tiny model to learn


@pytest.fixture(scope="session")
def tweets_file(tmp_path_factory) -> Path:
    """The first TWEETS_LINES lines of the shared Sentiment140 tweets, as a file of their own."""
    from training.corpus import data_root

    source = data_root() / "sentiment140" / "tweets.txt"
    if not source.is_file():
        pytest.skip(f"shared data not found at {source}: set EDGECOMPLETE_DATA")
    with open(source, encoding="utf-8") as f:
        lines = [line for _, line in zip(range(TWEETS_LINES), f)]
    path = tmp_path_factory.mktemp("data") / "tweets.txt"
    path.write_text("".join(lines), encoding="utf-8")
    return path


def tiny_config(tweets_file: Path, out_dir: Path, **overrides):
    """A train config small enough to run in seconds; overrides may name train or model fields."""
    from training.config import ModelConfig, TrainConfig

    model_fields = set(ModelConfig.__dataclass_fields__)
    model = ModelConfig(vocab_size=2_000, embedding_dim=32, hidden_size=32, dropout=0.1)
    config = TrainConfig(data=[str(tweets_file)], out_dir=str(out_dir), model=model, epochs=2, batch_size=64,
                         lr=1e-2, warmup_steps=20, eval_every=100, checkpoint_every=100, log_every=50,
                         max_val_texts=500, threads=1)  # fmt: skip
    for name, value in overrides.items():
        setattr(model if name in model_fields else config, name, value)
    return config


@pytest.fixture(scope="session")
def tiny_checkpoint(tweets_file, tmp_path_factory) -> Path:
    """The run folder of a tiny LSTM trained on `tweets_file`."""
    from training.trainer import train

    out = tmp_path_factory.mktemp("runs") / "tiny"
    train(tiny_config(tweets_file, out))
    return out


# fmt: off
TINY_WORDS = [
    "i", "you", "see", "tomorrow", "today", "tomato", "to", "the", "a", "at", "love", "it", "is", "was", "so",
    "happy", "sad", "good", "night", "morning", "day", "work", "home", "go", "going", "don't", "can't", "my",
    "your", "we", "they", "lol", "yes", "no",
]
# fmt: on


@dataclass
class TinyWeights:
    """An LSTM/GRU step laid out for x @ w; gates in PyTorch order (LSTM i, f, g, o; GRU r, z, n)."""

    arch: str
    embedding: np.ndarray  # [V, E]
    w_ih: np.ndarray  # [E, G]
    w_hh: np.ndarray  # [H, G]
    b_ih: np.ndarray  # [G]
    b_hh: np.ndarray  # [G]
    w_out: np.ndarray  # [H, V]
    b_out: np.ndarray  # [V]

    @property
    def hidden_size(self) -> int:
        return self.w_hh.shape[0]

    @property
    def state_layout(self) -> list[tuple[str, list]]:
        """(name, shape) per state tensor, as export.step_graph's weights declare it: batch on axis 1."""
        shape = [1, "batch", self.hidden_size]
        return [("h", shape), ("c", shape)] if self.arch == "lstm" else [("h", shape)]

    @property
    def state_names(self) -> list[str]:
        return [name for name, _ in self.state_layout]


def tiny_weights(arch: str = "lstm", vocab_size: int | None = None, dim: int = 8, hidden: int = 16, seed: int = 0):
    rng = np.random.default_rng(seed)
    v = vocab_size or len(SPECIALS) + len(TINY_WORDS)
    g = (4 if arch == "lstm" else 3) * hidden

    def w(*shape, scale=1.0):
        return (rng.standard_normal(shape) * scale).astype(np.float32)

    # Large output weights spread the scores, so top-1 is rarely a near tie.
    return TinyWeights(arch, w(v, dim), w(dim, g, scale=0.6), w(hidden, g, scale=0.4), w(g, scale=0.1),
                       w(g, scale=0.1), w(hidden, v, scale=2.0), w(v, scale=0.5))  # fmt: skip


def reference_step(weights: TinyWeights, token_id: int, state: dict[str, np.ndarray]):
    """The step in float64 numpy: (logits [V], next state {name: [1, 1, H]})."""
    sig = lambda z: 1 / (1 + np.exp(-z))  # noqa: E731
    x = weights.embedding[token_id].astype(np.float64)
    h = state["h"][0, 0].astype(np.float64)
    if weights.arch == "lstm":
        i, f, g, o = np.split(x @ weights.w_ih + weights.b_ih + h @ weights.w_hh + weights.b_hh, 4)
        c = sig(f) * state["c"][0, 0] + sig(i) * np.tanh(g)
        h = sig(o) * np.tanh(c)
        nxt = {"h": h[None, None], "c": c[None, None]}
    else:
        xr, xz, xn = np.split(x @ weights.w_ih + weights.b_ih, 3)
        hr, hz, hn = np.split(h @ weights.w_hh + weights.b_hh, 3)
        r, z = sig(xr + hr), sig(xz + hz)
        h = (1 - z) * np.tanh(xn + r * hn) + z * h
        nxt = {"h": h[None, None]}
    return h @ weights.w_out + weights.b_out, nxt


# -- ONNX -------------------------------------------------------------------


def write_onnx(weights: TinyWeights, path: Path, scores: str = "logits") -> None:
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    hidden, v = weights.hidden_size, weights.embedding.shape[0]
    inits = {
        "embedding": weights.embedding,
        "w_ih": weights.w_ih,
        "w_hh": weights.w_hh,
        "b_ih": weights.b_ih,
        "b_hh": weights.b_hh,
        "w_out": weights.w_out,
        "b_out": weights.b_out,
        "axis0": np.array([0], dtype=np.int64),
    }
    nodes = [
        helper.make_node("Gather", ["embedding", "token_ids"], ["x"], axis=0),
        helper.make_node("Squeeze", ["h", "axis0"], ["h0"]),
        helper.make_node("MatMul", ["x", "w_ih"], ["xw"]),
        helper.make_node("Add", ["xw", "b_ih"], ["xg"]),
        helper.make_node("MatMul", ["h0", "w_hh"], ["hw"]),
        helper.make_node("Add", ["hw", "b_hh"], ["hg"]),
    ]
    if weights.arch == "lstm":
        inits["split4"] = np.array([hidden] * 4, dtype=np.int64)
        nodes += [
            helper.make_node("Squeeze", ["c", "axis0"], ["c0"]),
            helper.make_node("Add", ["xg", "hg"], ["gates"]),
            helper.make_node("Split", ["gates", "split4"], ["gi", "gf", "gg", "go"], axis=1),
            helper.make_node("Sigmoid", ["gi"], ["si"]),
            helper.make_node("Sigmoid", ["gf"], ["sf"]),
            helper.make_node("Tanh", ["gg"], ["tg"]),
            helper.make_node("Sigmoid", ["go"], ["so"]),
            helper.make_node("Mul", ["sf", "c0"], ["fc"]),
            helper.make_node("Mul", ["si", "tg"], ["ig"]),
            helper.make_node("Add", ["fc", "ig"], ["c1"]),
            helper.make_node("Tanh", ["c1"], ["tc"]),
            helper.make_node("Mul", ["so", "tc"], ["h1"]),
            helper.make_node("Unsqueeze", ["c1", "axis0"], ["c_out"]),
        ]
    else:
        inits["split3"] = np.array([hidden] * 3, dtype=np.int64)
        inits["one"] = np.array(1.0, dtype=np.float32)
        nodes += [
            helper.make_node("Split", ["xg", "split3"], ["xr", "xz", "xn"], axis=1),
            helper.make_node("Split", ["hg", "split3"], ["hr", "hz", "hn"], axis=1),
            helper.make_node("Add", ["xr", "hr"], ["ar"]),
            helper.make_node("Sigmoid", ["ar"], ["r"]),
            helper.make_node("Add", ["xz", "hz"], ["az"]),
            helper.make_node("Sigmoid", ["az"], ["z"]),
            helper.make_node("Mul", ["r", "hn"], ["rhn"]),
            helper.make_node("Add", ["xn", "rhn"], ["an"]),
            helper.make_node("Tanh", ["an"], ["n"]),
            helper.make_node("Sub", ["one", "z"], ["omz"]),
            helper.make_node("Mul", ["omz", "n"], ["zn"]),
            helper.make_node("Mul", ["z", "h0"], ["zh"]),
            helper.make_node("Add", ["zn", "zh"], ["h1"]),
        ]
    nodes += [
        helper.make_node("MatMul", ["h1", "w_out"], ["ho"]),
        helper.make_node("Add", ["ho", "b_out"], ["logits"]),
        helper.make_node("Unsqueeze", ["h1", "axis0"], ["h_out"]),
    ]
    if scores == "log_probs":
        nodes.append(helper.make_node("LogSoftmax", ["logits"], ["log_probs"], axis=-1))

    layout = weights.state_layout
    inputs = [helper.make_tensor_value_info("token_ids", TensorProto.INT32, ["batch"])]
    inputs += [helper.make_tensor_value_info(n, TensorProto.FLOAT, shape) for n, shape in layout]
    outputs = [helper.make_tensor_value_info(scores, TensorProto.FLOAT, ["batch", v])]
    outputs += [helper.make_tensor_value_info(f"{n}_out", TensorProto.FLOAT, shape) for n, shape in layout]
    graph = helper.make_graph(
        nodes, "step", inputs, outputs, [numpy_helper.from_array(a, name) for name, a in inits.items()]
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, str(path))


def quantize_onnx(src: Path, dst: Path) -> None:
    from onnxruntime.quantization import QuantType, quantize_dynamic

    # uint8 weights, as the exporter writes them: int8 ones run as saturating u8s8 products on x86 without VNNI.
    quantize_dynamic(str(src), str(dst), weight_type=QuantType.QUInt8)


# -- TFLite -----------------------------------------------------------------


def write_tflite(weights: TinyWeights, path: Path, quantize: bool = False) -> None:
    """A TFLite step with batch 1 and a signature naming the tensors as the manifest does."""
    import tensorflow as tf

    c = {k: tf.constant(getattr(weights, k)) for k in ("embedding", "w_ih", "w_hh", "b_ih", "b_hh", "w_out", "b_out")}
    specs = [tf.TensorSpec([1], tf.int32, name="token_ids")]
    specs += [tf.TensorSpec([1 if d == "batch" else d for d in shape], tf.float32, name=n)
              for n, shape in weights.state_layout]  # fmt: skip

    def cell(token_ids, h, cs=None):
        x = tf.gather(c["embedding"], token_ids)
        h0 = h[0]
        xg = tf.matmul(x, c["w_ih"]) + c["b_ih"]
        hg = tf.matmul(h0, c["w_hh"]) + c["b_hh"]
        out = {}
        if weights.arch == "lstm":
            i, f, g, o = tf.split(xg + hg, 4, axis=1)
            c1 = tf.sigmoid(f) * cs[0] + tf.sigmoid(i) * tf.tanh(g)
            h1 = tf.sigmoid(o) * tf.tanh(c1)
            out["c_out"] = c1[None]
        else:
            xr, xz, xn = tf.split(xg, 3, axis=1)
            hr, hz, hn = tf.split(hg, 3, axis=1)
            r, z = tf.sigmoid(xr + hr), tf.sigmoid(xz + hz)
            h1 = (1 - z) * tf.tanh(xn + r * hn) + z * h0
        out["h_out"] = h1[None]
        out["logits"] = tf.matmul(h1, c["w_out"]) + c["b_out"]
        return out

    # Converting with the module that holds the function is what writes a
    # signature, and the signature is what keeps the manifest's tensor names.
    module = tf.Module()
    module.step = tf.function(cell, input_signature=specs)
    converter = tf.lite.TFLiteConverter.from_concrete_functions([module.step.get_concrete_function()], module)
    if quantize:
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
    path.write_bytes(converter.convert())


# -- bundles ----------------------------------------------------------------


def write_manifest(folder: Path, weights: TinyWeights, files: dict[str, str], scores: str = "logits") -> None:
    """manifest.json and vocab.json for the model files already in `folder` ({path: quantization})."""
    v = weights.embedding.shape[0]
    filler = [f"w{i}" for i in range(max(0, v - len(SPECIALS) - len(TINY_WORDS)))]
    vocab = Vocab([*SPECIALS, *TINY_WORDS, *filler][:v])
    vocab.save(folder / "vocab.json")
    hidden, v = weights.hidden_size, len(vocab)
    manifest = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "tokenizer": {
            "normalisation": NORMALISATION,
            "vocab_file": "vocab.json",
            "vocab_size": v,
            "special_tokens": {"pad": 0, "unk": 1, "bos": 2, "eos": 3},
        },
        "model": {
            "arch": weights.arch,
            "embedding_dim": weights.embedding.shape[1],
            "hidden_size": hidden,
            "num_layers": 1,
        },  # fmt: skip
        "graph": {
            "inputs": [{"name": "token_ids", "shape": ["batch"], "dtype": "int32"}]
            + [{"name": n, "shape": shape, "dtype": "float32"} for n, shape in weights.state_layout],
            "outputs": [{"name": scores, "shape": ["batch", v], "dtype": "float32"}]
            + [{"name": f"{n}_out", "shape": shape, "dtype": "float32"} for n, shape in weights.state_layout],
            "state": [{"input": n, "output": f"{n}_out"} for n in weights.state_names],
            "scores": {"name": scores, "kind": scores},
        },
        "files": [
            {
                "path": name,
                "format": Path(name).suffix.lstrip("."),
                "quantization": quantization,
                "sha256": sha256_of(folder / name),
                "size_bytes": (folder / name).stat().st_size,
            }
            for name, quantization in files.items()
        ],
    }
    (folder / "manifest.json").write_text(json.dumps(manifest, indent=2))


def make_bundle(folder: Path, arch: str = "lstm", tflite: bool = False, scores: str = "logits", seed: int = 0,
                **sizes):  # fmt: skip
    """A tiny bundle: model.onnx and model.int8.onnx, and with `tflite` the two TFLite files.

    `sizes` (vocab_size, dim, hidden) go to tiny_weights; a vocabulary larger
    than the tiny word list is filled with made-up words.
    """
    folder.mkdir(parents=True, exist_ok=True)
    weights = tiny_weights(arch, seed=seed, **sizes)
    write_onnx(weights, folder / "model.onnx", scores=scores)
    quantize_onnx(folder / "model.onnx", folder / "model.int8.onnx")
    files = {"model.onnx": "fp32", "model.int8.onnx": "int8-dynamic"}
    if tflite:
        write_tflite(weights, folder / "model.tflite")
        write_tflite(weights, folder / "model.int8.tflite", quantize=True)
        files.update({"model.tflite": "fp32", "model.int8.tflite": "int8-dynamic"})
    write_manifest(folder, weights, files, scores=scores)
    return weights


@pytest.fixture(scope="session")
def tiny_bundle(tmp_path_factory) -> Path:
    """An LSTM bundle with ONNX files only (fast to build)."""
    folder = tmp_path_factory.mktemp("bundle") / "lstm"
    make_bundle(folder)
    return folder


@pytest.fixture(scope="session")
def tiny_bundle_all(tmp_path_factory) -> Path:
    """An LSTM bundle with all four model files (builds TFLite with tensorflow: a few seconds)."""
    pytest.importorskip("tensorflow")
    folder = tmp_path_factory.mktemp("bundle") / "lstm-all"
    make_bundle(folder, tflite=True)
    return folder


def tiny_recurrent_lm(arch: str = "lstm", seed: int = 0, num_layers: int = 1, window: int = 0):
    """An untrained model of `arch` over the tiny vocabulary, its weights scaled so scores spread out.

    At its initialisation every word is about equally likely, and near-ties
    would make top-1 comparisons between files a test of rounding.
    """
    import torch

    from training.config import ModelConfig
    from training.models import build_model

    torch.manual_seed(seed)
    vocab = Vocab([*SPECIALS, *TINY_WORDS])
    config = ModelConfig(arch=arch, vocab_size=len(vocab), embedding_dim=8, hidden_size=16, num_layers=num_layers,
                         window=window)  # fmt: skip
    model = build_model(config).eval()
    with torch.no_grad():
        model.embedding.weight.mul_(20.0)
        model.output_bias.normal_(0.0, 1.0)
    return model, vocab


@pytest.fixture(scope="session")
def exported_bundle(tmp_path_factory) -> Path:
    """A tiny RecurrentLM exported by export.bundle.export_bundle: all four model files, verified."""
    pytest.importorskip("tensorflow")
    return export_tiny_bundle(tmp_path_factory.mktemp("exported"), *tiny_recurrent_lm())


def export_tiny_bundle(folder: Path, model, vocab: Vocab, **overrides) -> Path:
    """`model` over the tiny vocabulary saved as a checkpoint in `folder`, then exported and verified there.

    `overrides` set ExportConfig fields (formats, tflite_quantization, ...).
    """
    import torch

    from export.bundle import export_bundle
    from export.config import ExportConfig
    from training import checkpoint
    from training.config import TrainConfig

    config = TrainConfig(model=model.config)
    torch.save({"format": checkpoint.FORMAT, "version": checkpoint.VERSION, "config": config.to_dict(),
                "vocab": vocab.tokens, "model": model.state_dict()}, folder / "model.pt")  # fmt: skip
    # Made-up texts over the tiny vocabulary, numbered so the splits get some of each.
    texts = [" ".join(TINY_WORDS[(i * 7 + j * (i % 5 + 1)) % len(TINY_WORDS)] for j in range(3 + i % 9)) + f" {i}"
             for i in range(2_000)]  # fmt: skip
    (folder / "texts.txt").write_text("\n".join(texts), encoding="utf-8")
    export_config = ExportConfig(quantize=True, data=str(folder / "texts.txt"), calibration_texts=50,
                                 calibration_steps=300, verify_positions=300, rouge_texts=20)  # fmt: skip
    for name, value in overrides.items():
        setattr(export_config, name, value)
    return export_bundle(folder / "model.pt", folder / "bundle", export_config)
