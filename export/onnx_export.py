"""The step graph as ONNX: fp32 from PyTorch's TorchScript exporter, int8 from onnxruntime.

The dynamo exporter has open failures on recurrent models, and the step
graph needs none of its features, so the TorchScript exporter is used at a
fixed opset.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np

from export.deps import require
from export.step_graph import StepWeights, torch_step_module, zero_state


def graph_names(weights: StepWeights) -> tuple[list[str], list[str]]:
    """Input and output tensor names, as the manifest's graph contract has them."""
    inputs = ["token_ids", *weights.state_names]
    outputs = ["logits", *(f"{name}_out" for name in weights.state_names)]
    return inputs, outputs


def export_onnx(weights: StepWeights, path: Path, opset: int) -> Path:
    """Write the fp32 step graph with a dynamic batch dimension (axis 1 of every state tensor)."""
    import torch

    require("onnx", "ONNX export")
    module = torch_step_module(weights)
    inputs, outputs = graph_names(weights)
    example = (torch.zeros(1, dtype=torch.int32), *(torch.from_numpy(s) for s in zero_state(weights, 1)))
    dynamic_axes = {"token_ids": {0: "batch"}, "logits": {0: "batch"}}
    for name in inputs[1:] + outputs[1:]:
        dynamic_axes[name] = {1: "batch"}
    with warnings.catch_warnings():
        # It warns that the TorchScript exporter is legacy: chosen on purpose, see above.
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.onnx.export(
            module,
            example,
            str(path),
            dynamo=False,
            opset_version=opset,
            input_names=inputs,
            output_names=outputs,
            dynamic_axes=dynamic_axes,
            do_constant_folding=True,
        )
    return path


def quantize_onnx_dynamic(fp32_path: Path, int8_path: Path) -> Path:
    """int8 weights (MatMul, Gather); activations quantized per call from their actual range."""
    quantization = require("onnxruntime.quantization", "ONNX quantization")
    quantization.quantize_dynamic(
        str(fp32_path),
        str(int8_path),
        # uint8 weights (u8u8 products): onnxruntime's u8s8 kernels on x86
        # without VNNI sum pairs of products in int16, which saturates; on
        # such a CPU that flipped 3.1% of the shipped model's top-1
        # suggestions against fp32; u8u8, which cannot saturate, 1.0%.
        weight_type=quantization.QuantType.QUInt8,
        # One scale per output column: per-tensor scales let the widest
        # column set the step for all, which flipped about 2% of top-1
        # suggestions of the shipped model against fp32; per-channel, under 1%.
        per_channel=True,
        op_types_to_quantize=["MatMul", "Gather"],
    )
    return int8_path


def share_tied_table(int8_path: Path, embedding: np.ndarray) -> bool:
    """Make the embedding lookup read the tied output layer's int8 weights; True if it did.

    Dynamic quantization stores the tied matrix twice: the lookup table
    [V, E] with one scale, and the output layer's weights [E, V] with one
    scale and zero point per column. The lookup can gather a column of the
    output weights instead (axis 1) and dequantize it with that column's
    own scale and zero point; the row is then quantized per call, like every
    other activation, for the products that read it. The table is stored
    once, and each row gets a scale of its own. Done only where the graph
    has exactly the expected shape and the weights hold `embedding`;
    verification then checks the numbers.
    """
    onnx = require("onnx", "ONNX quantization")
    from onnx import TensorProto, helper, numpy_helper

    model = onnx.load(str(int8_path))
    graph = model.graph
    inits = {t.name: t for t in graph.initializer}
    vocab, dim = embedding.shape

    def constant(name: str, shape: tuple[int, ...]) -> bool:
        return name in inits and tuple(inits[name].dims) == shape

    lookups = [n for n in graph.node if n.op_type == "Gather" and constant(n.input[0], (vocab, dim))]
    products = [n for n in graph.node if n.op_type == "MatMulInteger" and constant(n.input[1], (dim, vocab))]
    if len(lookups) != 1 or len(products) != 1:
        return False
    lookup, product = lookups[0], products[0]
    # onnxruntime names a quantized tensor's parameters after it: X_quantized, X_scale, X_zero_point.
    table = lookup.input[0].removesuffix("_quantized")
    weights_name, zero_name = product.input[1], product.input[3]
    scale_name = weights_name.removesuffix("_quantized") + "_scale"
    if not (constant(zero_name, (vocab,)) and constant(scale_name, (vocab,))):
        return False
    weights = numpy_helper.to_array(inits[weights_name]).astype(np.float32)
    zero = numpy_helper.to_array(inits[zero_name]).astype(np.float32)
    scale = numpy_helper.to_array(inits[scale_name]).astype(np.float32)
    if np.abs((weights - zero) * scale - embedding.T).max() > 0.51 * scale.max():
        return False

    ids = lookup.input[1]
    graph.initializer.append(numpy_helper.from_array(zero, "tied_zero_point"))
    graph.initializer.append(numpy_helper.from_array(np.array([1], np.int64), "tied_axis"))
    lookup_nodes = [
        helper.make_node("Gather", [weights_name, ids], ["tied_columns"], axis=1),  # [E, B]
        helper.make_node("Transpose", ["tied_columns"], ["tied_rows_q"], perm=[1, 0]),  # [B, E]
        helper.make_node("Cast", ["tied_rows_q"], ["tied_rows_int"], to=TensorProto.FLOAT),
        helper.make_node("Gather", ["tied_zero_point", ids], ["tied_zero"]),
        helper.make_node("Unsqueeze", ["tied_zero", "tied_axis"], ["tied_zero_column"]),
        helper.make_node("Gather", [scale_name, ids], ["tied_scale"]),
        helper.make_node("Unsqueeze", ["tied_scale", "tied_axis"], ["tied_scale_column"]),
        helper.make_node("Sub", ["tied_rows_int", "tied_zero_column"], ["tied_rows_centred"]),
        helper.make_node("Mul", ["tied_rows_centred", "tied_scale_column"], ["tied_embedding"]),
        helper.make_node("DynamicQuantizeLinear", ["tied_embedding"], ["tied_q", "tied_q_scale", "tied_q_zero_point"]),
    ]
    # Whatever read the old table's int8 rows and their one scale reads the new ones.
    renamed = {lookup.output[0]: "tied_q", f"{table}_scale": "tied_q_scale", f"{table}_zero_point": "tied_q_zero_point"}
    kept = []
    for node in graph.node:
        if node is lookup:
            kept += lookup_nodes
            continue
        for i, name in enumerate(node.input):
            node.input[i] = renamed.get(name, name)
        kept.append(node)
    del graph.node[:]
    graph.node.extend(_topological(kept, {i.name for i in graph.input} | set(inits) | {"tied_zero_point", "tied_axis"}))
    used = {name for node in graph.node for name in node.input}
    for t in [t for t in graph.initializer if t.name not in used]:
        graph.initializer.remove(t)
    onnx.checker.check_model(model)
    onnx.save(model, str(int8_path))
    return True


def _topological(nodes: list, available: set[str]) -> list:
    """`nodes` reordered so that each comes after the nodes its inputs come from (stable otherwise)."""
    ordered, pending, available = [], list(nodes), set(available) | {""}  # "" marks an omitted optional input
    while pending:
        ready = [n for n in pending if all(name in available for name in n.input)]
        if not ready:
            raise ValueError("the rewritten graph has a cycle or an input nothing produces")
        for node in ready:
            ordered.append(node)
            available.update(node.output)
        pending = [n for n in pending if n not in ready]
    return ordered


def quantize_onnx_static(fp32_path: Path, int8_path: Path, samples: list[dict[str, np.ndarray]]) -> Path:
    """int8 weights and activations, activation ranges calibrated on `samples` (real steps)."""
    quantization = require("onnxruntime.quantization", "ONNX quantization")

    class Reader(quantization.CalibrationDataReader):
        def __init__(self):
            self.samples = iter(samples)

        def get_next(self):
            return next(self.samples, None)

    quantization.quantize_static(
        str(fp32_path),
        str(int8_path),
        Reader(),
        quant_format=quantization.QuantFormat.QDQ,
        # uint8 on both sides, as in quantize_onnx_dynamic: int8 activations
        # and weights ran as saturating u8s8 products on x86 without VNNI and
        # matched fp32 at 95.7% top-1 on the test model, under the 98% bar.
        activation_type=quantization.QuantType.QUInt8,
        weight_type=quantization.QuantType.QUInt8,
        per_channel=True,
        op_types_to_quantize=["MatMul", "Gather", "Add", "Mul", "Sigmoid", "Tanh"],
    )
    return int8_path


def count_ops(path: Path) -> dict[str, int]:
    """How many nodes of each operator type the graph holds."""
    onnx = require("onnx", "ONNX inspection")
    counts: dict[str, int] = {}
    for node in onnx.load(str(path)).graph.node:
        counts[node.op_type] = counts.get(node.op_type, 0) + 1
    return counts
