"""Process lifecycle: turning SIGINT/SIGTERM into a graceful stop, and a second one into an exit.

The first signal sets a stop :class:`asyncio.Event`; loops check it between
batches, flush what they hold and return. A second signal means the user does
not want to wait: the process exits at once with status 130.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from types import FrameType
from typing import Any

from ghstream.errors import EXIT_INTERRUPTED

log = logging.getLogger(__name__)

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)

_Handler = Callable[[int, FrameType | None], Any] | int | None


def force_exit() -> None:
    """Leave now, without cleanup: what a second Ctrl-C asks for."""
    log.warning("second signal: exiting without waiting for the flush")
    for handler in logging.getLogger().handlers:
        handler.flush()
    sys.stderr.flush()
    os._exit(EXIT_INTERRUPTED)


@contextmanager
def handle_signals(
    stop: asyncio.Event, *, on_force: Callable[[], None] = force_exit
) -> Iterator[None]:
    """Within the block, the first SIGINT/SIGTERM sets ``stop`` and a second calls ``on_force``.

    Must be entered from a running event loop. The handlers that were in place
    before are restored on exit. Not re-entrant: a command that runs several
    loops (``ghstream run``) installs it once and shares ``stop``.
    """
    loop = asyncio.get_running_loop()
    previous: dict[signal.Signals, _Handler] = {}
    received: list[int] = []

    def on_signal(signum: int) -> None:
        received.append(signum)
        if len(received) == 1:
            log.warning(
                "%s received: shutting down, press Ctrl-C again to force",
                signal.Signals(signum).name,
            )
            stop.set()
        else:
            on_force()

    for signum in STOP_SIGNALS:
        try:
            previous[signum] = signal.getsignal(signum)
            loop.add_signal_handler(signum, on_signal, signum)
        except (NotImplementedError, RuntimeError, ValueError):  # pragma: no cover
            # Not the main thread, or a loop without signal support (Windows).
            log.debug("cannot install a handler for %s here", signal.Signals(signum).name)
            previous.pop(signum, None)
    try:
        yield
    finally:
        for signum, handler in previous.items():
            loop.remove_signal_handler(signum)
            signal.signal(signum, handler if handler is not None else signal.SIG_DFL)
