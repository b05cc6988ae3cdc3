"""Interpreters that run one step of a bundle's graph.

A backend wraps one interpreter object and exposes one call:

    scores, next_state = backend.run(token_ids, state)

`token_ids` is int32 [1]; `state` maps each state input name of the
manifest (`graph.state`) to a float32 array; `scores` is float32 [1, V] as the
graph's scores output gives it (logits or log-probabilities) and
`next_state` maps the same input names to the arrays that feed them at the
next step. Input and output names and indices are resolved once, when the
model loads, so a step pays only for the interpreter call.

Backends, by the name `edge_runtime.load(..., backend=NAME)` takes:

    onnxruntime      .onnx files
    ai-edge-litert   .tflite files: LiteRT, the maintained TFLite interpreter
    tflite-runtime   .tflite files: the legacy interpreter (frozen at 2.14,
                     numpy below 2), the one with 32-bit ARM wheels

The interpreter package is imported here, lazily, when a model loads, so
`import edge_runtime` needs numpy alone.
"""

from __future__ import annotations

import importlib.util
import threading
from pathlib import Path

import numpy as np

from edge_runtime.manifest import BundleError, Manifest

ONNXRUNTIME = "onnxruntime"
LITERT = "ai-edge-litert"
TFLITE_RUNTIME = "tflite-runtime"
BACKENDS = (ONNXRUNTIME, LITERT, TFLITE_RUNTIME)
AUTO = "auto"

# Which backends can run which file format, in the order `auto` tries them.
FORMAT_BACKENDS = {"onnx": (ONNXRUNTIME,), "tflite": (LITERT, TFLITE_RUNTIME)}

# The module each backend imports, and the distribution that provides it.
_MODULES = {ONNXRUNTIME: "onnxruntime", LITERT: "ai_edge_litert", TFLITE_RUNTIME: "tflite_runtime"}


def is_installed(backend: str) -> bool:
    return importlib.util.find_spec(_MODULES[backend]) is not None


def installed_backends() -> list[str]:
    return [name for name in BACKENDS if is_installed(name)]


def choose(file_format: str, requested: str = AUTO) -> str:
    """The backend to run a file of `file_format`, checked before any loading.

    `auto` takes the first installed backend for the format (LiteRT before
    the legacy tflite-runtime); a named backend must suit the format and be
    installed. Errors name the package to install.
    """
    if file_format not in FORMAT_BACKENDS:
        raise BundleError(f"unknown model file format {file_format!r}: expected one of {', '.join(FORMAT_BACKENDS)}")
    suitable = FORMAT_BACKENDS[file_format]
    if requested == AUTO:
        for name in suitable:
            if is_installed(name):
                return name
        raise ValueError(f"no interpreter for .{file_format} files is installed: pip install {' or '.join(suitable)}")
    if requested not in BACKENDS:
        raise ValueError(f"unknown backend {requested!r}: use auto, {', '.join(BACKENDS)}")
    if requested not in suitable:
        raise ValueError(f"backend {requested} cannot run .{file_format} files: use {' or '.join(suitable)}")
    if not is_installed(requested):
        raise ValueError(f"backend {requested} is not installed: pip install {requested}")
    return requested


def open_backend(name: str, path: Path, manifest: Manifest, threads: int = 1):
    """Load the model file at `path` into backend `name`; names resolved against the manifest."""
    if threads < 1:
        raise ValueError(f"threads must be at least 1, got {threads}")
    if name == ONNXRUNTIME:
        return OnnxBackend(path, manifest, threads)
    return TFLiteBackend(name, path, manifest, threads)


def _version(module, distribution: str) -> str:
    """The interpreter's version: its module's __version__, else the installed distribution's metadata.

    importlib.metadata is imported only when needed: it brings in the email
    and zipfile packages, 3 MiB resident in a process that runs a keyboard.
    """
    version = getattr(module, "__version__", None)
    if isinstance(version, str):
        return version
    import importlib.metadata

    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


class OnnxBackend:
    """onnxruntime. InferenceSession.run is thread-safe, so no lock is taken."""

    name = ONNXRUNTIME

    def __init__(self, path: Path, manifest: Manifest, threads: int):
        import onnxruntime as ort

        self.version = ort.__version__
        options = ort.SessionOptions()
        # One thread by default: a keyboard shares the CPU with the app, and a
        # single step of a small RNN gains little from more.
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        try:
            self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        except Exception as e:  # onnxruntime raises its own exception types for a bad file
            raise BundleError(f"onnxruntime cannot load {path}: {_first_line(e)}") from None

        have_inputs = {i.name for i in self.session.get_inputs()}
        have_outputs = {o.name for o in self.session.get_outputs()}
        self.state_pairs = manifest.state_pairs
        wanted_inputs = ["token_ids", *(i for i, _ in self.state_pairs)]
        wanted_outputs = [manifest.scores_output, *(o for _, o in self.state_pairs)]
        _require(path, "input", wanted_inputs, have_inputs)
        _require(path, "output", wanted_outputs, have_outputs)
        self.output_names = wanted_outputs
        self.state_inputs = [i for i, _ in self.state_pairs]

    def run(self, token_ids: np.ndarray, state: dict[str, np.ndarray]):
        feed = {"token_ids": token_ids}
        feed.update(state)
        scores, *next_state = self.session.run(self.output_names, feed)
        return scores, dict(zip(self.state_inputs, next_state))


class TFLiteBackend:
    """LiteRT or tflite-runtime, through set_tensor / invoke / get_tensor.

    A TFLite Interpreter is not thread-safe: one lock per loaded model
    serialises the three calls of a step, so sessions on several threads
    share the model and each gets its own results.
    """

    def __init__(self, name: str, path: Path, manifest: Manifest, threads: int):
        self.name = name
        if name == LITERT:
            import ai_edge_litert as package
            from ai_edge_litert.interpreter import Interpreter
        else:
            import tflite_runtime as package
            from tflite_runtime.interpreter import Interpreter
        self.version = _version(package, name)
        try:
            self.interpreter = Interpreter(model_path=str(path), num_threads=threads)
            self.interpreter.allocate_tensors()
        except (ValueError, RuntimeError) as e:
            raise BundleError(f"{name} {self.version} cannot load {path}: {_first_line(e)}{_remedy(name, e)}") from None
        self.lock = threading.Lock()

        inputs, outputs = _tflite_tensors(self.interpreter, path)
        self.state_pairs = manifest.state_pairs
        self.token_input = _Tensor(_pick(path, "input", "token_ids", inputs))
        self.state_inputs = [(i, _Tensor(_pick(path, "input", i, inputs))) for i, _ in self.state_pairs]
        self.scores_output = _Tensor(_pick(path, "output", manifest.scores_output, outputs))
        self.state_outputs = [(i, _Tensor(_pick(path, "output", o, outputs))) for i, o in self.state_pairs]

    def run(self, token_ids: np.ndarray, state: dict[str, np.ndarray]):
        interpreter = self.interpreter
        with self.lock:
            interpreter.set_tensor(self.token_input.index, self.token_input.to_model(token_ids))
            for name, tensor in self.state_inputs:
                interpreter.set_tensor(tensor.index, tensor.to_model(state[name]))
            interpreter.invoke()
            # get_tensor copies, so the arrays stay valid after the lock is released.
            scores = self.scores_output.from_model(interpreter.get_tensor(self.scores_output.index))
            next_state = {
                name: tensor.from_model(interpreter.get_tensor(tensor.index)) for name, tensor in self.state_outputs
            }
        return scores, next_state


class _Tensor:
    """One TFLite tensor: its index, and its quantization if the model file quantizes its inputs or outputs."""

    def __init__(self, details: dict):
        self.index = details["index"]
        self.dtype = details["dtype"]
        scale, zero_point = details.get("quantization", (0.0, 0))
        # A fully quantized model (int8 in and out) needs float values mapped
        # through scale and zero point; a float or int32 tensor passes as is.
        self.quantized = bool(scale) and np.issubdtype(self.dtype, np.integer) and self.dtype != np.int32
        self.scale, self.zero_point = float(scale), int(zero_point)

    def to_model(self, values: np.ndarray) -> np.ndarray:
        if self.quantized:
            info = np.iinfo(self.dtype)
            q = np.round(values / self.scale) + self.zero_point
            return np.clip(q, info.min, info.max).astype(self.dtype)
        return values.astype(self.dtype, copy=False)

    def from_model(self, values: np.ndarray) -> np.ndarray:
        if self.quantized:
            return ((values.astype(np.float32) - self.zero_point) * self.scale).astype(np.float32)
        return values.astype(np.float32, copy=False)


def _tflite_tensors(interpreter, path: Path) -> tuple[dict[str, dict], dict[str, dict]]:
    """Input and output tensor details of a TFLite model, by name.

    Converters often rename tensors ("serving_default_h:0",
    "StatefulPartitionedCall:1"); the signature keeps the names the exporter
    gave, so the signature's names are preferred, then the tensor names as
    stored, then those names without a converter's prefix and suffix.
    """
    inputs = {d["name"]: d for d in interpreter.get_input_details()}
    outputs = {d["name"]: d for d in interpreter.get_output_details()}
    for details in (inputs, outputs):
        for name, d in list(details.items()):
            details.setdefault(_plain_tensor_name(name), d)

    signatures = interpreter.get_signature_list()
    if len(signatures) == 1:
        runner = interpreter.get_signature_runner(next(iter(signatures)))
        by_index_in = {d["index"]: d for d in interpreter.get_input_details()}
        by_index_out = {d["index"]: d for d in interpreter.get_output_details()}
        for name, d in runner.get_input_details().items():
            inputs[name] = by_index_in.get(d["index"], d)
        for name, d in runner.get_output_details().items():
            outputs[name] = by_index_out.get(d["index"], d)
    elif len(signatures) > 1:
        raise BundleError(f"{path} has {len(signatures)} signatures; a bundle model has one step graph")
    return inputs, outputs


def _plain_tensor_name(name: str) -> str:
    name = name.split(":")[0]
    prefix = "serving_default_"
    return name[len(prefix) :] if name.startswith(prefix) else name


def _pick(path: Path, kind: str, name: str, details: dict[str, dict]) -> dict:
    if name not in details:
        raise BundleError(
            f"{path} has no {kind} named {name!r} as its manifest says (it has {', '.join(sorted(details))}): "
            "re-export the bundle with a signature that names the tensors"
        )
    return details[name]


def _require(path: Path, kind: str, wanted: list[str], have: set[str]) -> None:
    missing = [n for n in wanted if n not in have]
    if missing:
        raise BundleError(
            f"{path} has no {kind} named {', '.join(map(repr, missing))} as its manifest says "
            f"(it has {', '.join(sorted(have))}): re-export the bundle"
        )


def _remedy(name: str, error: Exception) -> str:
    """What to do when an interpreter lacks an operator version the file uses."""
    if "find op for builtin opcode" not in str(error):
        return ""
    if name == TFLITE_RUNTIME:
        # tflite-runtime is frozen at 2.14: per-channel dynamic-range
        # FULLY_CONNECTED (version 12, model.int8.tflite) came later, while
        # full-integer and fp32 files use versions it has.
        return (
            "; the legacy interpreter predates this operator version: run the file with ai-edge-litert, "
            "or load a file it runs (a bundle's model.int8-full.tflite or model.tflite)"
        )
    return f"; upgrade {name}"


def _first_line(error: Exception) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__
