"""query-review: the decision table-driven (top lists, slower, min_calls, resets, hidden texts);
pg_stat_statements read as a non-superuser from schema `extensions` of a real PostgreSQL that
preloads it (as on Supabase); the extension missing or not preloaded on the suite's shared server;
and the duty through `maint run` twice, the second seeing a query made really slower."""

from __future__ import annotations

import itertools
import json
from datetime import datetime, timedelta, timezone
from types import SimpleNamespace

import psycopg
import pytest
from psycopg import sql

from maint.config import DatabaseConfig, QueryReviewConfig
from maint.query_review import (HIDDEN_TEXT, QuerySnapshot, QueryStat, StatementsReading, review_queries, top_by_mean,
                                top_by_total, top_tables, unavailable_finding)
from maint.report import Severity
from maint.tasks.postgres.server import ThrowawayPostgres
from maint.tasks.state import SHARD_CHARS, pack_query_snapshot, unpack_query_snapshot
from tests.conftest import DB_PASSWORD_ENV, run_json, system_fixture, write_config

NOW = datetime(2026, 11, 30, 9, 0, tzinfo=timezone.utc)
WEEK_AGO = NOW - timedelta(days=7)
RESET = datetime(2026, 11, 1, tzinfo=timezone.utc)
POLICY = QueryReviewConfig(databases=["prod"], top=3, slower_warning=3.0, min_calls=10)
DB = "10.0.0.5:5432/app"


def stat(qid: int | None, calls: int, total_ms: float, query: str = "", **kw) -> QueryStat:
    return QueryStat(qid, "app", kw.pop("users", ("app",)), calls, total_ms, kw.pop("rows", calls),
                     kw.pop("hit", 0), kw.pop("read", 0), 0, kw.pop("temp_written", 0),
                     query or (HIDDEN_TEXT if qid is None else f"SELECT q{qid} FROM t WHERE id = $1"))


def snapshot(*stats: QueryStat, baselines: dict[int, float] | None = None, reset=RESET) -> QuerySnapshot:
    by_id = {s.queryid: s for s in stats}
    return QuerySnapshot(WEEK_AGO, reset, by_id, baselines or {q: s.mean_exec_ms for q, s in by_id.items()})


def checks(findings, check: str) -> list:
    return [f for f in findings if f.check == check]


# --- decisions -----------------------------------------------------------------------------------

def test_top_lists_by_total_and_by_mean_leave_hidden_statements_out():
    stats = [stat(1, 1000, 5000.0), stat(2, 10, 4000.0), stat(3, 100_000, 9000.0), stat(4, 1, 50.0),
             stat(None, 10, 99_999.0)]
    assert [s.queryid for s in top_by_total(stats, 3)] == [3, 1, 2]
    assert [s.queryid for s in top_by_mean(stats, 3)] == [2, 4, 1]  # 400 ms, 50 ms, 5 ms
    findings, kept = review_queries(DB, stats, None, POLICY, NOW, RESET)
    [top] = checks(findings, "top-queries")
    assert top.severity is Severity.OK and top.subject == DB
    assert "4 statements read" in top.message and "highest mean: queryid 2 at 400.0 ms over 10 calls" in top.message
    assert set(kept.stats) == {1, 2, 3, 4} and kept.taken_at == NOW and kept.stats_reset == RESET
    assert not checks(findings, "query-slower")  # no previous review: nothing to compare with
    tables = top_tables(stats, None, RESET, 2)
    assert [r["queryid"] for r in tables["by total time"]] == ["3", "1"]
    assert tables["by mean time"][0] == {
        "queryid": "2", "calls": 10, "total ms": 4000.0, "mean ms": 400.0, "rows": 10, "hit ratio": "-",
        "temp blocks written": 0, "calls since last review": "-", "mean ms since last review": "-", "users": "app",
        "query": "SELECT q2 FROM t WHERE id = $1"}


@pytest.mark.parametrize("before, baseline, now_calls, now_total, reset, slower", [
    # 100 calls at 10 ms before; 20 more calls since: their mean decides.
    ((100, 1000.0), 10.0, 120, 1000.0 + 20 * 30.0, RESET, "mean 30.0 ms over 20 calls since the previous review, "
                                                          "3.0x its 10.0 ms before"),
    ((100, 1000.0), 10.0, 120, 1000.0 + 20 * 29.0, RESET, None),  # 2.9x
    ((100, 1000.0), 10.0, 109, 1000.0 + 9 * 100.0, RESET, None),  # 10x, but 9 calls < min_calls
    ((100, 1000.0), 10.0, 110, 1000.0 + 10 * 100.0, RESET, "10.0x"),  # exactly min_calls
    # Counters went down: a reset (or an eviction) in between; today's reading is the whole week.
    ((100, 1000.0), 10.0, 20, 20 * 40.0, RESET, "mean 40.0 ms over 20 calls"),
    # pg_stat_statements_info says reset, though the counters grew past the old ones: from zero too.
    ((100, 1000.0), 10.0, 150, 150 * 5.0, RESET + timedelta(days=20), None),
    ((100, 1000.0), 10.0, 150, 150 * 31.0, RESET + timedelta(days=20), "mean 31.0 ms over 150 calls"),
    # The baseline is what the previous review measured, not the cumulative mean.
    ((100, 1000.0), 2.0, 120, 1000.0 + 20 * 7.0, RESET, "3.5x its 2.0 ms"),
    # Trivial statements: 5x slower, but 0.04 ms more per call is jitter.
    ((100, 1.0), 0.01, 120, 1.0 + 20 * 0.05, RESET, None),
])
def test_query_slower(before, baseline, now_calls, now_total, reset, slower):
    previous = snapshot(stat(7, *before), baselines={7: baseline})
    findings, _ = review_queries(DB, [stat(7, now_calls, now_total)], previous, POLICY, NOW, reset)
    found = checks(findings, "query-slower")
    if slower is None:
        assert found == []
    else:
        [warning] = found
        assert warning.severity is Severity.WARNING and warning.subject == f"{DB} queryid 7"
        assert slower in warning.message and "SELECT q7 FROM t WHERE id = $1" in warning.message
        assert "previous review 7d ago" in warning.message and "EXPLAIN (ANALYZE, BUFFERS)" in warning.hint
    assert bool(checks(findings, "stats-reset")) == (reset != RESET)


def test_a_query_absent_from_the_previous_snapshot_is_not_compared():
    previous = snapshot(stat(1, 100, 100.0))
    findings, kept = review_queries(DB, [stat(1, 200, 200.0), stat(2, 50, 5000.0)], previous, POLICY, NOW, RESET)
    assert checks(findings, "query-slower") == []
    assert kept.baseline_ms == {1: 1.0, 2: 100.0}  # 1: this week's 100 calls; 2: its cumulative mean


def test_the_snapshot_keeps_five_times_top_by_total_and_the_top_by_mean_and_reads_back():
    stats = [stat(q, 1000, 10_000.0 - q) for q in range(1, 40)] + [stat(99, 1, 500.0)]
    _, kept = review_queries(DB, stats, None, POLICY, NOW, RESET)
    assert set(kept.stats) == set(range(1, 16)) | {99}  # 5 x 3 by total, and the slowest mean
    again = QuerySnapshot.from_dict(json.loads(json.dumps(kept.to_dict())), DB)
    assert again.taken_at == NOW and again.stats_reset == RESET and again.baseline_ms == kept.baseline_ms
    assert {q: (s.calls, s.total_exec_ms) for q, s in again.stats.items()} == \
        {q: (s.calls, s.total_exec_ms) for q, s in kept.stats.items()}
    assert QuerySnapshot.from_dict(None) is None and QuerySnapshot.from_dict({"queries": [[1]]}) is None


def test_hidden_statements_are_a_warning_with_the_grant():
    stats = [stat(1, 10, 10.0), stat(None, 500, 12_345.0, users=("app_user",)), stat(None, 5, 5.0, users=("etl",))]
    findings, kept = review_queries(DB, stats, None, POLICY, NOW, None, role="maint_reviewer")
    [warning] = checks(findings, "stats-privilege")
    assert warning.severity is Severity.WARNING
    assert warning.message.startswith(f"505 calls taking 12s of other roles' statements (app_user, etl) show as "
                                      f"{HIDDEN_TEXT}")
    assert warning.hint.startswith("GRANT pg_read_all_stats TO maint_reviewer;")
    assert set(kept.stats) == {1}


@pytest.mark.parametrize("read, hit, temp, notes", [
    (20_000, 80_000, 0, ["cache-hit-ratio"]),  # 80% over 20,000 reads
    (2_000, 8_000, 0, []),  # 80%, but too few reads to matter
    (20_000, 400_000, 0, []),  # 95%
    (0, 100, 5_000, ["temp-files"]),
])
def test_cache_and_temp_notes_are_informational(read, hit, temp, notes):
    findings, _ = review_queries(DB, [stat(1, 100, 100.0, read=read, hit=hit, temp_written=temp)], None, POLICY,
                                 NOW, None)
    found = [f for f in findings if f.check in ("cache-hit-ratio", "temp-files")]
    assert [f.check for f in found] == notes and all(f.severity is Severity.OK for f in found)
    assert all(f.subject == f"{DB} queryid 1" for f in found)


@pytest.mark.parametrize("reason, preload, words", [
    ("not-installed", None, ["not available on this server", "contrib package", "CREATE EXTENSION"]),
    ("not-created", "", ["not created in this database", "shared_preload_libraries = 'pg_stat_statements'",
                         "CREATE EXTENSION pg_stat_statements;"]),
    ("not-created", "pg_stat_statements", ["CREATE EXTENSION pg_stat_statements;"]),
    ("not-preloaded", "auto_explain", ["not loaded via shared_preload_libraries (shared_preload_libraries is "
                                       "'auto_explain')", "restart PostgreSQL"]),
])
def test_the_extension_missing_is_a_warning_saying_how_to_enable_it(reason, preload, words):
    finding = unavailable_finding(DB, StatementsReading([], unavailable=reason, schema="extensions", preload=preload))
    assert finding.check == "pg_stat_statements" and finding.severity is Severity.WARNING
    text = finding.message + " " + finding.hint
    assert all(w in text for w in words), text
    assert "Cloud SQL" in finding.hint
    assert ("restart" in finding.hint) == (reason != "not-created" or preload == "")


def test_snapshot_shards_fit_a_prefect_variable_and_a_mixed_save_reads_as_none():
    rows = [[-9_000_000_000_000_000_000 + q, 10**9, 12345678.123, 10**9, 10**10, 10**9, 10**6, 10**6, 123.4567]
            for q in range(300)]
    snap = {"taken_at": NOW.isoformat(), "stats_reset": RESET.isoformat(), "queries": rows}
    shards = pack_query_snapshot("prod", snap)
    assert len(shards) > 1 and all(len(json.dumps(s)) <= SHARD_CHARS for s in shards)
    assert shards[0]["shards"] == len(shards)
    assert unpack_query_snapshot("prod", json.loads(json.dumps(shards))) == snap
    assert unpack_query_snapshot("staging", shards) is None
    stale = dict(shards[1], taken_at=WEEK_AGO.isoformat())
    assert unpack_query_snapshot("prod", [shards[0], stale, *shards[2:]]) is None


# --- against a real server with pg_stat_statements preloaded -------------------------------------

PASSWORDS = {"maint_reviewer": "reviewer-pw-7c1e", "maint_limited": "limited-pw-29fa", "app_user": "app-pw-5b0d"}


@system_fixture(scope="session")
def pgss():
    """A PostgreSQL that preloads pg_stat_statements (tracking nested statements too), with roles
    as on Supabase: `supabase_admin` owns the extensions schema, the maint role is no superuser."""
    with ThrowawayPostgres(settings={"shared_preload_libraries": "pg_stat_statements",
                                     "pg_stat_statements.track": "all"}) as server:
        with server.connect(autocommit=True) as conn:
            conn.execute("CREATE ROLE supabase_admin")
            for role, password in PASSWORDS.items():
                conn.execute(sql.SQL("CREATE ROLE {} LOGIN PASSWORD {}").format(sql.Identifier(role),
                                                                                sql.Literal(password)))
            conn.execute("GRANT pg_read_all_stats TO maint_reviewer")
        yield server


_databases = itertools.count()


@pytest.fixture
def app_db(pgss) -> str:
    """A fresh database (its own statements: pg_stat_statements is per database) with the extension
    in schema `extensions`, and `work(ms)`: one normalized statement whose speed the test sets."""
    name = f"app_{next(_databases)}"
    pgss.create_database(name)
    with pgss.connect(name, autocommit=True) as conn:
        conn.execute("CREATE SCHEMA extensions AUTHORIZATION supabase_admin")
        conn.execute("CREATE EXTENSION pg_stat_statements SCHEMA extensions")
        conn.execute("GRANT USAGE ON SCHEMA extensions TO maint_reviewer, maint_limited")
        conn.execute("CREATE FUNCTION work(ms float8) RETURNS void LANGUAGE sql AS $$ SELECT pg_sleep(ms / 1000) $$")
    return name


def run_as_app(server: ThrowawayPostgres, dbname: str, calls: int, ms: float) -> None:
    """The application's calls: `SELECT work($1)` each time, whatever `ms` is (one queryid)."""
    with psycopg.connect(host=server.host, port=server.port, dbname=dbname, user="app_user",
                         password=PASSWORDS["app_user"], autocommit=True) as conn:
        for _ in range(calls):
            conn.execute("SELECT work(%s)", [ms])


def work_queryid(server: ThrowawayPostgres, dbname: str) -> int:
    with server.connect(dbname) as conn:
        return conn.execute("SELECT queryid FROM extensions.pg_stat_statements WHERE query = 'SELECT work($1)'"
                            " AND toplevel AND dbid = (SELECT oid FROM pg_database WHERE datname = %s)",
                            [dbname]).fetchone()[0]


def as_role(server: ThrowawayPostgres, dbname: str, role: str, monkeypatch) -> DatabaseConfig:
    monkeypatch.setenv(DB_PASSWORD_ENV, PASSWORDS.get(role, server.password))
    return DatabaseConfig(name="prod", host=server.host, port=server.port, dbname=dbname, user=role,
                          password_env=DB_PASSWORD_ENV, sslmode="disable")


def read(db: DatabaseConfig) -> StatementsReading:
    from maint.tasks.postgres.statements import read_statements

    return read_statements(db, top=POLICY.top, statement_timeout=timedelta(seconds=10))


def test_a_pg_read_all_stats_member_reads_every_role_from_schema_extensions(pgss, app_db, monkeypatch):
    run_as_app(pgss, app_db, 12, 1.0)
    reading = read(as_role(pgss, app_db, "maint_reviewer", monkeypatch))
    assert reading.unavailable is None and reading.schema == "extensions"
    assert reading.preload is None  # pg_read_all_stats may not SHOW it; the reading works without
    assert reading.stats_reset is not None and reading.server_version
    work = next(s for s in reading.stats if s.query == "SELECT work($1)")
    assert work.queryid == work_queryid(pgss, app_db) and work.users == ("app_user",) and work.calls == 12
    assert work.total_exec_ms >= 12 * 1.0 and work.database == app_db
    assert not any(s.is_hidden for s in reading.stats)


def test_a_role_without_pg_read_all_stats_gets_the_grant_to_run(pgss, app_db, monkeypatch):
    run_as_app(pgss, app_db, 3, 0.0)
    reading = read(as_role(pgss, app_db, "maint_limited", monkeypatch))
    assert any(s.is_hidden and s.users == ("app_user",) for s in reading.stats)
    findings, _ = review_queries(app_db, reading.stats, None, POLICY, NOW, reading.stats_reset, role="maint_limited")
    [warning] = checks(findings, "stats-privilege")
    assert "app_user" in warning.message and warning.hint.startswith("GRANT pg_read_all_stats TO maint_limited;")


def test_three_times_slower_since_the_last_review_is_a_warning_and_a_reset_compares_from_zero(
        pgss, app_db, monkeypatch):
    db = as_role(pgss, app_db, "maint_reviewer", monkeypatch)
    run_as_app(pgss, app_db, 12, 1.0)
    first = read(db)
    findings, kept = review_queries(app_db, first.stats, None, POLICY, NOW, first.stats_reset)
    assert checks(findings, "query-slower") == []
    run_as_app(pgss, app_db, 12, 8.0)  # the same statement, eight times slower
    second = read(db)
    findings, kept = review_queries(app_db, second.stats, kept, POLICY, NOW + timedelta(days=7), second.stats_reset)
    queryid = work_queryid(pgss, app_db)
    slower = {f.subject: f for f in checks(findings, "query-slower")}
    assert f"{app_db} queryid {queryid}" in slower, findings
    assert "over 12 calls since the previous review" in slower[f"{app_db} queryid {queryid}"].message

    with pgss.connect(app_db, autocommit=True) as conn:  # the operator resets: never the duty
        conn.execute("SELECT extensions.pg_stat_statements_reset()")
    run_as_app(pgss, app_db, 12, 8.0)
    third = read(db)
    assert third.stats_reset > second.stats_reset
    findings, _ = review_queries(app_db, third.stats, kept, POLICY, NOW + timedelta(days=14), third.stats_reset)
    assert checks(findings, "stats-reset") and checks(findings, "query-slower") == []  # 8 ms is the baseline now


def test_a_sort_over_work_mem_is_noted_with_its_temp_blocks(pgss, app_db, monkeypatch):
    with psycopg.connect(host=pgss.host, port=pgss.port, dbname=app_db, user="app_user",
                         password=PASSWORDS["app_user"], autocommit=True) as conn:
        conn.execute("SET work_mem = '64kB'")
        conn.execute("SELECT g FROM generate_series(1, 1000000) g ORDER BY g DESC LIMIT 1 OFFSET 10")
    reading = read(as_role(pgss, app_db, "maint_reviewer", monkeypatch))
    findings, _ = review_queries(app_db, reading.stats, None, POLICY, NOW, reading.stats_reset)
    [note] = [f for f in checks(findings, "temp-files") if "generate_series" in f.message]
    assert note.severity is Severity.OK and "temp blocks written" in note.message


def test_not_preloaded_and_not_created_are_findings_on_a_server_without_the_preload(pg, monkeypatch):
    for name in ("qr_not_created", "qr_not_preloaded"):
        with pg.connect(autocommit=True) as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {}").format(sql.Identifier(name)))
        pg.create_database(name)
    with pg.connect("qr_not_preloaded", autocommit=True) as conn:
        conn.execute("CREATE EXTENSION pg_stat_statements")  # possible without the preload; reading is not
    not_created = read(as_role(pg, "qr_not_created", pg.superuser, monkeypatch))
    assert not_created.unavailable == "not-created" and not_created.preload == ""
    not_preloaded = read(as_role(pg, "qr_not_preloaded", pg.superuser, monkeypatch))
    assert not_preloaded.unavailable == "not-preloaded" and not_preloaded.schema == "public"
    finding = unavailable_finding("prod", not_preloaded)
    assert "shared_preload_libraries = 'pg_stat_statements'" in finding.hint


# --- the duty --------------------------------------------------------------------------------------

def _config(tmp_path, server: ThrowawayPostgres, dbname: str):
    reviewer = SimpleNamespace(host=server.host, port=server.port, superuser="maint_reviewer")
    return write_config(tmp_path / "maint.toml", reviewer, f"file://{tmp_path}/store/", dbname=dbname,
                        extra='query-review = "0 9 * * 1"\n\n[query_review]\ndatabases = ["prod"]\ntop = 3\n'
                              'min_calls = 10\n')


def _forget_snapshot(database: str) -> None:
    from prefect.variables import Variable

    from maint.tasks.state import _query_snapshot_variable

    for index in range(4):
        Variable.unset(_query_snapshot_variable(database, index))


def test_maint_run_query_review_twice_warns_about_the_query_that_got_slower(
        prefect_harness, pgss, app_db, tmp_path, capsys, monkeypatch):
    from maint.tasks.state import load_query_snapshot

    monkeypatch.setenv(DB_PASSWORD_ENV, PASSWORDS["maint_reviewer"])
    config = _config(tmp_path, pgss, app_db)
    _forget_snapshot("prod")  # the harness is the session's: an earlier test's review of "prod" is not ours
    run_as_app(pgss, app_db, 12, 1.0)

    code, first = run_json(capsys, config, "query-review")
    assert code == 0, first["findings"]
    assert [f["check"] for f in first["findings"] if f["severity"] != "ok"] == []
    assert first["details"]["previous review of prod"] == "none"
    table = first["details"]["top queries by total time in prod"]
    queryid = work_queryid(pgss, app_db)
    assert str(queryid) in {row["queryid"] for row in table} | {
        row["queryid"] for row in first["details"]["top queries by mean time in prod"]}
    kept = load_query_snapshot("prod")
    assert kept is not None and queryid in {row[0] for row in kept["queries"]}

    run_as_app(pgss, app_db, 12, 8.0)
    code, second = run_json(capsys, config, "query-review")
    assert code == 1
    slower = [f for f in second["findings"] if f["check"] == "query-slower"]
    address = f"{pgss.host}:{pgss.port}/{app_db}"
    assert f"{address} queryid {queryid}" in {f["subject"] for f in slower}, second["findings"]
    assert "query-slower" in second["exhaustive_checks"]
    assert second["details"]["previous review of prod"] != "none"
    assert load_query_snapshot("prod")["taken_at"] > kept["taken_at"]


def test_a_large_snapshot_is_saved_across_variables_and_read_back(prefect_harness):
    from maint.tasks.state import load_query_snapshot, save_query_snapshot

    rows = [[q, 10**9, 12345678.123, 10**9, 10**10, 10**9, 10**6, 10**6, 123.4567] for q in range(200)]
    snap = {"taken_at": NOW.isoformat(), "stats_reset": None, "queries": rows}
    save_query_snapshot("big-db", snap)
    assert load_query_snapshot("big-db") == snap
    assert load_query_snapshot("never-reviewed") is None
