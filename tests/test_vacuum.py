"""vacuum: the plan table-driven; the duty against a real PostgreSQL with bloated tables, a
never-analyzed one, a partitioned one, a hostile name, a table the role may not vacuum, locks."""

from __future__ import annotations

import itertools
import threading
import time
from datetime import datetime, timedelta, timezone

import psycopg
import pytest
from psycopg import sql

from maint.config import VacuumConfig
from maint.tasks.postgres.server import ThrowawayPostgres
from maint.report import Severity
from maint.vacuum import TableStats, estimate_bloat, not_owned_findings, plan_vacuum
from tests.conftest import run_json, system_fixture, wait_for

NOW = datetime(2026, 11, 23, 3, 0, tzinfo=timezone.utc)
POLICY = VacuumConfig(databases=["prod"], min_dead_tuples=1000, min_dead_ratio=0.10, max_xid_age=200_000_000,
                      stale_analyze=timedelta(days=7))
TENANT_PASSWORD = "tenant-pw-41d2"
PASSWORD_ENV = "MAINT_TEST_VACUUM_PASSWORD"
WEIRD = 'we"ird;name'


def stats(name="t", kind="r", live=10_000, dead=0, analyzed=timedelta(days=1), xid_age=1000, **kw) -> TableStats:
    return TableStats(schema="public", name=name, kind=kind, live_tuples=live, dead_tuples=dead, last_vacuum=None,
                      last_analyze=NOW - analyzed if analyzed is not None else None, xid_age=xid_age,
                      size_bytes=kw.pop("size_bytes", 8192 * 1000), **kw)


@pytest.mark.parametrize("table, expected", [
    (stats(dead=1000), None),  # 1000 dead of 11000: 9%, under min_dead_ratio
    (stats(dead=1200), ("vacuum", "1,200 dead tuples (11%)")),
    (stats(live=100, dead=900), None),  # a high ratio but under min_dead_tuples
    (stats(xid_age=250_000_000), ("vacuum", "xid age 250,000,000 over 200,000,000")),
    (stats(analyzed=None), ("analyze", "never analyzed")),
    (stats(analyzed=timedelta(days=8)), ("analyze", "last analyzed 8d ago")),
    (stats(analyzed=timedelta(days=6)), None),
    (stats(kind="p", live=0, dead=0, analyzed=None), ("analyze", "never analyzed")),
    (stats(kind="p", live=0, dead=50_000, xid_age=0, analyzed=timedelta(days=1)), None),  # parents never vacuumed
    (stats(dead=5000, analyzed=None), ("vacuum", "never analyzed")),  # VACUUM (ANALYZE) covers both
])
def test_plan(table, expected):
    plan = plan_vacuum([table], NOW, POLICY)
    if expected is None:
        assert plan == []
    else:
        [action] = plan
        assert action.action == expected[0] and any(expected[1] in r for r in action.reasons), action.reasons


def test_plan_puts_wraparound_danger_first_then_most_dead():
    plan = plan_vacuum([stats("a", dead=5000), stats("b", dead=50_000), stats("c", xid_age=300_000_000),
                        stats("d", analyzed=None)], NOW, POLICY)
    assert [a.table.name for a in plan] == ["c", "b", "a", "d"]


@pytest.mark.parametrize("table, estimated, words", [
    (stats(relpages=100, reltuples=1000.0, data_width=40, columns=3), False, "under 1 MB"),
    (stats(relpages=1000, reltuples=None, data_width=None, columns=3), False, "never analyzed"),
    (stats(kind="p", relpages=0), False, "partitioned"),
])
def test_bloat_not_estimated(table, estimated, words):
    estimate = estimate_bloat(table)
    assert estimate.estimated is estimated and words in estimate.reason


def test_bloat_estimate_is_fillfactor_aware():
    # 40-byte rows: 4 + 24 + 40 = 68 bytes; 8168 usable bytes per page hold 120 rows at fillfactor 100.
    full = stats(relpages=1000, reltuples=60_000.0, data_width=40, columns=3)
    assert estimate_bloat(full).bloat_bytes == (1000 - 500) * 8192
    # At fillfactor 50 only 60 rows fit a page: the same table is not bloated at all.
    assert estimate_bloat(stats(relpages=1000, reltuples=60_000.0, data_width=40, columns=3,
                                fillfactor=50)).bloat_bytes == 0


# --- against a real server -----------------------------------------------------------------------

@system_fixture(scope="module")
def vac_pg():
    with ThrowawayPostgres() as server:
        with server.connect(autocommit=True) as conn:
            conn.execute(f"CREATE ROLE tenant LOGIN PASSWORD '{TENANT_PASSWORD}'")
            conn.execute("CREATE ROLE auth_admin NOLOGIN")  # as Supabase's supabase_auth_admin
        yield server


_counter = itertools.count()


@pytest.fixture
def shop(vac_pg, monkeypatch):
    """A fresh database: tables bloated by updates and deletes (autovacuum off on them), a
    never-analyzed one, a partitioned one, a hostile name, one in public the tenant role (no
    superuser, as on Supabase) does not own, and a schema `auth` wholly owned by another role."""
    name = f"shop_{next(_counter)}"
    vac_pg.create_database(name)
    with vac_pg.connect(name, autocommit=True) as conn:
        conn.execute("GRANT ALL ON SCHEMA public TO tenant")
        conn.execute("CREATE TABLE not_mine (id int PRIMARY KEY, v text) WITH (autovacuum_enabled = off)")
        conn.execute("INSERT INTO not_mine SELECT g, 'x' FROM generate_series(1, 20000) g")
        conn.execute("ANALYZE not_mine")
        conn.execute("UPDATE not_mine SET v = 'y'")
        conn.execute("CREATE SCHEMA auth AUTHORIZATION auth_admin")
        conn.execute("GRANT USAGE ON SCHEMA auth TO tenant")
        for table in ("users", "sessions", "refresh_tokens"):
            conn.execute(sql.SQL("CREATE TABLE auth.{} (id int PRIMARY KEY) WITH (autovacuum_enabled = off)")
                         .format(sql.Identifier(table)))
            conn.execute(sql.SQL("ALTER TABLE auth.{} OWNER TO auth_admin").format(sql.Identifier(table)))
        conn.execute("INSERT INTO auth.sessions SELECT generate_series(1, 5000)")
        conn.execute("ANALYZE auth.users, auth.refresh_tokens, auth.sessions")
        conn.execute("DELETE FROM auth.sessions")
    with psycopg.connect(host=vac_pg.host, port=vac_pg.port, dbname=name, user="tenant", password=TENANT_PASSWORD,
                         autocommit=True) as conn:
        for table in ("bloated", "churned", WEIRD, "fresh"):
            conn.execute(sql.SQL("CREATE TABLE {} (id int PRIMARY KEY, v text) WITH (autovacuum_enabled = off)")
                         .format(sql.Identifier(table)))
            conn.execute(sql.SQL("INSERT INTO {} SELECT g, md5(g::text) FROM generate_series(1, 20000) g")
                         .format(sql.Identifier(table)))
            conn.execute(sql.SQL("ANALYZE {}").format(sql.Identifier(table)))
        conn.execute("UPDATE bloated SET v = v || 'x'")
        conn.execute("UPDATE bloated SET v = v || 'y'")
        conn.execute("DELETE FROM churned WHERE id % 2 = 0")
        conn.execute(sql.SQL("UPDATE {} SET v = 'z'").format(sql.Identifier(WEIRD)))
        conn.execute("CREATE TABLE never_analyzed (id int, v text) WITH (autovacuum_enabled = off)")
        conn.execute("INSERT INTO never_analyzed SELECT g, 'v' FROM generate_series(1, 5000) g")
        conn.execute("CREATE TABLE events (at date, kind text) PARTITION BY RANGE (at)")
        conn.execute("CREATE TABLE events_2026 PARTITION OF events FOR VALUES FROM ('2026-01-01') TO ('2027-01-01')"
                     " WITH (autovacuum_enabled = off)")
        conn.execute("INSERT INTO events SELECT '2026-01-01'::date + g % 300, 'k' FROM generate_series(1, 20000) g")
        conn.execute("ANALYZE events_2026")
        conn.execute("UPDATE events SET kind = 'kk'")
        conn.execute("SELECT pg_stat_force_next_flush()")
    # The statistics of the sessions above reach the shared stats when flushed, at the latest as each
    # session ends: wait until they show what the sessions did, then until every session has ended.
    dead = {"bloated": 40_000, "churned": 10_000, WEIRD: 20_000, "events_2026": 20_000, "not_mine": 20_000}
    seen = {}

    def visible() -> bool:
        seen.update(_dead_tuples(vac_pg, name))
        return all(seen.get(table) == count for table, count in dead.items())

    wait_for(visible, what=lambda: f"pg_stat_all_tables in {name} to show dead tuples {dead}; it shows {seen}")
    wait_for(lambda: _open_sessions(vac_pg, name) == 0, what=f"every session on {name} to end")
    monkeypatch.setenv(PASSWORD_ENV, TENANT_PASSWORD)
    return name


def _dead_tuples(server, dbname: str) -> dict[str, int]:
    with server.connect(dbname) as conn:
        return dict(conn.execute("SELECT relname, n_dead_tup FROM pg_stat_all_tables WHERE schemaname = 'public'"))


def _open_sessions(server, dbname: str, application_name: str | None = None) -> int:
    """Sessions on `dbname`, counted from another database so as not to be one. A session leaves
    pg_stat_activity only after its statistics were flushed."""
    with server.connect() as conn:
        return conn.execute("SELECT count(*) FROM pg_stat_activity WHERE datname = %s"
                            " AND application_name = coalesce(%s, application_name)",
                            (dbname, application_name)).fetchone()[0]


def _config(tmp_path, server: ThrowawayPostgres, dbname: str, **vacuum) -> str:
    settings = {"lock_timeout": '"1s"', "window": '"2h"', **vacuum}
    path = tmp_path / "maint.toml"
    path.write_text(f"""
[[databases]]
name = "prod"
host = "{server.host}"
port = {server.port}
dbname = "{dbname}"
user = "tenant"
password_env = "{PASSWORD_ENV}"
sslmode = "disable"

[vacuum]
databases = ["prod"]
min_dead_tuples = 1000
min_dead_ratio = 0.10
stale_analyze = "7d"
""" + "".join(f"{k} = {v}\n" for k, v in settings.items()))
    return path


def _by_subject(report: dict) -> dict[str, dict]:
    return {f["subject"]: f for f in report["findings"] if f["check"] in ("vacuum", "analyze")}


def _dead(server, dbname: str, table: str) -> int:
    with server.connect(dbname) as conn:
        return conn.execute("SELECT n_dead_tup FROM pg_stat_all_tables WHERE relname = %s", (table,)).fetchone()[0]


def test_dry_run_reports_the_plan_and_changes_nothing(prefect_harness, vac_pg, shop, tmp_path, capsys):
    from maint.cli import main

    dead_before = _dead(vac_pg, shop, "bloated")
    code = main(["--config", str(_config(tmp_path, vac_pg, shop)), "run", "vacuum", "--dry-run", "--json"])
    import json

    report = json.loads(capsys.readouterr().out)
    planned = _by_subject(report)
    assert code == 0
    assert planned["prod:public.bloated"]["message"].startswith("would VACUUM (ANALYZE): 40,000 dead tuples")
    assert planned["prod:public.churned"]["check"] == "vacuum"
    assert planned[f"prod:public.{WEIRD}"]["check"] == "vacuum"
    assert "prod:public.not_mine" not in planned, "a table the role may not vacuum is not planned"
    not_owned = {f["subject"]: f for f in report["findings"] if f["check"] == "not-owned"}
    assert set(not_owned) == {"prod:public", "prod:auth"}, "once per schema"
    assert planned["prod:public.never_analyzed"]["message"] == "would ANALYZE: never analyzed"
    assert planned["prod:public.events"]["check"] == "analyze", "a stale parent is analyzed, never vacuumed"
    assert planned["prod:public.events_2026"]["check"] == "vacuum", "partitions are judged on their own"
    assert "prod:public.fresh" not in planned
    assert _dead(vac_pg, shop, "bloated") == dead_before > 0
    rows = report["details"]["tables in prod"]
    sizes = [r["table"] for r in rows]
    assert sizes.index("public.bloated") < sizes.index("public.never_analyzed"), "largest first"
    assert {r["table"]: r["est. bloat"] for r in rows}["public.never_analyzed"].startswith("not estimated")


def test_vacuum_run_vacuums_what_it_may_and_reports_what_it_may_not(prefect_harness, vac_pg, shop, tmp_path, capsys):
    code, report = run_json(capsys, _config(tmp_path, vac_pg, shop), "vacuum")
    found = _by_subject(report)

    bloated = found["prod:public.bloated"]
    assert bloated["severity"] == "ok" and "dead tuples 40,000 -> 0" in bloated["message"]
    assert found[f"prod:public.{WEIRD}"]["severity"] == "ok"
    assert found["prod:public.never_analyzed"]["severity"] == "ok"
    # Tables it may not vacuum are not tried (no per-table warning): one note per schema instead.
    assert not [subject for subject in found if subject.startswith(("prod:public.not_mine", "prod:auth."))], found
    not_owned = {f["subject"]: f for f in report["findings"] if f["check"] == "not-owned"}
    assert set(not_owned) == {"prod:public", "prod:auth"}, not_owned
    public, auth = not_owned["prod:public"], not_owned["prod:auth"]
    assert public["severity"] == auth["severity"] == "ok"
    with vac_pg.connect() as conn:
        superuser = conn.execute("SELECT current_user").fetchone()[0]  # who made not_mine: postgres when run as root
    assert public["message"] == (f"not owned: 1 table in schema public (owned by {superuser}) skipped, tenant may "
                                 "not vacuum it; it needs vacuuming or analyzing (not_mine: 20,000 dead tuples (33%))"), public
    assert auth["message"].startswith("not owned: 3 tables in schema auth (owned by auth_admin) skipped"), auth
    assert "1 of them needs vacuuming or analyzing (sessions: 5,000 dead tuples" in auth["message"], auth
    assert "autovacuum" in auth["hint"] and "MAINTAIN" in auth["hint"]
    assert code == 0
    assert _dead(vac_pg, shop, "bloated") == 0 and _dead(vac_pg, shop, WEIRD) == 0
    assert _dead(vac_pg, shop, "not_mine") > 0
    with vac_pg.connect(shop) as conn:
        assert conn.execute("SELECT count(*) FROM pg_stats WHERE tablename = 'events' AND inherited").fetchone()[0] > 0
        assert conn.execute("SELECT last_analyze IS NOT NULL FROM pg_stat_all_tables "
                            "WHERE relname = 'never_analyzed'").fetchone()[0]


def test_a_locked_table_is_skipped_within_the_lock_timeout(prefect_harness, vac_pg, shop, tmp_path, capsys):
    holder = vac_pg.connect(shop)
    holder.execute("LOCK TABLE bloated IN ACCESS EXCLUSIVE MODE")
    try:
        started = time.monotonic()
        code, report = run_json(capsys, _config(tmp_path, vac_pg, shop), "vacuum")
        elapsed = time.monotonic() - started
    finally:
        holder.rollback()
        holder.close()
    found = _by_subject(report)
    assert "skipped: the table is locked" in found["prod:public.bloated"]["message"]
    assert found["prod:public.churned"]["severity"] == "ok", "the others are vacuumed"
    assert elapsed < 1 + 10, f"took {elapsed:.1f}s: something waited on the lock"
    assert code == 1


def test_a_concurrent_writer_never_waits_longer_than_the_lock_timeout(prefect_harness, vac_pg, shop, tmp_path, capsys):
    stop = threading.Event()
    latencies: list[float] = []

    def write() -> None:
        with vac_pg.connect(shop, autocommit=True) as conn:
            i = 0
            while not stop.is_set():
                i += 1
                started = time.monotonic()
                conn.execute("UPDATE bloated SET v = %s WHERE id = %s", (f"w{i}", 1 + i % 20000))
                latencies.append(time.monotonic() - started)

    writer = threading.Thread(target=write, daemon=True)
    writer.start()
    try:
        code, report = run_json(capsys, _config(tmp_path, vac_pg, shop, lock_timeout='"500ms"'), "vacuum")
    finally:
        stop.set()
        writer.join(timeout=10)
    assert _by_subject(report)["prod:public.bloated"]["severity"] == "ok"
    # lock_timeout plus a margin for a shared, busy CI machine's scheduling
    assert len(latencies) > 50 and max(latencies) < 0.5 + 0.5, f"a write waited {max(latencies):.2f}s"


def test_no_table_starts_after_the_window(prefect_harness, vac_pg, shop, tmp_path, capsys):
    code, report = run_json(capsys, _config(tmp_path, vac_pg, shop, window='"0s"'), "vacuum")
    found = _by_subject(report)
    assert code == 1 and found
    assert all("not started: the 0ms window had elapsed" in f["message"] for f in found.values()), found
    assert _dead(vac_pg, shop, "bloated") > 0


def test_two_jobs_vacuum_the_same_tables(prefect_harness, vac_pg, shop, tmp_path, capsys):
    code, report = run_json(capsys, _config(tmp_path, vac_pg, shop, jobs="2"), "vacuum")
    assert code == 0
    assert _dead(vac_pg, shop, "bloated") == 0 and _dead(vac_pg, shop, "churned") == 0


def test_tables_the_role_may_not_vacuum_are_not_planned_but_noted_once_per_schema():
    mine = stats("orders", dead=5000)
    theirs = [stats(name, dead=dead, owner="supabase_admin", may_vacuum=False) for name, dead in
              (("users", 0), ("sessions", 5000), ("audit_log", 0))]
    theirs = [TableStats(**{**t.__dict__, "schema": "auth"}) for t in theirs]
    assert [a.table.name for a in plan_vacuum([mine, *theirs], NOW, POLICY)] == ["orders"]
    [note] = not_owned_findings("prod", "maint", [mine, *theirs], NOW, POLICY)
    assert (note.check, note.subject, note.severity) == ("not-owned", "prod:auth", Severity.OK)
    assert note.message == ("not owned: 3 tables in schema auth (owned by supabase_admin) skipped, maint may not "
                            "vacuum them; 1 of them needs vacuuming or analyzing (sessions: 5,000 dead tuples (33%))")
    assert not_owned_findings("prod", "maint", [mine], NOW, POLICY) == []


def test_wraparound_danger_in_a_table_the_role_may_not_vacuum_is_critical():
    old = TableStats(**{**stats("refresh_tokens", xid_age=250_000_000, owner="supabase_auth_admin",
                                may_vacuum=False).__dict__, "schema": "auth"})
    [note] = not_owned_findings("prod", "maint", [old], NOW, POLICY)
    assert note.severity == Severity.CRITICAL
    assert "xid age 250,000,000 over 200,000,000" in note.message
    assert "VACUUM (FREEZE) on auth.refresh_tokens" in note.hint and "supabase_auth_admin" in note.hint


def test_plan_runs_larger_tables_first_within_a_class():
    plan = plan_vacuum([stats("small", dead=50_000, size_bytes=8192 * 10),
                        stats("big", dead=5000, size_bytes=8192 * 100_000)], NOW, POLICY)
    assert [a.table.name for a in plan] == ["big", "small"]


def _sessions(server, dbname: str) -> int:
    with server.connect(dbname) as conn:
        return conn.execute("SELECT sessions FROM pg_stat_database WHERE datname = current_database()").fetchone()[0]


def test_each_worker_keeps_one_connection_for_its_tables(prefect_harness, vac_pg, shop, tmp_path, capsys):
    before = _sessions(vac_pg, shop)
    code, report = run_json(capsys, _config(tmp_path, vac_pg, shop, jobs="1"), "vacuum")
    # The sessions' statistics reach the shared stats when they end.
    wait_for(lambda: _open_sessions(vac_pg, shop) == 0, what=f"maint's sessions on {shop} to end")
    acted_on = len(_by_subject(report))
    assert acted_on >= 6
    # The statistics read, the vacuum lock's, one vacuum worker, and _sessions' own first
    # connection; a connection per table would be one for each of the tables acted on.
    assert _sessions(vac_pg, shop) - before <= 4 < acted_on


def test_a_connection_dropped_between_tables_is_replaced(vac_pg, shop):
    from maint.config import DatabaseConfig
    from maint.vacuum import VacuumAction
    from maint.tasks.postgres import VacuumSession

    def action(name: str) -> VacuumAction:
        return VacuumAction(stats(name), "vacuum", ("test",))

    db = DatabaseConfig(name="prod", host=vac_pg.host, port=vac_pg.port, dbname=shop, user="tenant",
                        password_env=PASSWORD_ENV, sslmode="disable")
    with VacuumSession(db, lock_timeout=timedelta(seconds=1)) as session:
        assert session.run(action("bloated")).status == "done"
        with vac_pg.connect(shop, autocommit=True) as admin:
            killed = admin.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s "
                                   "AND application_name = 'maint'", (shop,)).fetchall()
        assert killed == [(True,)]
        wait_for(lambda: _open_sessions(vac_pg, shop, "maint") == 0, what="the terminated session to end")
        outcome = session.run(action("churned"))
    assert outcome.status == "done", outcome.detail
    assert _dead(vac_pg, shop, "churned") == 0


def test_bloat_made_after_pg_class_was_updated_is_estimated_from_the_dead_tuples():
    # pg_class as of the last ANALYZE: 1000 pages for 120,000 rows of 68 bytes, no bloat visible.
    stale = stats(live=120_000, dead=0, relpages=1000, reltuples=120_000.0, data_width=40, columns=3)
    assert estimate_bloat(stale).bloat_bytes == 0
    # Since then 60,000 rows were updated: 60,000 dead tuples of 68 bytes, wherever pg_class stands.
    estimate = estimate_bloat(stats(live=120_000, dead=60_000, relpages=1000, reltuples=120_000.0,
                                    data_width=40, columns=3))
    assert estimate.bloat_bytes == 60_000 * 68
    assert estimate.bloat_ratio == pytest.approx(60_000 * 68 / (1000 * 8192 + 60_000 * 68))
