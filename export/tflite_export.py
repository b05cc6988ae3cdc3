"""The step graph as TFLite, built with explicit TensorFlow ops from the numpy weights.

TensorFlow's converter turns a Keras LSTM that exposes its state into a
WHILE loop, which full-integer quantization rejects; a tf.function of
gathers, matrix products and gate nonlinearities converts to plain
GATHER, FULLY_CONNECTED, SPLIT, LOGISTIC, TANH, MUL and ADD, all of which
have integer kernels, int8 and 16x8 (int16 activations, int8 weights),
the latter being what full-integer means here. The batch is fixed at 1:
TFLite interpreters resize inputs poorly, and a device steps one text at
a time.
"""

from __future__ import annotations

import inspect
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
    """A module and its concrete step: (token_ids [1] int32, *state) -> {logits [1, V], *next state}.

    The state is `weights.state_layout` with batch 1; the signature names its
    inputs after the layout and its outputs `{name}_out`.

    With `row_quantized_table` the table enters as int8 rows (see
    _row_quantized) times one scale per row, for dynamic-range and 16x8
    quantization; a tied output layer then uses the same rows.
    """
    tf = _tensorflow()
    head_arrays = list(weights.head)
    if row_quantized_table:
        rows, row_scales = _row_quantized(weights.embedding)
        embedding, row_scale = tf.constant(rows), tf.constant(row_scales)
        if weights.tied:
            # The output matrix as the same int8 rows, scaled: its per-channel
            # quantization gives back exactly `rows`, with `row_scales` as scales.
            w_out, b_out = head_arrays[-1]
            head_arrays[-1] = ((rows * row_scales[:, None]).T.copy(), b_out)
    else:
        embedding, row_scale = tf.constant(weights.embedding), None
    cell = weights.tf_cell(tf)
    head = [(tf.constant(w), tf.constant(b)) for w, b in head_arrays]
    names = weights.state_names

    def step(token_ids, *state):
        x = tf.gather(embedding, token_ids)  # [1, E]
        if row_scale is not None:
            x = x * tf.gather(row_scale, token_ids)[:, None]
        x, next_state = cell(x, list(state))
        for w, b in head:
            x = tf.matmul(x, w) + b
        return {"logits": x, **{f"{name}_out": s for name, s in zip(names, next_state)}}

    specs = [tf.TensorSpec([1], tf.int32, name="token_ids")]
    specs += [tf.TensorSpec([1 if d == "batch" else d for d in shape], tf.float32, name=name)
              for name, shape in weights.state_layout]  # fmt: skip
    # The converter names the signature's inputs after the function's
    # parameters and its outputs after the returned dict's keys; a signature
    # spelled out from the layout gives every state tensor its name.
    parameters = [inspect.Parameter(n, inspect.Parameter.POSITIONAL_OR_KEYWORD) for n in ["token_ids", *names]]
    step.__signature__ = inspect.Signature(parameters)
    module = tf.Module()
    module.step = tf.function(step, input_signature=specs)
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


def export_tflite(
    weights: StepWeights,
    path: Path,
    quantization: str = "fp32",
    samples: Iterable[list[np.ndarray]] | None = None,
) -> Path:
    """Convert the step graph; quantization is fp32, int8-full (needs `samples`) or int8-dynamic.

    int8-full is 16x8: int8 weights, int16 activations, float only at the
    boundary (inputs quantized, outputs dequantized). `samples` are real
    steps, [token_ids, *state] in input order: the calibration that sets
    every activation's int16 range.
    """
    tf = _tensorflow()
    if quantization not in ("fp32", "int8-full", "int8-dynamic"):
        raise ValueError(f"unknown TFLite quantization {quantization!r}")
    row_quantized = quantization == "int8-full" or (quantization == "int8-dynamic" and weights.tied)
    module, fn = _step_function(weights, row_quantized_table=row_quantized)
    converter = tf.lite.TFLiteConverter.from_concrete_functions([fn], trackable_obj=module)
    if quantization != "fp32":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
    if quantization == "int8-full":
        if samples is None:
            raise ValueError("full-integer quantization needs calibration samples")
        # By name: the calibrator feeds a list in the graph's own input order
        # (token_ids, c, h for an LSTM), not in the order the samples hold.
        names = ["token_ids", *weights.state_names]
        sample_dicts = [dict(zip(names, sample)) for sample in samples]
        converter.representative_dataset = lambda: iter(sample_dicts)
        # 16x8: int16 activations, int8 weights, integer kernels only (no
        # float fallback). With int8 activations the cell state's rounding
        # compounded step by step and the logits were too coarse for top-1
        # over the vocabulary: 75% top-1 agreement on the shipped LSTM-256,
        # against 98.8% here. Weights stay per-channel: that is what lets the
        # tied output layer hold exactly the table's int8 rows.
        ops = tf.lite.OpsSet.EXPERIMENTAL_TFLITE_BUILTINS_ACTIVATIONS_INT16_WEIGHTS_INT8
        converter.target_spec.supported_ops = [ops]
    path.write_bytes(converter.convert())
    if quantization == "int8-full":
        _int8_lookup_table(path, _row_quantized(weights.embedding)[0])
    elif row_quantized:
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


def _int8_lookup_table(path: Path, rows: np.ndarray) -> bool:
    """Store the 16x8 graph's lookup table as int8, once; True if it did.

    16x8 quantization treats the table that GATHER reads as an activation
    and writes it as int16: twice the bytes of int8, and for a tied model a
    second copy beside the output layer's int8 weights (69% of the fp32 file
    for the shipped model instead of 29%). The table enters the graph as
    `rows`, whole numbers in [-127, 127] (see _row_quantized), so int8 with
    scale 1 holds it exactly. The GATHER then reads that int8 tensor (the
    output layer's weight buffer when it holds the same bytes, as a tied
    model's does) and a CAST widens the looked-up row to int16, scale 1,
    for the consumers, which see the same values as before, less the int16
    table's rounding (its step was 127/32767 of a whole number). Done only where every condition for that holds;
    verification then checks the numbers.
    """
    fb = require("tensorflow.lite.tools.flatbuffer_utils", "TFLite export")
    schema = fb.schema_fb
    builtin = schema.BuiltinOperator
    model = fb.read_model(str(path))
    graph = model.subgraphs[0]
    tensors = graph.tensors

    def code(op):
        return fb.schema_util.get_builtin_code_from_operator_code(model.operatorCodes[op.opcodeIndex])

    lookups = [op for op in graph.operators if code(op) == builtin.GATHER and _holds_rows(model, op.inputs[0], rows)]
    if len(lookups) != 1:
        return False
    lookup = lookups[0]
    table, looked_up = tensors[lookup.inputs[0]], tensors[lookup.outputs[0]]
    # The looked-up row's type changes: it must not be a graph output, and
    # no other tensor may read the int16 table's buffer that is freed.
    if lookup.outputs[0] in graph.outputs or sum(t.buffer == table.buffer for t in tensors) != 1:
        return False
    if looked_up.type != schema.TensorType.INT16 or _zero_points(looked_up) != {0}:
        return False

    int8_rows = rows.astype(np.int8)
    shared = [
        tensors[op.inputs[1]].buffer
        for op in graph.operators
        if code(op) == builtin.FULLY_CONNECTED and np.array_equal(_int8_constant(model, op.inputs[1]), int8_rows)
    ]
    model.buffers[table.buffer].data = None
    if shared:
        table.buffer = shared[0]
    else:
        model.buffers[table.buffer].data = np.frombuffer(int8_rows.tobytes(), np.uint8)
    table.type = looked_up.type = schema.TensorType.INT8
    table.quantization, looked_up.quantization = _unit_scale(schema), _unit_scale(schema)

    widened = schema.TensorT()
    widened.shape = np.array(looked_up.shape, np.int32)
    widened.type = schema.TensorType.INT16
    widened.buffer = _empty_buffer(model, schema)
    widened.name = looked_up.name + (b"_int16" if isinstance(looked_up.name, bytes) else "_int16")
    widened.quantization = _unit_scale(schema)
    tensors.append(widened)
    widened_index = len(tensors) - 1
    for op in graph.operators:
        op.inputs = [widened_index if i == lookup.outputs[0] else i for i in op.inputs]

    cast = schema.OperatorT()
    cast.opcodeIndex = _opcode_index(model, schema, builtin.CAST, version=3)  # 3: CAST from or to int8
    cast.inputs, cast.outputs = [lookup.outputs[0]], [widened_index]
    cast.builtinOptionsType = schema.BuiltinOptions.CastOptions
    cast.builtinOptions = schema.CastOptionsT()
    cast.builtinOptions.inDataType, cast.builtinOptions.outDataType = schema.TensorType.INT8, schema.TensorType.INT16
    # Right after the GATHER: operators stay in an order in which every input is computed before it is read.
    graph.operators.insert(graph.operators.index(lookup) + 1, cast)
    fb.write_model(model, str(path))
    return True


def _holds_rows(model, index: int, rows: np.ndarray) -> bool:
    """Whether tensor `index` is an int16 constant that is `rows` (whole numbers) up to its rounding."""
    tensor = model.subgraphs[0].tensors[index]
    data = model.buffers[tensor.buffer].data
    if data is None or tensor.type != 7 or tensor.shape is None or list(tensor.shape) != list(rows.shape):  # 7: INT16
        return False
    quantization = tensor.quantization
    if quantization is None or quantization.scale is None or len(quantization.scale) != 1:
        return False
    if _zero_points(tensor) != {0}:
        return False
    scale = float(quantization.scale[0])
    values = np.frombuffer(bytes(data), np.int16).reshape(rows.shape).astype(np.float32) * scale
    return bool(np.abs(values - rows).max() <= 0.51 * scale)


def _zero_points(tensor) -> set[int]:
    quantization = tensor.quantization
    if quantization is None or quantization.zeroPoint is None:
        return set()
    return {int(z) for z in quantization.zeroPoint}


def _unit_scale(schema):
    quantization = schema.QuantizationParametersT()
    quantization.scale, quantization.zeroPoint = [1.0], [0]
    return quantization


def _empty_buffer(model, schema) -> int:
    model.buffers.append(schema.BufferT())
    return len(model.buffers) - 1


def _opcode_index(model, schema, builtin_code: int, version: int) -> int:
    """The index of `builtin_code` in the model's operator codes, added if missing, at least `version`."""
    fb = require("tensorflow.lite.tools.flatbuffer_utils", "TFLite export")
    for k, opcode in enumerate(model.operatorCodes):
        if fb.schema_util.get_builtin_code_from_operator_code(opcode) == builtin_code:
            opcode.version = max(opcode.version, version)
            return k
    opcode = schema.OperatorCodeT()
    opcode.builtinCode = builtin_code
    opcode.deprecatedBuiltinCode = min(builtin_code, 127)  # the field's value for codes past 127
    opcode.version = version
    model.operatorCodes.append(opcode)
    return len(model.operatorCodes) - 1


def _int8_constant(model, index: int) -> np.ndarray | None:
    tensor = model.subgraphs[0].tensors[index]
    data = model.buffers[tensor.buffer].data
    if data is None or len(data) == 0 or tensor.type != 9:  # 9: INT8 in the TFLite schema
        return None
    return np.frombuffer(bytes(data), np.int8).reshape(tensor.shape)


def count_ops(path: Path) -> dict[str, int]:
    """How many operators of each type the model holds, as written (no delegate folding)."""
    from export.runners import tflite_interpreter

    counts: dict[str, int] = {}
    for op in tflite_interpreter(path, default_delegates=False)._get_ops_details():  # the one API listing them
        counts[op["op_name"]] = counts.get(op["op_name"], 0) + 1
    return counts
