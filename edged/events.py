"""Event files -> model input: readers for recorded event streams and the one encoding.

Every reader returns ``Events``: microsecond timestamps ``t_us`` (int64, non-decreasing,
from the recording's start) and a sensor channel ``ch`` (int64, ``0 <= ch``).

Formats (``load`` picks by suffix):

``.bs2`` (N-MNIST, the original ``.bin`` layout)
    5 bytes per event, big-endian bit order: byte 0 = x (0..33), byte 1 = y (0..33),
    byte 2 bit 7 = polarity (1 = ON), the remaining 23 bits = timestamp in µs. The
    sensor channel is ``p * 34 * 34 + y * 34 + x`` (2,312 channels, polarity x pixel).
``.npz`` (generic)
    arrays ``t_us`` and ``ch``, both 1-D integer, equal length, ``t_us`` non-decreasing
    and ``>= 0``, ``ch >= 0``.
``.csv`` (generic)
    a header line ``t_us,ch`` then one ``<int>,<int>`` line per event, same rules.

A corrupt file (a ``.bs2`` size not a multiple of 5, coordinates outside 34 x 34,
decreasing timestamps, a malformed generic file) raises ``EventFileError`` naming the
file and the byte offset (``.bs2``), line (``.csv``) or event index (``.npz``).

Encoding: a small JSON object, stored in the model header's ``encoding`` field, so
training, ``edged-train evaluate`` and ``edged send --events`` encode identically::

    {"kind": "nmnist", "pool": 2, "dt": 0.001, "steps": 350}     (N-MNIST sensor)
    {"kind": "events", "n_in": 64, "dt": 0.001, "steps": 350}     (generic channels)

``encode(events, encoding) -> (t, ch)`` maps time to steps ``t = t_us // dt_us`` with
``dt_us = round(dt * 1e6)`` and drops events at ``t >= steps`` (the sample length the
model's window covers). ``nmnist`` pools ``pool x pool`` pixel blocks per polarity
(``side = ceil(34 / pool)``; input channel ``p * side**2 + (y // pool) * side + x // pool``;
``n_in = 2 * side**2``; pool 1 keeps all 2,312 channels); ``events`` passes channels
through and requires ``ch < n_in``. Events keep their order (sorted by step); several
events on one channel in one step add (the engine sums repeats).

NumPy only (no Numba): ``edged send`` imports this.
"""

from __future__ import annotations

import csv
import math
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

SENSOR = 34  # N-MNIST: 34 x 34 pixels, 2 polarities
SENSOR_CHANNELS = 2 * SENSOR * SENSOR
KINDS = ("nmnist", "events")
SUFFIXES = (".bs2", ".npz", ".csv")


class EventFileError(ValueError):
    """An event file that cannot be read; the message names the file and where."""


class Events(NamedTuple):
    t_us: np.ndarray  # int64[n], non-decreasing, microseconds from the recording's start
    ch: np.ndarray  # int64[n], sensor channel


def read_bs2(path: str | Path) -> Events:
    """An N-MNIST ``.bs2`` file as ``Events`` (channel ``p * 1156 + y * 34 + x``)."""
    path = Path(path)
    try:
        raw = np.fromfile(path, np.uint8)
    except OSError as e:
        raise EventFileError(f"{path}: cannot read: {e.strerror or e}") from None
    if raw.size % 5:
        raise EventFileError(f"{path}: truncated: {raw.size} bytes is not a multiple of 5 "
                             f"(a partial event at byte offset {raw.size - raw.size % 5})")
    ev = raw.reshape(-1, 5).astype(np.int64)
    x, y = ev[:, 0], ev[:, 1]
    p = ev[:, 2] >> 7
    t = ((ev[:, 2] & 0x7F) << 16) | (ev[:, 3] << 8) | ev[:, 4]
    bad = np.flatnonzero((x >= SENSOR) | (y >= SENSOR))
    if bad.size:
        i = int(bad[0])
        raise EventFileError(f"{path}: event {i} at byte offset {5 * i} has address "
                             f"x={x[i]} y={y[i]} outside the {SENSOR}x{SENSOR} sensor")
    back = np.flatnonzero(np.diff(t) < 0)
    if back.size:
        i = int(back[0]) + 1
        raise EventFileError(f"{path}: event {i} at byte offset {5 * i} has timestamp "
                             f"{t[i]} us, before the previous event's {t[i - 1]} us")
    return Events(t, p * (SENSOR * SENSOR) + y * SENSOR + x)


def write_bs2(path: str | Path, events: Events) -> None:
    """Write ``events`` (N-MNIST sensor channels) as a ``.bs2`` file (tests, tools)."""
    t, ch = np.asarray(events.t_us, np.int64), np.asarray(events.ch, np.int64)
    if t.size and (t.min() < 0 or t.max() >= 1 << 23 or ch.min() < 0 or ch.max() >= SENSOR_CHANNELS):
        raise ValueError("bs2 holds timestamps in [0, 2**23) us and channels in [0, 2312)")
    p, pix = ch // (SENSOR * SENSOR), ch % (SENSOR * SENSOR)
    out = np.empty((t.size, 5), np.uint8)
    out[:, 0], out[:, 1] = pix % SENSOR, pix // SENSOR
    out[:, 2] = (p << 7) | (t >> 16)
    out[:, 3], out[:, 4] = (t >> 8) & 0xFF, t & 0xFF
    Path(path).write_bytes(out.tobytes())


def read_npz(path: str | Path) -> Events:
    """A generic ``.npz`` (arrays ``t_us``, ``ch``) as ``Events``."""
    path = Path(path)
    try:
        with np.load(path, allow_pickle=False) as z:
            if not {"t_us", "ch"} <= set(z.files):
                raise EventFileError(f"{path}: needs arrays 't_us' and 'ch', has {sorted(z.files)}")
            t, ch = z["t_us"], z["ch"]
    except EventFileError:
        raise
    except (OSError, ValueError, EOFError) as e:
        raise EventFileError(f"{path}: not a readable .npz: {e}") from None
    if t.ndim != 1 or t.shape != ch.shape or t.dtype.kind not in "iu" or ch.dtype.kind not in "iu":
        raise EventFileError(f"{path}: 't_us' and 'ch' must be 1-D integer arrays of equal "
                             f"length, got {t.dtype}{list(t.shape)} and {ch.dtype}{list(ch.shape)}")
    return _checked(path, t.astype(np.int64), ch.astype(np.int64), "event")


def read_csv(path: str | Path) -> Events:
    """A generic ``.csv`` (header ``t_us,ch``) as ``Events``."""
    path = Path(path)
    try:
        with open(path, encoding="utf-8") as f:
            head = f.readline().strip().replace(" ", "")
            if head != "t_us,ch":
                raise EventFileError(f"{path}: line 1 must be the header 't_us,ch', got {head[:40]!r}")
            a = np.loadtxt(f, dtype=np.int64, delimiter=",", ndmin=2)
    except EventFileError:
        raise
    except (OSError, UnicodeDecodeError, ValueError) as e:
        raise EventFileError(f"{path}: not a readable t_us,ch CSV: {e}") from None
    if a.size == 0:
        a = np.zeros((0, 2), np.int64)
    if a.shape[1] != 2:
        raise EventFileError(f"{path}: expected 2 columns t_us,ch, got {a.shape[1]}")
    return _checked(path, a[:, 0].copy(), a[:, 1].copy(), "line", first=2)


def _checked(path: Path, t: np.ndarray, ch: np.ndarray, unit: str, first: int = 0) -> Events:
    for bad, why in ((np.flatnonzero(t < 0), "has a negative timestamp"),
                     (np.flatnonzero(ch < 0), "has a negative channel")):
        if bad.size:
            raise EventFileError(f"{path}: {unit} {int(bad[0]) + first} {why}")
    back = np.flatnonzero(np.diff(t) < 0)
    if back.size:
        i = int(back[0]) + 1
        raise EventFileError(f"{path}: {unit} {i + first} has timestamp {t[i]} us, before "
                             f"the previous {t[i - 1]} us")
    return Events(t, ch)


def load(path: str | Path) -> Events:
    """Read an event file by suffix (``.bs2``, ``.npz``, ``.csv``)."""
    suffix = Path(path).suffix.lower()
    readers = {".bs2": read_bs2, ".npz": read_npz, ".csv": read_csv}
    if suffix not in readers:
        raise EventFileError(f"{path}: unknown event file type {suffix!r}; use one of {SUFFIXES}")
    return readers[suffix](path)


class Recording(NamedTuple):
    sample_id: str
    path: Path
    label: str  # "" when the folder has no labels.csv


def read_index(folder: str | Path) -> list[Recording]:
    """The recordings of an event folder: the rows of ``folder/labels.csv`` (header
    ``sample_id,file,label,split``; ``file`` relative to the folder; ``split`` is not
    used), or, without ``labels.csv``, every event file in it, sorted, unlabelled."""
    folder = Path(folder)
    index = folder / "labels.csv"
    if not index.exists():
        files = sorted(f for f in folder.iterdir() if f.suffix.lower() in SUFFIXES) if folder.is_dir() else []
        if not files:
            raise EventFileError(f"{folder}: no labels.csv and no {'/'.join(SUFFIXES)} files")
        return [Recording(f.stem, f, "") for f in files]
    try:
        with open(index, newline="", encoding="utf-8") as f:
            rows = list(csv.DictReader(f))
    except (OSError, UnicodeDecodeError) as e:
        raise EventFileError(f"{index}: cannot read: {e}") from None
    need = {"sample_id", "file", "label"}
    if not rows or not need <= set(rows[0]):
        raise EventFileError(f"{index}: needs a header with {sorted(need)} and at least one row")
    for k, r in enumerate(rows):
        if any(r.get(c) is None for c in need):
            raise EventFileError(f"{index}: line {k + 2} has fewer than the header's columns")
    return [Recording(r["sample_id"].strip(), folder / r["file"].strip(), r["label"].strip())
            for r in rows]


def make_encoding(kind: str = "nmnist", dt: float = 1e-3, steps: int = 350, pool: int = 2,
                  n_in: int | None = None) -> dict[str, Any]:
    """A checked encoding object (see the module docstring)."""
    enc: dict[str, Any] = {"kind": kind, "dt": float(dt), "steps": int(steps)}
    enc |= {"pool": int(pool)} if kind == "nmnist" else {"n_in": n_in}
    return check_encoding(enc)


def check_encoding(enc: Any) -> dict[str, Any]:
    """Return ``enc`` if it is a valid encoding object, else raise ``ValueError``."""
    if not isinstance(enc, dict) or enc.get("kind") not in KINDS:
        raise ValueError(f"encoding must be an object with kind in {KINDS}, got {enc!r}")
    want = {"kind", "dt", "steps", "pool" if enc["kind"] == "nmnist" else "n_in"}
    if set(enc) != want:
        raise ValueError(f"encoding of kind {enc['kind']!r} needs exactly keys {sorted(want)}, "
                         f"got {sorted(enc)}")
    dt = enc["dt"]
    if not isinstance(dt, float) or not 1e-6 <= dt <= 1 or abs(dt * 1e6 - round(dt * 1e6)) > 1e-6:
        raise ValueError(f"encoding dt {dt!r} must be a whole number of microseconds in [1e-6, 1] s")
    if type(enc["steps"]) is not int or enc["steps"] < 1:
        raise ValueError(f"encoding steps {enc['steps']!r} must be an int >= 1")
    if enc["kind"] == "nmnist" and (type(enc["pool"]) is not int or not 1 <= enc["pool"] <= SENSOR):
        raise ValueError(f"encoding pool {enc['pool']!r} must be an int in [1, {SENSOR}]")
    if enc["kind"] == "events" and (type(enc["n_in"]) is not int or enc["n_in"] < 1):
        raise ValueError(f"encoding n_in {enc['n_in']!r} must be an int >= 1")
    return enc


def n_inputs(enc: dict[str, Any]) -> int:
    """Model input channels of an encoding."""
    check_encoding(enc)
    if enc["kind"] == "events":
        return enc["n_in"]
    side = math.ceil(SENSOR / enc["pool"])
    return 2 * side * side


def dt_us(enc: dict[str, Any]) -> int:
    return int(round(enc["dt"] * 1e6))


def encode(events: Events, enc: dict[str, Any]) -> tuple[np.ndarray, np.ndarray]:
    """Model input ``(t int64[k], ch int64[k])``, sorted by step, of one recording."""
    check_encoding(enc)
    t = np.asarray(events.t_us, np.int64) // dt_us(enc)
    ch = np.asarray(events.ch, np.int64)
    keep = t < enc["steps"]
    t, ch = t[keep], ch[keep]
    if enc["kind"] == "events":
        if ch.size and int(ch.max()) >= enc["n_in"]:
            raise ValueError(f"channel {int(ch.max())} is outside the encoding's n_in {enc['n_in']}")
        return t, ch
    if ch.size and int(ch.max()) >= SENSOR_CHANNELS:
        raise ValueError(f"channel {int(ch.max())} is outside the N-MNIST sensor's {SENSOR_CHANNELS}")
    pool = enc["pool"]
    side = math.ceil(SENSOR / pool)
    p, pix = ch // (SENSOR * SENSOR), ch % (SENSOR * SENSOR)
    y, x = pix // SENSOR, pix % SENSOR
    return t, p * side * side + (y // pool) * side + x // pool


def dense(t: np.ndarray, ch: np.ndarray, steps: int, n_in: int) -> np.ndarray:
    """Encoded events as counts ``uint8[steps, n_in]`` (the trainer's BPTT input)."""
    x = np.zeros((steps, n_in), np.int64)
    np.add.at(x, (t, ch), 1)
    if x.size and x.max() > 255:
        raise ValueError(f"{int(x.max())} events on one channel in one step: over 255")
    return x.astype(np.uint8)
