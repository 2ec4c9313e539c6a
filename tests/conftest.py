"""Fixtures shared by the whole suite: the local services and the recorded GitHub data.

The services are the ones ``make services`` starts (scripts/services.py); each fixture
reads the same ``GHSTREAM_*`` variables as the command line, so a suite can point at
other servers. When a service does not answer, its tests are skipped with the reason;
under ``CI=true`` they fail instead, so a broken setup cannot pass as "all skipped".

    kafka_bootstrap  str           bootstrap servers that answer a metadata request
    topic_factory    async factory  ``await topic_factory(partitions=6, replication_factor=1)``
                                    -> a new topic's name; TOPIC.dlq is created with it,
                                    both are deleted after the test
    postgres_dsn     str            DSN of a fresh database, dropped after the test
    mongo_url        str            MongoDB connection string
    mongo_db_name    str            a unique database name, dropped after the test
    shared_data      Path           ../shared/data beside the clone, or $GHSTREAM_SHARED_DATA
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import uuid
from collections.abc import AsyncIterator, Awaitable
from pathlib import Path
from typing import Any, NoReturn, Protocol

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")

DEFAULT_BOOTSTRAP = "127.0.0.1:9092"
DEFAULT_POSTGRES_DSN = "postgresql://ghstream:ghstream@127.0.0.1:5432/ghstream"
DEFAULT_MONGO_URL = "mongodb://127.0.0.1:27017"
SERVICE_PROBE_TIMEOUT_S = 10.0
TOPIC_READY_TIMEOUT_S = 30.0
DROP_DATABASE_TIMEOUT_S = 60.0


def service_unavailable(reason: str) -> NoReturn:
    """Skip the test, or fail it under CI, where every service must be there."""
    if IN_CI:
        pytest.fail(f"{reason} (CI=true: a missing service fails the run)", pytrace=False)
    pytest.skip(f"{reason}; start the services with `make services`")


def unique_name(prefix: str, request: pytest.FixtureRequest, *, max_len: int = 63) -> str:
    """``prefix`` + the test's name + a random suffix, in characters every service accepts."""
    test = re.sub(r"[^a-z0-9]+", "_", request.node.name.lower()).strip("_")
    suffix = uuid.uuid4().hex[:8]
    return f"{prefix}_{test[: max_len - len(prefix) - len(suffix) - 2]}_{suffix}"


def masked(dsn: str) -> str:
    return re.sub(r"(://[^:/@]+:)[^@]*@", r"\1***@", dsn)


@pytest.fixture(autouse=True)
def _restore_logging() -> Any:
    """Undo what a command run in-process (CliRunner) did to the root logger: its handler
    writes to a stream that is closed once the test ends."""
    root, ours = logging.getLogger(), logging.getLogger("ghstream")
    handlers, levels = list(root.handlers), (root.level, ours.level)
    yield
    root.handlers[:] = handlers
    root.setLevel(levels[0])
    ours.setLevel(levels[1])


# --- Kafka ---------------------------------------------------------------------------------


async def describe_kafka(bootstrap: str) -> dict[str, Any]:
    """Metadata of the cluster at ``bootstrap``; raises when it does not answer in time."""
    from aiokafka.admin import AIOKafkaAdminClient

    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=5000)
    try:
        async with asyncio.timeout(SERVICE_PROBE_TIMEOUT_S):
            await admin.start()
            description: dict[str, Any] = await admin.describe_cluster()
            return description
    finally:
        await admin.close()


@pytest.fixture(scope="session")
async def kafka_bootstrap() -> str:
    """Bootstrap servers of the local Kafka ($GHSTREAM_KAFKA_BOOTSTRAP or 127.0.0.1:9092)."""
    bootstrap = os.environ.get("GHSTREAM_KAFKA_BOOTSTRAP", DEFAULT_BOOTSTRAP)
    try:
        await describe_kafka(bootstrap)
    except Exception as exc:
        service_unavailable(f"Kafka at {bootstrap} does not answer ({type(exc).__name__}: {exc})")
    return bootstrap


class TopicFactory(Protocol):
    def __call__(
        self,
        partitions: int = 6,
        replication_factor: int = 1,
        *,
        bootstrap: str | None = None,
        config: dict[str, str] | None = None,
    ) -> Awaitable[str]: ...


async def wait_for_topics(admin: Any, topics: list[str], partitions: int) -> None:
    """Wait until every partition of ``topics`` has a leader in the metadata."""
    async with asyncio.timeout(TOPIC_READY_TIMEOUT_S):
        while True:
            described = await admin.describe_topics(topics)
            if all(
                t["error_code"] == 0
                and len(t["partitions"]) == partitions
                and all(p["leader"] >= 0 for p in t["partitions"])
                for t in described
            ):
                return
            await asyncio.sleep(0.2)


@pytest.fixture
async def topic_factory(request: pytest.FixtureRequest) -> AsyncIterator[TopicFactory]:
    """Create uniquely named topics, each with its ``.dlq``; delete them all after the test.

    ``bootstrap`` defaults to ``kafka_bootstrap``; pass ``kafka_cluster.bootstrap`` to
    create the topic on the 3-broker test cluster instead.
    """
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic

    admins: dict[str, Any] = {}
    created: list[tuple[str, list[str]]] = []

    async def admin_for(bootstrap: str) -> Any:
        if bootstrap not in admins:
            admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=30000)
            await admin.start()
            admins[bootstrap] = admin
        return admins[bootstrap]

    async def create(
        partitions: int = 6,
        replication_factor: int = 1,
        *,
        bootstrap: str | None = None,
        config: dict[str, str] | None = None,
    ) -> str:
        bootstrap = bootstrap or request.getfixturevalue("kafka_bootstrap")
        admin = await admin_for(bootstrap)
        topic = unique_name("test", request, max_len=120).replace("_", "-")
        names = [topic, f"{topic}.dlq"]
        response = await admin.create_topics(
            [NewTopic(name, partitions, replication_factor, topic_configs=config or {})
             for name in names]
        )  # fmt: skip
        created.append((bootstrap, names))
        errors = [(name, code, msg) for name, code, msg in response.topic_errors if code]
        if errors:
            raise RuntimeError(f"creating topics {names} failed: {errors}")
        await wait_for_topics(admin, names, partitions)
        return topic

    try:
        yield create
    finally:
        for bootstrap, names in created:
            admin = admins[bootstrap]
            await admin.delete_topics(names)
        for admin in admins.values():
            await admin.close()


# --- PostgreSQL ----------------------------------------------------------------------------


@pytest.fixture(scope="session")
async def postgres_admin_dsn() -> str:
    """DSN of a role that may create databases ($GHSTREAM_POSTGRES_DSN or the local one)."""
    import asyncpg

    dsn = os.environ.get("GHSTREAM_POSTGRES_DSN", DEFAULT_POSTGRES_DSN)
    try:
        conn = await asyncpg.connect(dsn, timeout=SERVICE_PROBE_TIMEOUT_S)
    except Exception as exc:
        service_unavailable(
            f"PostgreSQL at {masked(dsn)} does not answer ({type(exc).__name__}: {exc})"
        )
    await conn.close()
    return dsn


@pytest.fixture
async def postgres_dsn(
    postgres_admin_dsn: str, request: pytest.FixtureRequest
) -> AsyncIterator[str]:
    """DSN of a database created for this test alone and dropped after it."""
    import asyncpg

    database = unique_name("ghstream_test", request)
    admin = await asyncpg.connect(postgres_admin_dsn)
    try:
        await admin.execute(f'CREATE DATABASE "{database}"')
    finally:
        await admin.close()

    base, _, _ = postgres_admin_dsn.rpartition("/")
    yield f"{base}/{database}"

    admin = await asyncpg.connect(postgres_admin_dsn)
    try:
        # FORCE: a test that leaks a connection must not leak its database too. An
        # autovacuum worker busy in it (after a test wrote a few thousand rows) is a
        # process our role may not terminate: wait for it to finish instead.
        async with asyncio.timeout(DROP_DATABASE_TIMEOUT_S):
            while True:
                try:
                    await admin.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
                    break
                except asyncpg.InsufficientPrivilegeError:
                    await asyncio.sleep(0.2)
    finally:
        await admin.close()


# --- MongoDB -------------------------------------------------------------------------------


@pytest.fixture(scope="session")
async def mongo_url() -> str:
    """MongoDB connection string ($GHSTREAM_MONGO_URL or the local server)."""
    from pymongo import AsyncMongoClient

    url = os.environ.get("GHSTREAM_MONGO_URL", DEFAULT_MONGO_URL)
    timeout_ms = int(SERVICE_PROBE_TIMEOUT_S * 1000)
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(
        url, serverSelectionTimeoutMS=timeout_ms
    )
    try:
        await client.admin.command("ping")
    except Exception as exc:
        service_unavailable(f"MongoDB at {masked(url)} does not answer ({type(exc).__name__})")
    finally:
        await client.close()
    return url


@pytest.fixture
async def mongo_db_name(mongo_url: str, request: pytest.FixtureRequest) -> AsyncIterator[str]:
    """A database name for this test alone; the database is dropped after it."""
    from pymongo import AsyncMongoClient

    name = unique_name("ghstream_test", request)
    yield name
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(mongo_url)
    try:
        await client.drop_database(name)
    finally:
        await client.close()


# --- recorded data -------------------------------------------------------------------------


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The recorded GitHub events: ``<clone>/../shared/data`` or $GHSTREAM_SHARED_DATA."""
    configured = os.environ.get("GHSTREAM_SHARED_DATA")
    path = Path(configured) if configured else REPO_ROOT.parent / "shared" / "data"
    if not path.is_dir():
        pytest.skip("needs ../shared/data (recorded GitHub events); see README")
    return path
