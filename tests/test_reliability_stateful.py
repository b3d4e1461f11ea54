"""RELIABILITY case 25: a hypothesis state machine over the live protocol. Rules: send a
valid frame, send garbage, restart the daemon (drain + checkpoint + warm restart on the
same ports), join a new subscriber, stall / resume a subscriber. Invariants after every
step: each client sees seq strictly increasing per (stream, epoch); the daemon's counters
balance (received == sent, rejected == garbage sent); it is alive whenever it says ready.
"""

from __future__ import annotations

import shutil
import socket
import tempfile
import threading
import time

import numpy as np
import zmq
from hypothesis import HealthCheck, settings, strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from conftest import small_model
from edged.client import Sender, Subscriber
from edged.config import Config
from edged.model import load, save
from edged.service import Service
from test_service import wait_for

TIMEOUT = 20.0
_MODEL = None


def model():
    global _MODEL
    if _MODEL is None:
        d = tempfile.mkdtemp()
        save(f"{d}/m.npz", small_model(window=32, hop=8))
        _MODEL = load(f"{d}/m.npz")
        shutil.rmtree(d)
    return _MODEL


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Protocol(RuleBasedStateMachine):
    def __init__(self):
        super().__init__()
        self.model = model()
        self.state_dir = tempfile.mkdtemp()
        self.ctx = zmq.Context()
        self.ports = (free_port(), free_port())
        self.epochs: list[int] = []
        self._start()
        self.tx = Sender(f"tcp://127.0.0.1:{self.ports[0]}", context=self.ctx, linger=0)
        self.subs: list[Subscriber] = []
        self.stalled: set[int] = set()
        self.last: list[dict] = []  # per subscriber: (stream, epoch) -> last seq
        self.clock = {"a": 0, "b": 0}
        self._join()

    def _start(self):
        from prometheus_client import CollectorRegistry

        cfg = Config(ingest_endpoint=f"tcp://127.0.0.1:{self.ports[0]}",
                     publish_endpoint=f"tcp://127.0.0.1:{self.ports[1]}", metrics_listen="off",
                     service_state_dir=self.state_dir, streams_max=4)
        self.registry = CollectorRegistry()
        epoch = max(self.epochs, default=0) + 1  # distinct even within one clock tick
        for _ in range(200):  # the old incarnation's sockets unbind asynchronously
            self.svc = Service(self.model, cfg, context=self.ctx, registry=self.registry, epoch=epoch)
            try:
                self.svc.bind()
                break
            except zmq.ZMQError as e:
                self.svc.close(linger_s=0)
                if e.errno != zmq.EADDRINUSE:
                    raise
                self.registry = CollectorRegistry()
                time.sleep(0.025)  # retry interval of the rebind, bounded by the loop
        else:
            raise AssertionError("ports never became free again")
        self.epochs.append(epoch)
        self.svc.warm()
        self.svc.state.restore()
        self.thread = threading.Thread(target=self.svc.run, daemon=True)
        self.thread.start()
        self.sent = self.garbage = 0  # this incarnation's

    def _join(self):
        self.subs.append(Subscriber(f"tcp://127.0.0.1:{self.ports[1]}", context=self.ctx))
        self.last.append({})

    def value(self, name, **labels):
        return self.registry.get_sample_value(name, labels) or 0.0

    @rule(stream=st.sampled_from(["a", "b"]), steps=st.integers(1, 40), n=st.integers(0, 12),
          seed=st.integers(0, 2**16))
    def send(self, stream, steps, n, seed):
        rng = np.random.default_rng(seed)
        lo = self.clock[stream]
        t = np.sort(rng.integers(lo, lo + steps, n))
        self.tx.send(stream, t, rng.integers(0, self.model.n_in, n), until=lo + steps)
        self.clock[stream] = lo + steps
        self.sent += 1

    @rule(tail=st.binary(max_size=40))
    def garbage(self, tail):
        self.tx.send_frame(b"\xc1" + tail)  # 0xc1 is never valid msgpack: always "decode"
        self.garbage += 1

    @rule()
    def restart(self):
        self.balanced()
        self.svc.request_stop()
        self.thread.join(TIMEOUT)
        assert not self.thread.is_alive()
        assert self.svc.state.checkpoint()
        self.svc.close(linger_s=0)
        self._start()
        assert self.value("edged_checkpoint_restore_total", result="ok") == 1

    @precondition(lambda self: len(self.subs) < 4)
    @rule()
    def join(self):
        self._join()

    @rule(i=st.integers(0, 3))
    def stall(self, i):
        if i < len(self.subs):
            self.stalled ^= {i}  # stall, or resume a stalled one

    @invariant()
    def balanced(self):
        wait_for(lambda: self.value("edged_frames_total") == self.sent + self.garbage,
                 what="every frame received")
        assert self.value("edged_frames_rejected_total", reason="decode") == self.garbage
        rejected = sum(s.value for m in self.registry.collect() if m.name == "edged_frames_rejected"
                       for s in m.samples if s.name.endswith("_total"))
        assert rejected == self.garbage  # valid frames are never rejected
        if self.value("edged_ready") == 1:
            assert self.thread.is_alive()

    @invariant()
    def seq_increases_per_epoch(self):
        for i, rx in enumerate(self.subs):
            if i in self.stalled:
                continue
            for _ in range(10000):  # bounded
                d = rx.recv(0.01)
                if d is None:
                    break
                key = (d.stream, d.epoch)
                assert d.epoch in self.epochs
                assert d.seq > self.last[i].get(key, -1), (key, d.seq, self.last[i].get(key))
                self.last[i][key] = d.seq

    def teardown(self):
        self.svc.request_stop()
        self.thread.join(TIMEOUT)
        for rx in self.subs:
            rx.close()
        self.tx.close()
        self.svc.close(linger_s=0)
        self.ctx.term()
        shutil.rmtree(self.state_dir, ignore_errors=True)


Protocol.TestCase.settings = settings(max_examples=8, stateful_step_count=12, deadline=None,
                                      suppress_health_check=[HealthCheck.too_slow])
test_protocol_state_machine = Protocol.TestCase
