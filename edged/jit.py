"""The compile flags every edged kernel shares, in one place.

``kernel``: ``numba.njit`` with the on-disk cache (a restart skips compilation) and the
GIL released (a kernel can run beside the serve loop's other threads). ``inline_kernel``:
the same, inlined into its caller (helpers whose array arguments would otherwise cost
reference counting on every call).
"""

from __future__ import annotations

import numba

kernel = numba.njit(cache=True, nogil=True)
inline_kernel = numba.njit(cache=True, nogil=True, inline="always")
