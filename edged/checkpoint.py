"""Checkpoints of every stream's state: a warm restart, not a replay.

File ``<state_dir>/checkpoint.npz``: a plain, uncompressed ``.npz`` of numeric arrays and a
``header`` member (UTF-8 JSON as ``uint8[]``); loaded with ``allow_pickle=False``, so a
hostile file can at worst be refused, never executed. ``snapshot`` serialises what the
stream table hands over (``edged.streams.Rows``) with the engine rows of their slots;
``apply`` hands them back. One row per active stream, in the order of ``header["streams"]``:

================  ==========================================================
``header``        format, version (2; a version 1 file, which also stored
                  ``lz.grams``, still loads), model_sha256, epoch of the writer, written_at
                  (Unix s), streams (ids), shapes (per-stream shape of each member);
                  optional transport (the ingest resume point, e.g. NATS
                  ``{kind, partition_count, offsets}``; files without it still load)
``neuron.<layer>.<var>``  ``engine.state`` rows (``float32[k, n]``)
``lz.<field>``    ``engine.lz`` (``edged.lzc.SlidingLZ``) rows
``now``           stream clocks (steps completed), ``int64[k]``
``next_seq``      next expected frame seq, ``int64[k]``
``out_seq``       next decision seq, ``int64[k]``
``unbilled_ops``  synaptic ops since the stream's last decision, ``int64[k]``
``held_len``      events held at step ``now`` per stream, ``int64[k]``
``held_ch``       their channels, concatenated, ``int64[sum(held_len)]``
================  ==========================================================

Write: temp file in the same directory (mode 0600) → fsync → ``os.replace`` → fsync the
directory, so a crash at any instant leaves the old or the new checkpoint, never a torn
one. Read: exact member set, dtypes and per-stream shapes of the running engine, the
model's sha256, sizes checked from the zip directory before anything is inflated.
A refused file raises ``CheckpointError`` with ``result`` ``mismatch`` or ``corrupt``.

Shards (``edged serve --workers N``): worker ``i`` of ``N`` writes
``checkpoint.<i>-of-<N>.npz`` (``file_name``; one process keeps ``checkpoint.npz``) with
the streams that hash to it (``edged.workers.shard_of``). A restore reads every checkpoint
file in the directory (``paths``), whatever layout wrote it, and ``combine`` keeps the
streams that hash to the reader, the newest file's row where a stream appears twice, so
a state dir written by N workers restores with M.
"""

from __future__ import annotations

import json
import os
import re
import time
import zipfile
from typing import Callable, NamedTuple

import numpy as np

from edged.rng import stream_key
from edged.streams import Rows

FORMAT = "edged-checkpoint"
VERSION = 2
READS = (1, 2)
LEGACY = "lz.grams"  # version 1 also stored this (derived from lz.words), ignored
NAME = "checkpoint.npz"
HEADER_MAX = 64 << 20
STREAM_FIELDS = ("next_seq", "out_seq", "unbilled_ops", "held_len")
_SHARD_FILE = re.compile(r"checkpoint\.(\d+)-of-(\d+)\.npz")


class CheckpointError(Exception):
    """A checkpoint that cannot be used; ``result`` labels the restore metric."""

    def __init__(self, result: str, detail: str):
        super().__init__(detail)
        self.result, self.detail = result, detail


class Restored(NamedTuple):
    header: dict
    arrays: dict[str, np.ndarray]

    @property
    def streams(self) -> list[str]:
        return self.header["streams"]


def engine_arrays(engine) -> dict[str, np.ndarray]:
    """The engine's per-stream arrays a checkpoint stores, by member name (rows = slots)."""
    out = {f"neuron.{layer}.{var}": x for layer, ls in zip(engine.state._fields, engine.state)
           for var, x in zip(ls._fields, ls)}
    out |= {f"lz.{name}": x for name, x in zip(engine.lz._fields, engine.lz)}
    out["now"] = engine.now
    return out


def snapshot(engine, rows: Rows, model_sha256: str, epoch: int,
             wall: float | None = None, transport: dict | None = None) -> dict[str, np.ndarray]:
    """Checkpoint members for the stream table's ``rows`` and their engine slots;
    ``transport`` (JSON) goes into the header as is."""
    members = {name: np.ascontiguousarray(x[rows.slots]) for name, x in engine_arrays(engine).items()}
    for name in ("next_seq", "out_seq", "unbilled_ops"):
        members[name] = np.asarray(getattr(rows, name), np.int64)
    held = rows.held_ch
    members["held_len"] = np.array([h.size for h in held], np.int64)
    members["held_ch"] = np.concatenate(held) if held else np.empty(0, np.int64)
    header = {"format": FORMAT, "version": VERSION, "model_sha256": model_sha256, "epoch": int(epoch),
              "written_at": time.time() if wall is None else wall, "streams": list(rows.streams),
              "shapes": {k: list(v.shape[1:]) for k, v in members.items() if k != "held_ch"}}
    if transport is not None:
        header["transport"] = transport
    members["header"] = np.frombuffer(json.dumps(header).encode(), np.uint8)
    return members


def file_name(shard: int = 0, shards: int = 1) -> str:
    """The checkpoint file of worker ``shard`` of ``shards``."""
    return NAME if shards == 1 else f"checkpoint.{shard}-of-{shards}.npz"


def paths(state_dir: str) -> list[str]:
    """Every checkpoint file in ``state_dir``, of any layout, sorted by name."""
    names = [n for n in os.listdir(state_dir) if n == NAME or _SHARD_FILE.fullmatch(n)]
    return [os.path.join(state_dir, n) for n in sorted(names)]


def write(state_dir: str, members: dict[str, np.ndarray], name: str = NAME) -> str:
    """Write ``members`` atomically as ``<state_dir>/<name>``; return its path.
    Raises ``OSError`` (e.g. ENOSPC) with the old checkpoint left intact."""
    path = os.path.join(state_dir, name)
    tmp = os.path.join(state_dir, f".{name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(f, **members)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    dfd = os.open(state_dir, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)
    return path


def remove_stale(state_dir: str, name: str = NAME) -> int:
    """Delete the temp files of ``name`` a killed writer left behind; return how many."""
    n = 0
    for entry in os.listdir(state_dir):
        if entry.startswith(f".{name}.") and entry.endswith(".tmp"):
            os.unlink(os.path.join(state_dir, entry))
            n += 1
    return n


def read(path: str, engine, capacity: int, model_sha256: str) -> Restored:
    """Load and validate a checkpoint for ``engine`` (its per-stream shapes and dtypes)."""
    expect = {name: x for name, x in engine_arrays(engine).items()}
    expect |= {name: np.empty(0, np.int64) for name in STREAM_FIELDS}
    try:
        with zipfile.ZipFile(path) as zf:
            sizes = {i.filename.removesuffix(".npy"): i.file_size for i in zf.infolist()}
        want = set(expect) | {"header", "held_ch"}
        legacy = LEGACY in sizes  # (version 1: not read)
        if set(sizes) - {LEGACY} != want:
            extra, missing = sorted(set(sizes) - want), sorted(want - set(sizes))
            raise CheckpointError("corrupt", f"members differ: extra {extra}, missing {missing}")
        if sizes["header"] > HEADER_MAX:
            raise CheckpointError("corrupt", f"header member of {sizes['header']} bytes")
        with np.load(path, allow_pickle=False) as z:
            raw = z["header"]
            if raw.dtype != np.uint8 or raw.ndim != 1:
                raise CheckpointError("corrupt", "header is not uint8[]")
            header = json.loads(raw.tobytes().decode())
            _check_header(header, model_sha256, capacity)
            if legacy != (header["version"] == 1):
                raise CheckpointError("corrupt", f"version {header['version']} "
                                                 f"{'with' if legacy else 'without'} member {LEGACY}")
            k = len(header["streams"])
            for name, x in expect.items():
                limit = k * int(np.prod(x.shape[1:], dtype=np.int64)) * x.dtype.itemsize + 4096
                if sizes[name] > limit:
                    raise CheckpointError("corrupt", f"member {name}: {sizes[name]} bytes > {limit}")
            arrays = {}
            for name, x in expect.items():
                a = z[name]
                if a.dtype != x.dtype or a.shape != (k, *x.shape[1:]):
                    raise CheckpointError("mismatch", f"member {name}: {a.dtype}{list(a.shape)}, "
                                                      f"this model needs {x.dtype}{[k, *x.shape[1:]]}")
                arrays[name] = a
            held_len = arrays["held_len"]
            if sizes["held_ch"] > int(np.clip(held_len, 0, None).sum()) * 8 + 4096:
                raise CheckpointError("corrupt", "member held_ch larger than held_len says")
            held = z["held_ch"]
            if held.dtype != np.int64 or held.shape != (int(held_len.sum()),) or (held_len < 0).any():
                raise CheckpointError("corrupt", "held_ch does not match held_len")
            arrays["held_ch"] = held
    except CheckpointError:
        raise
    except (OSError, ValueError, KeyError, TypeError, zipfile.BadZipFile, EOFError,
            UnicodeDecodeError) as e:  # json.JSONDecodeError is a ValueError
        raise CheckpointError("corrupt", f"{type(e).__name__}: {e}") from None
    return Restored(header, arrays)


def _check_header(h, model_sha256: str, capacity: int) -> None:
    if not isinstance(h, dict) or h.get("format") != FORMAT:
        raise CheckpointError("corrupt", "not an edged checkpoint")
    if h.get("version") not in READS:
        raise CheckpointError("mismatch", f"checkpoint version {h.get('version')!r}, "
                                          f"expected one of {', '.join(map(str, READS))}")
    if h.get("model_sha256") != model_sha256:
        raise CheckpointError("mismatch", f"written for model sha256 {h.get('model_sha256')}, "
                                          f"serving {model_sha256}")
    ids = h.get("streams")
    if not isinstance(ids, list) or not all(isinstance(s, str) for s in ids) or len(set(ids)) != len(ids):
        raise CheckpointError("corrupt", "stream ids are not a list of distinct strings")
    if len(ids) > capacity:
        raise CheckpointError("mismatch", f"{len(ids)} streams > --max-streams {capacity}")
    if not isinstance(h.get("epoch"), int):
        raise CheckpointError("corrupt", "epoch is not an integer")


def combine(parts: list[Restored], keep: Callable[[str], bool]) -> Restored:
    """One checkpoint of the streams ``keep`` accepts from ``parts`` (non-empty; each stream
    from the newest part holding it, by ``written_at``); the header is the newest part's."""
    newest = max(range(len(parts)), key=lambda p: float(parts[p].header.get("written_at", 0)))
    best: dict[str, tuple[float, int, int]] = {}  # stream -> (written_at, part, row)
    for p, r in enumerate(parts):
        w = float(r.header.get("written_at", 0))
        for i, stream in enumerate(r.streams):
            if keep(stream) and (stream not in best or w > best[stream][0]):
                best[stream] = (w, p, i)
    rows: list[list[int]] = [[] for _ in parts]
    streams: list[str] = []
    for p in range(len(parts)):  # grouped by part, so each member is gathered per part
        for stream, (_, q, i) in best.items():
            if q == p:
                rows[p].append(i)
                streams.append(stream)
    arrays: dict[str, np.ndarray] = {}
    for name in parts[newest].arrays:
        if name != "held_ch":
            arrays[name] = np.concatenate([r.arrays[name][rows[p]] for p, r in enumerate(parts)])
    held = []
    for p, r in enumerate(parts):
        offsets = np.concatenate([[0], np.cumsum(r.arrays["held_len"])])
        held += [r.arrays["held_ch"][offsets[i]:offsets[i + 1]] for i in rows[p]]
    arrays["held_ch"] = np.concatenate(held) if held else np.empty(0, np.int64)
    return Restored(parts[newest].header | {"streams": streams}, arrays)


def apply(restored: Restored, engine) -> Rows:
    """Put restored stream ``i`` into engine slot ``i`` (its noise key from its id); return
    its rows for ``edged.streams.Streams.restore``."""
    a = restored.arrays
    k = len(restored.streams)
    for name, x in engine_arrays(engine).items():
        x[:k] = a[name]
    offsets = np.concatenate([[0], np.cumsum(a["held_len"])])
    for i, stream in enumerate(restored.streams):
        engine.keys[i] = stream_key(stream)
    held = [a["held_ch"][offsets[i]:offsets[i + 1]].copy() for i in range(k)]
    return Rows(list(restored.streams), np.arange(k, dtype=np.int64), a["next_seq"], a["out_seq"],
                a["unbilled_ops"], held)
