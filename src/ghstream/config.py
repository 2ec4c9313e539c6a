"""Connection settings shared by the commands, from flags and ``GHSTREAM_*`` variables.

Every option in this module can be set on the command line or in the
environment; the flag wins. Defaults point at the local services that
``make services`` starts on loopback.
"""

from __future__ import annotations

from typing import Annotated
from urllib.parse import urlsplit

import typer

from ghstream.logs import redact

DEFAULT_BOOTSTRAP = "127.0.0.1:9092"
DEFAULT_TOPIC = "github-events"
DEFAULT_POSTGRES_DSN = "postgresql://ghstream:ghstream@127.0.0.1:5432/ghstream"
DEFAULT_MONGO_URL = "mongodb://127.0.0.1:27017"
DEFAULT_MONGO_DB = "ghstream"
DEFAULT_API_URL = "https://api.github.com"


def check_postgres_dsn(dsn: str) -> str:
    """``dsn`` if it has the URL form asyncpg reads; else a usage error (exit 2) that
    names the form, never the password."""
    try:
        parts = urlsplit(dsn)
        _ = parts.port  # raises ValueError for a port that is not a number
    except ValueError as exc:
        raise typer.BadParameter(f"not a PostgreSQL URL ({redact(str(exc))})") from None
    if parts.scheme not in ("postgresql", "postgres") or not parts.netloc:
        raise typer.BadParameter(
            f"{redact(dsn)!r} is not a PostgreSQL URL; write "
            "postgresql://USER:PASSWORD@HOST:PORT/DATABASE (key=value strings are not read)"
        )
    return dsn


def check_http_url(url: str) -> str:
    """``url`` if it is an http(s) URL; else a usage error."""
    if not url.startswith(("http://", "https://")):
        raise typer.BadParameter(
            f"{redact(url)!r} is not an http(s) URL, like https://api.github.com"
        )
    return url


def check_bootstrap(servers: str) -> str:
    """``servers`` if every comma-separated entry is ``host:port``; else a usage error."""
    for entry in servers.split(","):
        host, sep, port = entry.strip().rpartition(":")
        if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise typer.BadParameter(
                f"{entry.strip()!r} is not host:port; write for example 127.0.0.1:9092 "
                "(several, comma-separated)"
            )
    return servers


def check_mongo_url(url: str) -> str:
    """``url`` if it is a MongoDB connection string; else a usage error."""
    if not url.startswith(("mongodb://", "mongodb+srv://")) or len(url) <= len("mongodb://"):
        raise typer.BadParameter(
            f"{redact(url)!r} is not a MongoDB connection string; write mongodb://HOST:PORT"
        )
    return url


def check_mongo_db(name: str) -> str:
    """``name`` if MongoDB accepts it as a database name; else a usage error."""
    bad = sorted(set(name) & set('/\\. "$\x00'))
    if not name or bad or len(name.encode()) >= 64:
        raise typer.BadParameter(
            f'{name!r} is not a MongoDB database name: 1 to 63 bytes, none of / \\ . " $'
        )
    return name


def dlq_topic(topic: str) -> str:
    """The dead-letter topic that goes with ``topic``."""
    return f"{topic}.dlq"


# Option types reused by several commands, so each flag has one spelling,
# one environment variable and one help text.
BootstrapOpt = Annotated[
    str,
    typer.Option(
        "--bootstrap-servers",
        envvar="GHSTREAM_KAFKA_BOOTSTRAP",
        callback=check_bootstrap,
        help="Kafka brokers, comma-separated host:port.",
        rich_help_panel="Connections",
    ),
]
TopicOpt = Annotated[
    str,
    typer.Option(
        "--topic",
        envvar="GHSTREAM_TOPIC",
        help="Kafka topic of the event stream; dead letters go to TOPIC.dlq.",
        rich_help_panel="Connections",
    ),
]
PostgresOpt = Annotated[
    str,
    typer.Option(
        "--postgres-dsn",
        envvar="GHSTREAM_POSTGRES_DSN",
        help=(
            "PostgreSQL URL, postgresql://USER:PASSWORD@HOST:PORT/DATABASE. "
            "Default: postgresql://ghstream:***@127.0.0.1:5432/ghstream."
        ),
        rich_help_panel="Connections",
        show_default=False,  # it holds a password
        callback=check_postgres_dsn,
    ),
]
MongoUrlOpt = Annotated[
    str,
    typer.Option(
        "--mongo-url",
        callback=check_mongo_url,
        envvar="GHSTREAM_MONGO_URL",
        help="MongoDB connection string.",
        rich_help_panel="Connections",
    ),
]
MongoDbOpt = Annotated[
    str,
    typer.Option(
        "--mongo-db",
        callback=check_mongo_db,
        envvar="GHSTREAM_MONGO_DB",
        help="MongoDB database name.",
        rich_help_panel="Connections",
    ),
]
JsonOpt = Annotated[
    bool,
    typer.Option("--json", help="Print machine-readable JSON on stdout instead of tables."),
]
