"""Adapting third-party ONNX classifiers (e.g. skl2onnx) to the readout contract.

``edged.readout.Readout`` reads the graph's *first* output as the class scores
``float32[N, n_classes]``. skl2onnx classifiers put the predicted label (int64[N])
first and the probabilities second; ``scores_first`` keeps only the first float output
of rank 2 (the probabilities), so the graph can be stored in a model file as is.
"""

from __future__ import annotations


def scores_first(onnx_bytes: bytes) -> bytes:
    """The same graph with its float ``[N, k]`` output as the only output."""
    import onnx

    m = onnx.load_model_from_string(onnx_bytes)
    keep = [o for o in m.graph.output
            if o.type.tensor_type.elem_type == onnx.TensorProto.FLOAT
            and len(o.type.tensor_type.shape.dim) == 2]
    if not keep:
        raise ValueError("the graph has no float [N, k] output to use as class scores")
    del m.graph.output[:]
    m.graph.output.append(keep[0])
    onnx.checker.check_model(m)
    return m.SerializeToString()
