"""Real parts at the edges: a PostgreSQL server started from the binaries on PATH, the GCS
emulator over HTTP with the real google-cloud-storage client, one Prefect test harness for the
session, and pytest-httpserver receivers standing in for Slack and PagerDuty.

The suite runs in three layers, each test in exactly one, derived from the fixtures it uses (its
fixture closure) so that the marker cannot drift from what the test does:

- `flows`: it requests `prefect_harness` (the session's Prefect test server) or `prefect_server`
  (a real `prefect server start`, with its scheduler, automations and UI, for workers and
  deployments), directly or through another fixture: it runs a flow, or uses Prefect's API;
- `systems`: otherwise, it uses a system fixture (see `system_fixture`): a real server the suite
  starts (PostgreSQL, the GCS emulator, TLS and HTTP servers, the Kubernetes API stand-in), or
  the package built as pip would install it;
- `decisions`: neither: pure tests, fast (`pytest -m decisions` starts no server at all).

The harness and the servers start only when a test of theirs needs them. `_layer_holds` keeps the
derivation honest at run time: a decisions test that starts a server, or any test outside `flows`
that starts or talks to Prefect's server, fails saying which fixture to request.
"""

from __future__ import annotations

import contextlib
import glob
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import types
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


# --- layers ----------------------------------------------------------------------------------------

LAYERS = ("decisions", "systems", "flows")
HARNESS = "prefect_harness"
PREFECT_FIXTURES = {HARNESS, "prefect_server"}
# Fixtures that bring up a real system. pytest-httpserver's come from its plugin; the suite's own
# are declared with @system_fixture, below and in the test modules.
SYSTEM_FIXTURES: set[str] = {"httpserver", "make_httpserver"}


def system_fixture(function=None, **kwargs):
    """@pytest.fixture for a fixture that brings up a real system: starts a server (or hands out a
    class that starts one), or builds the package. Every test using it, directly or through other
    fixtures, is in the systems layer (or in flows, if it also uses the Prefect harness)."""
    def declare(function):
        SYSTEM_FIXTURES.add(kwargs.get("name", function.__name__))
        return pytest.fixture(**kwargs)(function)
    return declare(function) if function is not None else declare


def layer_of(fixturenames) -> str:
    names = set(fixturenames)
    if names & PREFECT_FIXTURES:
        return "flows"
    if names & SYSTEM_FIXTURES:
        return "systems"
    return "decisions"


@pytest.hookimpl(tryfirst=True)  # before -m deselects by marker
def pytest_collection_modifyitems(config, items):
    for item in items:
        by_hand = [mark.name for mark in item.iter_markers() if mark.name in LAYERS]
        if by_hand:
            raise pytest.UsageError(f"{item.nodeid}: @pytest.mark.{by_hand[0]} by hand; layers are derived from "
                                    "the fixtures a test uses (tests/conftest.py)")
        item.add_marker(getattr(pytest.mark, layer_of(getattr(item, "fixturenames", ()))))


_SERVER_PROGRAMS = {"initdb", "pg_ctl", "pg_ctlcluster", "postgres"}


@pytest.fixture(autouse=True)
def _layer_holds(request, monkeypatch):
    """Outside flows, nothing starts or talks to a Prefect server; in decisions, nothing listens on
    a socket or starts PostgreSQL. Breaking either fails the test naming the fixture to request."""
    layer = layer_of(request.fixturenames)
    if layer == "flows":
        return
    nodeid = request.node.nodeid

    def refuse(what: str, fixture: str):
        pytest.fail(f"{nodeid} is in the {layer} layer but {what}: request {fixture} so that it is "
                    "marked, and started, for what it does", pytrace=False)

    popen_init = subprocess.Popen.__init__

    def guarded_popen(self, args, *more, **kw):
        argv = [args] if isinstance(args, (str, bytes, os.PathLike)) else list(args)
        words = [os.fsdecode(a) if isinstance(a, (bytes, os.PathLike)) else str(a) for a in argv]
        if any("prefect.server" in word for word in words):
            refuse("starts a Prefect server", f"the `{HARNESS}` fixture")
        program = os.path.basename(words[0].split()[0]) if words and words[0].split() else ""
        if layer == "decisions" and program in _SERVER_PROGRAMS:
            refuse(f"starts PostgreSQL ({program})", "a system fixture such as `pg`")
        popen_init(self, args, *more, **kw)

    monkeypatch.setattr(subprocess.Popen, "__init__", guarded_popen)

    orchestration = sys.modules.get("prefect.client.orchestration")
    if orchestration is not None:  # else Prefect is not loaded, and starting it is caught above
        main_thread = threading.main_thread()
        for client_class in (orchestration.PrefectClient, orchestration.SyncPrefectClient):
            def guarded_client(self, *args, _init=client_class.__init__, **kw):
                # The test's own thread only: Prefect's log and event workers may still be
                # flushing what an earlier flows test left them.
                if threading.current_thread() is main_thread:
                    refuse("talks to Prefect's API", f"the `{HARNESS}` fixture")
                _init(self, *args, **kw)
            monkeypatch.setattr(client_class, "__init__", guarded_client)

    if layer == "decisions":
        def guarded_listen(self, *args):
            refuse("listens on a socket (starts a server)", "a system fixture (tests/conftest.py: system_fixture)")
        monkeypatch.setattr(socket.socket, "listen", guarded_listen)


@pytest.fixture(scope="session")
def prefect_harness():
    """One Prefect test server for the session, started by the first test that needs it."""
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield


@pytest.fixture(scope="session")
def prefect_server(tmp_path_factory):
    """One real Prefect server for the session (`prefect server start`: scheduler, automations,
    UI), started by the first test that needs it. Tests share it: each cleans up with
    `prefect_api`'s `forget_maint`. Processes reach it through `server.client_env()`."""
    from maint.tasks.prefect_server import LocalPrefectServer

    with LocalPrefectServer(tmp_path_factory.mktemp("prefect-server")) as server:
        yield server


@contextlib.contextmanager
def prefect_api(server):
    """A SyncPrefectClient talking to `server` (not the harness), in this process."""
    from prefect.client.orchestration import get_client
    from prefect.settings import PREFECT_API_URL, temporary_settings

    with temporary_settings({PREFECT_API_URL: server.api_url}), get_client(sync_client=True) as client:
        yield client


def forget_maint(server) -> None:
    """Delete what maint registered on the shared server (deployments, automations, blocks, work
    pools): the next test starts from an empty server, and no automation of this test pages a
    receiver of the next."""
    with prefect_api(server) as client:
        for automation in client.read_automations():
            client.delete_automation(automation.id)
        for deployment in client.read_deployments():
            client.delete_deployment(deployment.id)
        for block in client.read_block_documents():
            if block.name and block.name.startswith("maint-"):
                client.delete_block_document(block.id)
        for pool in client.read_work_pools():
            if not pool.name.startswith("default"):
                client.delete_work_pool(pool.name)


def maint_process(server, *argv: str, env: dict[str, str] | None = None, timeout: float = 180,
                  ) -> subprocess.CompletedProcess:
    """`maint ARGV` as its own process against the real server, as an operator runs it."""
    return subprocess.run([sys.executable, "-m", "maint.cli", *argv], capture_output=True, text=True,
                          env=server.client_env({**os.environ, **(env or {})}), timeout=timeout)


def interrupt(process: subprocess.Popen, grace: float = 30) -> None:
    """Ctrl-C for a process the test started (a worker, `maint serve`): SIGINT, then SIGKILL if it
    has not ended after `grace` seconds."""
    if process.poll() is not None:
        return
    process.send_signal(signal.SIGINT)
    try:
        process.wait(grace)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def run_worker_once(server, pool: str, env: dict[str, str] | None = None, timeout: float = 300,
                    ) -> subprocess.CompletedProcess:
    """A real `prefect worker start --pool POOL --run-once`: it runs the pool's due flow runs and exits."""
    from maint.tasks.prefect_server import prefect_program

    return subprocess.run([prefect_program(), "worker", "start", "--pool", pool, "--run-once"],
                          capture_output=True, text=True, timeout=timeout,
                          env=server.client_env({**os.environ, **(env or {})}))


def wait_for(condition, timeout: float = 30.0, what="the condition", interval: float = 0.02):
    """Polls `condition` until it returns something true, and returns that; fails the test saying
    `what` it waited for (a string, or a callable giving one: say what was seen) when `timeout`
    seconds pass first."""
    deadline = time.monotonic() + timeout
    while True:
        result = condition()
        if result:
            return result
        if time.monotonic() > deadline:
            pytest.fail(f"gave up after {timeout:g}s waiting for {what() if callable(what) else what}", pytrace=False)
        time.sleep(interval)


# --- servers ---------------------------------------------------------------------------------------

@system_fixture(scope="session")
def pg():
    """One PostgreSQL for the session, with a `shop` database holding the sample schema."""
    with ThrowawayPostgres() as server:
        server.create_database("shop")
        load_sample_schema(server, "shop")
        yield server


@system_fixture(scope="session")
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


@system_fixture(scope="session")
def s3_server():
    """moto's S3 in this process (so that a test can reach its backend: `rot_s3_object`), one for
    the session; tests keep apart by each using buckets of its own (`s3_bucket`)."""
    import logging

    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # not a line per request
    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    server.url = f"http://127.0.0.1:{port}"
    yield server
    server.stop()


S3_REGION = "eu-west-1"


@pytest.fixture
def s3_credentials(s3_server, monkeypatch):
    """moto's fake credentials, through boto3's standard chain, for this test only."""
    for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_CONFIG_FILE", "AWS_SHARED_CREDENTIALS_FILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")  # never ask an instance for a role


def _make_s3_bucket(s3_server, **create) -> types.SimpleNamespace:
    import boto3

    client = boto3.client("s3", endpoint_url=s3_server.url, region_name=S3_REGION)
    name = f"maint-test-{uuid.uuid4().hex[:12]}"
    client.create_bucket(Bucket=name, CreateBucketConfiguration={"LocationConstraint": S3_REGION}, **create)
    return types.SimpleNamespace(name=name, client=client, endpoint_url=s3_server.url, region=S3_REGION)


@pytest.fixture
def s3_bucket(s3_server, s3_credentials):
    """A new versioned bucket: `.name`, `.client` (boto3, for the test's own setup and checks)."""
    bucket = _make_s3_bucket(s3_server)
    bucket.client.put_bucket_versioning(Bucket=bucket.name, VersioningConfiguration={"Status": "Enabled"})
    return bucket


@pytest.fixture
def s3_locked_bucket(s3_server, s3_credentials):
    """A new bucket with Object Lock enabled (and so versioned), without default retention."""
    return _make_s3_bucket(s3_server, ObjectLockEnabledForBucket=True)


def rot_s3_object(bucket: str, key: str, data: bytes) -> None:
    """Replace the current version's bytes inside moto, leaving its metadata (CRC32C, ETag, size,
    VersionId) as they were: bit rot at rest, which no API call can produce."""
    from moto.core import DEFAULT_ACCOUNT_ID
    from moto.s3.models import s3_backends

    s3_backends[DEFAULT_ACCOUNT_ID]["aws"].get_object(bucket, key).value = data


@pytest.fixture
def db_password(pg, monkeypatch):
    monkeypatch.setenv(DB_PASSWORD_ENV, pg.password)
    return pg.password


@system_fixture
def kube_api():
    """The Kubernetes API stand-in of tests/k8s_server.py, started by the test: `with kube_api(pods) as api:`."""
    from tests.k8s_server import KubeApiServer

    return KubeApiServer


# For tests of the configuration alone: write_config needs a server's address, not a running server.
NO_SERVER = types.SimpleNamespace(host="127.0.0.1", port=1, superuser="postgres")


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
    """`maint ARGV` in this process, as a flows test: the test must request `prefect_harness`."""
    from maint.cli import main

    if HARNESS not in capsys.request.fixturenames:
        pytest.fail(f"{capsys.request.node.nodeid} runs `maint {' '.join(argv)}` without the `{HARNESS}` "
                    "fixture: request it (the test is then in the flows layer)", pytrace=False)
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
