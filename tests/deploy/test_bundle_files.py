"""A bundle's ONNX graph whose weights name another file is refused before a runtime reads it."""

from __future__ import annotations

import numpy as np
import pytest

from gesture_cache.common.errors import RunError
from gesture_cache.deploy.bundle import Session

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")


def test_an_onnx_graph_with_external_weights_is_refused(tmp_path):
    from onnx import TensorProto, helper, numpy_helper

    weight = numpy_helper.from_array(np.ones((2, 2), np.float32), "w")
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["features", "w"], ["probabilities"])],
        "head",
        [helper.make_tensor_value_info("features", TensorProto.FLOAT, [1, 2])],
        [helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, [1, 2])],
        [weight],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.save(model, tmp_path / "head.onnx")
    session = Session(tmp_path / "head.onnx", "onnx", "head")  # held inside: it runs
    assert session.run({"features": np.ones((1, 2), np.float32)}).tolist() == [[2.0, 2.0]]
    (tmp_path / "secret").write_bytes(np.full(4, 7, np.float32).tobytes())
    weight.ClearField("raw_data")
    weight.data_location = TensorProto.EXTERNAL
    weight.external_data.add(key="location", value=str(tmp_path / "secret"))
    model.graph.initializer[0].CopyFrom(weight)
    onnx.save(model, tmp_path / "hostile.onnx")
    with pytest.raises(RunError, match="keeps its values in another file"):
        Session(tmp_path / "hostile.onnx", "onnx", "head")
