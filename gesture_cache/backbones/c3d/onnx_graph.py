"""C3D as an ONNX graph, straight from the Keras weights: Conv and MaxPool with three spatial
axes on NCDHW, the resize, crop and mean inside the graph, uint8 frames in."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper

from gesture_cache.common.onnx_graph import Graph


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
