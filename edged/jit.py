"""The compile flags every edged kernel shares, in one place, and where their cache lives.

``kernel``: ``numba.njit`` with the on-disk cache (a restart skips compilation) and the
GIL released (a kernel can run beside the serve loop's other threads). ``inline_kernel``:
the same, inlined into its caller (helpers whose array arguments would otherwise cost
reference counting on every call). ``borrow``: arrays without their reference count, for
a stepping loop over state its caller holds (each view or call of a counted array in a
loop costs two atomic operations: about half of a 32-96-6 net's step). ``bind``: a
kernel's entry point for fixed argument types, called without Numba's dispatch; ``bound``:
a kernel called through the entry point of its first call's types.

Numba checks a cached kernel only against its own file's timestamp, so after an upgrade a
kernel could keep the machine code of an older version of a kernel it calls in another
module (with the same argument types): stale code reading state laid out the new way.
So the cache sits in a directory named after a digest of the Numba version and the
source of every module with kernels (those importing this one, and ``edged.protocol``,
whose event checks the service compiles), under ``$NUMBA_CACHE_DIR`` if set,
else ``$XDG_CACHE_HOME/edged`` (``~/.cache/edged``): a changed kernel anywhere compiles
everything afresh once, and old directories are never read again. On import, ``prune``
deletes the old ones beyond the ``KEEP`` newest, once nothing has written to them for
``KEEP_S`` (another build may still be compiling into a recent one).

Vector width: on a host with 512-bit integer vectors (AVX-512BW) LLVM still prefers
256-bit ones unless told otherwise; edged tells it (``wide_features``), unless
``$NUMBA_CPU_FEATURES`` chooses the features. The LZ76 searches' 16-bit lanes then run 32
to an instruction: on the machine of the README's tables the engine took 3-4.5 % less
per frame at 500-1,000 streams, ~1 % at 200, with the same decisions (integer lanes;
floats are never reassociated: no fastmath).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import time
import types
from pathlib import Path

import llvmlite.binding as llvm
import numba
from numba import types as nbtypes
from numba.core import cgutils
from numba.extending import intrinsic

KEEP = 3  # old kernel directories kept beside this build's
KEEP_S = 86400.0  # and any written to within this many seconds


def cache_dir() -> str:
    """The cache directory of this build's kernels (see the module docstring)."""
    digest = hashlib.sha256(numba.__version__.encode())
    here = Path(__file__).resolve().parent
    for path in sorted([*here.glob("*.py"), *here.parent.joinpath("trainer").glob("*.py")]):
        text = path.read_bytes()
        if b"edged.jit import" in text or path.name in ("jit.py", "bits.py", "protocol.py"):
            digest.update(path.name.encode() + b"\0" + text)
    base = os.environ.get("NUMBA_CACHE_DIR") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "edged")
    return os.path.join(base, f"kernels-{digest.hexdigest()[:16]}")


def prune(current: str, now: float | None = None) -> list[str]:
    """Delete the ``kernels-*`` directories beside ``current`` beyond the ``KEEP`` most
    recently written, if none was written to within ``KEEP_S``; return their paths."""
    now = time.time() if now is None else now
    old = []
    for path in Path(current).parent.glob("kernels-*"):
        try:
            if str(path) != current and path.is_dir():
                old.append((path.stat().st_mtime, str(path)))
        except OSError:  # deleted meanwhile by another process
            pass
    old.sort(reverse=True)
    gone = [path for mtime, path in old[KEEP:] if now - mtime > KEEP_S]
    for path in gone:
        shutil.rmtree(path, ignore_errors=True)
    return gone


def cached(directory: str | None = None) -> bool:
    """Whether this build's cache (``directory``, default Numba's) holds a compiled kernel:
    False on the first start after an install or upgrade, which compiles them all."""
    return any(Path(directory or numba.config.CACHE_DIR).glob("*/*.nbi"))


def wide_features(features: str) -> str | None:
    """LLVM feature string ``features`` (the host's) with its preference for 256-bit
    vectors turned off, where it has AVX-512BW; else None (Numba's default stands)."""
    return f"{features},-prefer-256-bit" if "+avx512bw" in features.split(",") else None


if "NUMBA_CPU_FEATURES" not in os.environ:  # (read when the first kernel compiles)
    numba.config.CPU_FEATURES = wide_features(llvm.get_host_cpu_features().flatten())
numba.config.CACHE_DIR = cache_dir()
prune(numba.config.CACHE_DIR)  # read when each kernel below is decorated
kernel = numba.njit(cache=True, nogil=True)
inline_kernel = numba.njit(cache=True, nogil=True, inline="always")



def _borrowed(context, builder, ty, value):
    if isinstance(ty, nbtypes.Array):
        src = context.make_array(ty)(context, builder, value=value)
        dst = context.make_array(ty)(context, builder)
        for field in ("parent", "nitems", "itemsize", "data", "shape", "strides"):
            setattr(dst, field, getattr(src, field))
        dst.meminfo = cgutils.get_null_value(dst.meminfo.type)
        return dst._getvalue()
    if isinstance(ty, nbtypes.BaseTuple):
        for i, member in enumerate(ty.types):
            value = builder.insert_value(
                value, _borrowed(context, builder, member, builder.extract_value(value, i)), i)
    return value


@intrinsic
def borrow(typingctx, x):
    """``x`` (an array, or a tuple of arrays and scalars, nested) with every array's
    reference count dropped (a null meminfo): for state that outlives the compiled call
    using it, so that handing it (or views of it) from function to function in the
    call's loops costs no atomic increments and decrements."""
    return x(x), lambda context, builder, sig, args: _borrowed(context, builder, x, args[0])


def bind(kernel, *args):
    """The compiled entry point of ``kernel`` for the types of ``args``. Calling it skips
    Numba's per-call type dispatch (about 1 µs for nested tuples, 5 µs with a kernel as an
    argument); every later call must pass arguments of exactly these types."""
    sig = tuple(numba.typeof(a) for a in args)
    kernel.compile(sig)
    return kernel.overloads[sig].entry_point


def bound(fn, **calls):
    """``fn`` compiled as a ``kernel``, called through the entry point ``bind`` gives for the
    argument types of its first call (later calls must pass the same types: a mismatch
    raises TypeError). ``calls`` names kernels to use for the plain functions of the same
    names that ``fn`` calls (a module written for Numba that does not import it); passed
    as arguments instead, they would enter the signature, which Numba's cache cannot keep
    across processes."""
    if calls:
        fn = types.FunctionType(fn.__code__, {**fn.__globals__, **calls}, fn.__name__,
                                fn.__defaults__, fn.__closure__)
    compiled = kernel(fn)
    entry = None

    def call(*args):
        nonlocal entry
        if entry is None:
            entry = bind(compiled, *args)
        return entry(*args)
    call.kernel = compiled
    return call
