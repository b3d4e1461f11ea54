"""The model file: one ``.npz`` holding everything ``edged serve`` needs.

Members (all plain arrays, read with ``allow_pickle=False``)::

    header           uint8[]  UTF-8 JSON object, below
    w_in             float32[n_in, n_hidden]
    w_out            float32[n_hidden, n_out]
    hidden.<name>    float32[n_hidden]   one per intrinsic of the neuron kind
    output.<name>    float32[n_out]      (edged.intrinsics.INTRINSICS)
    readout          uint8[]  ONNX graph: input float32[N, n_out * len(features)]
                              -> output float32[N, len(classes)] class scores;
                              empty (and ``classes`` empty) for a model without readout

Header keys: ``format`` ("edged-model"), ``version`` (1), ``neuron`` ("lif" | "meta" |
"meta-esc"), ``seed`` (int, keys the escape noise, ``edged.rng``; files without it: 0),
``dt`` (s), ``reset`` ("value" | "subtract"), ``n_in``, ``n_hidden``, ``n_out``,
``lzc`` {``variant``, ``window``, ``hop``} (steps), ``classes`` (labels, strings),
``features`` (readout inputs, per output neuron, in order: "lzc" = normalised LZ
complexity of the window, "rate" = spikes per step in the window), ``encoding`` (how
raw events become input channels, or null), ``provenance`` (free JSON: task, rule,
seed, metrics, versions) and ``content_sha256``, a hash over the header and every
member (``content_hash``) that ``load`` verifies. The file's own sha256 identifies the
model in decisions and metrics.

``load`` checks, before using anything: the zip directory (member names, declared
sizes: a zip-bomb guard), each member's ``.npy`` header (dtype, shape) before
inflating it, the header schema, finite weights, intrinsic ranges, and the ONNX
readout's input and output widths (no external data). Every failure raises
``ModelError`` with one line naming the problem. Older meta-neuron files name the
resting time constant and threshold ``tau0`` and ``theta0``; ``load`` reads them as
``tau`` and ``theta`` (``edged.intrinsics.ALIASES``).

A model without readout (``edged nir import`` writes one) holds a network only: ``edged
run`` simulates it and ``edged nir export`` converts it, but ``edged serve`` refuses it
until ``edged-train readout`` fits a readout on a task or an event folder.
"""

from __future__ import annotations

import hashlib
import io
import json
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from edged.intrinsics import ALIASES, INTRINSICS, NeuronKind, check_intrinsics

FORMAT = "edged-model"
VERSION = 1
FEATURES = ("lzc", "rate")
MAX_MEMBER_BYTES = 64 << 20
MAX_TOTAL_BYTES = 256 << 20
HEADER_KEYS = {"format", "version", "neuron", "dt", "reset", "n_in", "n_hidden", "n_out",
               "lzc", "classes", "features", "encoding", "provenance", "content_sha256", "seed"}
OPTIONAL_KEYS = {"seed"}


class ModelError(ValueError):
    """A model file that cannot be served; the message names the problem."""


@dataclass(frozen=True, eq=False)
class Model:
    neuron: NeuronKind
    w_in: np.ndarray
    w_out: np.ndarray
    hidden: dict[str, np.ndarray]
    output: dict[str, np.ndarray]
    readout: bytes
    classes: tuple[str, ...]
    dt: float = 1e-3
    reset: Literal["value", "subtract"] = "value"
    window: int = 1024
    hop: int = 16
    variant: Literal["lz76"] = "lz76"
    features: tuple[str, ...] = ("lzc",)
    encoding: dict[str, Any] | None = None
    provenance: dict[str, Any] = field(default_factory=dict)
    seed: int = 0  # escape noise (edged.rng)
    sha256: str = ""  # of the file it was loaded from

    @property
    def n_in(self) -> int:
        return self.w_in.shape[0]

    @property
    def n_hidden(self) -> int:
        return self.w_in.shape[1]

    @property
    def n_out(self) -> int:
        return self.w_out.shape[1]

    @property
    def n_features(self) -> int:
        return self.n_out * len(self.features)

    @property
    def has_readout(self) -> bool:
        return len(self.readout) > 0

    def net(self):
        """The kernels' ``edged.neurons.Net`` for this model."""
        from edged import neurons

        return neurons.net(self.neuron, self.w_in, self.w_out, self.hidden, self.output,
                           self.dt, self.reset, self.seed)

    def header(self) -> dict[str, Any]:
        return {"format": FORMAT, "version": VERSION, "neuron": self.neuron, "dt": float(self.dt),
                "reset": self.reset, "n_in": self.n_in, "n_hidden": self.n_hidden,
                "n_out": self.n_out,
                "lzc": {"variant": self.variant, "window": self.window, "hop": self.hop},
                "classes": list(self.classes), "features": list(self.features),
                "encoding": self.encoding, "provenance": self.provenance, "seed": int(self.seed)}

    def arrays(self) -> dict[str, np.ndarray]:
        arrays = {"w_in": self.w_in, "w_out": self.w_out,
                  "readout": np.frombuffer(self.readout, np.uint8)}
        arrays |= {f"hidden.{k}": v for k, v in self.hidden.items()}
        arrays |= {f"output.{k}": v for k, v in self.output.items()}
        return {k: np.ascontiguousarray(v, dtype=np.uint8 if k == "readout" else np.float32)
                for k, v in arrays.items()}


def content_hash(header: dict[str, Any], arrays: dict[str, np.ndarray]) -> str:
    """sha256 over the canonical header JSON (without the hash) and every member."""
    h = hashlib.sha256(json.dumps({k: v for k, v in header.items() if k != "content_sha256"},
                                  sort_keys=True).encode())
    for name in sorted(arrays):
        a = arrays[name]
        h.update(f"{name}|{a.dtype.str}|{a.shape}".encode())
        h.update(np.ascontiguousarray(a).tobytes())
    return h.hexdigest()


def save(path: str | Path, model: Model) -> str:
    """Validate ``model``, write it atomically to ``path``; return the file's sha256."""
    arrays = model.arrays()
    header = model.header()
    header["content_sha256"] = content_hash(header, arrays)
    buf = io.BytesIO()
    np.savez_compressed(buf, header=np.frombuffer(json.dumps(header, sort_keys=True).encode(), np.uint8),
                        **arrays)
    data = buf.getvalue()
    _validate(header, arrays, model.readout)  # never write a file load() would refuse
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(data)
    tmp.replace(path)
    return hashlib.sha256(data).hexdigest()


def load(path: str | Path) -> Model:
    """Read and validate a model file; raise ``ModelError`` naming the first problem."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as e:
        raise ModelError(f"cannot read model file: {e.strerror or e}") from None
    header, arrays = _read_members(data)
    readout = arrays.pop("readout").tobytes()
    arrays["readout"] = np.frombuffer(readout, np.uint8)
    stored, arrays = arrays, {_canonical(k): v for k, v in arrays.items()}
    if len(arrays) != len(stored):
        twice = sorted(k for k in stored if k != _canonical(k) and _canonical(k) in stored)
        raise ModelError(f"members {twice} duplicate their current names {[_canonical(k) for k in twice]}")
    _validate(header, arrays, readout)
    if content_hash(header, stored) != header["content_sha256"]:
        raise ModelError("content hash mismatch: the file was corrupted or edited")
    kind = header["neuron"]
    return Model(neuron=kind, w_in=arrays["w_in"], w_out=arrays["w_out"],
                 hidden={k: arrays[f"hidden.{k}"] for k in INTRINSICS[kind]},
                 output={k: arrays[f"output.{k}"] for k in INTRINSICS[kind]},
                 readout=readout, classes=tuple(header["classes"]), dt=header["dt"],
                 reset=header["reset"], window=header["lzc"]["window"],
                 hop=header["lzc"]["hop"], variant=header["lzc"]["variant"],
                 features=tuple(header["features"]), encoding=header["encoding"],
                 provenance=header["provenance"], seed=header.get("seed", 0),
                 sha256=hashlib.sha256(data).hexdigest())


def _canonical(member: str) -> str:
    layer, _, name = member.rpartition(".")
    return f"{layer}.{ALIASES.get(name, name)}" if layer else member


def _read_members(data: bytes) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    try:
        zf = zipfile.ZipFile(io.BytesIO(data))
        infos = zf.infolist()
    except (zipfile.BadZipFile, OSError, EOFError) as e:
        raise ModelError(f"not a model file (bad zip: {e})") from None
    total = 0
    arrays: dict[str, np.ndarray] = {}
    with zf:
        for info in infos:
            name = info.filename.removesuffix(".npy")
            if not info.filename.endswith(".npy") or name in arrays:
                raise ModelError(f"unexpected member {info.filename!r}")
            total += info.file_size
            if info.file_size > MAX_MEMBER_BYTES or total > MAX_TOTAL_BYTES:
                raise ModelError(f"member {name!r} inflates to {info.file_size} bytes, "
                                 f"over the {MAX_MEMBER_BYTES}-byte member or "
                                 f"{MAX_TOTAL_BYTES}-byte total limit")
            try:
                with zf.open(info) as f:
                    version = np.lib.format.read_magic(f)
                    read_header = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                                   else np.lib.format.read_array_header_2_0)
                    shape, _, dtype = read_header(f)
                    if dtype.hasobject or dtype not in (np.float32, np.uint8):
                        raise ModelError(f"member {name!r} has dtype {dtype}, "
                                         "expected float32 (uint8 for header and readout)")
                    if int(np.prod(shape)) * dtype.itemsize > info.file_size:
                        raise ModelError(f"member {name!r} header claims more data than it holds")
                    arrays[name] = np.lib.format.read_array(io.BytesIO(zf.read(info)),
                                                           allow_pickle=False)
            except ModelError:
                raise
            except (ValueError, OSError, EOFError, zipfile.BadZipFile) as e:
                raise ModelError(f"member {name!r} is unreadable: {e}") from None
    if "header" not in arrays:
        raise ModelError("missing member 'header'")
    try:
        header = json.loads(arrays.pop("header").tobytes().decode())
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ModelError(f"header is not JSON: {e}") from None
    if not isinstance(header, dict):
        raise ModelError("header is not a JSON object")
    return header, arrays


def _validate(h: dict[str, Any], arrays: dict[str, np.ndarray], readout: bytes) -> None:
    if h.get("format") != FORMAT:
        raise ModelError(f"header format is {h.get('format')!r}, expected {FORMAT!r}")
    if h.get("version") != VERSION:
        raise ModelError(f"model format version {h.get('version')!r} is not supported "
                         f"(this edged reads version {VERSION})")
    if not HEADER_KEYS - OPTIONAL_KEYS <= set(h) <= HEADER_KEYS:
        missing, extra = HEADER_KEYS - OPTIONAL_KEYS - set(h), set(h) - HEADER_KEYS
        raise ModelError(f"header keys: missing {sorted(missing)}, unexpected {sorted(extra)}")
    _expect(h["neuron"] in INTRINSICS, f"neuron kind {h['neuron']!r} is not one of {sorted(INTRINSICS)}")
    _expect(h["reset"] in ("value", "subtract"), f"reset {h['reset']!r} is not 'value' or 'subtract'")
    _expect(isinstance(h["dt"], float) and 0 < h["dt"] <= 1, f"dt {h['dt']!r} must be a float in (0, 1] s")
    for k in ("n_in", "n_hidden", "n_out"):
        _expect(type(h[k]) is int and 1 <= h[k] <= 1 << 20, f"{k} {h[k]!r} must be an int in [1, 2**20]")
    lz = h["lzc"]
    _expect(isinstance(lz, dict) and set(lz) == {"variant", "window", "hop"},
            "lzc must have exactly variant, window, hop")
    _expect(lz["variant"] == "lz76", f"lzc variant {lz['variant']!r} is not supported for streaming "
            "(only 'lz76'; edged.lzc.lzc offers 'lz78' for offline analysis)")
    _expect(type(lz["window"]) is int and 2 <= lz["window"] <= 1 << 16,
            f"lzc window {lz['window']!r} must be an int in [2, 65536]")
    _expect(type(lz["hop"]) is int and 1 <= lz["hop"] <= lz["window"],
            f"lzc hop {lz['hop']!r} must be an int in [1, window]")
    classes = h["classes"]
    if readout:
        _expect(isinstance(classes, list) and len(classes) >= 2 and all(isinstance(c, str) for c in classes)
                and len(set(classes)) == len(classes), "classes must be a list of >= 2 distinct strings")
    else:
        _expect(classes == [], "a model without readout (empty readout member) must have no classes")
    feats = h["features"]
    _expect(isinstance(feats, list) and feats and all(f in FEATURES for f in feats)
            and len(set(feats)) == len(feats), f"features must be distinct names from {FEATURES}")
    _expect(h["encoding"] is None or isinstance(h["encoding"], dict), "encoding must be an object or null")
    _expect(isinstance(h["provenance"], dict), "provenance must be an object")
    _expect(isinstance(h["content_sha256"], str), "content_sha256 must be a string")
    _expect(type(h.get("seed", 0)) is int and 0 <= h.get("seed", 0) < 1 << 63,
            f"seed {h.get('seed')!r} must be an int in [0, 2**63)")

    n_in, n_h, n_o = h["n_in"], h["n_hidden"], h["n_out"]
    names = INTRINSICS[h["neuron"]]
    shapes = {"w_in": (n_in, n_h), "w_out": (n_h, n_o), "readout": (len(readout),)}
    shapes |= {f"hidden.{k}": (n_h,) for k in names} | {f"output.{k}": (n_o,) for k in names}
    if set(arrays) != set(shapes):
        missing, extra = set(shapes) - set(arrays), set(arrays) - set(shapes)
        raise ModelError(f"members: missing {sorted(missing)}, unexpected {sorted(extra)}")
    for name, shape in shapes.items():
        a = arrays[name]
        want = np.uint8 if name == "readout" else np.float32
        _expect(a.dtype == want, f"member {name!r} has dtype {a.dtype}, expected {np.dtype(want)}")
        _expect(a.shape == shape, f"member {name!r} has shape {a.shape}, expected {shape}")
        _expect(name == "readout" or bool(np.all(np.isfinite(a))), f"member {name!r} has non-finite values")
    for layer in ("hidden", "output"):
        try:
            check_intrinsics(h["neuron"], {k: arrays[f"{layer}.{k}"] for k in names})
        except ValueError as e:
            raise ModelError(f"{layer} layer: {e}") from None
    if readout:
        check_readout(readout, n_o * len(feats), len(classes))


def check_readout(onnx_bytes: bytes, n_features: int, n_classes: int) -> None:
    """Refuse an ONNX readout that is malformed, uses external data, or has the wrong widths."""
    import onnx

    try:
        m = onnx.load_model_from_string(onnx_bytes)
        onnx.checker.check_model(m)
    except Exception as e:  # onnx raises several unrelated types for bad bytes
        raise ModelError(f"readout is not a valid ONNX model: {str(e).splitlines()[0] if str(e) else type(e).__name__}") from None
    for t in m.graph.initializer:
        _expect(t.data_location != onnx.TensorProto.EXTERNAL,
                f"readout initializer {t.name!r} uses external data")
    inputs = [i for i in m.graph.input if i.name not in {t.name for t in m.graph.initializer}]
    scores = [o for o in m.graph.output if o.type.tensor_type.elem_type == onnx.TensorProto.FLOAT
              and len(o.type.tensor_type.shape.dim) == 2]
    _expect(len(inputs) == 1 and scores,
            f"readout must have one input and a float [N, classes] output (edged.readout), "
            f"has {len(inputs)} inputs and {len(scores)} such outputs")

    def width(v) -> int | None:
        dims = v.type.tensor_type.shape.dim
        return dims[-1].dim_value if len(dims) == 2 and dims[-1].HasField("dim_value") else None

    _expect(width(inputs[0]) == n_features,
            f"readout input width {width(inputs[0])} does not match {n_features} features")
    _expect(width(scores[0]) in (n_classes, None),
            f"readout output width {width(scores[0])} does not match {n_classes} classes")


def _expect(ok: bool, message: str) -> None:
    if not ok:
        raise ModelError(message)


def summary(model: Model) -> dict[str, Any]:
    """The facts ``edged inspect`` prints."""
    return {"neuron": model.neuron, "n_in": model.n_in, "n_hidden": model.n_hidden,
            "n_out": model.n_out, "dt": model.dt, "reset": model.reset,
            "window": model.window, "hop": model.hop, "variant": model.variant,
            "classes": list(model.classes), "features": list(model.features),
            "readout_bytes": len(model.readout), "encoding": model.encoding,
            "provenance": model.provenance, "sha256": model.sha256}
