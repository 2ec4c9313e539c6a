"""A real browser on the real command: headless Chromium loads `ghstream dashboard`.

The real hour is stored first; then ``ghstream dashboard`` runs as a subprocess
on a free loopback port, and Chromium is driven over the DevTools protocol
(Streamlit draws the page client-side over a websocket, so the test waits
until the expected text is in the DOM rather than dumping it at load). The
screenshot goes to ``.local/screenshots/dashboard.png`` (ignored by git) for a
person to look at.
"""

from __future__ import annotations

import asyncio
import base64
import itertools
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import websockets
from test_dashboard_support import hour_path, store_hour, top_repo_names

from ghstream.model import normalize
from ghstream.sinks.postgres import PostgresSink

pytestmark = [pytest.mark.integration, pytest.mark.shared_data]

REPO_ROOT = Path(__file__).resolve().parents[2]
SCREENSHOT = REPO_ROOT / ".local" / "screenshots" / "dashboard.png"
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
]
VIEWPORT = (1400, 1800)
START_TIMEOUT_S = 60.0
RENDER_TIMEOUT_S = 60.0


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


def chromium_path() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found is None:
        reason = (
            "Debian's chromium is not installed: `make test` installs it "
            "(apt-get install -y chromium) where it can"
        )
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail(f"{reason} (CI=true: the browser test must run)", pytrace=False)
        pytest.skip(reason)
    return found


async def wait_http(url: str, process: subprocess.Popen[bytes], log: Path) -> None:
    """Wait until ``url`` answers 200, failing at once if ``process`` exits first."""
    async with httpx.AsyncClient() as client, asyncio.timeout(START_TIMEOUT_S):
        while True:
            if process.poll() is not None:
                output = await asyncio.to_thread(log.read_text)
                pytest.fail(f"{process.args!r} exited with {process.returncode}:\n{output}")
            try:
                if (await client.get(url, timeout=2.0)).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            await asyncio.sleep(0.2)


def launch(
    command: list[str], log: Path, env: dict[str, str] | None = None
) -> subprocess.Popen[bytes]:
    with log.open("wb") as out:
        return subprocess.Popen(command, env=env, stdout=out, stderr=subprocess.STDOUT)


def cmdline(pid: int) -> bytes:
    """The command line of ``pid``, empty once it is gone."""
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except FileNotFoundError:
        return b""


def stop(process: subprocess.Popen[bytes], sig: int = signal.SIGTERM) -> int:
    if process.poll() is None:
        process.send_signal(sig)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    return process.returncode


@dataclass
class Dashboard:
    url: str
    process: subprocess.Popen[bytes]
    log: Path


@pytest.fixture
async def stored_hour(postgres_dsn: str, shared_data: Path) -> str:
    await store_hour(postgres_dsn, hour_path(shared_data))
    return postgres_dsn


@pytest.fixture
async def dashboard(stored_hour: str, tmp_path: Path) -> AsyncIterator[Dashboard]:
    """``ghstream dashboard`` on a free loopback port, the DSN passed in its environment."""
    port = free_port()
    log = tmp_path / "dashboard.log"
    env = os.environ | {"GHSTREAM_POSTGRES_DSN": stored_hour}
    command = [sys.executable, "-m", "ghstream", "dashboard", "--port", str(port)]
    process = launch(command, log, env)
    try:
        await wait_http(f"http://127.0.0.1:{port}/_stcore/health", process, log)
        yield Dashboard(f"http://127.0.0.1:{port}/", process, log)
    finally:
        await asyncio.to_thread(stop, process, signal.SIGINT)


@pytest.fixture
def chromium(tmp_path: Path) -> Iterator[int]:
    """A headless Chromium with a fresh profile; yields its DevTools port."""
    port = free_port()
    profile = tmp_path / "chromium-profile"
    command = [
        chromium_path(),
        *CHROMIUM_FLAGS,
        f"--user-data-dir={profile}",
        f"--window-size={VIEWPORT[0]},{VIEWPORT[1]}",
        "--remote-debugging-address=127.0.0.1",
        f"--remote-debugging-port={port}",
        "about:blank",
    ]
    process = launch(command, tmp_path / "chromium.log")
    try:
        yield port
    finally:
        stop(process)


class DevTools:
    """The few DevTools protocol calls the test needs, on one page's websocket."""

    def __init__(self, socket: Any) -> None:
        self._socket = socket
        self._ids = itertools.count(1)

    async def call(self, method: str, **params: Any) -> dict[str, Any]:
        call_id = next(self._ids)
        await self._socket.send(json.dumps({"id": call_id, "method": method, "params": params}))
        while True:
            message = json.loads(await self._socket.recv())
            if message.get("id") == call_id:
                if "error" in message:
                    raise RuntimeError(f"{method}: {message['error']}")
                result: dict[str, Any] = message["result"]
                return result

    async def text(self) -> str:
        found = await self.call(
            "Runtime.evaluate", expression="document.body.innerText", returnByValue=True
        )
        return str(found["result"].get("value", ""))


async def page_socket(devtools_port: int) -> str:
    async with httpx.AsyncClient() as client, asyncio.timeout(START_TIMEOUT_S):
        while True:
            try:
                targets = (await client.get(f"http://127.0.0.1:{devtools_port}/json/list")).json()
                pages = [t for t in targets if t["type"] == "page"]
                if pages:
                    return str(pages[0]["webSocketDebuggerUrl"])
            except httpx.TransportError:
                pass
            await asyncio.sleep(0.2)


def process_tree(pid: int) -> list[int]:
    children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    return [pid, *(tree for child in children for tree in process_tree(int(child)))]


async def test_chromium_shows_the_top_repositories(
    dashboard: Dashboard, chromium: int, shared_data: Path
) -> None:
    # The password never reaches a command line that `ps` would show.
    for pid in process_tree(dashboard.process.pid):
        assert b"ghstream:ghstream@" not in cmdline(pid)

    expected = top_repo_names(hour_path(shared_data), 3)
    wanted = [*expected, "Top contributors", "Time to resolution", "events per minute"]
    async with websockets.connect(await page_socket(chromium), max_size=None) as socket:
        devtools = DevTools(socket)
        await devtools.call("Page.enable")
        await devtools.call("Page.navigate", url=dashboard.url)
        text = await wait_for_text(devtools, wanted)

        # The whole page in one image: grow the viewport to the height of the content.
        height = await content_height(devtools)
        await devtools.call(
            "Emulation.setDeviceMetricsOverride",
            width=VIEWPORT[0],
            height=max(height, VIEWPORT[1]),
            deviceScaleFactor=1,
            mobile=False,
        )
        await asyncio.sleep(1.0)  # let the chart re-layout to the new size
        shot = await devtools.call("Page.captureScreenshot", format="png")

    SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
    SCREENSHOT.write_bytes(base64.b64decode(shot["data"]))
    assert "Traceback" not in text and "PostgreSQL is unreachable" not in text
    assert "8,273 in range" in text


async def wait_for_text(devtools: DevTools, wanted: list[str]) -> str:
    """The page's text once it holds every string of ``wanted``."""
    text = ""
    try:
        async with asyncio.timeout(RENDER_TIMEOUT_S):
            while not all(word in text for word in wanted):
                await asyncio.sleep(0.5)
                text = await devtools.text()
    except TimeoutError:
        pytest.fail(f"the page never showed {wanted}; it showed:\n{text[:3000]}")
    return text


async def test_the_open_page_follows_new_events(
    dashboard: Dashboard, chromium: int, stored_hour: str
) -> None:
    """Auto-refresh: events stored while the page is open show up without a reload."""
    newcomer = "live-stream/arrives-later"
    async with websockets.connect(await page_socket(chromium), max_size=None) as socket:
        devtools = DevTools(socket)
        await devtools.call("Page.enable")
        await devtools.call("Page.navigate", url=dashboard.url)
        before = await wait_for_text(devtools, ["Most active repositories", "8,273 in range"])
        assert newcomer not in before

        async with PostgresSink(stored_hour) as sink:
            await sink.write_batch([normalize(star(n, newcomer)) for n in range(100)])
        after = await wait_for_text(devtools, [newcomer, "8,373 in range"])

    # Most events in the hour now (100 stars against 80), so first in its panel.
    panel = after.split("Most active repositories", 1)[1]
    assert panel.index(newcomer) < panel.index("KenanSulayman/heartbeat")


def star(n: int, repo: str) -> dict[str, Any]:
    return {
        "id": f"77{n:08d}",
        "type": "WatchEvent",
        "created_at": f"2015-01-01T12:59:{n % 60:02d}Z",
        "public": True,
        "actor": {"id": 5_000_000 + n, "login": f"stargazer-{n}"},
        "repo": {"id": 77_000_000, "name": repo},
        "payload": {"action": "started"},
    }


async def content_height(devtools: DevTools) -> int:
    """Height of the tallest scrolling block: Streamlit scrolls its main area, not the body."""
    found = await devtools.call(
        "Runtime.evaluate",
        expression="Math.max(...[...document.querySelectorAll('*')].map(e => e.scrollHeight))",
        returnByValue=True,
    )
    return int(found["result"]["value"]) + 40


async def test_interrupting_the_command_stops_streamlit(dashboard: Dashboard) -> None:
    tree = process_tree(dashboard.process.pid)
    assert len(tree) >= 2, "ghstream dashboard should run Streamlit as a child"

    assert await asyncio.to_thread(stop, dashboard.process, signal.SIGINT) == 130
    for pid in tree[1:]:
        assert b"streamlit" not in cmdline(pid)
    assert "Stopped." in await asyncio.to_thread(dashboard.log.read_text)
