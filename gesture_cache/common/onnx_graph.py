"""Writing ONNX graphs layer by layer: the small builder the head and backbone graphs share.

Converters were measured first: tf2onnx left the head's standardisation statistics as extra
graph inputs and was killed at 17.9 GB converting C3D. Both networks are plain layer stacks,
so each layer becomes its ONNX operator, at the memory of the weights themselves. OpenVINO
reads these graphs as they are.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import helper, numpy_helper

OPSET = 17


EPSILON = 1e-7  # keras.backend.epsilon(): Normalization divides by max(sqrt(variance), it)


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
