"""ONNX graphs written directly from the Keras weights: the classifier head and the C3D
backbone, with nothing left outside them.

Converters were measured first: tf2onnx left the head's standardisation statistics as extra
graph inputs and was killed at 17.9 GB converting C3D. Both networks are plain layer stacks,
so each layer becomes its ONNX operator here (LSTM and GRU with `sequence_lens` for the
right-padded mask, Conv and MaxPool with three spatial axes on NCDHW), at the memory of the
weights themselves. OpenVINO reads these graphs as they are.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

OPSET = 17
EPSILON = 1e-7  # keras.backend.epsilon(): Normalization divides by max(sqrt(variance), it)
# Keras orders a recurrent kernel's gates i, f, c, o (LSTM) and z, r, h (GRU); ONNX i, o, f, c
# and z, r, h.
GATE_ORDER = {"lstm": [0, 3, 1, 2], "gru": [0, 1, 2]}


class Graph:
    """Nodes and constants of one graph, added in order."""

    def __init__(self):
        self.nodes: list[onnx.NodeProto] = []
        self.constants: list[onnx.TensorProto] = []
        self.count = 0

    def constant(self, array: np.ndarray, name: str) -> str:
        self.constants.append(numpy_helper.from_array(np.asarray(array), name))
        return name

    def op(self, kind: str, inputs: list[str], outputs: int = 1, **attributes) -> list[str]:
        self.count += 1
        names = [f"{kind.lower()}_{self.count}_{i}" for i in range(outputs)]
        self.nodes.append(helper.make_node(kind, inputs, names, **attributes))
        return names

    def model(self, inputs: list, output: str, name: str, output_type) -> onnx.ModelProto:
        self.nodes.append(helper.make_node("Identity", [output], [name]))
        graph = helper.make_graph(
            self.nodes, name, inputs, [output_type], initializer=self.constants
        )
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])
        model.ir_version = 8  # read by every runtime installed here
        onnx.checker.check_model(model)
        return model


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


def c3d_graph(
    network,
    layer: str,
    frame_size: tuple[int, int],
    crop: tuple[int, int, int, int],
    mean: np.ndarray,
    scale: float,
    pool5_pad: tuple,
    clip_len: int = 16,
) -> onnx.ModelProto:
    """C3D to `layer`, preprocessing inside: uint8 BGR frames (N, clip_len, height, width, 3),
    already resized to `frame_size` (width, height), -> float32 features (N, 4096). The crop
    (rows r0:r1, columns c0:c1), the mean (per channel (3,), or a cube cropped to the model's
    input (clip_len, h, w, 3)) and the scale are the cache's; `network` is `c3d.build_c3d`'s
    model with its weights, `pool5_pad` the ZeroPadding3D padding before pool5."""
    width, height = frame_size
    g = Graph()
    r0, r1, c0, c1 = crop
    x = g.op("Cast", ["frames"], to=TensorProto.FLOAT)[0]
    starts, ends = np.array([r0, c0], np.int64), np.array([r1, c1], np.int64)
    x = g.op(
        "Slice",
        [x, g.constant(starts, "crop_start"), g.constant(ends, "crop_end"),
         g.constant(np.array([2, 3], np.int64), "crop_axes")],
    )[0]  # fmt: skip
    x = g.op("Sub", [x, g.constant(np.asarray(mean, np.float32), "mean")])[0]
    if scale != 1.0:
        x = g.op("Mul", [x, g.constant(np.array(scale, np.float32), "pixel_scale")])[0]
    x = g.op("Transpose", [x], perm=[0, 4, 1, 2, 3])[0]  # NDHWC -> NCDHW
    for net_layer in network.layers:
        kind = type(net_layer).__name__
        if kind == "Conv3D":
            kernel, bias = (np.asarray(v, np.float32) for v in net_layer.weights)
            w = g.constant(kernel.transpose(4, 3, 0, 1, 2), f"{net_layer.name}_W")
            b = g.constant(bias, f"{net_layer.name}_B")
            x = g.op("Conv", [x, w, b], kernel_shape=[3, 3, 3], pads=[1] * 6)[0]
            x = g.op("Relu", [x])[0]
        elif kind == "MaxPooling3D":
            size = list(net_layer.pool_size)
            x = g.op("MaxPool", [x], kernel_shape=size, strides=size)[0]
        elif kind == "ZeroPadding3D":
            (d0, d1), (h0, h1), (w0, w1) = ((p, p) if isinstance(p, int) else p for p in pool5_pad)
            pads = np.array([0, 0, d0, h0, w0, 0, 0, d1, h1, w1], np.int64)
            x = g.op("Pad", [x, g.constant(pads, "pool5_pads")])[0]
        elif kind == "Flatten":  # Keras flattens channels last
            x = g.op("Transpose", [x], perm=[0, 2, 3, 4, 1])[0]
            x = g.op("Flatten", [x], axis=1)[0]
        elif kind == "Dense":
            kernel, bias = (np.asarray(v, np.float32) for v in net_layer.weights)
            x = g.op("MatMul", [x, g.constant(kernel, f"{net_layer.name}_W")])[0]
            x = g.op("Add", [x, g.constant(bias, f"{net_layer.name}_B")])[0]
            x = g.op("Relu", [x])[0]
            if net_layer.name == layer:
                break
    frames = helper.make_tensor_value_info(
        "frames", TensorProto.UINT8, ["batch", clip_len, height, width, 3]
    )
    features = helper.make_tensor_value_info("features", TensorProto.FLOAT, ["batch", 4096])
    return g.model([frames], x, "features", features)
