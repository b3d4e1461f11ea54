"""Counter-based random numbers: the same draw for the same key, however a run is cut.

Stochastic (escape-noise) firing must give identical spikes in the daemon, ``edged-train
evaluate`` and the trainer, whatever the frame boundaries, checkpoints and restarts. A
stateful generator cannot promise that; a counter-based one can: the uniform used by
neuron ``j`` of layer ``l`` of stream ``s`` at absolute step ``t`` is a pure function of
``(model seed, stream key, l, j, t)``, so nothing about it needs checkpointing.

The function is Philox4x64-10 (Salmon, Moraes, Dror & Shaw 2011, "Parallel random
numbers: as easy as 1, 2, 3"), the generator behind ``numpy.random.Philox``, and
bit-identical to it (tested): key ``(seed, stream key)``, counter ``(t, l * 2^32 + j, 0,
0)``; the first of its four 64-bit words, top 53 bits, gives the uniform in ``[0, 1)``.
``stream_key(stream_id)`` is the first 8 bytes (little-endian) of the BLAKE2b digest of
the stream id's UTF-8 bytes: stable across processes and machines (never Python's
per-process ``hash``).
"""

from __future__ import annotations

import hashlib

import numpy as np
from llvmlite import ir
from numba import types
from numba.extending import intrinsic

from edged.jit import inline_kernel

_M0 = np.uint64(0xD2E7470EE14C6C93)
_M1 = np.uint64(0xCA5A826395121157)
_W0 = np.uint64(0x9E3779B97F4A7C15)
_W1 = np.uint64(0xBB67AE8584CAA73B)
_32 = np.uint64(32)


def stream_key(stream_id: str) -> np.uint64:
    """The stream's 64-bit key (see the module docstring), as the ``uint64`` the kernels take."""
    digest = hashlib.blake2b(stream_id.encode("utf-8"), digest_size=8).digest()
    return np.uint64(int.from_bytes(digest, "little"))


@intrinsic
def _mulhilo(typingctx, a, b):
    """``(hi, lo)`` 64-bit halves of the 128-bit product of two uint64 (one machine
    multiply: LLVM's i128 product)."""
    def codegen(context, builder, sig, args):
        i128, i64 = ir.IntType(128), ir.IntType(64)
        prod = builder.mul(builder.zext(args[0], i128), builder.zext(args[1], i128))
        hi = builder.trunc(builder.lshr(prod, ir.Constant(i128, 64)), i64)
        lo = builder.trunc(prod, i64)
        return context.make_tuple(builder, sig.return_type, (hi, lo))
    return types.UniTuple(types.uint64, 2)(types.uint64, types.uint64), codegen


@inline_kernel
def philox(c0, c1, c2, c3, k0, k1):
    """Philox4x64-10 of counter ``(c0..c3)`` under key ``(k0, k1)``: four uint64."""
    for _ in range(10):
        hi0, lo0 = _mulhilo(_M0, c0)
        hi1, lo1 = _mulhilo(_M1, c2)
        c0, c1, c2, c3 = hi1 ^ c1 ^ k0, lo1, hi0 ^ c3 ^ k1, lo0
        k0 = k0 + _W0
        k1 = k1 + _W1
    return c0, c1, c2, c3


@inline_kernel
def uniform(seed, key, layer, neuron, step):
    """The uniform in ``[0, 1)`` of (``seed``, stream ``key``, ``layer``, ``neuron``, ``step``)."""
    lane = (np.uint64(layer) << _32) | np.uint64(neuron)
    w, _, _, _ = philox(np.uint64(step), lane, np.uint64(0), np.uint64(0), np.uint64(seed),
                        np.uint64(key))
    return np.float64(w >> np.uint64(11)) * (1.0 / 9007199254740992.0)
