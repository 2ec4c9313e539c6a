"""`ghstream dashboard`: serve the Streamlit app of ``ghstream.dashboard`` locally."""

from __future__ import annotations

import asyncio
import errno
import importlib.util
import ipaddress
import logging
import os
import signal
import socket
import subprocess
import sys
from types import FrameType
from typing import Annotated

import typer

from ghstream import config
from ghstream.commands._common import Command, report_error, stderr
from ghstream.config import PostgresOpt
from ghstream.dashboard import APP_PATH, DSN_ENV, REFRESH_ENV
from ghstream.errors import EXIT_INTERRUPTED, ConfigError, GhstreamError
from ghstream.logs import redact

log = logging.getLogger(__name__)

_PANEL = "Dashboard"
STOP_TIMEOUT_S = 10.0
PROBE_TIMEOUT_S = 3.0

INSTALL_HINT = (
    "`ghstream dashboard` needs Streamlit, from the optional 'dashboard' extra. Install it with\n"
    "    pipx install 'ghstream[dashboard]'      (a new install)\n"
    "    pipx inject ghstream streamlit          (add it to an existing pipx install)\n"
    "or, in a virtual environment: pip install 'ghstream[dashboard]'"
)


class MissingExtra(GhstreamError):
    """An optional dependency of a command is not installed."""


def dashboard(
    postgres_dsn: PostgresOpt = config.DEFAULT_POSTGRES_DSN,
    port: Annotated[
        int,
        typer.Option(
            "--port", min=1, max=65535, help="TCP port to serve on.", rich_help_panel=_PANEL
        ),
    ] = 8501,
    host: Annotated[
        str,
        typer.Option(
            "--host",
            help="Address to listen on. Only loopback by default; any other address "
            "(0.0.0.0 for all) exposes the dashboard and your data to the network.",
            rich_help_panel=_PANEL,
        ),
    ] = "127.0.0.1",
    refresh: Annotated[
        float,
        typer.Option(
            "--refresh",
            metavar="SECONDS",
            min=0,
            help="How often the page re-reads PostgreSQL by default (0: only on demand).",
            rich_help_panel=_PANEL,
        ),
    ] = 5.0,
) -> None:
    """Serve a live web dashboard of the analytics at http://127.0.0.1:PORT.

    Event frequency per minute by type, top contributors, the most active
    repositories, time to resolution and the coverage of the data, with
    filters, read from PostgreSQL the way `ghstream top` reads it and refreshed
    every few seconds while `ghstream run` streams. Needs the 'dashboard'
    extra: pipx install 'ghstream\\[dashboard]'. Stop it with Ctrl-C.
    """
    if importlib.util.find_spec("streamlit") is None:
        raise report_error(MissingExtra(INSTALL_HINT))
    try:
        check_port_free(host, port)
    except ConfigError as exc:
        raise report_error(exc) from exc
    if not is_loopback(host):
        log.warning(
            "serving on %s:%d: anyone who can reach this machine there can read the dashboard",
            host,
            port,
        )
    probe_postgres(postgres_dsn)

    code = serve(postgres_dsn, host=host, port=port, refresh_s=refresh)
    if code == EXIT_INTERRUPTED:
        stderr.print("Stopped.")
    raise typer.Exit(code=code)


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_port_free(host: str, port: int) -> None:
    """Fail early, naming ``--port``, rather than letting Streamlit exit with a stack trace."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise ConfigError(
                    f"port {port} on {host} is already in use: choose another with --port."
                ) from exc
            raise ConfigError(f"cannot listen on {host}:{port} (--host/--port): {exc}") from exc


def probe_postgres(dsn: str) -> None:
    """Warn when PostgreSQL does not answer; the page says so too, and recovers when it does."""
    import asyncpg

    async def probe() -> None:
        conn = await asyncpg.connect(dsn, timeout=PROBE_TIMEOUT_S)
        await conn.close()

    try:
        asyncio.run(probe())
    except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
        log.warning(
            "PostgreSQL at %s does not answer (%s); the dashboard will say so until it does",
            redact(dsn),
            type(exc).__name__,
        )


def streamlit_command(host: str, port: int) -> list[str]:
    """The ``streamlit run`` command line: settings only, never the DSN."""
    return [
        sys.executable,
        "-m",
        "streamlit",
        "run",
        str(APP_PATH),
        "--server.address",
        host,
        "--server.port",
        str(port),
        "--server.headless",
        "true",
        "--browser.gatherUsageStats",
        "false",
        # An installed app does not change under it: no file watcher, no "rerun" prompt.
        "--server.fileWatcherType",
        "none",
        "--client.toolbarMode",
        "viewer",
    ]


def serve(dsn: str, *, host: str, port: int, refresh_s: float) -> int:
    """Run Streamlit until it exits or this process is interrupted; return the exit code."""
    env = os.environ | {DSN_ENV: dsn, REFRESH_ENV: str(refresh_s)}
    command = streamlit_command(host, port)
    shown = "localhost" if is_loopback(host) else host
    stderr.print(f"Dashboard on http://{shown}:{port} (Ctrl-C to stop)")
    log.debug("starting %s", " ".join(command))

    child = subprocess.Popen(command, env=env)

    def forward(signum: int, _frame: FrameType | None) -> None:
        child.send_signal(signum)

    previous = signal.signal(signal.SIGTERM, forward)
    try:
        return child.wait()
    except KeyboardInterrupt:
        # The terminal sent SIGINT to the child too; give it time to close its sessions.
        stop(child)
        return EXIT_INTERRUPTED
    finally:
        signal.signal(signal.SIGTERM, previous)
        stop(child)


def stop(child: subprocess.Popen[bytes]) -> None:
    if child.poll() is not None:
        return
    child.send_signal(signal.SIGINT)
    try:
        child.wait(timeout=STOP_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        log.warning("Streamlit did not stop within %.0f s: killing it", STOP_TIMEOUT_S)
        child.kill()
        child.wait()


def register(app: typer.Typer) -> None:
    app.command("dashboard", cls=Command)(dashboard)
