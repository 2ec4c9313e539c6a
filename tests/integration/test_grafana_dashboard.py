"""Grafana, tested without Grafana: the provisioning files, and every panel's SQL on real data.

Grafana itself cannot run here, so the test takes each query from the dashboard
JSON, expands Grafana's macro and variables the way Grafana's PostgreSQL
datasource does (``$__timeFilter(col)`` becomes ``col BETWEEN '<from>' AND
'<to>'``; ``${var:sqlstring}`` a quoted, escaped string or list; ``${var:raw}``
the value as is), and runs it against PostgreSQL after a real hour was stored.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import asyncpg
import pytest
import yaml
from test_dashboard_support import event_type_counts, hour_path, store_hour

pytestmark = pytest.mark.integration

REPO_ROOT = Path(__file__).resolve().parents[2]
GRAFANA = REPO_ROOT / "grafana"
DASHBOARD = GRAFANA / "dashboards" / "ghstream.json"
DATASOURCES = GRAFANA / "provisioning" / "datasources" / "postgres.yaml"
PROVIDERS = GRAFANA / "provisioning" / "dashboards" / "dashboards.yaml"
COMPOSE = REPO_ROOT / "compose.yaml"

HOUR_FROM, HOUR_TO = "2015-01-01T12:00:00Z", "2015-01-01T12:59:59Z"

#: The columns each panel must return, in order.
EXPECTED_COLUMNS = {
    "Events per minute by type": ["time", "metric", "value"],
    "Top contributors": [
        "contributor",
        "contributions",
        "pushes",
        "commits",
        "pushes, commits unknown",
        "PRs opened",
        "issues opened",
        "reviews",
        "comments",
    ],
    "Most active repositories": [
        "repository",
        "events",
        "commits",
        "pushes, commits unknown",
        "stars",
        "forks",
        "PRs opened",
        "PRs merged",
        "issues opened",
        "issues closed",
    ],
    "Time to resolution (median and p90)": [
        "repository",
        *(
            f"{kind}{part}"
            for kind in ("issues closed", "PRs merged", "PRs closed unmerged")
            for part in ("", ": median", ": p90")
        ),
    ],
    "Coverage": [
        "first minute",
        "data until",
        "events",
        "pushes, commits unknown",
        "undetermined resolutions",
        "ingest gaps",
        "events missed (estimated)",
        "newest stored event",
        "aggregated up to",
    ],
}
DEFAULTS = {"type": ["__all"], "scope": "", "bots": "false", "rank": "events", "limit": "10"}


def load_dashboard() -> dict[str, Any]:
    dashboard: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return dashboard


def sql_panels() -> dict[str, str]:
    return {
        panel["title"]: panel["targets"][0]["rawSql"]
        for panel in load_dashboard()["panels"]
        if panel.get("targets")
    }


def sqlstring(value: str | list[str]) -> str:
    values = value if isinstance(value, list) else [value]
    return ",".join("'" + item.replace("'", "''") + "'" for item in values)


def expand(sql: str, variables: Mapping[str, str | list[str]]) -> str:
    """``sql`` as Grafana would send it for the 2015-01-01 12:00 hour and ``variables``."""
    sql = re.sub(r"\$__timeFilter\(([^)]+)\)", rf"\1 BETWEEN '{HOUR_FROM}' AND '{HOUR_TO}'", sql)
    sql = re.sub(r"\$\{(\w+):sqlstring\}", lambda m: sqlstring(variables[m.group(1)]), sql)
    sql = re.sub(r"\$\{(\w+):raw\}", lambda m: str(variables[m.group(1)]), sql)
    assert "$" not in sql, f"a Grafana variable the test does not expand is left in:\n{sql}"
    return sql


# --- the files ------------------------------------------------------------------------------


def test_datasource_is_provisioned_with_the_uid_the_panels_use() -> None:
    provisioned = yaml.safe_load(DATASOURCES.read_text())
    assert provisioned["apiVersion"] == 1
    [source] = provisioned["datasources"]
    assert source["type"] == "grafana-postgresql-datasource"
    assert source["url"] == "postgres:5432"  # the compose service
    assert source["secureJsonData"]["password"].startswith("$")  # from the environment

    dashboard = load_dashboard()
    expected = {"type": source["type"], "uid": source["uid"]}
    for panel in dashboard["panels"]:
        if panel["type"] == "text":
            continue
        assert panel["datasource"] == expected, panel["title"]
        for target in panel["targets"]:
            assert target["datasource"] == expected, panel["title"]
    for variable in dashboard["templating"]["list"]:
        if variable["type"] == "query":
            assert variable["datasource"] == expected, variable["name"]


def test_dashboard_json_has_grafanas_provisioning_shape() -> None:
    dashboard = load_dashboard()
    assert dashboard["uid"] == "ghstream" and dashboard["title"]
    assert isinstance(dashboard["schemaVersion"], int) and dashboard["schemaVersion"] >= 36
    assert "id" not in dashboard or dashboard["id"] is None  # Grafana assigns ids
    assert dashboard["time"] == {"from": "now-24h", "to": "now"}

    ids = [panel["id"] for panel in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    for panel in dashboard["panels"]:
        assert set(panel["gridPos"]) == {"h", "w", "x", "y"}
        assert panel["gridPos"]["x"] + panel["gridPos"]["w"] <= 24
        assert panel["type"] in {"text", "timeseries", "table"}
        for target in panel.get("targets", []):
            assert target["refId"] and target["rawQuery"] is True
            assert target["format"] == ("time_series" if panel["type"] == "timeseries" else "table")
    assert set(sql_panels()) == set(EXPECTED_COLUMNS)

    names = {variable["name"] for variable in dashboard["templating"]["list"]}
    assert names == set(DEFAULTS)


def test_dashboards_provider_loads_the_folder_compose_mounts() -> None:
    provider = yaml.safe_load(PROVIDERS.read_text())
    [entry] = provider["providers"]
    assert entry["type"] == "file"
    path = entry["options"]["path"]

    grafana = yaml.safe_load(COMPOSE.read_text())["services"]["grafana"]
    mounts = {volume.split(":")[1]: volume.split(":")[0] for volume in grafana["volumes"]}
    assert mounts[path] == "./grafana/dashboards"
    assert mounts["/etc/grafana/provisioning"] == "./grafana/provisioning"
    home = grafana["environment"]["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]
    assert home == f"{path}/{DASHBOARD.name}"


@pytest.mark.parametrize("service", ["grafana", "dashboard"])
def test_compose_service_is_healthchecked_loopback_and_waits_for_postgres(service: str) -> None:
    spec = yaml.safe_load(COMPOSE.read_text())["services"][service]
    assert spec["healthcheck"]["test"]
    assert spec["depends_on"]["postgres"]["condition"] == "service_healthy"
    assert spec["ports"] and all(port.startswith("127.0.0.1:") for port in spec["ports"])


def test_docker_compose_config_accepts_the_file() -> None:
    for command in (["docker", "compose"], ["docker-compose"]):
        if shutil.which(command[0]) is None:
            continue
        probe = subprocess.run([*command, "version"], capture_output=True, check=False)
        if probe.returncode != 0:
            continue
        result = subprocess.run(
            [*command, "-f", str(COMPOSE), "config", "--quiet"],
            capture_output=True,
            text=True,
            check=False,
            cwd=REPO_ROOT,
        )
        assert result.returncode == 0, result.stderr
        return
    pytest.skip("neither `docker compose` nor `docker-compose` is installed")


# --- the SQL on a stored hour ---------------------------------------------------------------


@pytest.fixture
async def hour_db(postgres_dsn: str, shared_data: Path) -> str:
    await store_hour(postgres_dsn, hour_path(shared_data))
    return postgres_dsn


async def run_panel(dsn: str, title: str, **variables: str | list[str]) -> list[asyncpg.Record]:
    sql = expand(sql_panels()[title], DEFAULTS | variables)
    conn = await asyncpg.connect(dsn, server_settings={"timezone": "UTC"})
    try:
        statement = await conn.prepare(sql)
        assert [a.name for a in statement.get_attributes()] == EXPECTED_COLUMNS[title], title
        rows: list[asyncpg.Record] = await statement.fetch()
        return rows
    finally:
        await conn.close()


@pytest.mark.shared_data
async def test_every_panel_query_returns_its_columns_and_rows(
    hour_db: str, shared_data: Path
) -> None:
    for title in EXPECTED_COLUMNS:
        rows = await run_panel(hour_db, title)
        assert rows, f"{title}: no rows"

    frequency = await run_panel(hour_db, "Events per minute by type")
    per_type: dict[str, int] = {}
    for row in frequency:
        per_type[row["metric"]] = per_type.get(row["metric"], 0) + row["value"]
    assert per_type == dict(event_type_counts(hour_path(shared_data)))

    [coverage] = await run_panel(hour_db, "Coverage")
    assert coverage["events"] == sum(per_type.values())
    assert coverage["ingest gaps"] == 0

    resolution = await run_panel(hour_db, "Time to resolution (median and p90)")
    assert resolution[0]["repository"] == "all repositories"
    assert resolution[0]["PRs merged"] > 0 and resolution[0]["PRs merged: median"] > 0


@pytest.mark.shared_data
async def test_panels_agree_with_the_dashboard_app(hour_db: str) -> None:
    """Grafana's SQL and ghstream.queries rank the same repositories and contributors."""
    from datetime import UTC, datetime

    from ghstream import queries
    from ghstream.timewindow import Window

    window = Window(datetime(2015, 1, 1, 12, tzinfo=UTC), datetime(2015, 1, 1, 13, tzinfo=UTC))
    conn = await asyncpg.connect(hour_db)
    try:
        repos = await queries.top_repos(conn, window, limit=10)
        contributors = await queries.top_contributors(conn, window, limit=10)
    finally:
        await conn.close()

    grafana_repos = await run_panel(hour_db, "Most active repositories")
    assert [(r["repository"], r["events"]) for r in grafana_repos] == [
        (row.repo, row.events) for row in repos.rows
    ]
    grafana_contributors = await run_panel(hour_db, "Top contributors")
    assert [(r["contributor"], r["contributions"]) for r in grafana_contributors] == [
        (row.login, row.contributions) for row in contributors.rows
    ]


@pytest.mark.shared_data
async def test_variables_filter_the_panels(hour_db: str) -> None:
    watch = await run_panel(hour_db, "Events per minute by type", type=["WatchEvent"])
    assert watch and {row["metric"] for row in watch} == {"WatchEvent"}

    kaltura = await run_panel(hour_db, "Most active repositories", scope="kaltura")
    assert kaltura and all(row["repository"].startswith("kaltura/") for row in kaltura)
    scoped = await run_panel(hour_db, "Events per minute by type", scope="kaltura/mwEmbed")
    assert sum(row["value"] for row in scoped) == 67
    contributors = await run_panel(hour_db, "Top contributors", scope="kaltura/mwEmbed")
    assert contributors and len(contributors) < 10

    by_commits = await run_panel(hour_db, "Most active repositories", rank="commits", limit="25")
    commits = [row["commits"] for row in by_commits]
    assert len(commits) == 25 and commits == sorted(commits, reverse=True)

    # A quote in the text box stays inside its string literal.
    assert await run_panel(hour_db, "Most active repositories", scope="x' OR '1'='1") == []


async def test_type_variable_query_lists_the_stored_types(postgres_dsn: str) -> None:
    from test_dashboard_support import apply_migrations

    await apply_migrations(postgres_dsn)
    [variable] = [v for v in load_dashboard()["templating"]["list"] if v["name"] == "type"]
    conn = await asyncpg.connect(postgres_dsn)
    try:
        await conn.execute(
            "INSERT INTO agg_type_minute VALUES ('2015-01-01T12:05:00Z', 'PushEvent', 3)"
        )
        rows = await conn.fetch(expand(variable["query"], DEFAULTS))
    finally:
        await conn.close()
    assert [row["type"] for row in rows] == ["PushEvent"]
