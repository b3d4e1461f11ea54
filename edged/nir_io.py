"""NIR in and out (``edged nir export|import``): edged models as Neuromorphic Intermediate
Representation graphs, the interchange format of snnTorch, Norse, SpikingJelly, Sinabs,
Rockpool and neuromorphic chips (PyPI ``nir``, HDF5 through ``h5py``: the optional extra
``edged[nir]``; the daemon never imports this module).

A NIR ``LIF`` node is a continuous-time ODE per neuron, with input current ``I``::

    tau dv/dt = (v_leak - v) + r * I,   spike when v > v_threshold,   then v <- v_reset

edged steps ``v <- alpha * v + (1 - alpha) * R * I``, ``alpha = exp(-dt / tau_e)``, and
spikes when ``v >= theta`` (``edged.neurons``). Per neuron, for a step ``dt`` (s):

* zero-order hold (``I`` constant over each step: the exact solution of the ODE):
  ``tau_e = tau``, ``R = r``. Export always writes this.
* forward Euler (how snnTorch, Norse and SpikingJelly simulate NIR's LIF):
  ``v <- (1 - dt/tau) v + (dt/tau) r I`` is edged's step with ``alpha = 1 - dt/tau``:
  ``tau_e = -dt / ln(1 - dt/tau)``, ``R = r`` (needs ``dt < tau``).
* threshold: for float32 ``v``, ``v > x`` is exactly ``v >= nextafter(x, +inf)``. Import
  takes ``theta = nextafter(float32(v_threshold), +inf)``, export writes ``v_threshold =
  nextafter(theta, -inf)``: both fire on the same float32 potentials, and a round trip
  gives ``theta`` back bit for bit.
* reset: ``zero`` is edged's reset to the value ``v_reset`` (NIR's field; 0 in snnTorch
  and Norse exports), ``subtract`` subtracts the threshold in the step the neuron fires
  (NIR's LIF has no field for it: export records it in the metadata). snnTorch's own
  subtractive reset takes effect one step later and so differs.
* ``v_leak`` must be 0 (edged's rest potential) and Affine biases 0: a constant current
  would be an offset edged's kernel does not have, so non-zero values are refused.

Graphs imported: ``Input -> L* -> LIF -> L* -> LIF -> Output``, ``L`` any of ``Linear``,
``Affine`` (zero bias), ``Scale`` and ``Flatten``, multiplied into one weight matrix per
layer (a NIR ``weight[out, in]`` is edged's ``w[in, out]`` transposed; ``Scale`` is
diagonal, ``Flatten`` the identity). With one LIF layer (``Input -> L* -> LIF ->
Output``), edged's output layer relays its spikes unchanged (``relay_intrinsics``).
Anything else is refused with the node's name and type: other neurons (``CubaLIF``,
``IF``, ``LI``, ...), ``Conv*``, pooling, ``Delay``, ``Threshold``, subgraphs, recurrent or
branching edges.

Export writes ``input -> fc1 (Linear) -> lif1 (LIF) -> fc2 (Linear) -> lif2 (LIF) ->
output`` and, as flat graph metadata, what NIR has no field for: the format tag,
``dt``, the discretisation, the reset mode, the threshold rule, the neuron kind, the LZC
settings, classes, readout features and ONNX readout bytes, encoding and provenance.
Meta-neuron models are refused unless ``lossy``: the LIF fields then carry ``tau,
theta, v_reset, R`` (the meta-neuron's ``beta = kappa = 0`` case) and the adaptation
intrinsics go into the metadata as ``hidden.beta`` etc., which import does not use.
Importing a graph edged exported restores its LZC settings, encoding, provenance and (unless
the export was lossy) its classes and readout, and takes ``dt``, discretisation and reset
from it unless given; any other graph gives a model without readout, to be fitted by
``edged-train readout``.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Literal

import numpy as np

from edged.intrinsics import INTRINSICS, check_intrinsics
from edged.model import Model

Discretisation = Literal["zoh", "euler"]
Reset = Literal["zero", "subtract"]
FORMAT = "edged-nir"
RESET_MODES = {"zero": "value", "subtract": "subtract"}  # NIR-side name -> Model.reset
LINEAR_NODES = ("Linear", "Affine", "Scale", "Flatten")
SUPPORTED = ("Input", "Output", "LIF") + LINEAR_NODES
THRESHOLD_RULE = ("spike when v > v_threshold in float32; v_threshold = nextafter(theta, -inf) "
                  "of edged's v >= theta, the same test")


class NIRError(ValueError):
    """A NIR graph or model edged cannot convert; the message names the node or field."""


def _nir():
    try:
        import nir
    except ImportError:
        raise NIRError("NIR support needs the optional packages nir and h5py: "
                       "pip install 'edged[nir]'") from None
    return nir


# -- export -----------------------------------------------------------------------------

def to_graph(model: Model, lossy: bool = False):
    """The NIR graph of ``model`` (zero-order hold); meta-neurons need ``lossy``."""
    nir = _nir()
    if model.neuron != "lif" and not lossy:
        raise NIRError(f"{model.neuron} neurons have no NIR node (threshold adaptation, "
                       "activity-dependent tau, escape noise): export with --lossy to write the "
                       "beta = kappa = 0 LIF case and keep the rest in metadata")

    def lif(p: dict[str, np.ndarray]):
        th = np.nextafter(p["theta"].astype(np.float32), np.float32(-np.inf))
        return nir.LIF(tau=p["tau"].astype(np.float32), r=p["R"].astype(np.float32),
                       v_leak=np.zeros_like(th), v_threshold=th,
                       v_reset=p["v_reset"].astype(np.float32))

    meta: dict[str, Any] = {
        "edged.format": FORMAT, "dt": float(model.dt), "discretisation": "zoh",
        "reset": "zero" if model.reset == "value" else "subtract", "threshold": THRESHOLD_RULE,
        "neuron": model.neuron, "lossy": int(model.neuron != "lif"),
        "lzc.variant": model.variant, "lzc.window": model.window, "lzc.hop": model.hop,
        "classes": json.dumps(list(model.classes)), "features": json.dumps(list(model.features)),
        "encoding": json.dumps(model.encoding), "provenance": json.dumps(model.provenance),
        "model_sha256": model.sha256}
    if model.has_readout:
        meta["readout"] = np.frombuffer(model.readout, np.uint8).copy()
    if model.neuron != "lif":
        for layer, p in (("hidden", model.hidden), ("output", model.output)):
            meta |= {f"{layer}.{k}": v.astype(np.float32) for k, v in p.items()
                     if k not in INTRINSICS["lif"]}
    nodes = {"input": nir.Input(input_type={"input": np.array([model.n_in])}),
             "fc1": nir.Linear(weight=model.w_in.T.astype(np.float32)), "lif1": lif(model.hidden),
             "fc2": nir.Linear(weight=model.w_out.T.astype(np.float32)), "lif2": lif(model.output),
             "output": nir.Output(output_type={"output": np.array([model.n_out])})}
    edges = [("input", "fc1"), ("fc1", "lif1"), ("lif1", "fc2"), ("fc2", "lif2"), ("lif2", "output")]
    return nir.NIRGraph(nodes=nodes, edges=edges, metadata=meta)


def export(model: Model, path: str | Path, lossy: bool = False) -> None:
    graph = to_graph(model, lossy)
    try:
        _nir().write(str(path), graph)
    except OSError as e:
        raise NIRError(f"cannot write {path}: {e.strerror or e}") from None


# -- import -----------------------------------------------------------------------------

def read(path: str | Path):
    """Read a NIR file; ``NIRError`` (one line) if it is not one nir can read."""
    from edged.model import MAX_TOTAL_BYTES

    nir = _nir()
    if not Path(path).is_file():
        raise NIRError("no such file")
    if Path(path).stat().st_size > MAX_TOTAL_BYTES:
        raise NIRError(f"{Path(path).stat().st_size} bytes: over the {MAX_TOTAL_BYTES}-byte model limit")
    try:
        return nir.read(str(path))
    except Exception as e:  # h5py and nir raise many unrelated types for a bad file
        first = e
    try:  # nir's own type inference rejects some exporters' shapes (Rockpool): ours checks
        return nir.read(str(path), type_check=False)
    except Exception:
        detail = str(first).splitlines()[0] if str(first) else type(first).__name__
        raise NIRError(f"not a NIR graph nir {_version()} can read ({detail})") from None


def _version() -> str:
    from edged import versions

    return versions(("nir",))["nir"]


def _text(v: Any) -> str:
    v = v.item() if isinstance(v, np.ndarray) and v.shape == () else v
    return v.decode() if isinstance(v, bytes) else str(v)


def _chain(graph) -> list[tuple[str, Any]]:
    """The nodes from Input to Output in order; ``NIRError`` for anything but a chain of
    supported node types."""
    nodes, edges = graph.nodes, [tuple(e) for e in graph.edges]
    for name, node in nodes.items():
        kind = type(node).__name__
        if kind not in SUPPORTED:
            raise NIRError(f"node {name!r} is a {kind}: not supported (edged imports a chain of "
                           f"{', '.join(SUPPORTED)})")
    succ: dict[str, list[str]] = {n: [] for n in nodes}
    pred: dict[str, list[str]] = {n: [] for n in nodes}
    for a, b in edges:
        if a not in nodes or b not in nodes:
            raise NIRError(f"edge {a!r} -> {b!r} names a node the graph does not have")
        succ[a].append(b)
        pred[b].append(a)
    for name in nodes:
        for where, links in (("out of", succ[name]), ("into", pred[name])):
            if len(links) > 1:
                raise NIRError(f"node {name!r} ({type(nodes[name]).__name__}) has {len(links)} edges "
                               f"{where} it ({', '.join(links)}): edged imports feed-forward chains "
                               "only (no branching or recurrence)")
    starts = [n for n, node in nodes.items() if type(node).__name__ == "Input"]
    if len(starts) != 1:
        raise NIRError(f"the graph has {len(starts)} Input nodes, edged needs exactly one")
    order, seen = [starts[0]], {starts[0]}
    while succ[order[-1]]:
        nxt = succ[order[-1]][0]
        if nxt in seen:
            raise NIRError(f"edge {order[-1]!r} -> {nxt!r} closes a loop: recurrent graphs "
                           "are not supported")
        order.append(nxt)
        seen.add(nxt)
    if type(nodes[order[-1]]).__name__ != "Output":
        raise NIRError(f"the chain from {starts[0]!r} ends at {order[-1]!r} "
                       f"({type(nodes[order[-1]]).__name__}), not at an Output node")
    if len(order) != len(nodes):
        rest = sorted(set(nodes) - seen)
        raise NIRError(f"nodes {rest} are not on the chain from {starts[0]!r} to {order[-1]!r}")
    return [(n, nodes[n]) for n in order]


def _vector(node_name: str, field: str, value: Any, n: int) -> np.ndarray:
    a = np.asarray(value, np.float64)
    try:
        a = np.broadcast_to(a.reshape(-1) if a.size == n else a, (n,))
    except ValueError:
        raise NIRError(f"node {node_name!r}: {field} has shape {a.shape}, expected ({n},)") from None
    if not np.all(np.isfinite(a)):
        raise NIRError(f"node {node_name!r}: {field} has non-finite values")
    return a


def lif_intrinsics(name: str, node, n: int, dt: float, discretisation: Discretisation) -> dict[str, np.ndarray]:
    """edged LIF intrinsics ``tau, theta, v_reset, R`` (float32) of a NIR ``LIF`` node of
    ``n`` neurons (module maths); ``NIRError`` names the node and field it cannot map."""
    tau = _vector(name, "tau", node.tau, n)
    r = _vector(name, "r", node.r, n)
    if np.any(_vector(name, "v_leak", node.v_leak, n) != 0):
        raise NIRError(f"node {name!r}: v_leak must be 0 (edged's rest potential)")
    if np.any(tau <= 0):
        raise NIRError(f"node {name!r}: tau must be > 0")
    if discretisation == "euler":
        if np.any(tau <= dt):
            raise NIRError(f"node {name!r}: forward Euler needs dt < tau, but dt = {dt:g} s and "
                           f"min tau = {tau.min():g} s")
        tau = -dt / np.log1p(-dt / tau)
    theta = np.nextafter(_vector(name, "v_threshold", node.v_threshold, n).astype(np.float32),
                         np.float32(np.inf))
    p = {"tau": tau.astype(np.float32), "theta": theta, "R": r.astype(np.float32),
         "v_reset": _vector(name, "v_reset", node.v_reset, n).astype(np.float32)}
    try:
        check_intrinsics("lif", p)
    except ValueError as e:
        raise NIRError(f"node {name!r}: {e}") from None
    return p


def relay_intrinsics(n: int, dt: float) -> dict[str, np.ndarray]:
    """Intrinsics of an output layer that copies its input spikes (weights: identity):
    ``alpha = exp(-50)``, so ``v`` is ``~1`` in a step with an input spike and ``~0``
    otherwise, against ``theta = 0.5``, under either reset."""
    full = np.ones(n, np.float32)
    return {"tau": full * np.float32(dt / 50), "theta": full * np.float32(0.5),
            "v_reset": np.zeros(n, np.float32), "R": full}


def _fold(name: str, node, w: np.ndarray) -> np.ndarray:
    """``w[in, cur]`` followed by a linear node -> ``w[in, new]``."""
    kind = type(node).__name__
    if kind == "Flatten":
        return w
    if kind == "Scale":
        return w * _vector(name, "scale", node.scale, w.shape[1])
    weight = np.asarray(node.weight, np.float64)
    if weight.ndim != 2 or weight.shape[1] != w.shape[1]:
        raise NIRError(f"node {name!r} ({kind}) has weight shape {weight.shape}, but {w.shape[1]} "
                       "values reach it")
    if kind == "Affine" and np.any(np.asarray(node.bias) != 0):
        raise NIRError(f"node {name!r} (Affine) has a non-zero bias: a constant input current "
                       "edged's kernel does not have (train with bias=False)")
    if not np.all(np.isfinite(weight)):
        raise NIRError(f"node {name!r} ({kind}): weight has non-finite values")
    return w @ weight.T


def _edged_meta(meta: dict[str, Any]) -> dict[str, Any] | None:
    """``dt``, ``discretisation``, ``reset`` and the ``Model`` fields of a graph edged
    exported (``None`` for any other graph)."""
    if _text(meta.get("edged.format", "")) != FORMAT:
        return None
    try:
        exact = int(meta["lossy"]) == 0  # a lossy export's readout was fitted on other neurons
        fields = {"classes": tuple(json.loads(_text(meta["classes"]))) if exact else (),
                  "readout": np.asarray(meta["readout"], np.uint8).tobytes()
                  if exact and "readout" in meta else b"",
                  "window": int(meta["lzc.window"]), "hop": int(meta["lzc.hop"]),
                  "variant": _text(meta["lzc.variant"]),
                  "features": tuple(json.loads(_text(meta["features"]))),
                  "encoding": json.loads(_text(meta["encoding"])),
                  "provenance": json.loads(_text(meta["provenance"]))}
        return {"dt": float(meta["dt"]), "discretisation": _text(meta["discretisation"]),
                "reset": _text(meta["reset"]), "fields": fields}
    except (KeyError, TypeError, ValueError) as e:
        raise NIRError(f"the graph's edged metadata is incomplete or malformed "
                       f"({type(e).__name__}: {e})") from None


def from_graph(graph, dt: float | None = None, discretisation: Discretisation | None = None,
               reset: Reset | None = None, source: str = "") -> Model:
    """An edged LIF ``Model`` of a NIR graph (module docstring); ``dt``, ``discretisation``
    and ``reset`` default to the metadata of a graph edged exported."""
    ours = _edged_meta(dict(getattr(graph, "metadata", None) or {}))
    dt = dt if dt is not None else (ours["dt"] if ours else None)
    discretisation = discretisation or (ours["discretisation"] if ours else None)
    reset = reset or (ours["reset"] if ours else None)
    missing = [f"--{k}" for k, v in (("dt", dt), ("discretisation", discretisation), ("reset", reset))
               if v is None]
    if missing:
        raise NIRError(f"NIR stores no {', '.join(missing)}: give {' and '.join(missing)} "
                       "(snnTorch exports use dt 1e-4 and forward Euler)")
    if not (isinstance(dt, float) and 0 < dt <= 1 and math.isfinite(dt)):
        raise NIRError(f"dt {dt!r} must be in (0, 1] s")
    if discretisation not in ("zoh", "euler") or reset not in RESET_MODES:
        raise NIRError(f"discretisation {discretisation!r} / reset {reset!r}: expected zoh|euler, zero|subtract")
    chain = _chain(graph)
    try:
        shape = np.asarray(chain[0][1].input_type["input"], np.int64).reshape(-1)
    except (KeyError, TypeError, ValueError):
        shape = np.zeros(0, np.int64)
    if not shape.size or np.any(shape < 1):
        raise NIRError(f"Input node {chain[0][0]!r} has no valid shape")
    n_in = int(np.prod(shape))
    w = np.eye(n_in)
    weights, layers = [], []
    for name, node in chain[1:]:
        kind = type(node).__name__
        if kind == "LIF":
            if len(layers) == 2:
                raise NIRError(f"node {name!r} is a third LIF layer: edged networks have at most "
                               "two (hidden, output)")
            layers.append(lif_intrinsics(name, node, w.shape[1], dt, discretisation))
            weights.append(w)
            w = np.eye(w.shape[1])
        elif kind == "Output":
            if w.shape[0] != w.shape[1] or not np.array_equal(w, np.eye(w.shape[0])):
                raise NIRError(f"linear nodes between the last LIF layer and {name!r}: edged's "
                               "output is the last LIF layer's spikes")
        else:
            w = _fold(name, node, w)
    relayed = len(layers) == 1
    if relayed:  # edged's output layer relays the one LIF layer's spikes
        n = w.shape[1]
        layers.append(relay_intrinsics(n, dt))
        weights.append(np.eye(n))
    if len(layers) != 2:
        raise NIRError("the graph has no LIF layer: edged networks have one or two")
    fields: dict[str, Any] = ours["fields"] if ours else {"classes": (), "readout": b"", "provenance": {}}
    fields["provenance"] = {**fields["provenance"], "nir_import": {
        "source": source, "dt": dt, "discretisation": discretisation, "reset": reset,
        "lif_layers": 2 - relayed, "exported_by_edged": ours is not None, "nir": _version()}}
    return Model(neuron="lif", w_in=weights[0].astype(np.float32), w_out=weights[1].astype(np.float32),
                 hidden=layers[0], output=layers[1], dt=dt, reset=RESET_MODES[reset], **fields)
