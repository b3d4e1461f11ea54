"""Client side of protocol v1: send spike frames, receive decisions.

``Sender`` PUSHes frames to ``edged serve`` (readable or binary, one seq counter per
stream). ``Subscriber`` SUBscribes to decisions and yields immutable ``Decision`` values,
counting sequence gaps (lost decisions: PUB drops for slow subscribers) and restarts
(a new ``epoch``: the daemon restarted; a seq that went back: the stream expired and
began again). Both accept an injected ``zmq.Context`` and close with ``LINGER 0``, and take
``curve=(client_public, client_secret, server_public)`` for a CURVE server
(``edged serve --curve-secret-key``; ``edged.security.client_keys`` loads key files).

Imports only pyzmq, msgpack and numpy (no Numba, no onnxruntime)::

    with Sender("tcp://127.0.0.1:5555") as tx, Subscriber("tcp://127.0.0.1:5556") as rx:
        tx.send("sensor-1", t=[0, 0, 3], ch=[1, 5, 2], until=64)
        for d in rx:
            print(d.stream, d.t, d.label, d.latency_s)
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable, Iterator

import numpy as np
import zmq

from edged.protocol import HEARTBEAT_TOPIC, decode_decision, encode_frame, parse_ready
BACKOFF_MAX = 32.0


@dataclass(frozen=True, slots=True)
class Decision:
    """One published decision (protocol v1). ``scores`` and ``lzc`` are tuples."""

    stream: str
    epoch: int
    seq: int
    t: int
    label: str
    class_id: int
    scores: tuple[float, ...]
    lzc: tuple[float, ...]
    latency_s: float
    energy_j: float
    model: str
    cpu_s: float = float("nan")
    received_at: float = 0.0  # the subscriber's clock when it arrived

    @classmethod
    def from_wire(cls, msg: dict, received_at: float) -> "Decision":
        try:
            return cls(stream=str(msg["stream"]), epoch=int(msg["epoch"]), seq=int(msg["seq"]),
                       t=int(msg["t"]), label=str(msg["label"]), class_id=int(msg["class"]),
                       scores=tuple(float(x) for x in msg["scores"]),
                       lzc=tuple(float(x) for x in msg["lzc"]),
                       latency_s=float(msg["latency_s"]), energy_j=float(msg["energy_j"]),
                       model=str(msg["model"]), cpu_s=float(msg.get("cpu_s", float("nan"))),
                       received_at=received_at)
        except (TypeError, ValueError) as e:
            raise ValueError(f"malformed decision: {e}") from None


def _curve(sock: zmq.Socket, keys) -> None:
    """CURVE client keys ``(public, secret, server_public)`` (``edged.security.ClientKeys``,
    Z85 strings or bytes; load files with ``edged.security.client_keys``), or ``None``."""
    from edged.security import ClientKeys, make_client

    if keys is not None:
        make_client(sock, ClientKeys(*(k.encode() if isinstance(k, str) else k for k in keys)))


class Sender:
    """PUSH frames to an ingest endpoint; keeps the per-stream frame ``seq``.

    ``send`` blocks when the daemon's queue is full (back-pressure); with ``timeout``
    seconds set it raises ``zmq.Again`` instead. ``close`` gives frames still queued
    ``linger`` seconds to leave (bounded, never ZeroMQ's infinite default). A
    ``nats://HOST:PORT`` endpoint gives ``edged.jetstream.Sender`` (same methods)."""

    def __new__(cls, endpoint: str, *args, **kwargs):
        if cls is Sender and endpoint.startswith("nats://"):
            from edged.jetstream import Sender as NatsSender

            return super().__new__(NatsSender)
        return super().__new__(cls)

    def __init__(self, endpoint: str, *, binary: bool = True, context: zmq.Context | None = None,
                 hwm: int = 10000, timeout: float | None = None, bind: bool = False,
                 linger: float = 1.0, curve=None):
        self._ctx = context or zmq.Context.instance()
        self.socket = self._ctx.socket(zmq.PUSH)
        self.socket.linger = int(linger * 1000)
        _curve(self.socket, curve)
        self.socket.sndhwm = hwm
        if timeout is not None:
            self.socket.sndtimeo = int(timeout * 1000)
        (self.socket.bind if bind else self.socket.connect)(endpoint)
        self.binary = binary
        self.seq: dict[str, int] = {}

    def _next(self, stream: str, t, ch, until: int | None, binary: bool | None) -> tuple[int, bytes]:
        """The stream's next seq and its frame (the seq not yet used)."""
        seq = self.seq.get(stream, 0)
        return seq, encode_frame(stream, seq, t, ch, until, self.binary if binary is None else binary)

    def frame(self, stream: str, t, ch, until: int | None = None,
              binary: bool | None = None) -> bytes:
        """Encode the stream's next frame and advance its seq (send it with ``send_frame``)."""
        seq, frame = self._next(stream, t, ch, until, binary)
        self.seq[stream] = seq + 1
        return frame

    def send_frame(self, frame: bytes, stream: str | None = None) -> None:
        """Send an encoded frame (``stream``: its id, which only the NATS form routes on)."""
        self.socket.send(frame, copy=len(frame) < 65536)

    def send(self, stream: str, t, ch, until: int | None = None, binary: bool | None = None) -> int:
        """Send events ``(t[i], ch[i])`` (t non-decreasing) of ``stream``; return the frame
        seq. A send that raises (``zmq.Again`` after ``timeout``) uses no seq: sending the
        same events again is not a gap to the daemon."""
        seq, frame = self._next(stream, t, ch, until, binary)
        self.send_frame(frame, stream)
        self.seq[stream] = seq + 1
        return seq

    def close(self) -> None:
        self.socket.close()

    def __enter__(self) -> "Sender":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class Subscriber:
    """SUB to decisions; iterate for ``Decision`` values.

    ``streams`` restricts to those stream ids (exact match; ZeroMQ's prefix filter is
    only a first cut). Counters: ``gaps`` (decisions missing inside one epoch and stream),
    ``restarts`` (epoch changed or a stream's seq started over), ``malformed``.
    ``on_gap(stream, expected_seq, got_seq)`` and ``on_restart(stream, old_epoch,
    new_epoch)`` are called as they happen. For "latest only" consumers use ``latest``
    (ZMQ_CONFLATE cannot be used: decisions are two-frame messages).

    Liveness (zguide "Paranoid Pirate", one-way): any message, heartbeats included, counts
    as a sign of life. With ``max_silence`` seconds set (e.g. 3 x the daemon's
    ``--heartbeat-interval``), a longer silence noticed in ``recv`` declares the publisher
    dead once (``alive`` False, ``deaths`` + 1, ``on_dead()``) and recreates the socket,
    then again after a backoff doubling from 1 s up to 32 s while it stays silent.
    A ``nats://HOST:PORT`` endpoint gives ``edged.jetstream.Subscriber`` (same methods)."""

    def __new__(cls, endpoint: str, *args, **kwargs):
        if cls is Subscriber and endpoint.startswith("nats://"):
            from edged.jetstream import Subscriber as NatsSubscriber

            return super().__new__(NatsSubscriber)
        return super().__new__(cls)

    def __init__(self, endpoint: str, *, streams: tuple[str, ...] = (),
                 context: zmq.Context | None = None, hwm: int = 100000,
                 on_gap: Callable[[str, int, int], None] | None = None,
                 on_restart: Callable[[str, int, int], None] | None = None,
                 clock: Callable[[], float] = time.perf_counter, curve=None,
                 max_silence: float | None = None, on_dead: Callable[[], None] | None = None):
        self._ctx = context or zmq.Context.instance()
        self._endpoint, self._hwm, self._curve = endpoint, hwm, curve
        self._track_from(streams, on_gap, on_restart, clock, max_silence, on_dead)
        self.socket = self._open()

    def _track_from(self, streams, on_gap, on_restart, clock, max_silence, on_dead) -> None:
        """The filter, counters, callbacks and liveness state (any transport)."""
        self.streams = frozenset(streams)
        self._clock = clock
        self.max_silence, self._on_dead = max_silence, on_dead
        self.alive, self.deaths, self.heartbeats = True, 0, 0
        self.last_heard = clock()
        self._backoff, self._next_retry = 1.0, float("inf")
        self._on_gap = on_gap
        self._on_restart = on_restart
        self.last: dict[str, tuple[int, int]] = {}  # stream -> (epoch, seq)
        self.gaps = 0
        self.restarts = 0
        self.malformed = 0
        self.received = 0

    def _open(self) -> zmq.Socket:
        sock = self._ctx.socket(zmq.SUB)
        sock.linger = 0
        _curve(sock, self._curve)
        sock.rcvhwm = self._hwm
        sock.reconnect_ivl = 100
        sock.reconnect_ivl_max = int(BACKOFF_MAX * 1000)
        for s in self.streams or ("",):
            sock.setsockopt(zmq.SUBSCRIBE, s.encode())
        if self.streams:
            sock.setsockopt(zmq.SUBSCRIBE, HEARTBEAT_TOPIC)
        sock.connect(self._endpoint)
        return sock

    def _check_liveness(self, now: float) -> None:
        if self.max_silence is None or now - self.last_heard <= self.max_silence:
            return
        if self.alive:
            self.alive = False
            self.deaths += 1
            self._next_retry = now
            if self._on_dead:
                self._on_dead()
        if now >= self._next_retry:  # recreate the socket, backing off while silent
            self._reopen()
            self._next_retry = now + self._backoff
            self._backoff = min(self._backoff * 2, BACKOFF_MAX)

    def _reopen(self) -> None:
        self.socket.close(linger=0)
        self.socket = self._open()

    def recv(self, timeout: float | None = None) -> Decision | None:
        """The next decision, or ``None`` if none arrives within ``timeout`` seconds.
        Heartbeats are consumed here (they only refresh liveness)."""
        deadline = None if timeout is None else self._clock() + timeout
        while True:
            self._check_liveness(self._clock())
            wait = None if deadline is None else max(0.0, deadline - self._clock())
            if self.max_silence is not None:  # wake up in time to notice a silence
                wait = min(self.max_silence / 2, wait if wait is not None else self.max_silence)
            msg = self._next(wait)
            if msg is None:
                if deadline is not None and self._clock() >= deadline:
                    self._check_liveness(self._clock())
                    return None
                continue
            heartbeat, payload = msg
            now = self._clock()
            self.last_heard = now
            if not self.alive:
                self.alive, self._backoff, self._next_retry = True, 1.0, float("inf")
            if heartbeat:
                self.heartbeats += 1
                continue
            try:
                d = Decision.from_wire(decode_decision(payload), now)
            except ValueError:
                self.malformed += 1
                continue
            if self.streams and d.stream not in self.streams:
                continue
            self._track(d)
            return d

    def latest(self, timeout: float | None = None) -> Decision | None:
        """The newest decision queued (waiting up to ``timeout`` for one); older ones are
        consumed and still counted for gaps."""
        d = self.recv(timeout)
        while d is not None and self._queued():
            d = self.recv(0) or d
        return d

    def _next(self, wait: float | None) -> tuple[bool, bytes] | None:
        """``(is heartbeat, payload)`` of the next message within ``wait`` seconds (``None``:
        block), or ``None``; the transport's one hook, with ``_queued``."""
        if wait is not None and not self.socket.poll(int(wait * 1000) + (wait > 0)):
            return None
        parts = self.socket.recv_multipart()
        return parts[0] == HEARTBEAT_TOPIC, parts[-1]

    def _queued(self) -> bool:
        return bool(self.socket.poll(0))

    def _track(self, d: Decision) -> None:
        self.received += 1
        prev = self.last.get(d.stream)
        self.last[d.stream] = (d.epoch, d.seq)
        if prev is None:
            return
        epoch, seq = prev
        if d.epoch != epoch or d.seq <= seq:
            self.restarts += 1
            if self._on_restart:
                self._on_restart(d.stream, epoch, d.epoch)
        elif d.seq != seq + 1:
            self.gaps += d.seq - seq - 1
            if self._on_gap:
                self._on_gap(d.stream, seq + 1, d.seq)

    def __iter__(self) -> Iterator[Decision]:
        while True:
            d = self.recv()
            if d is not None:
                yield d

    def close(self) -> None:
        self.socket.close(linger=0)

    def __enter__(self) -> "Subscriber":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class PoissonSource:
    """Real-time Poisson spike traffic for ``streams`` streams: ``rate`` events/s in total,
    channels uniform, event time = wall time / ``dt``. Each ``frames(elapsed)`` call gives
    one frame per stream covering the steps since the previous call, with ``until``."""

    def __init__(self, streams: int, rate: float, n_channels: int, dt: float = 1e-3,
                 seed: int = 0, prefix: str = "s"):
        self.names = [f"{prefix}{i}" for i in range(streams)]
        self.rate_per_step = rate * dt / max(streams, 1)
        self.n_channels, self.dt = n_channels, dt
        self.rng = np.random.default_rng(seed)
        self.until = 0

    def frames(self, elapsed: float) -> tuple[int, list[tuple[str, np.ndarray, np.ndarray]]]:
        """``(until, [(stream, t, ch), ...])`` for steps ``[previous until, until)``."""
        t0, t1 = self.until, max(self.until, int(elapsed / self.dt))
        self.until = t1
        return t1, [(name, *poisson_events(self.rng, self.rate_per_step, t0, t1, self.n_channels))
                    for name in self.names]


def run_poisson(sender: Sender, source: PoissonSource, duration: float, interval: float = 0.01,
                on_sent: Callable[[str, int, float], None] | None = None,
                clock: Callable[[], float] = time.perf_counter,
                sleep: Callable[[float], None] = time.sleep) -> dict:
    """Send ``source`` traffic every ``interval`` s for ``duration`` s (bounded); call
    ``on_sent(stream, until, sent_at)`` per frame. Returns counts."""
    start = clock()
    frames = events = 0
    tick = 0
    while True:
        tick += 1
        target = start + tick * interval
        if target - start > duration:
            break
        wait = target - clock()
        if wait > 0:
            sleep(wait)
        until, batch = source.frames(clock() - start)
        for stream, t, ch in batch:
            sender.send(stream, t, ch, until=until)
            if on_sent is not None:
                on_sent(stream, until, clock())
            frames += 1
            events += t.size
    return {"frames": frames, "events": events, "seconds": clock() - start}


def wait_ready(proc, timeout: float) -> dict:
    """The ready line (``edged.protocol.parse_ready``) of ``proc``, an ``edged serve``
    subprocess started with ``stdout=PIPE`` in text mode; ``RuntimeError`` if it exits or
    ``timeout`` seconds pass first."""
    import select

    deadline = time.monotonic() + timeout
    while (left := deadline - time.monotonic()) > 0:
        if not select.select([proc.stdout], [], [], left)[0]:
            continue
        line = proc.stdout.readline()
        if not line:
            raise RuntimeError(f"edged serve exited (code {proc.wait()}) before its ready line")
        ready = parse_ready(line)
        if ready is not None:
            return ready
    raise RuntimeError(f"edged serve printed no ready line within {timeout:g} s")


def read_spike_file(path: str) -> tuple[np.ndarray, np.ndarray]:
    """Events from ``.npz`` (arrays ``t``, ``ch``) or text (two integer columns ``t ch``,
    ``#`` comments); sorted by time."""
    if str(path).endswith(".npz"):
        with np.load(path, allow_pickle=False) as z:
            t, ch = np.asarray(z["t"]), np.asarray(z["ch"])
    else:
        a = np.loadtxt(path, dtype=np.int64, ndmin=2, comments="#")
        if a.shape[1] != 2:
            raise ValueError(f"{path}: expected two columns 't ch', got {a.shape[1]}")
        t, ch = a[:, 0], a[:, 1]
    if t.shape != ch.shape or t.ndim != 1:
        raise ValueError(f"{path}: t and ch must be 1-D and of equal length")
    if t.dtype.kind not in "iu" or ch.dtype.kind not in "iu":
        raise ValueError(f"{path}: t and ch must be integer arrays (steps, channel ids), "
                         f"got {t.dtype} and {ch.dtype}")
    order = np.argsort(t, kind="stable")
    return t[order].astype(np.int64), ch[order].astype(np.int64)


def replay(sender: Sender, stream: str, t: np.ndarray, ch: np.ndarray, frame_events: int = 256,
           rate: float | None = None, clock: Callable[[], float] = time.perf_counter,
           sleep: Callable[[float], None] = time.sleep) -> dict:
    """Send recorded events as frames of ``frame_events`` (fewer where a step would be
    split), paced at ``rate`` events/s if given; the last frame sets ``until`` past the
    last event so every step completes."""
    start = clock()
    frames = i = 0
    while i < t.size:
        j = min(i + frame_events, t.size)
        if j < t.size:  # keep a step's events in one frame where possible
            j = max(int(np.searchsorted(t, t[j], "left")), i + 1)
        until = int(t[j]) if j < t.size else int(t[-1]) + 1
        if rate:
            wait = start + j / rate - clock()
            if wait > 0:
                sleep(wait)
        sender.send(stream, t[i:j], ch[i:j], until=until)
        frames += 1
        i = j
    return {"frames": frames, "events": int(t.size), "seconds": clock() - start}


class LatencyTracker:
    """Client-observed latency: decision ``t`` of ``stream`` is completed by the first
    frame sent with ``until >= t``; latency = decision arrival - that frame's send time."""

    def __init__(self):
        self.pending: dict[str, list[tuple[int, float]]] = {}
        self.samples: list[float] = []
        self.daemon: list[float] = []

    def sent(self, stream: str, until: int, at: float) -> None:
        self.pending.setdefault(stream, []).append((until, at))

    def received(self, d: Decision) -> None:
        q = self.pending.get(d.stream)
        self.daemon.append(d.latency_s)
        if not q:
            return
        k = 0
        while k < len(q) and q[k][0] < d.t:
            k += 1
        if k < len(q):
            self.samples.append(d.received_at - q[k][1])
        del q[:k]


def poisson_events(rng: np.random.Generator, rate_per_step: float, t0: int, t1: int,
                   n_channels: int) -> tuple[np.ndarray, np.ndarray]:
    """Poisson spike events over steps ``[t0, t1)``: ``rate_per_step`` events per step in
    total, channels uniform. Returns sorted ``(t int64[], ch int64[])``."""
    n = int(rng.poisson(max(rate_per_step, 0.0) * max(t1 - t0, 0)))
    t = np.sort(rng.integers(t0, t1, n)) if n and t1 > t0 else np.empty(0, np.int64)
    return t.astype(np.int64), rng.integers(0, n_channels, t.size).astype(np.int64)


def percentiles(samples, qs=(50, 90, 99, 100)) -> dict[str, float]:
    """``{"p50": ..., ...}`` of ``samples`` (NaN when empty)."""
    a = np.asarray(list(samples), np.float64)
    return {f"p{q:g}": (float(np.percentile(a, q)) if a.size else float("nan")) for q in qs}


def replay_steps(sender: Sender, stream: str, t: np.ndarray, ch: np.ndarray, end: int, *,
                 offset: int = 0, dt: float = 1e-3, speed: float | None = None,
                 start: float | None = None, frame_events: int = 256,
                 clock: Callable[[], float] = time.perf_counter,
                 sleep: Callable[[float], None] = time.sleep) -> int:
    """Send one encoded recording (steps ``t`` from 0, sorted, all ``< end``) on ``stream``
    at steps ``offset + t``, the last frame completing step ``offset + end - 1``
    (``until``). With ``speed``, a frame completing step ``u`` leaves no earlier than
    ``start + u * dt / speed`` (``start``: the clock at the stream's step 0; default
    now); without it, as fast as the daemon takes them. Returns the frames sent."""
    t = np.asarray(t, np.int64) + offset
    ch = np.asarray(ch, np.int64)
    start = clock() if start is None else start
    frames = i = 0
    while True:
        j = min(i + frame_events, t.size)
        if j < t.size:  # keep a step's events in one frame where possible
            j = max(int(np.searchsorted(t, t[j], "left")), i + 1)
        until = int(t[j]) if j < t.size else offset + end
        if speed:
            wait = start + until * dt / speed - clock()
            if wait > 0:
                sleep(wait)
        sender.send(stream, t[i:j], ch[i:j], until=until)
        frames += 1
        i = j
        if i >= t.size:
            return frames


def replay_events(sender: Sender, folder: str, encoding: dict, *, prefix: str = "s",
                  speed: float | None = None, back_to_back: bool = False,
                  limit: int | None = None, frame_events: int = 256,
                  on_sample: Callable[[dict], None] | None = None, only=None,
                  clock: Callable[[], float] = time.perf_counter,
                  sleep: Callable[[float], None] = time.sleep) -> dict:
    """Replay the recordings of an event folder (``edged.events.read_index``), encoded by
    ``encoding`` (the model's), one after another: each on its own stream
    ``prefix + sample_id`` (a cold stream: its decision at step ``steps`` equals
    ``edged-train evaluate``'s), or all on the one stream ``prefix``, recording ``k`` at
    steps ``[k * steps, (k + 1) * steps)`` (its decision at ``(k + 1) * steps``; neuron
    state carries over from the previous recording). Paced at ``speed`` x real time, or
    as fast as possible (``None``). ``on_sample`` gets ``{stream, sample_id, label, t}``
    (``t`` = the step of the sample's decision). ``only``: a set of sample ids to replay
    (default all). Returns counts and the replay rate."""
    from edged import events as E

    E.check_encoding(encoding)
    steps, dt = encoding["steps"], encoding["dt"]
    index = [r for r in E.read_index(folder) if only is None or r.sample_id in only][:limit]
    start = clock()
    frames = n_events = 0
    for k, rec in enumerate(index):
        t, ch = E.encode(E.load(rec.path), encoding)
        stream = prefix if back_to_back else f"{prefix}{rec.sample_id}"
        offset = k * steps if back_to_back else 0
        begin = start + (k * steps * dt / speed if speed else 0.0)
        if speed and not back_to_back:
            wait = begin - clock()
            if wait > 0:
                sleep(wait)
        frames += replay_steps(sender, stream, t, ch, steps, offset=offset, dt=dt, speed=speed,
                               start=start if back_to_back else begin,
                               frame_events=frame_events, clock=clock, sleep=sleep)
        n_events += t.size
        if on_sample is not None:
            on_sample({"stream": stream, "sample_id": rec.sample_id, "label": rec.label,
                       "t": offset + steps})
    seconds = clock() - start
    recorded = len(index) * steps * dt
    return {"samples": len(index), "frames": frames, "events": n_events, "seconds": seconds,
            "recorded_seconds": recorded, "realtime_factor": recorded / seconds if seconds > 0 else float("inf")}
