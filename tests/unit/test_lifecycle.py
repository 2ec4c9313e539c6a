"""Signals: the first asks for a graceful stop, the second forces the exit."""

from __future__ import annotations

import asyncio
import logging
import os
import signal

import pytest

from ghstream.lifecycle import handle_signals


async def test_first_signal_stops_second_forces(caplog: pytest.LogCaptureFixture) -> None:
    """1. SIGTERM sets stop and logs how to force; 2. SIGINT calls the force action;
    3. leaving the block restores the handlers that were there before."""
    before = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    stop = asyncio.Event()
    forced = asyncio.Event()

    with (
        caplog.at_level(logging.WARNING, logger="ghstream"),
        handle_signals(stop, on_force=forced.set),
    ):
        os.kill(os.getpid(), signal.SIGTERM)
        await asyncio.wait_for(stop.wait(), timeout=5)
        assert not forced.is_set()
        os.kill(os.getpid(), signal.SIGINT)
        await asyncio.wait_for(forced.wait(), timeout=5)

    assert "SIGTERM received: shutting down, press Ctrl-C again to force" in caplog.text
    assert {sig: signal.getsignal(sig) for sig in before} == before
