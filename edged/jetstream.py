"""NATS JetStream transport (optional extra ``nats``): ``nats://HOST:PORT`` endpoints for
``edged serve`` (``Transport``, in place of ``edged.sockets.Sockets``) and for the clients
(``Sender``, ``Subscriber``; ``edged.client`` hands ``nats://`` endpoints to them).

Subjects (the payloads are the same v1 msgpack bytes as over ZeroMQ; spec ``PROTOCOL.md``)::

    token(s)      = s                                if s matches [A-Za-z0-9_-]+
                  = "~" + base64url(utf8(s))         otherwise, without "=" padding
    partition(s)  = crc32(utf8(s)) % P               (zlib/IEEE CRC-32; P = --partition-count)
    frame         -> edged.in.<partition>.<token>    stored in JetStream stream EDGED_IN_<partition>
    decision      -> edged.out.<token>               stored in EDGED_OUT, Nats-Msg-Id <token>.<seq>
    heartbeat     -> edged.heartbeat                 core NATS (not stored)

A frame on another subject than its stream's is rejected ("stream"), so a stream's state
lives with the owner of its partition alone.

Exactly-once state: an instance owns partitions S (``--partitions``) through one durable
pull consumer ``edged-<p>`` per partition. The serving loop records, per partition, the
stream sequence of the last frame it took; a checkpoint stores them (header
``transport``) once NATS has confirmed every decision published before it, and a restart
recreates each consumer at the next sequence, so a ``kill -9`` replays exactly the frames
after the checkpoint. A replay reproduces their decisions (they do not depend on frame or
batch boundaries) with the same ``Nats-Msg-Id``, which JetStream drops as duplicates
within its deduplication window. Input sequences are dense (retention only removes the
oldest), so a jump means frames edged never got: those the log still holds (delivered but
lost on the way; ack policy none never redelivers) are fetched again by recreating the
consumer at the first of them (``_pull``); those that aged out are counted
(``edged_nats_frames_lost_total``), logged, and the partition's streams carry on from the
checkpointed state (a warm restart, as over ZeroMQ).

Threads: nats-py is asyncio; its event loop runs on one transport thread (``Loop``). Frames
reach the serving loop through an inproc ZeroMQ PUSH/PULL pair (``[payload, partition |
seq | subject]``, ``FETCH`` deep), so the serving loop polls as it does over ZeroMQ. Each
pull request asks for ``FETCH`` frames and the next is sent once they are handed over, so
at most ``FETCH`` frames per partition wait on the client.

Back-pressure: the input is a durable log, so nothing is dropped when NATS confirms
decisions slower than edged makes them (a replay catching up, a slow or unreachable
server): once more than ``--nats-max-unconfirmed`` decisions await confirmation (in flight
and queued, over all streams), no pull request is sent until half of them are confirmed
(``_flow``). Frames pulled before are still decided, so the backlog exceeds the limit by
the decisions of at most one fetch per partition and the hand-over pipe.

Decision order: decisions go the other way to one publisher task, which keeps each
stream's decisions in seq order in ``EDGED_OUT``: a stream has at most one decision in
flight, and its next is published once NATS confirmed it (stored, or a duplicate).
Streams are pipelined against each other. A decision refused, unconfirmed after
``ACK_WAIT`` (a publish or ack lost in a reconnect never completes), or whose publish
raised (``reclaim``) is published again, same id, before any later one of its stream.
Pipelining within a stream would break the order: the server stores what reaches it, so
a publish lost with a connection is overtaken by later ones that nats-py buffered and
sends after the reconnect, or that arrive once a refusing stream is back.
"""

from __future__ import annotations

import asyncio
import base64
import collections
import concurrent.futures
import functools
import itertools
import json
import math
import re
import struct
import threading
import time
import zlib
from typing import Callable, NamedTuple

import zmq

from edged.config import ConfigError, dedup_rule, parse_partitions
from edged.protocol import MAX_STREAM_BYTES, FrameError, Packed
from edged.sockets import Received, receive_each

IN_PREFIX, OUT_PREFIX, HEARTBEAT_SUBJECT = "edged.in", "edged.out", "edged.heartbeat"
OUT_STREAM = "EDGED_OUT"
FETCH = 256  # frames per pull request
FETCH_EXPIRES = 5.0  # seconds a pull request waits on the server
CONNECT_TIMEOUT = 10.0
ACK_WAIT = 2.0  # a decision unconfirmed this long (lost in a reconnect) is published again;
# a Sender's frame unconfirmed this long is counted as failed (it frees its pipeline slot)
SETTLE_S = 3.0  # the longest a checkpoint waits for confirmations (the serving loop goes on)
RETRY_S = 1.0  # pause before pulling again after an error or an unexpected status
_PLAIN = re.compile(r"[A-Za-z0-9_-]+")
_META = struct.Struct("<qq")  # partition, stream sequence


@functools.lru_cache(maxsize=1 << 16)
def token(stream: str) -> str:
    """The subject token of a stream id (module table)."""
    if _PLAIN.fullmatch(stream):
        return stream
    return "~" + base64.urlsafe_b64encode(stream.encode()).decode().rstrip("=")


def stream_of(tok: str) -> str:
    """The stream id of a subject token (``token``'s inverse)."""
    if not tok.startswith("~"):
        return tok
    body = tok[1:]
    return base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)).decode()


def partition(stream: str, count: int) -> int:
    return zlib.crc32(stream.encode()) % count


def in_stream(p: int) -> str:
    return f"EDGED_IN_{p}"


def in_subject(stream: str, count: int) -> str:
    return f"{IN_PREFIX}.{partition(stream, count)}.{token(stream)}"


def out_subject(stream: str) -> str:
    return f"{OUT_PREFIX}.{token(stream)}"


def msg_id(stream: str, seq: int) -> str:
    """The deduplication id of decision ``seq`` of ``stream``."""
    return f"{token(stream)}.{seq}"


def message_bound(decision_bytes: int) -> int:
    """The most bytes a decision of at most ``decision_bytes`` takes against the server's
    ``max_payload``, which counts the header block too: its ``Nats-Msg-Id`` for the longest
    stream id (``MAX_STREAM_BYTES`` of a "~" token) and the widest seq."""
    mid = msg_id("." * MAX_STREAM_BYTES, (1 << 64) - 1)
    return decision_bytes + len(f"NATS/1.0\r\nNats-Msg-Id: {mid}\r\n\r\n".encode())


class Retention(NamedTuple):
    """What edged creates missing JetStream streams with (``[nats]`` settings)."""

    max_age: float  # seconds
    max_bytes: int  # per stream, -1 = unlimited
    dedup_window: float  # seconds

    @classmethod
    def of(cls, cfg) -> "Retention":
        return cls(cfg.nats_max_age, cfg.nats_max_bytes, cfg.nats_dedup_window)

    @classmethod
    def defaults(cls) -> "Retention":
        from edged.config import default

        return cls(default("nats_max_age"), default("nats_max_bytes"), default("nats_dedup_window"))


async def ensure_streams(js, partitions, retention: Retention, log=None) -> None:
    """Create the missing JetStream streams: ``EDGED_IN_<p>`` for ``partitions`` and
    ``EDGED_OUT`` (file storage, limits retention, discard oldest). Existing streams are
    used as they are: operators own them (replicas, placement, limits)."""
    from nats.js import api
    from nats.js.errors import NotFoundError

    window = min(retention.dedup_window, retention.max_age)
    wanted = [(in_stream(p), f"{IN_PREFIX}.{p}.*", f"edged input, partition {p}") for p in partitions]
    wanted.append((OUT_STREAM, f"{OUT_PREFIX}.*", "edged decisions"))
    for name, subject, what in wanted:
        try:
            await js.stream_info(name)
            continue
        except NotFoundError:
            pass
        await js.add_stream(api.StreamConfig(
            name=name, description=what, subjects=[subject], retention=api.RetentionPolicy.LIMITS,
            storage=api.StorageType.FILE, discard=api.DiscardPolicy.OLD, max_age=retention.max_age,
            max_bytes=retention.max_bytes, duplicate_window=window))
        if log is not None:
            log.info("created JetStream stream %s (%s): max_age %gs, max_bytes %d, dedup window %gs",
                     name, subject, retention.max_age, retention.max_bytes, window)


def reclaim(js, ours) -> None:
    """Free the ack slots nats-py holds for publishes that raised. ``js.publish_async``
    takes a slot of ``publish_async_max_pending`` and registers the publish's ack future
    before it sends, and keeps both for good if the send raises (connection closed,
    reconnect buffer full, payload over the server's max_payload): the caller never gets
    the future, so no ack timeout can free it, and as many as the limit would wedge every
    publish for good. ``ours``: the caller's futures still awaiting their acks (all its
    publishes that returned); cancelling the others runs nats-py's own cleanup. Call it
    after a publish raised, with no other publish of ``js`` under way (the dict is
    private: if it goes, there is nothing to do)."""
    for future in list(getattr(js, "_publish_async_futures", {}).values()):
        if future not in ours:
            future.cancel()


class Limited:
    """``warning`` logs at most one line per ``kind`` every ``interval`` seconds: NATS
    errors repeat for as long as a server is away."""

    def __init__(self, log, interval: float = 10.0):
        self.log, self.interval, self.last = log, interval, {}

    def warning(self, kind: str, msg: str, *args) -> None:
        now = time.monotonic()
        if self.log is not None and now - self.last.get(kind, -math.inf) >= self.interval:
            self.last[kind] = now
            self.log.warning(msg, *args)


async def _connect(url: str, log=None):
    """A connection that reconnects for ever; its errors are logged (``Limited``) instead
    of nats-py's tracebacks. Raises ``OSError`` if no server answers within
    ``CONNECT_TIMEOUT``."""
    import nats

    limited = Limited(log)

    async def error(e: Exception) -> None:
        limited.warning(type(e).__name__, "NATS %s: %s: %s", url, type(e).__name__, e)

    try:
        return await asyncio.wait_for(nats.connect(url, max_reconnect_attempts=-1, reconnect_time_wait=0.5,
                                                   connect_timeout=2, error_cb=error), CONNECT_TIMEOUT)
    except asyncio.TimeoutError:
        raise OSError(f"no NATS server answered at {url} within {CONNECT_TIMEOUT:g}s") from None


class Loop:
    """An asyncio event loop on its own daemon thread; ``call`` runs a coroutine there."""

    def __init__(self, name: str):
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name=name, daemon=True)
        self.thread.start()

    def call(self, coro, timeout: float | None = None):
        """``coro``'s result; after ``timeout`` seconds it is cancelled and ``TimeoutError``
        names it (an ``OSError``: ``edged serve`` reports it as "cannot serve: ...")."""
        future = asyncio.run_coroutine_threadsafe(coro, self.loop)
        try:
            return future.result(timeout)
        except TimeoutError:
            future.cancel()
            raise TimeoutError(f"NATS: {getattr(coro, '__qualname__', 'a call')} did not finish "
                               f"within {timeout:g} s") from None

    def open(self, coro, timeout: float):
        """``call`` that stops the loop (and its thread) if ``coro`` fails: a client that
        cannot connect leaves nothing running."""
        try:
            return self.call(coro, timeout)
        except BaseException:
            self.stop()
            raise

    def soon(self, fn, *args) -> None:
        self.loop.call_soon_threadsafe(fn, *args)

    def stop(self) -> None:
        """Cancel what still runs on the loop (nats-py leaves a JetStream subscription's
        tasks behind after ``close``), then stop it and its thread."""
        async def cancel_the_rest() -> None:
            rest = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for t in rest:
                t.cancel()
            await asyncio.gather(*rest, return_exceptions=True)

        if self.thread.is_alive():
            try:
                self.call(cancel_the_rest(), 5)
            except Exception:  # noqa: BLE001 - stopping anyway
                pass
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)
        if not self.thread.is_alive():
            self.loop.close()


class Delivered(bytes):
    """A frame's payload as ``Transport.recv`` delivers it, with the subject it arrived on."""

    subject: str


class Transport:
    """``edged serve``'s ingest and publish over JetStream (module docstring); the same
    duck type as ``edged.sockets.Sockets``. ``ingest`` (this object) is read by the serving
    loop only; everything asynchronous runs on the transport thread."""

    ingest_kind = "jetstream"

    def __init__(self, ctx: zmq.Context, cfg, metrics, log, *, decision_bytes: int):
        self.ctx, self.cfg, self.metrics, self.log = ctx, cfg, metrics, log
        self.decision_bytes = decision_bytes  # the model's largest (``protocol.decision_bound``)
        self.url = cfg.ingest_endpoint
        self.count = cfg.nats_partition_count
        self.owned = parse_partitions(cfg.nats_partitions, self.count)
        self.retention = Retention.of(cfg)
        self.limit = cfg.nats_max_unconfirmed  # back-pressure (``_flow``)
        self.ingest = self
        self.offsets: dict[int, int] = {}  # partition -> stream seq of the last frame taken
        self.loop: Loop | None = None
        self.wake = self._push = None
        self.endpoints: dict[str, str] = {}
        self.limited = Limited(log)
        # The publisher's state (transport thread; ``_send``). Per decision subject (= stream):
        # its decisions not yet confirmed, oldest first; whether the oldest is to be published
        # (``_ready``) or in flight (``_flight``: deadline, ack future or None if refused).
        # OrderedDicts, as the first entry is taken: O(1) after deletions, unlike a dict.
        self._out: dict[str, collections.deque] = {}
        self._ready: collections.OrderedDict = collections.OrderedDict()
        self._flight: collections.OrderedDict = collections.OrderedDict()
        self._handed = 0  # decisions handed over so far, each numbered in that order
        self._unconfirmed: collections.OrderedDict = collections.OrderedDict()  # their numbers
        self._marks: collections.deque = collections.deque()  # ``confirm``: (number, future)
        metrics.nats_unconfirmed.set_function(lambda: len(self._unconfirmed))
        self._beats: list[bytes] = []
        self._tasks: list[asyncio.Task] = []

    # -- lifecycle (serving thread) ----------------------------------------------------

    def bind(self) -> dict[str, str]:
        """Connect, create missing streams, open the inproc hand-over; nothing is pulled
        before ``start``. Raises ``OSError`` when the server cannot be reached, and
        ``ConfigError`` when ``EDGED_OUT``'s duplicate window does not fit the settings
        (``edged.config.dedup_rule``; a warning it gives is logged) or the server's
        ``max_payload`` is below the model's largest decision (``message_bound``): NATS
        would refuse it for ever."""
        address = f"inproc://edged-jetstream-{id(self)}"
        self.wake = self.ctx.socket(zmq.PULL)
        self.wake.linger = 0
        self.wake.rcvhwm = FETCH // 2  # over inproc the two add up: FETCH frames
        self.wake.bind(address)
        self._push = self.ctx.socket(zmq.PUSH)
        self._push.linger = 0
        self._push.sndhwm = FETCH // 2
        self._push.connect(address)
        self.loop = Loop("edged-jetstream")
        try:
            window, max_age = self.loop.call(self._open(), CONNECT_TIMEOUT + 10)
        except OSError:
            raise
        except Exception as e:  # noqa: BLE001 - refused stream config, no JetStream, ...
            raise OSError(f"NATS {self.url}: {type(e).__name__}: {e}") from None
        largest, limit = message_bound(self.decision_bytes), self.nc.max_payload
        if largest > limit:
            raise ConfigError(f"NATS {self.url}: the server's max_payload is {limit} bytes, but a decision "
                              f"of this model can take {largest} bytes (payload and Nats-Msg-Id header), "
                              f"which NATS would never store: raise max_payload in the server's "
                              f"configuration to at least {largest}")
        verdict, why = dedup_rule(window, max_age, self.cfg, f"{OUT_STREAM}'s duplicate window")
        if verdict == "refuse":
            raise ConfigError(why)
        if verdict == "warn":
            self.log.warning("%s", why)
        self.endpoints = {"ingest": self.url, "publish": self.url}
        return self.endpoints

    def resume_point(self, header) -> dict[int, int]:
        """The per-partition resume sequences in a checkpoint's ``transport`` header (none:
        ``{}``); raises ``CheckpointError("mismatch")`` for another partition count."""
        from edged.checkpoint import CheckpointError

        if header is None:
            return {}
        try:
            if header["kind"] != "jetstream":
                return {}
            count, offsets = int(header["partition_count"]), header["offsets"]
            out = {int(p): int(s) for p, s in offsets.items()}
        except (KeyError, TypeError, ValueError, AttributeError):
            raise CheckpointError("corrupt", "transport header is not a JetStream resume point") from None
        if count != self.count:
            raise CheckpointError("mismatch", f"written with --partition-count {count}, "
                                              f"serving {self.count} (streams map to other partitions)")
        return out

    def start(self, resume: dict[int, int] | None) -> None:
        """Recreate each owned partition's durable consumer after ``resume[p]`` (from the
        first frame held when absent) and start pulling."""
        self.offsets = {p: s for p, s in (resume or {}).items() if p in self.owned}
        self.loop.call(self._start(dict(self.offsets)), 30)

    def poller(self) -> zmq.Poller:
        poller = zmq.Poller()
        poller.register(self.wake, zmq.POLLIN)
        return poller

    def monitor_events(self, ready: dict) -> list[FrameError]:
        return []

    def recv(self, flags: int = 0) -> Delivered:
        """The next frame's payload and subject (``zmq.Again`` when none is queued); records
        its partition's sequence."""
        data, meta = self.wake.recv_multipart(flags)
        p, seq = _META.unpack_from(meta)
        self.offsets[p] = seq
        delivered = Delivered(data)
        delivered.subject = meta[_META.size:].decode()
        return delivered

    def warm(self) -> None:
        """Nothing compiled here."""

    def receive(self, budget: int, wait_s: float, close_bytes: int,
                clock: Callable[[], float] = time.perf_counter) -> Received:
        """Up to ``budget`` queued frames as ``Delivered`` (``edged.sockets.receive_each``)."""
        return receive_each(self.recv, clock, budget, wait_s, close_bytes, keep=True)

    def check_origin(self, buf: Delivered, stream: str) -> None:
        """Reject (``stream``) a frame of ``stream`` that arrived on another subject than its own."""
        want = in_subject(stream, self.count)
        if buf.subject != want:
            raise FrameError("stream", f"stream {stream!r} arrived on {buf.subject}, "
                                       f"its subject is {want}")

    def send_decisions(self, streams: list[str], seqs: list[int], packed: Packed) -> None:
        self.loop.soon(self._enqueue, [(out_subject(s), p, msg_id(s, q))
                                       for s, q, p in zip(streams, seqs, packed.payloads())])

    def send_heartbeat(self, payload: bytes) -> None:
        self.loop.soon(self._beat, payload)

    def confirm(self, timeout: float = SETTLE_S) -> tuple[dict, concurrent.futures.Future]:
        """The checkpoint's ``transport`` header as of now, and a future done once NATS
        confirmed every decision handed over before it; it fails with ``OSError`` if some
        are still unconfirmed after ``timeout`` seconds (the checkpoint is then not
        written: a replay publishes them again). Nothing waits here."""
        header = {"kind": "jetstream", "partition_count": self.count,
                  "offsets": {str(p): s for p, s in sorted(self.offsets.items())}}
        future: concurrent.futures.Future = concurrent.futures.Future()
        self.loop.soon(self._mark, future, timeout)
        return header, future

    def close(self, linger_s: float = 1.0) -> None:
        if self.loop is not None:
            try:
                self.loop.call(self._close(linger_s), linger_s + 5)
            except Exception as e:  # noqa: BLE001 - closing a broken connection
                self.log.warning("closing the NATS connection: %s", e)
            self.loop.stop()
            self.loop = None
        for sock in (self._push, self.wake):
            if sock is not None:
                sock.close(linger=0)
        self._push = self.wake = None

    # -- the transport thread ------------------------------------------------------------

    async def _open(self) -> tuple[float, float]:
        """Connect and create the missing streams; return ``EDGED_OUT``'s duplicate window
        and the longest ``max_age`` of the owned input streams (seconds, inf: unlimited)."""
        self.nc = await _connect(self.url, self.log)
        self.js = self.nc.jetstream(timeout=5)
        await ensure_streams(self.js, self.owned, self.retention, self.log)
        window = (await self.js.stream_info(OUT_STREAM)).config.duplicate_window or 0.0
        ages = [(await self.js.stream_info(in_stream(p))).config.max_age or math.inf for p in self.owned]
        self._wake, self._empty, self._flowing = asyncio.Event(), asyncio.Event(), asyncio.Event()
        self._empty.set()
        self._flowing.set()
        self._tasks.append(asyncio.get_running_loop().create_task(self._publish()))
        return window, max(ages, default=math.inf)

    async def _start(self, resume: dict[int, int]) -> None:
        for p in self.owned:
            stream = in_stream(p)
            state = (await self.js.stream_info(stream)).state
            seq = resume.get(p)
            if seq is not None and seq > state.last_seq:
                self.log.error("partition %d: checkpoint at seq %d but %s ends at %d (the server "
                               "lost its tail: see sync_interval); resuming at %d", p, seq, stream,
                               state.last_seq, state.last_seq + 1)
                seq = state.last_seq
            await self._consumer(p, seq)
            self.log.info("partition %d: %s seq %d..%d, resuming %s", p, stream, state.first_seq,
                          state.last_seq, f"after seq {seq}" if seq else "at its first frame")
            self._tasks.append(asyncio.get_running_loop().create_task(
                self._pull(p, None if seq is None else seq + 1)))

    async def _consumer(self, p: int, after: int | None) -> None:
        """(Re)create partition ``p``'s durable consumer, delivering from the frame after
        stream sequence ``after`` (``None`` or 0: from the first frame held)."""
        from nats.js import api
        from nats.js.errors import NotFoundError

        stream, durable = in_stream(p), f"edged-{p}"
        try:
            await self.js.delete_consumer(stream, durable)
        except NotFoundError:
            pass
        await self.js.add_consumer(stream, api.ConsumerConfig(
            durable_name=durable, filter_subject=f"{IN_PREFIX}.{p}.*", ack_policy=api.AckPolicy.NONE,
            deliver_policy=api.DeliverPolicy.BY_START_SEQUENCE if after else api.DeliverPolicy.ALL,
            opt_start_seq=after + 1 if after else None))

    async def _pull(self, p: int, expect: int | None) -> None:
        """Pull partition ``p`` in requests of ``FETCH`` frames and hand each over in order;
        ``expect`` is the stream sequence of the next frame to take (``None``: the first
        held). The consumer (ack policy none) never delivers a frame again by itself, so
        whenever the sequence may have broken it is recreated at ``expect``, on a fresh
        inbox that nothing of an earlier request reaches: after a request without an answer
        (lost in a reconnect), a status other than the request's expiry (consumer deleted,
        JetStream unavailable) or an error (after ``RETRY_S``), and after a jump over
        frames the log still holds (delivered, but lost on the way). No request is sent
        while ingest is paused (``_flow``)."""
        nc, sub, resync = self.nc, None, False
        subject = f"$JS.API.CONSUMER.MSG.NEXT.{in_stream(p)}.edged-{p}"
        try:
            while True:
                await self._flowing.wait()
                try:
                    if resync:
                        if sub is not None:
                            old, sub = sub, None
                            await old.unsubscribe()
                        await self._consumer(p, None if expect is None else expect - 1)
                    if sub is None:
                        box: asyncio.Queue = asyncio.Queue()
                        sub = await nc.subscribe(nc.new_inbox(), cb=box.put)
                    expect, resync = await self._fetch(p, expect, subject, sub.subject, box)
                except Exception as e:  # noqa: BLE001 - a server away or refusing: try again
                    self.limited.warning(f"pull {p}", "partition %d: pulling: %s: %s", p,
                                         type(e).__name__, e)
                    resync = True
                    await asyncio.sleep(RETRY_S)
        finally:
            if sub is not None:
                await sub.unsubscribe()

    async def _fetch(self, p: int, expect: int | None, subject: str, inbox: str,
                     box: asyncio.Queue) -> tuple[int | None, bool]:
        """One pull request on ``inbox``: hand over the frames it brings; return the next
        ``expect`` and whether the consumer must be recreated there (``_pull``)."""
        push, log = self._push, self.log
        request = json.dumps({"batch": FETCH, "expires": int(FETCH_EXPIRES * 1e9)}).encode()
        await self.nc.publish(subject, request, reply=inbox)
        got, deadline = 0, time.monotonic() + FETCH_EXPIRES + 1
        while got < FETCH:
            try:
                msg = await asyncio.wait_for(box.get(), max(0.01, deadline - time.monotonic()))
            except asyncio.TimeoutError:
                self.limited.warning(f"lost {p}", "partition %d: no answer to a pull request: "
                                     "recreating its consumer", p)
                return expect, True
            status = msg.headers.get("Status") if msg.headers and not msg.data else None
            if status == "408":  # the request expired: ask again
                return expect, False
            if status:
                self.limited.warning(f"status {p}", "partition %d: pull status %s %s: recreating "
                                     "its consumer", p, status, msg.headers.get("Description", ""))
                await asyncio.sleep(RETRY_S)
                return expect, True
            got += 1
            seq = msg.metadata.sequence.stream
            if expect is not None and seq != expect:
                if seq < expect:  # delivered again: already handed over
                    continue
                first = (await self.js.stream_info(in_stream(p))).state.first_seq
                gone = min(seq, max(first, expect)) - expect  # frames the log no longer holds
                if gone:
                    self.metrics.nats_frames_lost.inc(gone)
                    log.warning("partition %d: frames %d..%d of %s left the log before edged read "
                                "them (retention); its streams carry on from their state", p, expect,
                                expect + gone - 1, in_stream(p))
                if expect + gone < seq:
                    log.warning("partition %d: frames %d..%d were delivered but did not arrive: "
                                "fetching them again", p, expect + gone, seq - 1)
                    return expect + gone, True
            expect = seq + 1
            parts = (msg.data, _META.pack(p, seq) + msg.subject.encode())
            while True:
                try:
                    push.send_multipart(parts, zmq.NOBLOCK)
                    break
                except zmq.Again:  # the serving loop is behind: wait for it
                    await asyncio.sleep(0.001)
        return expect, False

    def _enqueue(self, decisions: list[tuple[str, bytes, str]]) -> None:
        for d in decisions:
            queue = self._out.get(d[0])
            if queue is None:
                queue = self._out[d[0]] = collections.deque()
                self._ready[d[0]] = None
            queue.append((*d, self._handed))
            self._unconfirmed[self._handed] = None
            self._handed += 1
        if decisions:
            self._empty.clear()
            self._wake.set()
            self._flow()

    def _flow(self) -> None:
        """Pause pulling input while more than ``limit`` decisions await confirmation,
        resume once at most half as many do."""
        n, m = len(self._unconfirmed), self.metrics
        if self._flowing.is_set() and n > self.limit:
            self._flowing.clear()
            m.nats_ingest_paused.set(1)
            m.nats_ingest_pauses.inc()
            self.limited.warning("paused", "%d decisions await NATS's confirmation, over "
                                 "--nats-max-unconfirmed %d: no input pulled until at most %d do",
                                 n, self.limit, self.limit // 2)
        elif not self._flowing.is_set() and n <= self.limit // 2:
            self._flowing.set()
            m.nats_ingest_paused.set(0)

    def _beat(self, payload: bytes) -> None:
        self._beats.append(payload)
        self._wake.set()

    async def _publish(self) -> None:
        """Publish whenever there is work (``_send``): new decisions or heartbeats, a
        confirmation, or a decision in flight due to be published again."""
        loop = asyncio.get_running_loop()
        while True:
            if not self._wake.is_set():
                due = next(iter(self._flight.values()))[0] - loop.time() if self._flight else math.inf
                if self._ready:  # left over by a disconnection or an error
                    due = min(due, RETRY_S)
                timer = loop.call_later(max(due, 0), self._wake.set) if due < math.inf else None
                await self._wake.wait()
                if timer is not None:
                    timer.cancel()
            self._wake.clear()
            await self._send()

    async def _send(self) -> None:
        """Publish the heartbeats, then the oldest unconfirmed decision of each stream that
        has none in flight, its ack awaited asynchronously (``_acked``); nothing while
        disconnected (nats-py would buffer it)."""
        loop = asyncio.get_running_loop()
        self._expire(loop.time())
        beats, self._beats = self._beats, []
        if not self.nc.is_connected:
            return
        subject = None
        try:
            for payload in beats:
                await self.nc.publish(HEARTBEAT_SUBJECT, payload)
            while self._ready:
                subject = next(iter(self._ready))
                _, payload, mid, _ = self._out[subject][0]
                future = await self.js.publish_async(subject, payload, headers={"Nats-Msg-Id": mid},
                                                     wait_stall=ACK_WAIT)
                del self._ready[subject]
                self._flight[subject] = (loop.time() + ACK_WAIT, future)
                future.add_done_callback(functools.partial(self._acked, subject))
        except Exception as e:  # noqa: BLE001 - a lost connection, too many unconfirmed: again later
            reclaim(self.js, {future for _, future in self._flight.values()})  # edged's own
            if subject in self._ready:  # its publish raised: the other streams go first next time
                self._ready.move_to_end(subject)
                self.metrics.nats_publish_errors.inc()
            self.limited.warning("publish", "publishing decisions: %s: %s", type(e).__name__, e)

    def _acked(self, subject: str, future) -> None:
        """A publish of ``subject``'s oldest decision completed: confirmed (stored, or
        dropped as a duplicate), its stream's next decision goes out; refused, it is
        published again when its ack would have been due (``_expire``)."""
        entry = self._flight.get(subject)
        if entry is None or entry[1] is not future:  # expired before: published again
            return
        error = future.exception() if not future.cancelled() else asyncio.CancelledError()
        if error is not None:
            self._flight[subject] = (entry[0], None)
            self.metrics.nats_publish_errors.inc()
            self.limited.warning("refused", "NATS refused decision %s: %s: %s (publishing it again)",
                                 self._out[subject][0][2], type(error).__name__, error)
            return
        del self._flight[subject]
        if future.result().duplicate:
            self.metrics.nats_duplicates.inc()
        queue = self._out[subject]
        del self._unconfirmed[queue.popleft()[3]]
        self._flow()
        if queue:
            self._ready[subject] = None
        else:
            del self._out[subject]
            if not self._out:
                self._empty.set()
        self._wake.set()
        self._resolve()

    def _mark(self, future: concurrent.futures.Future, timeout: float) -> None:
        """``confirm``'s future: done once the decisions handed over before are confirmed."""
        mark = (self._handed, future)
        self._marks.append(mark)
        asyncio.get_running_loop().call_later(timeout, self._overdue, mark, timeout)
        self._resolve()

    def _resolve(self) -> None:
        oldest = next(iter(self._unconfirmed), self._handed)
        while self._marks and self._marks[0][0] <= oldest:
            future = self._marks.popleft()[1]
            if not future.done():
                future.set_result(None)

    def _overdue(self, mark: tuple[int, concurrent.futures.Future], timeout: float) -> None:
        if not mark[1].done():
            left = sum(1 for _ in itertools.takewhile(lambda n: n < mark[0], self._unconfirmed))
            mark[1].set_exception(OSError(f"NATS did not confirm {left} decisions within {timeout:g}s"))

    def _expire(self, now: float) -> None:
        """Make the decisions in flight that are due by ``now`` (their ack overdue, or
        refused) ready to publish again: a publish or ack lost in a reconnect never
        completes, and nats-py would keep its place for ever."""
        while self._flight:
            subject, (deadline, future) = next(iter(self._flight.items()))
            if deadline > now:
                return
            del self._flight[subject]
            if future is not None:
                future.cancel()
                self.metrics.nats_publish_errors.inc()
            self._ready[subject] = None

    async def _settle(self) -> None:
        """Wait until NATS confirmed every decision handed over."""
        await self._empty.wait()

    async def _close(self, linger_s: float) -> None:
        if not self._tasks:  # never connected
            return
        for task in self._tasks[1:]:  # the pullers first: no more frames
            task.cancel()
        try:
            await asyncio.wait_for(self._settle(), linger_s)
        except asyncio.TimeoutError:
            pass
        self._tasks[0].cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.nc.close()


# -- clients ---------------------------------------------------------------------------------

from edged import client as _client  # noqa: E402 - the clients extend the ZeroMQ ones


class Sender(_client.Sender):
    """``edged.client.Sender`` over JetStream: ``send`` publishes the stream's next frame
    on its subject (``partition_count`` must equal the daemons'). Publishes are
    pipelined (``max_pending`` awaiting their acks); ``send`` blocks when that many are
    pending, raising ``zmq.Again`` after ``timeout`` seconds if set; a frame without an ack
    after ``ACK_WAIT`` counts as failed (it may or may not be in the log: a frame is never
    sent twice); a frame nats-py cannot send (the server away and its reconnect buffer
    full, over the server's max_payload) raises its error from ``send`` and holds no slot
    (``reclaim``); ``close`` waits ``linger`` seconds for the rest and raises
    ``RuntimeError`` if any failed."""

    def __init__(self, endpoint: str, *, binary: bool = True, partition_count: int | None = None,
                 timeout: float | None = None, linger: float = 10.0, max_pending: int = 1024,
                 curve=None, **_zmq_only):
        if curve is not None:
            raise ValueError("CURVE is a ZeroMQ mechanism; secure NATS with TLS and credentials")
        from edged.config import default

        self.binary, self.seq = binary, {}
        self.count = partition_count or default("nats_partition_count")
        self.timeout, self.linger = timeout, linger
        self.errors: list[BaseException] = []
        self._pending: set[asyncio.Future] = set()  # publishes awaiting their acks (``reclaim``)
        self._loop = Loop("edged-sender")
        self._loop.open(self._open(endpoint, max_pending), CONNECT_TIMEOUT + 10)

    async def _open(self, endpoint: str, max_pending: int) -> None:
        self.nc = await _connect(endpoint)
        self.js = self.nc.jetstream(timeout=5, publish_async_max_pending=max_pending)
        await ensure_streams(self.js, range(self.count), Retention.defaults())

    async def _publish(self, subject: str, frame: bytes) -> None:
        from nats.js.errors import TooManyStalledMsgsError

        try:
            future = await self.js.publish_async(subject, frame, wait_stall=self.timeout)
        except TooManyStalledMsgsError:
            raise zmq.Again(f"{self.js.publish_async_pending()} frames awaiting acks") from None
        except Exception:  # not sent (server away and buffer full, too large, closed): raised
            reclaim(self.js, self._pending)
            raise
        self._pending.add(future)
        future.add_done_callback(self._pending.discard)

        def expire() -> None:  # an ack lost (a server restart) would hold its slot for ever
            if not future.done():
                self.errors.append(TimeoutError(f"no ack within {ACK_WAIT:g} s for a frame on {subject}"))
                future.cancel()

        asyncio.get_running_loop().call_later(ACK_WAIT, expire)
        future.add_done_callback(lambda f: f.cancelled() or f.exception() is None
                                 or self.errors.append(f.exception()))

    def send_frame(self, frame: bytes, stream: str | None = None) -> None:
        if stream is None:
            import msgpack

            stream = msgpack.unpackb(frame)["stream"]
        self._loop.call(self._publish(in_subject(stream, self.count), frame))

    def close(self) -> None:
        async def finish():
            try:
                await asyncio.wait_for(self.js.publish_async_completed(), self.linger)
            except asyncio.TimeoutError:
                pass  # reported below
            finally:
                await self.nc.close()

        try:
            self._loop.call(finish())
        finally:
            self._loop.stop()
        if self.errors or self.js.publish_async_pending():
            raise RuntimeError(f"NATS refused {len(self.errors)} frames and left "
                               f"{self.js.publish_async_pending()} unconfirmed (first: "
                               f"{self.errors[0] if self.errors else 'timeout'})")


SUBSCRIBER_BUFFER = 10_000  # decisions a NATS Subscriber holds before it stops taking more


class Subscriber(_client.Subscriber):
    """``edged.client.Subscriber`` over JetStream: an ordered consumer of ``EDGED_OUT``
    (``deliver="new"``: decisions from now on, like ZeroMQ; ``"all"``: from the oldest the
    stream holds) plus the heartbeat subject. Same counters and callbacks. It holds at most
    ``SUBSCRIBER_BUFFER`` decisions not yet read: a slow reader holds up delivery (the
    ordered consumer's flow control) instead of filling memory."""

    def __init__(self, endpoint: str, *, streams: tuple[str, ...] = (), deliver: str = "new",
                 on_gap=None, on_restart=None, clock=time.perf_counter, curve=None,
                 max_silence: float | None = None, on_dead=None, **_zmq_only):
        import queue

        if curve is not None:
            raise ValueError("CURVE is a ZeroMQ mechanism; secure NATS with TLS and credentials")
        if deliver not in ("new", "all"):
            raise ValueError(f"deliver must be 'new' or 'all', not {deliver!r}")
        self._track_from(streams, on_gap, on_restart, clock, max_silence, on_dead)
        self._box: queue.Queue = queue.Queue(SUBSCRIBER_BUFFER)
        self._loop = Loop("edged-subscriber")
        self._loop.open(self._open_nats(endpoint, deliver), CONNECT_TIMEOUT + 10)

    async def _open_nats(self, endpoint: str, deliver: str) -> None:
        from nats.js import api

        self.nc = await _connect(endpoint)
        js = self.nc.jetstream(timeout=5)
        await ensure_streams(js, (), Retention.defaults())
        box = self._box

        async def put(msg):  # a full box holds up delivery: JetStream's flow control waits
            while box.full():
                await asyncio.sleep(0.005)
            box.put_nowait((msg.subject, msg.data))

        one = next(iter(self.streams)) if len(self.streams) == 1 else None
        await js.subscribe(out_subject(one) if one else f"{OUT_PREFIX}.*", cb=put, ordered_consumer=True,
                           deliver_policy=api.DeliverPolicy(deliver), stream=OUT_STREAM)
        await self.nc.subscribe(HEARTBEAT_SUBJECT, cb=put)

    def _reopen(self) -> None:
        """nats-py reconnects by itself: nothing to recreate."""

    def _next(self, wait: float | None) -> tuple[bool, bytes] | None:
        import queue

        try:
            subject, data = self._box.get(timeout=wait)
        except queue.Empty:
            return None
        return subject == HEARTBEAT_SUBJECT, data

    def _queued(self) -> bool:
        return not self._box.empty()

    def close(self) -> None:
        try:
            self._loop.call(self.nc.close(), 10)
        finally:
            self._loop.stop()
