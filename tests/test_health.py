"""health-check: decisions table-driven; endpoints against local HTTP(S) servers; PostgreSQL with
sessions the test opens itself (sleeping, idle in transaction, blocking, a walsender)."""

from __future__ import annotations

import ssl
import threading
import time
from datetime import timedelta

import psycopg
import pytest
import trustme
from pytest_httpserver import HTTPServer
from werkzeug import Response

from maint.health import (EndpointResult, ServerHealth, Session, SqlCheckResult, assess_connections,
                          assess_endpoint, assess_sql_check, assess_wraparound)
from maint.report import Severity
from maint.tasks.postgres.server import ThrowawayPostgres, free_port
from tests.conftest import run_json, system_fixture, wait_for

PASSWORD_ENV = "MAINT_TEST_HEALTH_PASSWORD"
MONITOR_PASSWORD = "m0nitor-pw-9a7f3c"


# --- decisions -----------------------------------------------------------------------------------

def _health(**kw) -> ServerHealth:
    base = dict(server_version="15.18", max_connections=100, reserved_connections=3, client_connections=10)
    return ServerHealth(**{**base, **kw})


@pytest.mark.parametrize("clients, severity", [(77, Severity.OK), (78, Severity.WARNING), (92, Severity.WARNING),
                                               (93, Severity.CRITICAL), (97, Severity.CRITICAL)])
def test_connections_against_usable_connections(clients, severity):
    finding = assess_connections("db", _health(client_connections=clients), 0.80, 0.95)
    assert finding.severity is severity and "of 97 usable" in finding.message


@pytest.mark.parametrize("xid, mxid, severities", [
    (1_000_000, 5, (Severity.OK, Severity.OK)),
    (2**31 // 2, 5, (Severity.WARNING, Severity.OK)),
    (2**31 * 3 // 4, 2**31 // 2, (Severity.CRITICAL, Severity.WARNING)),
    (2**31 // 2 - 1, 2**31 * 3 // 4, (Severity.OK, Severity.CRITICAL)),
])
def test_wraparound_thresholds(xid, mxid, severities):
    findings = assess_wraparound("db", _health(xid_age=("app", xid), mxid_age=("app", mxid)))
    assert tuple(f.severity for f in findings) == severities
    assert "in database 'app'" in findings[0].message


URL = "https://api.example.com/health"


@pytest.mark.parametrize("result, severity, words", [
    (EndpointResult(URL, 200, timedelta(milliseconds=30)), Severity.OK, "answered 200 in 30ms"),
    (EndpointResult(URL, 200, timedelta(seconds=3)), Severity.WARNING, "max_latency is 2s"),
    (EndpointResult(URL, 500, timedelta(milliseconds=30)), Severity.CRITICAL, "answered 500 in 30ms, expected 200"),
    (EndpointResult(URL, None, None, "timeout", "no answer within 10s"), Severity.CRITICAL, "no response"),
    (EndpointResult(URL, None, None, "connect", "Connection refused"), Severity.CRITICAL, "cannot connect"),
    (EndpointResult(URL, None, None, "tls", "self-signed certificate"), Severity.CRITICAL, "TLS error"),
])
def test_assess_endpoint(result, severity, words):
    finding = assess_endpoint(URL, 200, timedelta(seconds=2), result)
    assert finding.severity is severity and words in finding.message


def test_sql_check_passes_on_no_rows_and_quotes_the_first_rows_otherwise():
    assert assess_sql_check("c", "prod", "warning", SqlCheckResult(0, ["id"], [])).severity is Severity.OK
    failing = assess_sql_check("c", "prod", "critical", SqlCheckResult(12, ["id", "x"], [(1, "a"), (2, None)]))
    assert failing.severity is Severity.CRITICAL and "12 row(s)" in failing.message
    assert "id=1, x='a'; id=2, x=NULL" in failing.message and failing.subject == "prod: c"


def test_session_description_names_the_blocker():
    s = Session(42, "app", "web", timedelta(seconds=90), "UPDATE t SET x = 1", (7,), ("LOCK TABLE t",))
    assert s.describe() == "pid 42 (app, web) for 1m30s: UPDATE t SET x = 1, blocked by pid 7: LOCK TABLE t"


# --- endpoints against real servers --------------------------------------------------------------

@pytest.fixture(scope="module")
def ca():
    return trustme.CA()


@system_fixture(scope="module")
def tls_server(ca):
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ca.issue_cert("127.0.0.1", "localhost").configure_cert(context)
    server = HTTPServer(host="127.0.0.1", port=0, ssl_context=context)
    server.expect_request("/health").respond_with_data("ok")
    server.start()
    yield server
    server.clear()
    if server.is_running():
        server.stop()


@system_fixture
def threaded_httpserver():
    """An HTTP server answering each request in a thread of its own: pytest-httpserver's `httpserver`
    answers one request at a time, which would queue slow endpoints whatever the client does."""
    server = HTTPServer(host="127.0.0.1", port=0, threaded=True)
    server.start()
    yield server
    server.clear()
    server.stop()


def _slow(seconds: float, times: dict[str, tuple[float, float | None]]):
    """A handler answering after `seconds` (simulated latency); records in `times` when its
    request arrived and, once it has, when it was answered."""
    def handler(request):
        arrived = time.monotonic()
        times[request.path] = (arrived, None)
        time.sleep(seconds)
        times[request.path] = (arrived, time.monotonic())
        return Response("slow but fine")
    return handler


def _endpoints_toml(entries: list[tuple[str, str]]) -> str:
    return "".join(f"\n[[health_check.endpoints]]\nurl = \"{url}\"\n{extra}\n" for url, extra in entries)


def _config(tmp_path, body: str):
    path = tmp_path / "maint.toml"
    path.write_text(body)
    return path


def _findings(report: dict) -> dict[tuple[str, str], dict]:
    return {(f["check"], f["subject"]): f for f in report["findings"]}


SLOW = 1.0  # seconds each slow endpoint takes to answer, and the hanging one's timeout ("1s" below)


def test_endpoints_fast_slow_500_closed_timeout_and_tls(prefect_harness, tmp_path, capsys, threaded_httpserver,
                                                        tls_server, ca):
    httpserver = threaded_httpserver
    times: dict[str, tuple[float, float | None]] = {}
    httpserver.expect_request("/fast").respond_with_data("ok")
    for slow in ("/slow", "/slow-2", "/slow-3"):
        httpserver.expect_request(slow).respond_with_handler(_slow(SLOW, times))
    httpserver.expect_request("/hang").respond_with_handler(_slow(3 * SLOW, times))
    httpserver.expect_request("/broken").respond_with_data("boom", status=500)
    ca_file = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    closed = f"http://127.0.0.1:{free_port()}/health"
    tls_url = f"https://localhost:{tls_server.port}/health"
    entries = [(httpserver.url_for("/fast"), 'max_latency = "3s"'),  # generous: CI machines are shared
               (httpserver.url_for("/slow"), 'max_latency = "300ms"'),
               (httpserver.url_for("/hang"), 'timeout = "1s"'),
               (httpserver.url_for("/broken"), ""),
               (closed, ""),
               (tls_url, f'ca_file = "{ca_file}"'),
               (tls_url.replace("localhost", "127.0.0.1") + "?untrusted", ""),
               (httpserver.url_for("/slow-2"), 'max_latency = "3s"'),
               (httpserver.url_for("/slow-3"), 'max_latency = "3s"')]
    config = _config(tmp_path, "[health_check]\n" + _endpoints_toml(entries))

    code, report = run_json(capsys, config, "health-check")
    found = _findings(report)

    assert code == 2
    assert found[("endpoint", entries[0][0])]["severity"] == "ok"
    assert found[("endpoint", entries[1][0])]["severity"] == "warning"
    assert "max_latency is 300ms" in found[("endpoint", entries[1][0])]["message"]
    assert found[("endpoint", entries[2][0])]["severity"] == "critical"
    assert "no answer within 1s" in found[("endpoint", entries[2][0])]["message"]
    assert "answered 500" in found[("endpoint", entries[3][0])]["message"]
    assert "cannot connect" in found[("endpoint", closed)]["message"]
    assert found[("endpoint", tls_url)]["severity"] == "ok", found[("endpoint", tls_url)]
    untrusted = found[("endpoint", entries[6][0])]
    assert untrusted["severity"] == "critical" and untrusted["message"].startswith("TLS error")
    assert "certificate" in untrusted["message"].lower()
    assert found[("endpoint", entries[7][0])]["severity"] == found[("endpoint", entries[8][0])]["severity"] == "ok"
    # Concurrent: the 3 s hang was cut at 1 s and did not hold the others up. Each part's own time:
    # a slow endpoint's from its request's arrival to its answer, the hang's from its arrival to its
    # 1 s timeout. One after another the parts could not overlap, and their wall time would be at
    # least their sum (about 4 s); all at once it is about one part's.
    assert set(times) == {"/slow", "/slow-2", "/slow-3", "/hang"}, times
    parts = {path: (arrived, arrived + SLOW if path == "/hang" else answered)
             for path, (arrived, answered) in times.items()}
    total = sum(end - start for start, end in parts.values())
    wall = max(end for _, end in parts.values()) - min(start for start, _ in parts.values())
    assert total > 3.5 * SLOW, parts
    assert wall < 0.6 * total, f"the checks took {wall:.2f}s of wall time for {total:.2f}s of parts: not concurrent"


# --- PostgreSQL with real sessions ---------------------------------------------------------------

@system_fixture(scope="module")
def small_pg():
    """Its own server: max_connections low enough that the test can fill it."""
    with ThrowawayPostgres(settings={"max_connections": "12", "superuser_reserved_connections": "2"}) as server:
        with server.connect(autocommit=True) as conn:
            conn.execute(f"CREATE ROLE maint_monitor LOGIN PASSWORD '{MONITOR_PASSWORD}' IN ROLE pg_monitor")
            conn.execute("CREATE ROLE app LOGIN PASSWORD 'app-pw'")
            conn.execute("CREATE DATABASE app OWNER app")
        with server.connect("app") as conn:
            conn.execute("CREATE TABLE accounts (id int PRIMARY KEY, balance int)")
            conn.execute("INSERT INTO accounts SELECT g, 100 FROM generate_series(1, 1000) g")
            conn.execute("CREATE TABLE orders (id int, delivery_date date)")
            conn.execute("INSERT INTO orders VALUES (1, NULL), (2, '2026-01-01'), (3, NULL)")
            conn.execute("ALTER TABLE accounts OWNER TO app; ALTER TABLE orders OWNER TO app")
        yield server


def _db_config(server: ThrowawayPostgres, *, extra_health: str = "", more: str = "", port: int | None = None) -> str:
    return f"""
[[databases]]
name = "prod"
host = "{server.host}"
port = {port or server.port}
dbname = "app"
user = "maint_monitor"
password_env = "{PASSWORD_ENV}"
sslmode = "disable"
connect_timeout = "2s"
{more}

[health_check]
databases = ["prod"]
long_query = "1s"
idle_in_transaction = "1s"
blocked = "1s"
connections_warning = 0.80
connections_critical = 0.95
{extra_health}
"""


def _app_connection(server: ThrowawayPostgres, application_name: str, **kw) -> psycopg.Connection:
    return psycopg.connect(host=server.host, port=server.port, dbname="app", user="app", password="app-pw",
                           application_name=application_name, **kw)


def test_sessions_seen_as_pg_monitor_role(prefect_harness, small_pg, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv(PASSWORD_ENV, MONITOR_PASSWORD)
    sleeper = _app_connection(small_pg, "nightly-report", autocommit=True)
    idler = _app_connection(small_pg, "leaky-worker")
    holder = _app_connection(small_pg, "migration")
    waiter = _app_connection(small_pg, "checkout", autocommit=True)
    walsender = psycopg.connect(host=small_pg.host, port=small_pg.port, dbname="app", user=small_pg.superuser,
                                password=small_pg.password, application_name="replica", replication="database",
                                autocommit=True)
    threads = [threading.Thread(target=_swallow, args=(sleeper, "SELECT pg_sleep(30) /* the report */"), daemon=True),
               threading.Thread(target=_swallow, args=(walsender, "SELECT pg_sleep(30) /* walsender */"), daemon=True)]
    try:
        idler.execute("SELECT count(*) FROM orders")  # opens a transaction and leaves it open
        holder.execute("LOCK TABLE accounts IN ACCESS EXCLUSIVE MODE")
        threads.append(threading.Thread(target=_swallow, args=(waiter, "UPDATE accounts SET balance = 0 WHERE id = 1"),
                                        daemon=True))
        for t in threads:
            t.start()
        _wait_until_past_the_thresholds(small_pg)
        config = _config(tmp_path, _db_config(small_pg))

        code, report = run_json(capsys, config, "health-check")
    finally:
        for conn in (sleeper, idler, holder, waiter, walsender):
            conn.cancel_safe()
            conn.close()

    subject = f"127.0.0.1:{small_pg.port}/app"
    found = _findings(report)
    long_queries = found[("long-queries", subject)]
    assert long_queries["severity"] == "warning"
    assert "nightly-report" in long_queries["message"] and "pg_sleep(30) /* the report */" in long_queries["message"]
    assert "(app, nightly-report)" in long_queries["message"]
    assert "walsender" not in long_queries["message"], "walsenders are never long queries"
    assert "1 queries running" in long_queries["message"]
    idle = found[("idle-in-transaction", subject)]
    assert idle["severity"] == "warning" and "leaky-worker" in idle["message"] and "migration" in idle["message"]
    blocked = found[("blocked-queries", subject)]
    assert blocked["severity"] == "critical" and "checkout" in blocked["message"]
    assert "UPDATE accounts SET balance = 0" in blocked["message"]
    assert "blocked by pid" in blocked["message"] and "LOCK TABLE accounts" in blocked["message"]
    assert found[("reachable", subject)]["message"].startswith("PostgreSQL 15")
    assert found[("xid-wraparound", subject)]["severity"] == "ok"
    assert any(row["table"] == "public.accounts" for row in report["details"]["largest tables in prod"])
    assert code == 2


# What each of the test's sessions must be doing, for longer than the 1 s thresholds of _db_config,
# before the check runs: (state, running past the thresholds, in that state past them, blocked).
_PAST_THE_THRESHOLDS = {
    "nightly-report": lambda state, running, in_state, blocked: state == "active" and running,
    "replica": lambda state, running, in_state, blocked: state == "active" and running,
    "leaky-worker": lambda state, running, in_state, blocked: state == "idle in transaction" and in_state,
    "migration": lambda state, running, in_state, blocked: state == "idle in transaction" and in_state,
    "checkout": lambda state, running, in_state, blocked: blocked and running,
}


def _wait_until_past_the_thresholds(server: ThrowawayPostgres) -> None:
    seen: dict[str, tuple] = {}

    def every_session_past_the_thresholds() -> bool:
        with server.connect(autocommit=True) as conn:
            rows = conn.execute("SELECT application_name, state, clock_timestamp() - query_start > interval '1 s',"
                                " clock_timestamp() - state_change > interval '1 s',"
                                " cardinality(pg_blocking_pids(pid)) > 0"
                                " FROM pg_stat_activity WHERE application_name = ANY(%s)",
                                (list(_PAST_THE_THRESHOLDS),)).fetchall()
        seen.clear()
        seen.update({name: tuple(rest) for name, *rest in rows})
        return all(name in seen and bool(ready(*seen[name])) for name, ready in _PAST_THE_THRESHOLDS.items())

    wait_for(every_session_past_the_thresholds, what=lambda: "every session to be past the 1 s thresholds; "
             f"pg_stat_activity shows (state, running, in state, blocked) {seen}")


def _logs_once_they_name(flow_run_id: str, words: str) -> list | None:
    """The flow run's logs as the Prefect API has them, once one names `words` (they are sent in
    batches, after the run)."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId

    with get_client(sync_client=True) as client:
        logs = client.read_logs(LogFilter(flow_run_id=LogFilterFlowRunId(any_=[flow_run_id])))
    return logs if any(words in log.message for log in logs) else None


def _swallow(conn, query):
    try:
        conn.execute(query)
    except psycopg.Error:
        pass


def test_connections_near_the_limit(prefect_harness, small_pg, tmp_path, capsys, monkeypatch):
    """check_postgres' figure on the same sessions: maint's own connection and its SQL checks',
    open at the same moment, are never counted (they once made 8 sessions read as 10, critical)."""
    monkeypatch.setenv(PASSWORD_ENV, MONITOR_PASSWORD)
    held = [_app_connection(small_pg, f"pool-{i}") for i in range(8)]  # 8 of 10 usable
    # The last usable slot: a data check that is still running while the sessions are counted.
    slow_checks = """
[[health_check.sql_checks]]
database = "prod"
name = "slow check"
sql = "SELECT 1 FROM pg_sleep(1) WHERE false"
"""
    try:
        code, report = run_json(capsys, _config(tmp_path, _db_config(small_pg, extra_health=slow_checks)),
                                "health-check")
    finally:
        for conn in held:
            conn.close()
    finding = _findings(report)[("connections", f"127.0.0.1:{small_pg.port}/app")]
    assert finding["severity"] == "warning", finding
    assert "8 client connections of 10 usable (max_connections 12 minus 2 reserved): 80%" == finding["message"]


def test_the_planted_state_of_the_side_by_side_run_reads_8_of_9_every_time(prefect_harness, tmp_path, capsys,
                                                                          monkeypatch):
    """The state the health check was once run in beside check_postgres: max_connections 12, 3
    reserved, 8 client sessions, maint connecting as the superuser (into the reserved slots) with
    a data check open at the same time. It read "10 of 9 usable, 111%", critical, depending on
    timing; maint's own sessions never count, so it reads check_postgres' 89%, run after run."""
    held = []
    with ThrowawayPostgres(settings={"max_connections": "12", "superuser_reserved_connections": "3"}) as server:
        with server.connect(autocommit=True) as conn:
            conn.execute("CREATE ROLE app LOGIN PASSWORD 'app-pw'")
            conn.execute("CREATE DATABASE app OWNER app")
        monkeypatch.setenv(PASSWORD_ENV, server.password)
        body = _db_config(server, extra_health="""
[[health_check.sql_checks]]
database = "prod"
name = "slow check"
sql = "SELECT 1 FROM pg_sleep(1) WHERE false"
""").replace('user = "maint_monitor"', f'user = "{server.superuser}"')
        try:
            held = [_app_connection(server, f"pool-{i}") for i in range(8)]
            messages = []
            for _ in range(3):
                code, report = run_json(capsys, _config(tmp_path, body), "health-check")
                finding = _findings(report)[("connections", f"127.0.0.1:{server.port}/app")]
                messages.append((finding["severity"], finding["message"]))
        finally:
            for conn in held:
                conn.close()
    assert messages == [("warning", "8 client connections of 9 usable (max_connections 12 minus 3 reserved): 89%")
                        ] * 3, messages


def test_quiet_database_is_ok(prefect_harness, small_pg, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv(PASSWORD_ENV, MONITOR_PASSWORD)
    code, report = run_json(capsys, _config(tmp_path, _db_config(small_pg)), "health-check")
    assert code == 0, report["findings"]
    assert {f["check"] for f in report["findings"]} == {"reachable", "connections", "long-queries",
                                                        "idle-in-transaction", "blocked-queries",
                                                        "xid-wraparound", "mxid-wraparound"}


def test_unreachable_database_is_a_finding_and_the_others_still_run(prefect_harness, small_pg, tmp_path, capsys,
                                                                    monkeypatch, httpserver):
    monkeypatch.setenv(PASSWORD_ENV, MONITOR_PASSWORD)
    httpserver.expect_request("/fast").respond_with_data("ok")
    dead = free_port()
    body = _db_config(small_pg, more=f"""
[[databases]]
name = "down"
host = "127.0.0.1"
port = {dead}
dbname = "app"
user = "maint_monitor"
password_env = "{PASSWORD_ENV}"
connect_timeout = "2s"
""").replace('databases = ["prod"]', 'databases = ["prod", "down"]') + _endpoints_toml([(httpserver.url_for("/fast"), "")])

    code, report = run_json(capsys, _config(tmp_path, body), "health-check")

    found = _findings(report)
    down = found[("reachable", f"127.0.0.1:{dead}/app")]
    assert code == 2 and down["severity"] == "critical"
    assert f"127.0.0.1:{dead}/app" in down["message"] and MONITOR_PASSWORD not in str(report)
    assert found[("reachable", f"127.0.0.1:{small_pg.port}/app")]["severity"] == "ok"
    assert found[("endpoint", httpserver.url_for("/fast"))]["severity"] == "ok"
    # A refused connection is an expected failure: one log line, no traceback.
    logs = wait_for(lambda: _logs_once_they_name(report["details"]["flow_run_id"], f"127.0.0.1:{dead}/app"),
                    what="the run's logs to reach the API")
    assert not [log.message for log in logs if "Traceback" in log.message], [log.message for log in logs]


def test_sql_data_checks(prefect_harness, small_pg, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv(PASSWORD_ENV, MONITOR_PASSWORD)
    checks = """
[[health_check.sql_checks]]
database = "prod"
name = "orders without a delivery date"
sql = "SELECT id FROM orders WHERE delivery_date IS NULL ORDER BY id"
severity = "warning"

[[health_check.sql_checks]]
database = "prod"
name = "negative balances"
sql = "SELECT id FROM accounts WHERE balance < 0"
severity = "critical"

[[health_check.sql_checks]]
database = "prod"
name = "a check that writes"
sql = "INSERT INTO orders VALUES (99, NULL) RETURNING id"
severity = "critical"

[[health_check.sql_checks]]
database = "prod"
name = "a slow check"
sql = "SELECT 1 FROM pg_sleep(5)"
timeout = "500ms"

[[health_check.sql_checks]]
database = "prod"
name = "a check behind a lock"
sql = "SELECT id FROM ledger WHERE amount < 0"
timeout = "10s"
"""
    with small_pg.connect("app", autocommit=True) as conn:
        conn.execute("GRANT SELECT, INSERT ON orders, accounts TO maint_monitor")
        conn.execute("CREATE TABLE IF NOT EXISTS ledger (id int, amount int)")
        conn.execute("ALTER TABLE ledger OWNER TO app")
        conn.execute("GRANT SELECT ON ledger TO maint_monitor")
    locker = _app_connection(small_pg, "migration")
    try:
        locker.execute("LOCK TABLE ledger IN ACCESS EXCLUSIVE MODE")  # held until the rollback below
        code, report = run_json(capsys, _config(tmp_path, _db_config(small_pg, extra_health=checks)), "health-check")
    finally:
        locker.rollback()
        locker.close()

    found = _findings(report)
    nulls = found[("sql-check", "prod: orders without a delivery date")]
    assert nulls["severity"] == "warning" and "2 row(s) returned; first: id=1; id=3" in nulls["message"]
    assert found[("sql-check", "prod: negative balances")]["severity"] == "ok"
    writer = found[("sql-check", "prod: a check that writes")]
    assert writer["severity"] == "critical" and "read-only transaction" in writer["message"]
    slow = found[("sql-check", "prod: a slow check")]
    assert slow["severity"] == "warning" and "statement timeout" in slow["message"]
    locked = found[("sql-check", "prod: a check behind a lock")]
    assert locked["severity"] == "warning" and "lock timeout" in locked["message"], locked
    # The report says what happened; the run's log says it in one line, without a traceback.
    logs = wait_for(lambda: _logs_once_they_name(report["details"]["flow_run_id"], "lock timeout"),
                    what="the run's logs to reach the API")
    assert not [log.message for log in logs if "Traceback" in log.message], [log.message for log in logs]
    with small_pg.connect("app") as conn:
        assert conn.execute("SELECT count(*) FROM orders WHERE id = 99").fetchone()[0] == 0


# --- Kubernetes through the flow: the real client against a local API server ------------------

from tests.k8s_server import KubeApiServer, pods_in_every_state, write_kubeconfig  # noqa: E402
from tests.test_notify import PD_ENV, SLACK_ENV, _bodies, receivers  # noqa: E402,F401

KUBE_TOKEN = "kube-t0ken-not-for-logs"


def _kube_config(tmp_path, notify: str) -> str:
    return f"""
[notify]
page_on = ["critical"]
{notify}

[health_check]

[health_check.kubernetes]
namespaces = ["shop"]
max_restarts = 5
"""


def test_pods_page_and_the_page_resolves_when_the_pod_is_gone(prefect_harness, tmp_path, capsys, monkeypatch,
                                                              receivers):
    httpserver, slack_path, notify = receivers
    states = pods_in_every_state("shop")
    healthy, crashing = states["running-ready"], states["crash-loop"]
    config = _config(tmp_path, _kube_config(tmp_path, notify))

    with KubeApiServer({"shop": [healthy, crashing]}, token=KUBE_TOKEN) as api:
        monkeypatch.setenv("KUBECONFIG", str(write_kubeconfig(tmp_path / "kubeconfig", {"prod": (api.url, KUBE_TOKEN)})))
        code, report = run_json(capsys, config, "health-check")
    found = _findings(report)
    crash_subject = f"shop/{crashing['metadata']['name']}"
    assert code == 2 and found[("pods", crash_subject)]["severity"] == "critical"
    assert "CrashLoopBackOff" in found[("pods", crash_subject)]["message"]
    assert found[("pods", "namespace shop")]["message"] == "2 pods, 1 flagged"
    [trigger] = [e for e in _bodies(httpserver, "/v2/enqueue") if e["event_action"] == "trigger"]
    assert trigger["payload"]["component"] == crash_subject
    assert KUBE_TOKEN not in str(report) and all(KUBE_TOKEN not in r.get_data(as_text=True) for r, _ in httpserver.log)

    httpserver.clear_log()
    with KubeApiServer({"shop": [healthy]}, token=KUBE_TOKEN) as api:  # the controller replaced the pod
        monkeypatch.setenv("KUBECONFIG", str(write_kubeconfig(tmp_path / "kubeconfig", {"prod": (api.url, KUBE_TOKEN)})))
        code, report = run_json(capsys, config, "health-check")
    assert code == 0, report["findings"]
    events = _bodies(httpserver, "/v2/enqueue")
    assert [(e["event_action"], e["dedup_key"]) for e in events] == [("resolve", trigger["dedup_key"])]


def test_unreachable_kubernetes_api_is_one_critical_finding(prefect_harness, tmp_path, capsys, monkeypatch):
    dead = free_port()
    monkeypatch.setenv("KUBECONFIG", str(write_kubeconfig(tmp_path / "kubeconfig",
                                                          {"prod": (f"http://127.0.0.1:{dead}", KUBE_TOKEN)})))
    code, report = run_json(capsys, _config(tmp_path, _kube_config(tmp_path, "")), "health-check")
    assert code == 2
    [finding] = report["findings"]
    assert finding["check"] == "kubernetes" and finding["severity"] == "critical"
    assert f"127.0.0.1:{dead}" in finding["message"] and KUBE_TOKEN not in finding["message"]


# --- every part at once: the new ones failing never stop the others -------------------------------

class _SilentListener:
    """A TCP port that accepts connections and never answers (a hung Redis, a hung Alertmanager):
    the client's own timeout ends each attempt. Records when the first connection arrived."""

    def __init__(self):
        import socket

        self.socket = socket.create_server(("127.0.0.1", 0))
        self.port = self.socket.getsockname()[1]
        self.first_arrival: float | None = None
        self.held: list = []
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.socket.accept()
            except OSError:
                return  # closed
            if self.first_arrival is None:
                self.first_arrival = time.monotonic()
            self.held.append(conn)

    def close(self) -> None:
        self.socket.close()
        for conn in self.held:
            conn.close()


def test_hung_redis_and_alertmanager_and_a_down_node_are_findings_while_the_rest_runs_at_the_same_time(
        prefect_harness, threaded_httpserver, kube_api, tmp_path, capsys, monkeypatch):
    from datetime import UTC, datetime

    from tests.k8s_server import node

    hold = 2.0  # every part below takes this long to end, each by its own timeout or answer
    times: dict[str, tuple[float, float | None]] = {}
    threaded_httpserver.expect_request("/slow").respond_with_handler(_slow(hold, times))
    redis, alertmanager = _SilentListener(), _SilentListener()
    now = datetime.now(UTC)
    body = _endpoints_toml([(threaded_httpserver.url_for("/slow"), 'max_latency = "10s"\ntimeout = "10s"')]) + f"""
[[health_check.redis]]
url = "redis://127.0.0.1:{redis.port}/0"
timeout = "{hold:.0f}s"

[[health_check.alertmanager]]
url = "http://127.0.0.1:{alertmanager.port}"
timeout = "{hold:.0f}s"

[health_check.kubernetes]
namespaces = ["shop"]
"""
    try:
        with kube_api({"shop": []}, token=KUBE_TOKEN, nodes=[
                node("worker-1", since=now - timedelta(days=3)),
                node("worker-2", ready="Unknown", reason="NodeStatusUnknown", message="Kubelet stopped posting node status.",
                     since=now - timedelta(minutes=12))]) as api:
            monkeypatch.setenv("KUBECONFIG", str(write_kubeconfig(tmp_path / "kubeconfig", {"prod": (api.url, KUBE_TOKEN)})))
            code, report = run_json(capsys, _config(tmp_path, "[health_check]\n" + body), "health-check")
    finally:
        redis.close()
        alertmanager.close()

    found = _findings(report)
    assert code == 2
    hung_redis = found[("redis-ping", f"127.0.0.1:{redis.port}/0")]
    assert hung_redis["severity"] == "critical" and "no answer within 2s" in hung_redis["message"], hung_redis
    hung_am = found[("alertmanager", f"alertmanager 127.0.0.1:{alertmanager.port}")]
    assert hung_am["severity"] == "critical", hung_am
    down = found[("nodes", "node worker-2")]
    assert down["severity"] == "critical" and "NodeStatusUnknown" in down["message"], down
    assert found[("endpoint", threaded_httpserver.url_for("/slow"))]["severity"] == "ok"
    assert found[("pods", "namespace shop")]["severity"] == "ok"
    # All three slow parts were under way at once: each began before any other could have ended.
    started = [redis.first_arrival, alertmanager.first_arrival, times["/slow"][0]]
    assert None not in started and max(started) - min(started) < hold * 0.75, started
