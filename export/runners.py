"""Run the PyTorch model and the exported files one step at a time, on the same inputs.

Every runner has the same face: `initial_state(batch)` and
`step(token_ids [B] int32, state) -> (logits [B, V], next state)`, with the
state a list of float32 arrays in the manifest's order (the step weights'
state_layout: h, c for an LSTM), each with the batch on axis 1.
This is export's own harness for verification; the device runtime lives in
edge_runtime and is tested on its own.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from export.deps import require
from training.scorers import group_by_length, length_sorted_batches


class TorchRunner:
    """The reference: the trained model itself, not the rewritten step graph."""

    max_batch = 256

    def __init__(self, model):
        self.model = model.eval()

    def initial_state(self, batch: int) -> list[np.ndarray]:
        return [s.numpy() for s in self.model.init_state(batch)]

    def step(self, token_ids: np.ndarray, state: list[np.ndarray]):
        import torch

        with torch.no_grad():
            ids = torch.from_numpy(token_ids.astype(np.int64))[:, None]
            logits, next_state = self.model(ids, tuple(torch.from_numpy(s) for s in state))
        return logits[:, 0].float().numpy(), [s.numpy() for s in next_state]


class OnnxRunner:
    def __init__(self, path: Path, state_names: Sequence[str]):
        ort = require("onnxruntime", "Running ONNX files")
        onnx = require("onnx", "Running ONNX files")
        # Dynamic quantization picks one activation scale per call across the
        # whole batch, so a batch of texts would not compute what a device
        # stepping one text computes: such graphs run one text at a time.
        dynamic = any(node.op_type == "DynamicQuantizeLinear" for node in onnx.load(str(path)).graph.node)
        self.max_batch = 1 if dynamic else 256
        options = ort.SessionOptions()
        # One thread: verification runs beside other work, and a device steps on one core.
        options.intra_op_num_threads = 1
        self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        self.state_names = list(state_names)
        shapes = {i.name: i.shape for i in self.session.get_inputs()}
        self.state_shapes = [shapes[name] for name in self.state_names]  # each with "batch" at axis 1

    def initial_state(self, batch: int) -> list[np.ndarray]:
        return [np.zeros(_with_batch(shape, batch), np.float32) for shape in self.state_shapes]

    def step(self, token_ids: np.ndarray, state: list[np.ndarray]):
        feed = {"token_ids": token_ids.astype(np.int32), **dict(zip(self.state_names, state))}
        outputs = self.session.run(None, feed)
        return outputs[0], outputs[1:]


def tflite_interpreter(path: Path, default_delegates: bool = True):
    """LiteRT's interpreter, or TensorFlow's where ai-edge-litert is not installed.

    Without default delegates the graph runs on the builtin kernels as
    written, which is what an operator count should see (XNNPACK would fold
    ops into one DELEGATE node).
    """
    try:
        from ai_edge_litert.interpreter import Interpreter, OpResolverType
    except ImportError:
        lite = require("tensorflow", "Running TFLite files").lite
        Interpreter, OpResolverType = lite.Interpreter, lite.experimental.OpResolverType  # noqa: N806
    resolver = OpResolverType.AUTO if default_delegates else OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES
    interpreter = Interpreter(model_path=str(path), num_threads=1, experimental_op_resolver_type=resolver)
    interpreter.allocate_tensors()
    return interpreter


class TfliteRunner:
    max_batch = 1  # the TFLite graph is built for one text at a time

    def __init__(self, path: Path, state_names: Sequence[str]):
        self.interpreter = tflite_interpreter(path)
        self.runner = self.interpreter.get_signature_runner()
        self.state_names = list(state_names)
        details = self.runner.get_input_details()
        self.state_shapes = [tuple(details[name]["shape"]) for name in self.state_names]

    def initial_state(self, batch: int) -> list[np.ndarray]:
        if batch != 1:
            raise ValueError(f"a TFLite step graph takes one text at a time, not {batch}")
        return [np.zeros(shape, np.float32) for shape in self.state_shapes]

    def step(self, token_ids: np.ndarray, state: list[np.ndarray]):
        outputs = self.runner(token_ids=token_ids.astype(np.int32), **dict(zip(self.state_names, state)))
        return outputs["logits"], [outputs[f"{name}_out"] for name in self.state_names]


def _with_batch(shape, batch: int) -> tuple[int, ...]:
    """A graph input's shape with its batch axis (axis 1, named or unknown in the graph) set to `batch`."""
    return tuple(batch if k == 1 else int(d) for k, d in enumerate(shape))


def runner_for(path: Path, state_names: Sequence[str]):
    if path.suffix == ".onnx":
        return OnnxRunner(path, state_names)
    if path.suffix == ".tflite":
        return TfliteRunner(path, state_names)
    raise ValueError(f"no runner for {path}: expected a .onnx or .tflite file")


def next_logits(runner, sequences: Sequence[Sequence[int]]) -> list[np.ndarray]:
    """For each sequence of n ids, the logits [n, V] after each of its positions."""
    results: list[np.ndarray] = [None] * len(sequences)  # type: ignore[list-item]
    for batch in length_sorted_batches(sequences, runner.max_batch):
        width = max(len(sequences[i]) for i in batch)
        # Right padding with id 0: a padded row's later steps are computed and thrown away.
        ids = np.zeros((len(batch), width), np.int32)
        for row, i in enumerate(batch):
            ids[row, : len(sequences[i])] = sequences[i]
        state = runner.initial_state(len(batch))
        steps = []
        for t in range(width):
            logits, state = runner.step(ids[:, t], state)
            steps.append(logits)
        stacked = np.stack(steps, axis=1)  # [B, T, V]
        for row, i in enumerate(batch):
            results[i] = stacked[row, : len(sequences[i])]
    return results


def complete(runner, prefixes: Sequence[Sequence[int]], n_words: Sequence[int], banned: np.ndarray) -> list[list[int]]:
    """Greedy completion of each prefix by exactly n words, never choosing a `banned` id."""
    results: list[list[int]] = [None] * len(prefixes)  # type: ignore[list-item]
    for batch in length_sorted_batches(prefixes, runner.max_batch):
        for group in group_by_length(batch, prefixes):
            ids = np.array([prefixes[i] for i in group], np.int32)  # [B, T]
            state = runner.initial_state(len(group))
            for t in range(ids.shape[1]):
                logits, state = runner.step(ids[:, t], state)
            generated = []
            for _ in range(max(n_words[i] for i in group)):
                next_ids = np.where(banned, -np.inf, logits).argmax(axis=-1).astype(np.int32)
                generated.append(next_ids)
                logits, state = runner.step(next_ids, state)
            tokens = np.stack(generated, axis=1).tolist()
            for row, i in enumerate(group):
                results[i] = tokens[row][: n_words[i]]
    return results
