"""ZeroMQ's C API from compiled code: a batch of frames received, a batch of decisions sent,
without a Python call per message (a pyzmq ``recv`` or ``send`` costs ~0.5 µs of Python).

pyzmq loads libzmq as a shared library (its wheels bundle one). ``AVAILABLE`` is True
once that library was found in this process's memory map and its symbols made visible to
Numba, whose kernels here call ``zmq_recv``, ``zmq_send``, ``zmq_poll`` and ``zmq_errno``
directly; where it is not (not Linux, a libzmq linked statically into pyzmq,
``time.perf_counter`` not ``CLOCK_MONOTONIC``, a big-endian host: ``poll_item`` lays the
poll items out little-endian), or with ``EDGED_ZMQJIT=0`` in the environment (to compare),
``edged.sockets``, ``edged.link`` and ``edged.bench.pace`` use pyzmq's calls instead, to
the same effect.
A socket is passed as its address (``zmq.Socket.underlying``) and, like any ZeroMQ
socket, used by one thread at a time.

``recv(sock, buf, ends, times, budget, wait_s, close_bytes)`` receives without blocking
until ``budget`` frames, ``wait_s`` seconds after the first or ``close_bytes`` in all:
frame ``f`` is ``buf[ends[f]:ends[f + 1]]``, received at ``times[f]`` (``CLOCK_MONOTONIC``
seconds, i.e. ``time.perf_counter``). ``buf`` must hold ``close_bytes`` plus the largest
frame (``ZMQ_MAXMSGSIZE``); a longer one would be truncated and raises. ``send(sock,
ids, id_ends, out, ends)`` sends message ``k`` as two frames, ``ids[id_ends[k]:id_ends[k +
1]]`` (the topic) and ``out[ends[k]:ends[k + 1]]``, without blocking (a PUB drops what
exceeds its high-water mark). Both return ``(count, errno)``: errno 0 when a limit
stopped them, ``EAGAIN`` when nothing more was waiting (``recv``), else the error that
stopped them (``EINTR`` is retried).

For the ``--workers`` router (``edged.link.relay``): ``poll(items, count, timeout_ms)``
(``zmq_poll`` over ``count`` items set by ``poll_item``, read back by ``revents``),
``recv_one(sock, buf)`` and ``send_one(sock, buf, a, e)``, one single-part message
without blocking.
"""

from __future__ import annotations

import errno
import os
import sys
import time

import llvmlite.binding as llvm
import numpy as np
from llvmlite import ir
from numba import types
from numba.extending import intrinsic

from edged.bits import address
from edged.jit import kernel

_DONTWAIT, _SNDMORE = 1, 2  # zmq.h
POLLIN, POLLOUT = 1, 2  # zmq.h
_CLOCK_MONOTONIC = 1  # linux/time.h
EAGAIN, EINTR = errno.EAGAIN, errno.EINTR


def _load() -> bool:
    """Make the libzmq pyzmq uses, and ``clock_gettime``, visible to compiled code."""
    import zmq  # noqa: F401 - loads libzmq

    if time.get_clock_info("perf_counter").implementation != "clock_gettime(CLOCK_MONOTONIC)":
        return False
    try:
        with open("/proc/self/maps") as maps:
            paths = {line.split()[-1] for line in maps if "/libzmq" in line}
    except OSError:
        return False
    if len(paths) != 1:
        return False
    llvm.load_library_permanently(paths.pop())
    return all(llvm.address_of_symbol(s) for s in ("zmq_recv", "zmq_send", "zmq_poll", "zmq_errno",
                                                   "clock_gettime"))


AVAILABLE = os.environ.get("EDGED_ZMQJIT", "1") != "0" and sys.byteorder == "little" and _load()

_zmq_recv = types.ExternalFunction("zmq_recv", types.intc(types.voidptr, types.voidptr,
                                                          types.size_t, types.intc))
_zmq_send = types.ExternalFunction("zmq_send", types.intc(types.voidptr, types.voidptr,
                                                          types.size_t, types.intc))
_zmq_poll = types.ExternalFunction("zmq_poll", types.intc(types.voidptr, types.intc, types.int64))
_zmq_errno = types.ExternalFunction("zmq_errno", types.intc())
_clock_gettime = types.ExternalFunction("clock_gettime", types.intc(types.intc, types.voidptr))


@intrinsic
def _pointer(typingctx, x):
    """An integer address ``x`` as a ``void *``."""
    def codegen(context, builder, sig, args):
        return builder.inttoptr(args[0], ir.IntType(8).as_pointer())
    return types.voidptr(x), codegen


@kernel
def recv(sock, buf, ends, times, budget, wait_s, close_bytes):
    s = _pointer(sock)
    ts = np.zeros(2, np.int64)
    n = 0
    pos = ends[0] = 0
    while n < budget:
        room = buf.size - pos
        r = _zmq_recv(s, address(buf, pos), room, _DONTWAIT)
        if r < 0:
            e = _zmq_errno()
            if e == EINTR:
                continue
            return n, e
        if r > room:
            raise ValueError("zmqjit.recv: a frame larger than the buffer's room")
        times[n] = now(ts)
        pos += r
        n += 1
        ends[n] = pos
        if times[n - 1] - times[0] >= wait_s or pos >= close_bytes:
            break
    return n, 0


@kernel
def _send_part(s, at, size, flags):
    """``zmq_send`` retried on EINTR: 0, or the errno of its failure."""
    while _zmq_send(s, at, size, flags) < 0:
        e = _zmq_errno()
        if e != EINTR:
            return e
    return 0


@kernel
def send(sock, ids, id_ends, out, ends):
    s = _pointer(sock)
    for k in range(ends.size - 1):
        e = _send_part(s, address(ids, id_ends[k]), id_ends[k + 1] - id_ends[k],
                       _SNDMORE | _DONTWAIT)
        if e == 0:
            e = _send_part(s, address(out, ends[k]), ends[k + 1] - ends[k], _DONTWAIT)
        if e != 0 and e != EAGAIN:
            return k, e
    return ends.size - 1, 0


@kernel
def poll_item(items, k, sock, events):
    """Set item ``k`` of ``items`` (int64[2 * count]: a ``zmq_pollitem_t`` is ``{void *socket;
    int fd; short events; short revents;}``, 16 bytes) to poll ``sock`` for ``events``."""
    items[2 * k] = sock
    items[2 * k + 1] = np.int64(events) << 32


@kernel
def revents(items, k):
    return (items[2 * k + 1] >> 48) & 0xFFFF


@kernel
def poll(items, count, timeout_ms):
    """``(ready items, 0)``, or ``(-1, errno)`` (``EINTR`` included: a signal is for Python)."""
    r = _zmq_poll(address(items, 0), count, timeout_ms)
    return (r, 0) if r >= 0 else (-1, _zmq_errno())


@kernel
def now(ts):
    """``time.perf_counter()`` (``ts``: int64[2] scratch)."""
    _clock_gettime(_CLOCK_MONOTONIC, address(ts, 0))
    return ts[0] + 1e-9 * ts[1]


@kernel
def recv_one(sock, buf):
    """One message into ``buf`` without blocking: ``(size, 0)`` or ``(-1, errno)``; a
    message longer than ``buf`` raises."""
    s = _pointer(sock)
    while True:
        r = _zmq_recv(s, address(buf, 0), buf.size, _DONTWAIT)
        if r >= 0:
            if r > buf.size:
                raise ValueError("zmqjit.recv_one: a message larger than the buffer")
            return r, 0
        e = _zmq_errno()
        if e != EINTR:
            return -1, e


@kernel
def send_one(sock, buf, a, e):
    """``buf[a:e]`` as one message without blocking: 0, or the errno of its failure."""
    return _send_part(_pointer(sock), address(buf, a), e - a, _DONTWAIT)
