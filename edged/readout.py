"""Readout: LZ features of the output window -> class scores, as an ONNX graph.

Features per decision, per output neuron, in the model's ``features`` order: ``lzc``,
the normalised LZ complexity ``C * log2(n) / n`` of the neuron's window of ``n`` steps,
and ``rate``, its spikes per step. The graph maps ``float32[N, n_features]`` to class
scores: its first float output of rank 2, ``float32[N, n_classes]``; the class is the
argmax. Any ONNX classifier with that input width can replace it (e.g. skl2onnx's, whose
int64 label output comes first and is ignored).

``linear_onnx`` builds the readout the trainer fits: ``scores = ((x - mean) / scale) @ W + b``.
The nearest-class-mean rule is the same graph with ``W = 2 mu^T``, ``b = -|mu_c|^2``
(``-|x - mu_c|^2`` up to a term common to all classes): ``nearest_mean_onnx``.
"""

from __future__ import annotations

import numpy as np


def scale(name: str, n: int) -> float:
    """Per-count factor of feature ``name`` for windows of ``n`` steps: ``log2(n) / n``
    (``edged.lzc.normalise``) for ``lzc``, ``1 / n`` for ``rate``. ``edged.engine`` turns
    counts into features as ``float32(count * scale)``."""
    from edged.lzc import normalise

    return float(normalise(1, n)) if name == "lzc" else 1.0 / max(n, 1)


def linear_onnx(weight: np.ndarray, bias: np.ndarray, mean: np.ndarray | None = None,
                scale: np.ndarray | None = None, opset: int = 17) -> bytes:
    """An ONNX graph ``((x - mean) / scale) @ weight + bias``; ``weight[n_features, n_classes]``."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    n_feat, n_cls = weight.shape
    mean = np.zeros(n_feat) if mean is None else mean
    scale = np.ones(n_feat) if scale is None else scale
    init = [numpy_helper.from_array(np.asarray(a, np.float32).reshape(shape), name)
            for name, a, shape in (("mean", mean, (n_feat,)), ("scale", scale, (n_feat,)),
                                   ("weight", weight, (n_feat, n_cls)), ("bias", bias, (n_cls,)))]
    nodes = [helper.make_node("Sub", ["features", "mean"], ["centred"]),
             helper.make_node("Div", ["centred", "scale"], ["standard"]),
             helper.make_node("MatMul", ["standard", "weight"], ["product"]),
             helper.make_node("Add", ["product", "bias"], ["scores"])]
    graph = helper.make_graph(
        nodes, "edged_linear_readout",
        [helper.make_tensor_value_info("features", TensorProto.FLOAT, ["N", n_feat])],
        [helper.make_tensor_value_info("scores", TensorProto.FLOAT, ["N", n_cls])], init)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)],
                              producer_name="edged")
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model.SerializeToString()


def nearest_mean_onnx(class_means: np.ndarray) -> bytes:
    """The paper-style baseline: the class whose mean feature vector is nearest."""
    mu = np.asarray(class_means, np.float64)
    return linear_onnx(2.0 * mu.T, -np.sum(mu * mu, axis=1))


class Readout:
    """An onnxruntime session over a readout graph: one thread, sequential, no spinning."""

    def __init__(self, onnx_bytes: bytes):
        import onnxruntime as ort

        so = ort.SessionOptions()
        so.intra_op_num_threads = 1
        so.inter_op_num_threads = 1
        so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        so.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self._session = ort.InferenceSession(onnx_bytes, so, providers=["CPUExecutionProvider"])
        self._input = self._session.get_inputs()[0].name
        scores = [o for o in self._session.get_outputs() if o.type == "tensor(float)" and len(o.shape) == 2]
        if not scores:
            raise ValueError("the readout graph has no float [N, n_classes] output")
        self._output = scores[0].name

    def scores(self, x: np.ndarray) -> np.ndarray:
        """Class scores ``float32[N, n_classes]`` for features ``x[N, n_features]``."""
        out = self._session.run([self._output], {self._input: np.asarray(x, np.float32).reshape(len(x), -1)})[0]
        return np.asarray(out, np.float32).reshape(len(x), -1)
