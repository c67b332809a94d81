"""Real parts at the edges: a PostgreSQL server started from the binaries on PATH, the GCS
emulator over HTTP with the real google-cloud-storage client, one Prefect test harness for the
session, and pytest-httpserver receivers standing in for Slack and PagerDuty."""

from __future__ import annotations

import glob
import json
import os
import threading
import uuid
from pathlib import Path

import pytest

os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("DO_NOT_TRACK", "1")
# Debian keeps initdb and pg_ctl off PATH; the suite finds them the way the Makefile does.
_pg_bins = sorted(glob.glob("/usr/lib/postgresql/*/bin"))
if _pg_bins and _pg_bins[-1] not in os.environ["PATH"].split(os.pathsep):
    os.environ["PATH"] += os.pathsep + _pg_bins[-1]

from maint.demo import load_sample_schema  # noqa: E402
from maint.tasks.postgres.server import ThrowawayPostgres, free_port  # noqa: E402

DB_PASSWORD_ENV = "MAINT_TEST_DB_PASSWORD"


@pytest.fixture(scope="session", autouse=True)
def prefect_harness():
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield


@pytest.fixture(scope="session")
def pg():
    """One PostgreSQL for the session, with a `shop` database holding the sample schema."""
    with ThrowawayPostgres() as server:
        server.create_database("shop")
        load_sample_schema(server, "shop")
        yield server


@pytest.fixture(scope="session")
def gcs_server():
    from gcp_storage_emulator.server import create_server

    port = free_port()
    server = create_server("127.0.0.1", port, in_memory=True)
    server.start()
    server.url = f"http://127.0.0.1:{port}"
    os.environ["STORAGE_EMULATOR_HOST"] = server.url
    yield server
    server.stop()
    os.environ.pop("STORAGE_EMULATOR_HOST", None)


@pytest.fixture(scope="session")
def gcs_emulator(gcs_server):
    return gcs_server.url


def rot_gcs_object(gcs_server, bucket: str, name: str, data: bytes) -> None:
    """Replace an object's bytes inside the emulator, leaving its metadata (crc32c, md5, size,
    generation) as they were: bit rot at rest, which no API call can produce."""
    storage = gcs_server._storage
    storage._store.write_bytes(storage._object_path(bucket, name), data)


@pytest.fixture
def gcs_client(gcs_emulator):
    from google.auth.credentials import AnonymousCredentials
    from google.cloud import storage

    return storage.Client(project="maint-test", credentials=AnonymousCredentials())


@pytest.fixture
def gcs_bucket(gcs_client):
    bucket = gcs_client.create_bucket(f"maint-test-{uuid.uuid4().hex[:12]}")
    return bucket


@pytest.fixture
def db_password(pg, monkeypatch):
    monkeypatch.setenv(DB_PASSWORD_ENV, pg.password)
    return pg.password


def write_config(path: Path, pg: ThrowawayPostgres, store_url: str, *, port: int | None = None,
                 dbname: str = "shop", notify: str = "", extra: str = "", backup_extra: str = "",
                 rpo: str = "26h", more_stores: str = "") -> Path:
    path.write_text(f"""
timezone = "Asia/Taipei"

[notify]
page_on = ["critical"]
{notify}

[[databases]]
name = "prod"
host = "{pg.host}"
port = {port or pg.port}
dbname = "{dbname}"
user = "{pg.superuser}"
password_env = "{DB_PASSWORD_ENV}"
sslmode = "disable"
connect_timeout = "3s"

[[backup_stores]]
name = "prod-dumps"
url = "{store_url}"
database = "prod"
rpo = "{rpo}"
{more_stores}

[backup]
database = "prod"
store = "prod-dumps"
{backup_extra}

[schedules]
backup = "0 1 * * *"
{extra}
""")
    return path


def run_cli(capsys, *argv: str) -> tuple[int, str, str]:
    from maint.cli import main

    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def run_json(capsys, config: Path, duty: str) -> tuple[int, dict]:
    code, out, err = run_cli(capsys, "--config", str(config), "run", duty, "--json")
    assert out.strip(), f"no JSON on stdout; stderr was:\n{err}"
    return code, json.loads(out)


def artifacts_of(flow_run_id: str) -> list:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    with get_client(sync_client=True) as client:
        return client.read_artifacts(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[uuid.UUID(flow_run_id)])))


def table_counts(pg: ThrowawayPostgres, dbname: str) -> dict[str, int]:
    from psycopg import sql

    with pg.connect(dbname) as conn:
        tables = conn.execute("SELECT n.nspname, c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
                              " WHERE c.relkind = 'r' AND n.nspname NOT IN ('pg_catalog', 'information_schema')"
                              " AND n.nspname NOT LIKE 'pg\\_%'").fetchall()
        return {f"{s}.{t}": conn.execute(sql.SQL("SELECT count(*) FROM ONLY {}.{}").format(
            sql.Identifier(s), sql.Identifier(t))).fetchone()[0] for s, t in tables}


class Poller(threading.Thread):
    """Runs `action` once `condition` becomes true, polling; for killing things mid-way."""

    def __init__(self, condition, action, timeout: float = 60.0):
        super().__init__(daemon=True)
        self.condition, self.action, self.timeout = condition, action, timeout
        self.fired = threading.Event()
        self.stop = threading.Event()

    def run(self) -> None:
        import time

        deadline = time.monotonic() + self.timeout
        while not self.stop.is_set() and time.monotonic() < deadline:
            if self.condition():
                self.action()
                self.fired.set()
                return
            time.sleep(0.005)
