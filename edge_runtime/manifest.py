"""The bundle manifest: what a device needs to know to run the model files.

A bundle is a folder:

    manifest.json      this file's contents (format version, tokenizer,
                       architecture, graph signature, model files)
    vocab.json         the vocabulary (edge_runtime.vocab)
    model.onnx         fp32 ONNX          model.int8.onnx    int8 ONNX
    model.tflite       fp32 TFLite        model.int8.tflite  int8 TFLite (dynamic range)
                                          model.int8-full.tflite  full-integer TFLite (16x8)

Every model file is the same one-step graph. Inputs: `token_ids` int32 [B]
and one float32 tensor per state part, each with B on axis 1 (LSTM: `h`, `c`
[L, B, H]; GRU: `h`; other archs add parts, such as an attention window
[W, B, H]). Outputs: `logits` float32 [B, V] (or `log_probs`, as
`graph.scores` says) and the next state, `h_out` (and `c_out`, ...).
`graph.state` pairs each state input with the output that feeds it at the
next step. All zeros is the state before a text. B is dynamic in ONNX and 1
in TFLite.

Example (abridged):

    {"format": "edgecomplete-bundle", "format_version": 1,
     "tokenizer": {"normalisation": "tweet-v1", "vocab_file": "vocab.json",
                   "vocab_size": 10000,
                   "special_tokens": {"pad": 0, "unk": 1, "bos": 2, "eos": 3}},
     "model": {"arch": "lstm", "embedding_dim": 256, "hidden_size": 256,
               "num_layers": 1, "parameters": 3162128},
     "graph": {"inputs":  [{"name": "token_ids", "shape": ["batch"], "dtype": "int32"},
                           {"name": "h", "shape": [1, "batch", 256], "dtype": "float32"}, ...],
               "outputs": [{"name": "logits", "shape": ["batch", 10000], "dtype": "float32"}, ...],
               "state": [{"input": "h", "output": "h_out"}, {"input": "c", "output": "c_out"}],
               "scores": {"name": "logits", "kind": "logits"}},
     "files": [{"path": "model.int8.onnx", "format": "onnx", "quantization": "int8-dynamic",
                "sha256": "...", "size_bytes": 812345}, ...]}
"""

from __future__ import annotations

import importlib
import json
from dataclasses import dataclass
from pathlib import Path

FORMAT = "edgecomplete-bundle"
FORMAT_VERSION = 1
MANIFEST_FILE = "manifest.json"
VOCAB_FILE = "vocab.json"
MODEL_FORMATS = ("onnx", "tflite")


class BundleError(ValueError):
    """A bundle that cannot be used as it is; the message names the file."""


def _sha256():
    """A SHA-256 hasher, CPython's own where it has one.

    hashlib's SHA-256 comes from OpenSSL, and its import maps libcrypto into
    the process: 3.4 MiB resident, for as long as the app runs, to hash a
    few files once at load. CPython's built-in implementation (the one
    hashlib falls back to without OpenSSL) costs nothing resident and hashes
    a 3 MB model in about 15 ms on a server core, OpenSSL in about 2.
    """
    for module in ("_sha2", "_sha256"):  # CPython 3.12+, 3.11
        try:
            return importlib.import_module(module).sha256()
        except ImportError:
            continue
    import hashlib

    return hashlib.sha256()


def sha256_of(path: str | Path) -> str:
    digest = _sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


@dataclass(frozen=True)
class ModelFile:
    path: str  # relative to the bundle folder
    format: str  # onnx or tflite
    quantization: str  # fp32, int8-dynamic, int8-static, int8-full
    sha256: str
    size_bytes: int


class Manifest:
    """A parsed, checked manifest.json."""

    def __init__(self, data: dict, folder: Path):
        self.data = data
        self.folder = folder
        _check_format(data, folder)
        try:
            self.tokenizer = data["tokenizer"]
            self.model = data["model"]
            self.graph = data["graph"]
            self.files = [ModelFile(**f) for f in data["files"]]
        except (KeyError, TypeError) as e:
            raise BundleError(f"{folder / MANIFEST_FILE} is missing or mangles a field ({e})") from None

    @property
    def state_pairs(self) -> list[tuple[str, str]]:
        return [(s["input"], s["output"]) for s in self.graph["state"]]

    @property
    def scores_output(self) -> str:
        return self.graph["scores"]["name"]

    def file(self, name: str) -> ModelFile:
        for f in self.files:
            if f.path == name:
                return f
        listed = ", ".join(f.path for f in self.files) or "none"
        raise BundleError(f"{self.folder} has no model file {name!r} in its manifest (it lists {listed})")

    def verify_file(self, model_file: ModelFile) -> Path:
        """The file's path, after checking it exists and matches its sha256."""
        path = self.folder / model_file.path
        if not path.is_file():
            raise BundleError(f"model file {path} is missing: re-export the bundle")
        if sha256_of(path) != model_file.sha256:
            raise BundleError(f"model file {path} does not match the sha256 in its manifest: it is corrupt or altered")
        return path


def _check_format(data: dict, folder: Path) -> None:
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise BundleError(f"{folder / MANIFEST_FILE} is not an edgecomplete bundle manifest")
    version = data.get("format_version")
    if not isinstance(version, int):
        raise BundleError(f"{folder / MANIFEST_FILE} has no integer format_version")
    if version > FORMAT_VERSION:
        raise BundleError(
            f"{folder} is bundle format {version}, newer than this edge_runtime reads ({FORMAT_VERSION}): "
            "upgrade edge_runtime"
        )


def load_manifest(folder: str | Path) -> Manifest:
    folder = Path(folder)
    path = folder / MANIFEST_FILE
    if not path.is_file():
        raise BundleError(f"{folder} is not a bundle: it has no {MANIFEST_FILE}")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise BundleError(f"{path} is not valid JSON ({e}): re-export the bundle") from None
    return Manifest(data, folder)


def is_bundle(folder: str | Path) -> bool:
    return (Path(folder) / MANIFEST_FILE).is_file()
