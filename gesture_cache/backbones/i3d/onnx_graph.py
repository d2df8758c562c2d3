"""I3D as an ONNX graph, straight from the Keras weights and following the same layout as
`i3d.build_i3d`: each Unit3D one Conv with its batch norm folded in and a Relu, TensorFlow's
SAME padding as ONNX's SAME_UPPER, the channel swap and scaling inside, uint8 BGR frames
(N, 16, 224, 224, 3), already resized and cropped, in."""

from __future__ import annotations

import keras
import numpy as np
import onnx
from onnx import TensorProto, helper

from gesture_cache.backbones.i3d.layout import BLOCKS, layer_name
from gesture_cache.common.onnx_graph import Graph


def i3d_graph(network: keras.Model) -> onnx.ModelProto:
    """`network` is `i3d.build_i3d`'s model with its weights; the graph gives its Mixed_5c
    averaged over time, height and width (N, 1024)."""
    g = Graph()
    x = g.op("Cast", ["frames"], to=TensorProto.FLOAT)[0]
    x = g.op("Transpose", [x], perm=[0, 4, 1, 2, 3])[0]  # NDHWC -> NCDHW
    x = g.op("Gather", [x, g.constant(np.array([2, 1, 0], np.int64), "bgr_to_rgb")], axis=1)[0]
    x = g.op("Mul", [x, g.constant(np.array(1 / 127.5, np.float32), "scale")])[0]
    x = g.op("Sub", [x, g.constant(np.array(1.0, np.float32), "one")])[0]
    x = unit(g, network, x, "Conv3d_1a_7x7")
    x = max_pool(g, x, (1, 3, 3), (1, 2, 2))
    x = unit(g, network, x, "Conv3d_2b_1x1")
    x = unit(g, network, x, "Conv3d_2c_3x3")
    for block in BLOCKS:
        if len(block) == 3:
            x = max_pool(g, x, block[1], block[2])
            continue
        name = block[0]
        b0 = unit(g, network, x, f"{name}/Branch_0/Conv3d_0a_1x1")
        b1 = unit(g, network, x, f"{name}/Branch_1/Conv3d_0a_1x1")
        b1 = unit(g, network, b1, f"{name}/Branch_1/Conv3d_0b_3x3")
        b2 = unit(g, network, x, f"{name}/Branch_2/Conv3d_0a_1x1")
        b2 = unit(g, network, b2, f"{name}/Branch_2/Conv3d_0b_3x3")
        b3 = unit(
            g, network, max_pool(g, x, (3, 3, 3), (1, 1, 1)), f"{name}/Branch_3/Conv3d_0b_1x1"
        )
        x = g.op("Concat", [b0, b1, b2, b3], axis=1)[0]
    pooled = g.op("ReduceMean", [x], axes=[2, 3, 4], keepdims=0)[0]
    frames = helper.make_tensor_value_info("frames", TensorProto.UINT8, ["batch", 16, 224, 224, 3])
    features = helper.make_tensor_value_info("features", TensorProto.FLOAT, ["batch", 1024])
    return g.model([frames], pooled, "features", features)


def unit(g: Graph, network: keras.Model, x: str, path: str) -> str:
    """Conv3D + BatchNormalization + ReLU as one Conv (the batch norm folded in) and Relu."""
    conv = network.get_layer(layer_name(path, "conv"))
    bn = network.get_layer(layer_name(path, "bn"))
    kernel = np.asarray(conv.weights[0], np.float32)
    beta, mean, var = (np.asarray(w, np.float32) for w in bn.weights)
    factor = 1 / np.sqrt(var + bn.epsilon)
    w = g.constant((kernel * factor).transpose(4, 3, 0, 1, 2), f"{conv.name}_W")
    b = g.constant(beta - mean * factor, f"{conv.name}_B")
    x = g.op("Conv", [x, w, b], kernel_shape=list(conv.kernel_size), strides=list(conv.strides),
             auto_pad="SAME_UPPER")[0]  # fmt: skip
    return g.op("Relu", [x])[0]


def max_pool(g: Graph, x: str, window: tuple, strides: tuple) -> str:
    return g.op("MaxPool", [x], kernel_shape=list(window), strides=list(strides),
                auto_pad="SAME_UPPER")[0]  # fmt: skip
