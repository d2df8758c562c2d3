"""The classifier head as an ONNX graph, straight from the Keras weights: LSTM and GRU with
`sequence_lens` for the right-padded mask, the standardisation inside."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper

from gesture_cache.common.onnx_graph import EPSILON, Graph

# Keras orders a recurrent kernel's gates i, f, c, o (LSTM) and z, r, h (GRU); ONNX i, o, f, c
# and z, r, h.
GATE_ORDER = {"lstm": [0, 3, 1, 2], "gru": [0, 1, 2]}


def gate_major(kernel: np.ndarray, cell: str) -> np.ndarray:
    """A Keras kernel (inputs, gates x units) as ONNX wants it: (gates x units, inputs),
    gates reordered."""
    gates = len(GATE_ORDER[cell])
    units = kernel.shape[-1] // gates
    blocks = kernel.reshape(kernel.shape[0], gates, units)[:, GATE_ORDER[cell]]
    return blocks.reshape(kernel.shape[0], gates * units).T


def recurrent_weights(layer, cell: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """W, R, B of a Keras Bidirectional layer for ONNX's LSTM/GRU (forward, backward)."""
    w, r, b = [], [], []
    for direction in (layer.forward_layer, layer.backward_layer):
        kernel, recurrent, bias = (np.asarray(v) for v in direction.cell.weights)
        w.append(gate_major(kernel, cell))
        r.append(gate_major(recurrent, cell))
        if cell == "lstm":  # one bias; ONNX adds an input and a recurrent one
            b.append(np.concatenate([gate_major(bias[None], cell)[:, 0], np.zeros_like(bias)]))
        else:  # reset_after GRU: input and recurrent biases, as ONNX's linear_before_reset
            b.append(np.concatenate([gate_major(bias[i : i + 1], cell)[:, 0] for i in (0, 1)]))
    return np.stack(w), np.stack(r), np.stack(b)


def head_graph(model, cell: str) -> onnx.ModelProto:
    """The classifier: features (N, T, D) float32 and mask (N, T) bool, valid clips first,
    -> class probabilities (N, C). `model` is a classifier from `model.build_classifier`."""
    _, clips, dim = model.inputs[0].shape
    g = Graph()
    x = "features"
    names = {layer.name: layer for layer in model.layers}
    if "standardize" in names:
        layer = names["standardize"]
        mean = np.asarray(layer.mean, np.float32).reshape(-1)
        scale = 1.0 / np.maximum(np.sqrt(np.asarray(layer.variance, np.float32)), EPSILON)
        x = g.op("Sub", [x, g.constant(mean, "mean")])[0]
        x = g.op("Mul", [x, g.constant(scale.reshape(-1).astype(np.float32), "scale")])[0]
    if "reduce" in names:  # --reduce pca:N, a fixed projection
        kernel, bias = (np.asarray(v, np.float32) for v in names["reduce"].weights)
        x = g.op("MatMul", [x, g.constant(kernel, "reduce_kernel")])[0]
        x = g.op("Add", [x, g.constant(bias, "reduce_bias")])[0]
    lengths = g.op("Cast", ["mask"], to=TensorProto.INT32)[0]
    time_axis = g.constant(np.array([1], np.int64), "time_axis")
    lengths = g.op("ReduceSum", [lengths, time_axis], keepdims=0)[0]
    x = g.op("Transpose", [x], perm=[1, 0, 2])[0]  # time major
    recurrent = [layer for layer in model.layers if layer.name.startswith(f"bi{cell}_")]
    for i, layer in enumerate(recurrent):
        w, r, b = recurrent_weights(layer, cell)
        y, y_h = g.op(
            "LSTM" if cell == "lstm" else "GRU",
            [x, g.constant(w, f"W{i}"), g.constant(r, f"R{i}"), g.constant(b, f"B{i}"), lengths],
            outputs=2,
            hidden_size=r.shape[-1],
            direction="bidirectional",
            **({"linear_before_reset": 1} if cell == "gru" else {}),
        )
        if i < len(recurrent) - 1:  # (T, 2, N, H) -> (T, N, 2H): the next layer's input
            y = g.op("Transpose", [y], perm=[0, 2, 1, 3])[0]
            x = g.op("Reshape", [y, g.constant(np.array([0, 0, -1], np.int64), f"tnh{i}")])[0]
        else:  # final states (2, N, H) -> (N, 2H), forward then backward as Keras concatenates
            y_h = g.op("Transpose", [y_h], perm=[1, 0, 2])[0]
            x = g.op("Reshape", [y_h, g.constant(np.array([0, -1], np.int64), "nh")])[0]
    for name in ("dense", "classes"):
        if name not in names:
            continue
        kernel, bias = (np.asarray(v, np.float32) for v in names[name].weights)
        x = g.op("MatMul", [x, g.constant(kernel, f"{name}_kernel")])[0]
        x = g.op("Add", [x, g.constant(bias, f"{name}_bias")])[0]
        x = g.op("Relu" if name == "dense" else "Softmax", [x])[0]
    inputs = [
        helper.make_tensor_value_info("features", TensorProto.FLOAT, ["batch", clips, dim]),
        helper.make_tensor_value_info("mask", TensorProto.BOOL, ["batch", clips]),
    ]
    classes = model.outputs[0].shape[-1]
    output = helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["batch", classes])
    return g.model(inputs, x, "probabilities", output)
