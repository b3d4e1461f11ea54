"""A service's ``--state-dir``: restore at start, checkpoints every ``--checkpoint-interval``
and on stop (the file format and its checks: ``edged.checkpoint``).

``restore`` (before READY) loads the streams the service owns from every checkpoint file
there: its own shard's and, after a change of ``--workers``, the other layouts' (the
streams that hash to it). A refused file is a logged, counted cold start. Restored streams
keep their clocks, held events and seqs; the epoch is new, so subscribers see a restart,
not a gap. Streams restored from another layout are checkpointed at once in this one.

A checkpoint: the loop takes the snapshot (a copy of the table and engine rows, ~5 ms for
1,000 streams) with the transport's resume point (NATS: each partition's last input
sequence); one writer thread waits for the transport's confirmation of the decisions
published before it (NATS: their acks, ``CONFIRM_S`` at most; ZeroMQ: none to wait for),
then writes and fsyncs the file (~55 ms for 1,000 streams here), so the loop goes on
serving meanwhile. Writes are serialised; a failure (unconfirmed, disk full) is logged and
counted, and the previous checkpoint stays.
"""

from __future__ import annotations

import concurrent.futures
import logging
import os
import time
from typing import Callable

from edged import checkpoint as ckpt

CONFIRM_S = 10.0  # the longest a write waits for the transport (NATS: 3 s)


class StateDir:
    """Checkpoints of one service's streams (module docstring): the stream table
    ``streams``, the ``engine`` rows they hold and the transport ``sockets``' resume point,
    for worker ``shard = (i, n)`` of a model with ``model_sha256``."""

    def __init__(self, cfg, engine, streams, sockets, metrics, log: logging.Logger, *,
                 model_sha256: str, epoch: int, shard: tuple[int, int],
                 clock: Callable[[], float], wall: Callable[[], float]):
        self.dir, self.interval = cfg.service_state_dir, cfg.service_checkpoint_interval
        self.engine, self.streams, self.sockets, self.metrics, self.log = engine, streams, sockets, metrics, log
        self.model_sha256, self.epoch, self.shard, self.clock, self.wall = model_sha256, epoch, shard, clock, wall
        self.resume = None  # the transport's resume point from the checkpoint (``restore``)
        self._next = float("inf")
        self._written: concurrent.futures.Future | None = None  # the last write: True if done
        self._writer = concurrent.futures.ThreadPoolExecutor(1, "edged-checkpoint")

    def restore(self) -> str:
        """Load the streams this service owns into the (empty) stream table; return the
        result counted in ``edged_checkpoint_restore_total``: ``ok``, ``none``, or a cold
        start on ``mismatch`` / ``corrupt`` (one warning line per refused file says why)."""
        from edged.link import shard_of

        if not self.dir:
            return "none"
        os.makedirs(self.dir, mode=0o700, exist_ok=True)
        i, n = self.shard
        own = ckpt.file_name(i, n)
        if ckpt.remove_stale(self.dir, own):
            self.log.info("removed an unfinished checkpoint temp file in %s", self.dir)
        self._schedule()
        siblings = {ckpt.file_name(j, n) for j in range(n) if j != i}  # none of our streams
        paths = [p for p in ckpt.paths(self.dir) if os.path.basename(p) not in siblings]
        parts, result = [], "none"
        for path in paths:
            try:
                parts.append(ckpt.read(path, self.engine, self.streams.capacity, self.model_sha256))
            except ckpt.CheckpointError as e:
                self.log.warning("checkpoint %s refused (%s): %s; its streams cold start", path,
                                 e.result, e.detail)
                result = e.result if result == "none" else result
        if not paths:
            self.log.info("no checkpoint in %s: cold start", self.dir)
        elif parts:
            restored = ckpt.combine(parts, lambda stream: shard_of(stream.encode(), n) == i)
            if len(restored.streams) > self.streams.capacity:
                self.log.warning("checkpoints in %s hold %d streams of this worker > --max-streams "
                                 "%d; cold start", self.dir, len(restored.streams),
                                 self.streams.capacity)
                result = "mismatch"
            else:
                try:
                    resume = self.sockets.resume_point(restored.header.get("transport"))
                except ckpt.CheckpointError as e:
                    self.log.warning("checkpoints in %s refused (%s): %s; cold start", self.dir,
                                     e.result, e.detail)
                    return self._restored(e.result)
                k = self.streams.restore(ckpt.apply(restored, self.engine), self.clock())
                self.resume = resume
                age = self.wall() - float(restored.header.get("written_at", 0))
                self.log.info("restored %d streams from %s (epoch %d, written %.0fs ago)", k,
                              ", ".join(map(os.path.basename, paths)), restored.header["epoch"], age)
                result = "ok" if result == "none" else result
                if [os.path.basename(p) for p in paths] != [own]:
                    self._reshard(paths)
        return self._restored(result)

    def _restored(self, result: str) -> str:
        self.metrics.checkpoint_restore.labels(result).inc()
        return result

    def _reshard(self, paths: list[str]) -> None:
        """After restoring from other layouts' ``paths``: write this service's shard file
        now; a single process then deletes the others (with workers, the supervisor does,
        once every worker has written its own)."""
        if not self.checkpoint() or self.shard[1] > 1:
            return
        old = [p for p in paths if os.path.basename(p) != ckpt.NAME]
        for path in old:
            os.unlink(path)
        self.log.info("checkpoint layout changed: %s now holds every stream; removed %s", ckpt.NAME,
                      ", ".join(map(os.path.basename, old)))

    def tick(self, now: float) -> None:
        """From the loop: begin the periodic checkpoint when it is due and the last one is
        written."""
        if now >= self._next and (self._written is None or self._written.done()):
            self._begin()

    def checkpoint(self) -> bool:
        """Write every stream's state now (on stop, after a reshard), waiting for the
        write; ``True`` if written."""
        self._begin()
        return self._written is not None and self._written.result()

    def close(self) -> None:
        """Finish a checkpoint being written."""
        self._writer.shutdown(wait=True)

    def _schedule(self) -> None:
        on = self.dir and self.interval > 0
        self._next = self.clock() + self.interval if on else float("inf")

    def _begin(self) -> None:
        """Snapshot every stream's state with the transport's resume point and hand it to
        the writer thread (``_write``)."""
        self._schedule()
        if not self.dir:
            return
        t0 = time.perf_counter()
        transport, confirmed = self.sockets.confirm()
        members = ckpt.snapshot(self.engine, self.streams.snapshot(), self.model_sha256, self.epoch,
                                self.wall(), transport=transport)
        self._written = self._writer.submit(self._write, members, confirmed, len(self.streams),
                                            time.perf_counter() - t0)

    def _write(self, members: dict, confirmed: concurrent.futures.Future, streams: int,
               seconds: float) -> bool:
        """(The writer thread.) Write ``members`` once ``confirmed``; ``seconds``: the
        snapshot's time. ``True`` if written."""
        try:
            confirmed.result(CONFIRM_S)  # raises the transport's OSError, or TimeoutError
            t0 = time.perf_counter()
            path = ckpt.write(self.dir, members, ckpt.file_name(*self.shard))
            size = os.path.getsize(path)
        except Exception as e:  # noqa: BLE001 - no failure may end the writer thread silently
            self.metrics.checkpoint_writes.labels("error").inc()
            self.log.error("checkpoint to %s failed: %s (the previous one is kept)", self.dir, e,
                           exc_info=not isinstance(e, OSError))
            return False
        m = self.metrics
        m.checkpoint_writes.labels("ok").inc()
        m.checkpoint_last_success.set(self.wall())
        m.checkpoint_seconds.set(seconds + time.perf_counter() - t0)  # not the wait
        m.checkpoint_streams.set(streams)
        m.checkpoint_size.set(size)
        return True
