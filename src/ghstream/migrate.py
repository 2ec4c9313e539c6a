"""Versioned PostgreSQL schema migrations: plain SQL files shipped in ``ghstream/migrations``.

A migration is a file named ``NNN_description.sql`` (``001_core.sql``,
``002_rollups.sql``...). They are applied in version order, each in its own
transaction together with its row in ``schema_migrations``, so a migration is
either fully applied and recorded or not at all. A session-level advisory lock
serializes runners: several consumers starting at once apply each migration
exactly once, and the ones that wait find it already recorded.
"""

from __future__ import annotations

import logging
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from importlib import resources
from typing import Any

import asyncpg

from ghstream.errors import ConfigError, StoreError

log = logging.getLogger(__name__)

#: Arbitrary but fixed key of the advisory lock that serializes migration runners.
MIGRATION_LOCK_KEY = 0x6768_7374_7265_616D  # "ghstream"

_FILE_NAME = re.compile(r"^(\d{3,})_[A-Za-z0-9_\-]+\.sql$")

_CREATE_TABLE = """
CREATE TABLE IF NOT EXISTS schema_migrations (
    version    integer PRIMARY KEY,
    name       text        NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now()
)
"""


@dataclass(frozen=True, slots=True)
class Migration:
    """One schema migration file."""

    version: int
    name: str
    sql: str


def discover(package: str = "ghstream.migrations") -> list[Migration]:
    """Every ``NNN_*.sql`` file of ``package``, in version order.

    Raises :class:`ConfigError` when two files share a version number.
    """
    found: dict[int, Migration] = {}
    for entry in resources.files(package).iterdir():
        match = _FILE_NAME.match(entry.name)
        if match is None or not entry.is_file():
            continue
        version = int(match.group(1))
        if version in found:
            raise ConfigError(
                f"migrations {found[version].name} and {entry.name} share version {version}"
            )
        found[version] = Migration(version, entry.name, entry.read_text(encoding="utf-8"))
    return [found[version] for version in sorted(found)]


@asynccontextmanager
async def _connection(target: Any) -> AsyncIterator[asyncpg.Connection]:
    if isinstance(target, str):
        conn = await asyncpg.connect(target, server_settings={"timezone": "UTC"})
        try:
            yield conn
        finally:
            await conn.close()
    elif isinstance(target, asyncpg.Pool):
        async with target.acquire() as conn:
            yield conn
    else:
        yield target


async def apply_migrations(
    dsn_or_pool: str | asyncpg.Pool | asyncpg.Connection,
    *,
    package: str = "ghstream.migrations",
) -> list[str]:
    """Apply the migrations the database lacks; return the names of those applied now.

    Accepts a DSN, an asyncpg pool or a connection. Raises :class:`StoreError`
    naming the migration when one fails (that migration is rolled back, the
    ones before it stay applied).
    """
    migrations = discover(package)
    applied_now: list[str] = []

    async with _connection(dsn_or_pool) as conn:
        await conn.execute("SELECT pg_advisory_lock($1)", MIGRATION_LOCK_KEY)
        try:
            await conn.execute(_CREATE_TABLE)
            rows = await conn.fetch("SELECT version FROM schema_migrations")
            applied = {row["version"] for row in rows}

            for migration in migrations:
                if migration.version in applied:
                    continue
                await _apply_one(conn, migration)
                applied_now.append(migration.name)
        finally:
            await conn.execute("SELECT pg_advisory_unlock($1)", MIGRATION_LOCK_KEY)

    return applied_now


async def _apply_one(conn: asyncpg.Connection, migration: Migration) -> None:
    try:
        async with conn.transaction():
            await conn.execute(migration.sql)
            await conn.execute(
                "INSERT INTO schema_migrations (version, name) VALUES ($1, $2)",
                migration.version,
                migration.name,
            )
    except asyncpg.PostgresError as exc:
        raise StoreError(f"migration {migration.name} failed: {exc}") from exc
    log.info("applied migration %s", migration.name)
