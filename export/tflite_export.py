"""The step graph as TFLite, built with explicit TensorFlow ops from the numpy weights.

TensorFlow's converter turns a Keras LSTM that exposes its state into a
WHILE loop, which full-integer quantization rejects; a tf.function of
gathers, matrix products and gate nonlinearities converts to plain
GATHER, FULLY_CONNECTED, SPLIT, LOGISTIC, TANH, MUL and ADD, all of which
have int8 kernels. The batch is fixed at 1: TFLite interpreters resize
inputs poorly, and a device steps one text at a time.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from export.deps import require
from export.step_graph import StepWeights

SIGNATURE = "serving_default"


def _tensorflow():
    # TensorFlow's C++ start-up chatter would bury the export's own lines.
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    return require("tensorflow", "TFLite export")


def _step_function(weights: StepWeights, row_quantized_table: bool = False):
    """A module and its concrete step: (token_ids [1] int32, *state [L, 1, H]) -> {logits [1, V], *next state}.

    With `row_quantized_table` the tied table enters as int8 rows (see
    _row_quantized) times one scale per row, for dynamic-range quantization.
    """
    tf = _tensorflow()
    head_arrays = list(weights.head)
    if row_quantized_table:
        rows, row_scales = _row_quantized(weights.embedding)
        embedding, row_scale = tf.constant(rows), tf.constant(row_scales)
        # The output matrix as the same int8 rows, scaled: its per-channel
        # quantization gives back exactly `rows`, with `row_scales` as scales.
        w_out, b_out = head_arrays[-1]
        head_arrays[-1] = ((rows * row_scales[:, None]).T.copy(), b_out)
    else:
        embedding, row_scale = tf.constant(weights.embedding), None
    layers = [
        [tf.constant(a) for a in _layer_arrays(weights.arch, layer.w_ih, layer.w_hh, layer.b_ih, layer.b_hh)]
        for layer in weights.layers
    ]
    head = [(tf.constant(w), tf.constant(b)) for w, b in head_arrays]
    hidden = weights.hidden_size

    def lstm_cell(x, h, c, w_ih, w_hh, b):
        i, f, g, o = tf.split(tf.matmul(x, w_ih) + b + tf.matmul(h, w_hh), 4, axis=-1)
        c = tf.sigmoid(f) * c + tf.sigmoid(i) * tf.tanh(g)
        return tf.sigmoid(o) * tf.tanh(c), c

    def gru_cell(x, h, w_ih, w_hh, b_ih, b_hh):
        xr, xz, xn = tf.split(tf.matmul(x, w_ih) + b_ih, 3, axis=-1)
        hr, hz, hn = tf.split(tf.matmul(h, w_hh) + b_hh, 3, axis=-1)
        r = tf.sigmoid(xr + hr)
        z = tf.sigmoid(xz + hz)
        n = tf.tanh(xn + r * hn)
        return (1.0 - z) * n + z * h

    def step(token_ids, *state):
        x = tf.gather(embedding, token_ids)  # [1, E]
        if row_scale is not None:
            x = x * tf.gather(row_scale, token_ids)[:, None]
        hs = tf.unstack(state[0], axis=0)  # L x [1, H]
        cs = tf.unstack(state[1], axis=0) if weights.arch == "lstm" else None
        next_h, next_c = [], []
        for k, params in enumerate(layers):
            if weights.arch == "lstm":
                x, c = lstm_cell(x, hs[k], cs[k], *params)
                next_c.append(c)
            else:
                x = gru_cell(x, hs[k], *params)
            next_h.append(x)
        for w, b in head:
            x = tf.matmul(x, w) + b
        outputs = {"logits": x, "h_out": tf.stack(next_h)}
        if weights.arch == "lstm":
            outputs["c_out"] = tf.stack(next_c)
        return outputs

    state_spec = [weights.num_layers, 1, hidden]
    specs = [tf.TensorSpec([1], tf.int32, name="token_ids")]
    specs += [tf.TensorSpec(state_spec, tf.float32, name=name) for name in weights.state_names]
    # The converter names the signature's inputs after the function's
    # arguments and its outputs after the returned dict's keys.
    module = tf.Module()
    if weights.arch == "lstm":
        module.step = tf.function(lambda token_ids, h, c: step(token_ids, h, c), input_signature=specs)
    else:
        module.step = tf.function(lambda token_ids, h: step(token_ids, h), input_signature=specs)
    return module, module.step.get_concrete_function()


def _row_quantized(table: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """`table` [V, E] as whole numbers in [-127, 127] (float32) and one scale per row [V]: table ~ rows * scale.

    Per-tensor int8 lets the largest row set the step of all 10,000, and that
    rounding flipped about 1.6% of top-1 suggestions of the shipped model;
    one scale per row (per output channel of the tied output layer) flips
    about a third as many. The lookup multiplies its row by the row's scale.
    """
    scales = np.abs(table).max(axis=1) / 127.0
    scales[scales == 0] = 1.0
    rows = np.clip(np.round(table / scales[:, None]), -127, 127)
    return rows.astype(np.float32), scales.astype(np.float32)


def _layer_arrays(arch: str, w_ih, w_hh, b_ih, b_hh) -> tuple[np.ndarray, ...]:
    # As in the PyTorch step module: an LSTM's two biases fold into one.
    if arch == "lstm":
        return (w_ih, w_hh, b_ih + b_hh)
    return (w_ih, w_hh, b_ih, b_hh)


def export_tflite(
    weights: StepWeights,
    path: Path,
    quantization: str = "fp32",
    samples: Iterable[list[np.ndarray]] | None = None,
) -> Path:
    """Convert the step graph; quantization is fp32, int8-full (needs `samples`) or int8-dynamic.

    `samples` are real steps, [token_ids, *state] in input order: the
    calibration that sets every activation's int8 range.
    """
    tf = _tensorflow()
    if quantization not in ("fp32", "int8-full", "int8-dynamic"):
        raise ValueError(f"unknown TFLite quantization {quantization!r}")
    per_row = quantization == "int8-dynamic" and weights.tied
    module, fn = _step_function(weights, row_quantized_table=per_row)
    converter = tf.lite.TFLiteConverter.from_concrete_functions([fn], trackable_obj=module)
    if quantization != "fp32":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
    if quantization == "int8-full":
        if samples is None:
            raise ValueError("full-integer quantization needs calibration samples")
        sample_list = list(samples)
        converter.representative_dataset = lambda: iter(sample_list)
        # Refuse to fall back to float kernels: a graph that is not all int8 is a bug here.
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        # Per-tensor weights: with per-channel scales the tied output matrix
        # could not share its int8 bytes with the lookup table (see _share_tied_table).
        converter._experimental_disable_per_channel_quantization_for_dense_layers = True
    path.write_bytes(converter.convert())
    if quantization == "int8-full":
        _share_tied_table(path, weights.embedding)
    elif per_row:
        _share_identical_buffers(path)
    return path


def _share_identical_buffers(path: Path) -> int:
    """Point tensors whose constant bytes are identical at one buffer; the number of buffers freed.

    The row-quantized table is the same int8 bytes twice, once per-tensor
    with scale 1 for the lookup and once per-channel for the output layer;
    the converter writes both. Scales live on the tensors, so the two
    tensors can share one buffer.
    """
    fb = require("tensorflow.lite.tools.flatbuffer_utils", "TFLite export")
    model = fb.read_model(str(path))
    first: dict[bytes, int] = {}
    freed = 0
    for graph in model.subgraphs:
        for tensor in graph.tensors:
            data = model.buffers[tensor.buffer].data
            if data is None or len(data) < 1024:
                continue
            key = bytes(data)
            keep = first.setdefault(key, tensor.buffer)
            if keep != tensor.buffer:
                model.buffers[tensor.buffer].data = None
                tensor.buffer = keep
                freed += 1
    if freed:
        fb.write_model(model, str(path))
    return freed


def _share_tied_table(path: Path, embedding: np.ndarray) -> bool:
    """Make the int8 GATHER read the tied output layer's int8 weights; True if it did.

    With tied embeddings the fp32 file stores the matrix once (the converter
    merges the two identical constants), but full-integer quantization
    treats the lookup table as an activation: it gets its own asymmetric
    scale from the calibrated range of the looked-up rows, which clips rows
    calibration never saw, and a second copy, which makes the int8 file
    about half, not a quarter, of the fp32 one. The output layer's
    symmetric per-tensor int8 weights hold the whole matrix unclipped, so
    the lookup reads those bytes instead, with their scale on its output.
    Done only where every condition for that holds; verification then
    checks the numbers.
    """
    import copy

    fb = require("tensorflow.lite.tools.flatbuffer_utils", "TFLite export")
    builtin = fb.schema_fb.BuiltinOperator
    model = fb.read_model(str(path))
    graph = model.subgraphs[0]
    tensors = graph.tensors

    def code(op):
        return fb.schema_util.get_builtin_code_from_operator_code(model.operatorCodes[op.opcodeIndex])

    lookups = [
        op for op in graph.operators if code(op) == builtin.GATHER and _int8_constant(model, op.inputs[0]) is not None
    ]
    products = [op for op in graph.operators if code(op) == builtin.FULLY_CONNECTED]
    output_weights = [op.inputs[1] for op in products if _holds(model, op.inputs[1], embedding)]
    if len(lookups) != 1 or len(output_weights) != 1:
        return False
    lookup, weights = lookups[0], tensors[output_weights[0]]
    # The looked-up rows must feed only matrix products, which read their input's scale from the tensor.
    consumers = [op for op in graph.operators if lookup.outputs[0] in op.inputs]
    if not all(code(op) == builtin.FULLY_CONNECTED and op.inputs[0] == lookup.outputs[0] for op in consumers):
        return False
    table, looked_up = tensors[lookup.inputs[0]], tensors[lookup.outputs[0]]
    model.buffers[table.buffer].data = None
    table.buffer = weights.buffer
    table.quantization = copy.deepcopy(weights.quantization)
    looked_up.quantization = copy.deepcopy(weights.quantization)
    fb.write_model(model, str(path))
    return True


def _int8_constant(model, index: int) -> np.ndarray | None:
    tensor = model.subgraphs[0].tensors[index]
    data = model.buffers[tensor.buffer].data
    if data is None or len(data) == 0 or tensor.type != 9:  # 9: INT8 in the TFLite schema
        return None
    return np.frombuffer(bytes(data), np.int8).reshape(tensor.shape)


def _holds(model, index: int, matrix: np.ndarray) -> bool:
    """Whether tensor `index` is `matrix` in symmetric per-tensor int8, up to rounding."""
    data = _int8_constant(model, index)
    quantization = model.subgraphs[0].tensors[index].quantization
    if data is None or data.shape != matrix.shape or quantization is None or quantization.scale is None:
        return False
    if len(quantization.scale) != 1 or quantization.zeroPoint[0] != 0:
        return False
    scale = float(quantization.scale[0])
    return bool(np.abs(data.astype(np.float32) * scale - matrix).max() <= 0.51 * scale)


def count_ops(path: Path) -> dict[str, int]:
    """How many operators of each type the model holds, as written (no delegate folding)."""
    from export.runners import tflite_interpreter

    counts: dict[str, int] = {}
    for op in tflite_interpreter(path, default_delegates=False)._get_ops_details():  # the one API listing them
        counts[op["op_name"]] = counts.get(op["op_name"], 0) + 1
    return counts
