"""Fixtures of the real-service tests, on top of those in tests/conftest.py.

Every test in this folder is marked ``integration``. ``kafka_cluster`` gives a 3-broker
KRaft cluster of its own, started once per session by scripts/services.py on
127.0.0.1:29092/29094/29096 (instance ``cluster``, files in .local/kafka/cluster), so the
single broker on 9092 that the other tests share is never touched. A test may SIGKILL a
broker and start it again::

    async def test_survives_a_broker_crash(kafka_cluster, topic_factory):
        topic = await topic_factory(6, 3, bootstrap=kafka_cluster.bootstrap)
        kafka_cluster.kill_broker(2)           # SIGKILL, returns once it is gone
        ...                                    # produce with acks=all: 2 in-sync replicas left
        kafka_cluster.start_broker(2)          # returns at once
        await kafka_cluster.wait_for_brokers() # until all 3 are back in the metadata

Each test gets the cluster with all three brokers running, whatever the test before did.
"""

from __future__ import annotations

import asyncio
import importlib.util
import os
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any, NoReturn

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent.parent
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
CLUSTER_NAME = "cluster"
CLUSTER_BROKERS = 3
CLUSTER_PORT_BASE = int(os.environ.get("GHSTREAM_CLUSTER_PORT_BASE", "29092"))
CLUSTER_START_TIMEOUT_S = 180.0


def load_services_script() -> ModuleType:
    """Import scripts/services.py, which is a script and not part of the package."""
    name = "ghstream_services_script"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, REPO_ROOT / "scripts" / "services.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


services = load_services_script()


def service_unavailable(reason: str) -> NoReturn:
    """Skip the test, or fail it under CI, where the cluster must start."""
    if IN_CI:
        pytest.fail(f"{reason} (CI=true: a missing service fails the run)", pytrace=False)
    pytest.skip(reason)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    here = Path(__file__).parent
    for item in items:
        if here in Path(str(item.path)).parents:
            item.add_marker(pytest.mark.integration)


@dataclass
class KafkaCluster:
    """The 3-broker test cluster: its bootstrap string and control over each broker."""

    bootstrap: str
    node_ids: list[int]
    _kafka: Any = field(repr=False)

    def pid(self, node_id: int) -> int | None:
        """The broker process of ``node_id``, or None when it is not running."""
        pid: int | None = self._kafka.pids()[node_id]
        return pid

    def kill_broker(self, node_id: int) -> None:
        """SIGKILL the broker ``node_id``, as a crash would; returns once the process is gone."""
        self._kafka.kill_node(node_id)

    def start_broker(self, node_id: int) -> None:
        """Start the broker ``node_id`` again; returns at once (see ``wait_for_brokers``)."""
        if self.pid(node_id) is None:
            self._kafka.start_node(node_id)

    async def wait_for_brokers(
        self, node_ids: list[int] | None = None, *, timeout_s: float = 90.0
    ) -> None:
        """Wait until the cluster's metadata lists ``node_ids`` (default: all) as live."""
        wanted = set(node_ids or self.node_ids)
        async with asyncio.timeout(timeout_s):
            while True:
                try:
                    description = await services.describe_kafka_async(self.bootstrap, 5.0)
                except Exception:
                    description = {"brokers": []}
                if wanted <= {b["node_id"] for b in description["brokers"]}:
                    return
                await asyncio.sleep(0.5)


@pytest.fixture(scope="session")
def _kafka_cluster_session() -> Iterator[KafkaCluster]:
    layout = services.KafkaLayout(
        name=CLUSTER_NAME, brokers=CLUSTER_BROKERS, port_base=CLUSTER_PORT_BASE
    )
    kafka = services.Kafka(layout)
    was_running = any(kafka.pids().values())
    try:
        kafka.up(timeout_s=CLUSTER_START_TIMEOUT_S)
    except services.ServiceError as exc:
        service_unavailable(f"the 3-broker test cluster did not start: {exc}")
    try:
        yield KafkaCluster(bootstrap=layout.bootstrap, node_ids=layout.node_ids, _kafka=kafka)
    finally:
        # One left running by an earlier session (or by hand) stays running.
        if not was_running:
            kafka.down()


@pytest.fixture
def kafka_cluster(_kafka_cluster_session: KafkaCluster) -> KafkaCluster:
    """A 3-broker KRaft cluster (RF 3, min.insync.replicas 2) with every broker running."""
    try:
        # Starts any broker an earlier test left dead; one metadata request when none is.
        _kafka_cluster_session._kafka.up(timeout_s=CLUSTER_START_TIMEOUT_S)
    except services.ServiceError as exc:
        service_unavailable(f"the 3-broker test cluster did not recover: {exc}")
    return _kafka_cluster_session
