"""Start-up cost: building the command line imports no store client or command internals."""

from __future__ import annotations

import json
import subprocess
import sys

COMMANDS = ["ingest", "consume", "run", "aggregate", "top", "dashboard"]

LAZY = [
    "asyncpg",
    "pymongo",
    "aiokafka",
    "httpx",
    "ghstream.ingest",
    "ghstream.consume",
    "ghstream.analytics",
    "ghstream.queries",
    "ghstream.migrate",
    "ghstream.render",
]


def test_importing_the_cli_leaves_implementations_unloaded() -> None:
    script = (
        "import json, sys\n"
        "import ghstream.cli\n"
        f"print(json.dumps([name for name in {LAZY!r} if name in sys.modules]))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True, timeout=60
    )
    assert json.loads(result.stdout) == []


def test_help_from_a_fresh_interpreter_lists_every_command() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "ghstream", "--help"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    for command in COMMANDS:
        assert command in result.stdout
