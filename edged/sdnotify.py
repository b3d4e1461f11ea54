"""systemd's notify protocol in stdlib: one datagram per message to ``$NOTIFY_SOCKET``.

A no-op without ``$NOTIFY_SOCKET`` (not under systemd, or ``Type=simple``). A leading
``@`` names a Linux abstract socket. Messages used by ``edged serve``: ``READY=1`` (after
warm-up, sockets bound), ``WATCHDOG=1`` (from the serving loop only, so a stuck loop stops
the pings and systemd restarts the service), ``STOPPING=1``, ``STATUS=<text>``.
Model: gunicorn/systemd.py.
"""

from __future__ import annotations

import os
import socket
from typing import Mapping


def notify(state: str, env: Mapping[str, str] | None = None) -> bool:
    """Send ``state`` (e.g. ``"READY=1\\nSTATUS=serving"``); ``False`` when there is no
    socket to send to or the send failed (never raises: the service outlives systemd).
    Never blocks: a full queue (a reader that is stuck) fails the send (``EAGAIN``)."""
    addr = (os.environ if env is None else env).get("NOTIFY_SOCKET", "")
    if not addr:
        return False
    if addr[0] == "@":
        addr = "\0" + addr[1:]
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as s:
            s.connect(addr)
            s.send(state.encode(), socket.MSG_DONTWAIT)
        return True
    except OSError:
        return False


class Watchdog:
    """``WATCHDOG=1`` at half of ``$WATCHDOG_USEC``, if ``$WATCHDOG_PID`` is unset or ours.
    ``ping(now)`` is cheap: call it from every loop iteration with a monotonic clock."""

    def __init__(self, env: Mapping[str, str] | None = None, send=notify):
        env = os.environ if env is None else env
        self.env, self.send = env, send
        usec = env.get("WATCHDOG_USEC", "")
        pid = env.get("WATCHDOG_PID", "")
        ours = not pid or (pid.isdigit() and int(pid) == os.getpid())
        self.interval = int(usec) / 2e6 if usec.isdigit() and int(usec) > 0 and ours else None
        self.next = float("-inf")
        self.pings = 0

    @property
    def enabled(self) -> bool:
        return self.interval is not None

    def ping(self, now: float) -> None:
        if self.interval is None or now < self.next:
            return
        self.next = now + self.interval
        self.pings += 1
        self.send("WATCHDOG=1", self.env)
