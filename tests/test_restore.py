"""restore-test: the name guard, validation, and real restores from both stores, corrupt backups,
manifests that disagree, and a run killed mid-restore."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from maint.backups import TableCount
from maint.errors import ConfigError
from maint.restore import (ScratchNameRefused, check_scratch_name, leftover_scratch_databases, scratch_name,
                           toc_tables, validate_row_counts)
from tests.conftest import DB_PASSWORD_ENV, NO_SERVER, Poller, run_json, wait_for, write_config

PREFIX = "maint_scratch_"
NOW = datetime(2026, 11, 27, 4, 0, tzinfo=timezone.utc)


@pytest.mark.parametrize("name", ["postgres", "template1", "shop", "maint_scratch_", "maint_scratch_x",
                                  "scratch_20261127040000", "maint_scratch_20261127040000; DROP DATABASE shop",
                                  "maint_scratch_2026112704000"])
def test_name_guard_refuses(name):
    with pytest.raises(ScratchNameRefused, match="refusing to create or drop database"):
        check_scratch_name(name, PREFIX, {"shop"})


def test_name_guard_accepts_only_generated_names():
    name = scratch_name(PREFIX, NOW)
    assert name == "maint_scratch_20261127040000"
    check_scratch_name(name, PREFIX, {"shop"})


def test_the_guard_runs_before_any_connection():
    """Pointed at a closed port, the refusal still comes first: no connection was tried."""
    from maint.config import DatabaseConfig
    from maint.tasks.postgres import drop_scratch_database

    nowhere = DatabaseConfig(name="x", host="127.0.0.1", port=1, dbname="postgres", user="u")
    with pytest.raises(ScratchNameRefused):
        drop_scratch_database(nowhere, "shop", prefix=PREFIX, protected={"shop"})


def test_leftovers_are_only_old_generated_names():
    names = ["postgres", "shop", "maint_scratch_20261126040000", "maint_scratch_20261127035900", "maint_scratch_x"]
    assert leftover_scratch_databases(names, PREFIX, NOW, timedelta(hours=6)) == ["maint_scratch_20261126040000"]


def test_validation_names_table_expected_and_found():
    findings = validate_row_counts("gs://b/db/", [TableCount("public", "orders", 20000), TableCount("public", "x", 1)],
                                   {"public.orders": 19999})
    assert [f.message for f in findings] == [
        "table public.orders: expected 20,000 rows (manifest), found 19,999",
        "table public.x is missing from the restore (manifest: 1 rows)"]


def test_toc_tables():
    listing = ";\n; Archive created at ...\n3345; 0 16390 TABLE DATA public customers postgres\n" \
              "3346; 0 16400 TABLE DATA public orders postgres\n215; 1259 16390 TABLE public customers postgres\n"
    assert toc_tables(listing) == ["public.customers", "public.orders"]


def test_toc_tables_with_spaces_in_names():
    listing = "3345; 0 16390 TABLE DATA public order items postgres\n" \
              "3346; 0 16400 TABLE DATA my schema t app owner\n"
    # Unquoted in the listing: the reading that names a restored table wins...
    assert toc_tables(listing, {"public.order items", "my schema.t"}) == ["public.order items", "my schema.t"]
    # ...else the schema and the owner are taken as one word each.
    assert toc_tables(listing) == ["public.order items", "my.schema t app"]


# --- real restores -------------------------------------------------------------------------------

def _restore_config(tmp_path, pg, store_url: str, extra: str = "") -> Path:
    return write_config(tmp_path / "maint.toml", pg, store_url, more_stores="", extra=f"""
[restore_test]
store = "prod-dumps"
server = "prod"
scratch_prefix = "{PREFIX}"
jobs = 2
leftover_age = "0s"
{extra}
""")


def _scratch_databases(pg) -> list[str]:
    with pg.connect() as conn:
        return [r[0] for r in conn.execute("SELECT datname FROM pg_database WHERE datname LIKE 'maint\\_scratch\\_%'")]


@pytest.fixture(scope="module")
def backed_up(pg, prefect_harness, tmp_path_factory):
    """A store holding one backup made by the backup duty."""
    from maint.flows.backup import backup

    store = tmp_path_factory.mktemp("restore-store")
    config = write_config(tmp_path_factory.mktemp("cfg") / "maint.toml", pg, f"file://{store}/")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv(DB_PASSWORD_ENV, pg.password)
        assert backup(config_path=str(config))["status"] == "ok"
    return store


def _copy_store(source: Path, target: Path, mutate=None) -> Path:
    target.mkdir()
    for path in source.iterdir():
        data = path.read_bytes()
        if mutate:
            data = mutate(path.name, data)
        (target / path.name).write_bytes(data)
    return target


def test_good_backup_restores_with_exact_counts_from_a_local_store(pg, db_password, prefect_harness, tmp_path, capsys,
                                                                    backed_up):
    code, report = run_json(capsys, _restore_config(tmp_path, pg, f"file://{backed_up}/"), "restore-test")
    assert code == 0, report["findings"]
    messages = {f["check"]: f["message"] for f in report["findings"]}
    assert "the measured RTO of this backup" in messages["restore"]
    assert messages["validation"].startswith("all 5 tables of the manifest restored with exactly its row counts")
    assert {"download_seconds", "restore_seconds", "validation_seconds", "total_seconds"} <= set(report["details"])
    assert _scratch_databases(pg) == []


def test_good_backup_restores_from_gcs(pg, db_password, prefect_harness, tmp_path, capsys, backed_up, gcs_bucket):
    for path in backed_up.iterdir():
        gcs_bucket.blob(f"db/{path.name}").upload_from_filename(str(path))
    code, report = run_json(capsys, _restore_config(tmp_path, pg, f"gs://{gcs_bucket.name}/db/"), "restore-test")
    assert code == 0, report["findings"]
    assert _scratch_databases(pg) == []


def test_manifest_that_disagrees_fails_naming_the_table(pg, db_password, prefect_harness, tmp_path, capsys, backed_up):
    def lie(name: str, data: bytes) -> bytes:
        if not name.endswith(".manifest.json"):
            return data
        manifest = json.loads(data)
        for table in manifest["tables"]:
            if table["table"] == "orders":
                table["rows"] += 1
        return json.dumps(manifest).encode()

    store = _copy_store(backed_up, tmp_path / "lying", lie)
    code, report = run_json(capsys, _restore_config(tmp_path, pg, f"file://{store}/"), "restore-test")
    [bad] = [f for f in report["findings"] if f["severity"] == "critical"]
    assert code == 2 and bad["message"] == "table public.orders: expected 20,001 rows (manifest), found 20,000"
    assert _scratch_databases(pg) == []


def test_corrupt_backup_fails_and_the_scratch_database_is_gone(pg, db_password, prefect_harness, tmp_path, capsys,
                                                                backed_up):
    def flip(name: str, data: bytes) -> bytes:
        if name.endswith(".dump"):
            middle = len(data) // 2
            return data[:middle] + bytes([data[middle] ^ 0xFF]) + data[middle + 1:]
        return data

    store = _copy_store(backed_up, tmp_path / "corrupt", flip)
    code, report = run_json(capsys, _restore_config(tmp_path, pg, f"file://{store}/"), "restore-test")
    [bad] = [f for f in report["findings"] if f["severity"] == "critical"]
    assert code == 2 and "pg_restore" in bad["message"]
    assert _scratch_databases(pg) == []


def test_sql_checks_run_on_the_scratch_database(pg, db_password, prefect_harness, tmp_path, capsys, backed_up):
    extra = """
[[restore_test.sql_checks]]
database = "prod"
name = "orders without a delivery date"
sql = "SELECT id FROM orders WHERE delivery_date IS NULL"
severity = "warning"
"""
    code, report = run_json(capsys, _restore_config(tmp_path, pg, f"file://{backed_up}/", extra), "restore-test")
    [check] = [f for f in report["findings"] if f["check"] == "sql-check"]
    assert code == 1 and check["severity"] == "warning" and "400 row(s)" in check["message"]


@pytest.fixture(scope="module")
def big_backup(pg, prefect_harness, tmp_path_factory):
    """A backup big enough that its restore can be interrupted."""
    from maint.flows.backup import backup

    pg.create_database("restore_big")
    with pg.connect("restore_big") as conn:
        conn.execute("CREATE TABLE blobs AS SELECT g AS id, md5(g::text) || md5((g * 7)::text) AS body "
                     "FROM generate_series(1, 1500000) g")
    store = tmp_path_factory.mktemp("big-store")
    config = write_config(tmp_path_factory.mktemp("cfg") / "maint.toml", pg, f"file://{store}/", dbname="restore_big")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv(DB_PASSWORD_ENV, pg.password)
        assert backup(config_path=str(config))["status"] == "ok"
    return store


def test_a_run_killed_mid_restore_leaves_a_scratch_database_the_next_run_removes(pg, db_password, prefect_harness,
                                                                                 tmp_path, capsys, big_backup):
    from prefect.settings import PREFECT_API_URL

    config = _restore_config(tmp_path, pg, f"file://{big_backup}/")
    env = {**os.environ, "PREFECT_API_URL": PREFECT_API_URL.value(), DB_PASSWORD_ENV: pg.password}
    run = subprocess.Popen([sys.executable, "-m", "maint.cli", "--config", str(config), "run", "restore-test"],
                           env=env, stdout=open(tmp_path / "run.log", "w"), stderr=subprocess.STDOUT, start_new_session=True)

    def restoring() -> bool:
        return bool(_scratch_databases(pg)) and _pg_restore_running()

    killer = Poller(restoring, lambda: os.killpg(run.pid, signal.SIGKILL), timeout=120)
    killer.start()
    run.wait(timeout=180)
    killer.stop.set()
    assert killer.fired.is_set(), (tmp_path / "run.log").read_text()[-3000:]
    [left] = _scratch_databases(pg)

    # leftover_age is 0s, but names have second resolution: the next run's own scratch database must
    # not get the leftover's name.
    wait_for(lambda: scratch_name(PREFIX, datetime.now(timezone.utc)) > left, timeout=5,
             what=f"the clock to pass the second {left} is named after")
    code, report = run_json(capsys, config, "restore-test")
    leftovers = [f for f in report["findings"] if f["check"] == "leftovers"]
    assert [f["message"] for f in leftovers] == [
        f"dropped scratch database {left}, left behind by a crashed earlier run"]
    assert _scratch_databases(pg) == []
    assert code == 1  # the restore itself passed; the leftover is a warning


def _pg_restore_running() -> bool:
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                args = (entry / "cmdline").read_bytes().split(b"\0")[:2]
            except OSError:
                continue
            # Debian's pg_restore is a perl wrapper that execs /usr/lib/postgresql/NN/bin/pg_restore.
            if any(arg.rsplit(b"/", 1)[-1] == b"pg_restore" for arg in args):
                return True
    return False


def test_scratch_prefix_must_be_a_safe_identifier(tmp_path, monkeypatch):
    from maint.tasks.environment import load_config

    monkeypatch.setenv(DB_PASSWORD_ENV, "only-read-by-the-config-check")
    config = _restore_config(tmp_path, NO_SERVER, f"file://{tmp_path}/").read_text().replace(
        f'scratch_prefix = "{PREFIX}"', 'scratch_prefix = "Prod"')
    (tmp_path / "bad.toml").write_text(config)
    with pytest.raises(ConfigError, match="restore_test.scratch_prefix"):
        load_config(tmp_path / "bad.toml")


def test_a_backup_from_another_tool_is_validated_against_its_table_of_contents(pg, db_password, prefect_harness,
                                                                                tmp_path, capsys):
    """No manifest: every TABLE DATA entry of the archive must be restored, names with spaces too."""
    pg.create_database("spaced")
    with pg.connect("spaced", autocommit=True) as conn:
        conn.execute('CREATE SCHEMA "north wing"')
        conn.execute('CREATE TABLE "north wing"."order items" (id int)')
        conn.execute('INSERT INTO "north wing"."order items" VALUES (1), (2)')
        conn.execute("CREATE TABLE plain (id int)")
    store = tmp_path / "store"
    store.mkdir()
    env = {**os.environ, "PGPASSWORD": pg.password}
    subprocess.run(["pg_dump", "--format=custom", "-h", pg.host, "-p", str(pg.port), "-U", pg.superuser,
                    "-f", str(store / "spaced-nightly.dump"), "spaced"], check=True, env=env)

    code, report = run_json(capsys, _restore_config(tmp_path, pg, f"file://{store}/"), "restore-test")
    assert code == 0, report["findings"]
    messages = {f["check"]: f["message"] for f in report["findings"]}
    assert messages["validation"].startswith("all 2 tables of the archive's table of contents restored")
    assert _scratch_databases(pg) == []


def test_a_dump_naming_roles_the_scratch_server_lacks_restores_without_owners_unless_told_to_keep_them(
        pg, db_password, prefect_harness, tmp_path, capsys):
    """A managed service's dump (Supabase's) names roles a scratch server has not got: by default
    it restores owned by the restoring role, without GRANTs; with restore_owners it keeps owners
    and GRANTs, which proves them where the roles exist and names each missing one where not."""
    owner, reader = "managed_app_owner", "managed_reader"
    with pg.connect(autocommit=True) as conn:
        conn.execute(f"CREATE ROLE {owner} NOLOGIN")
        conn.execute(f"CREATE ROLE {reader} NOLOGIN")
    pg.create_database("managed")
    with pg.connect("managed", autocommit=True) as conn:
        conn.execute("CREATE TABLE accounts (id int PRIMARY KEY, email text)")
        conn.execute("INSERT INTO accounts SELECT g, 'a' || g FROM generate_series(1, 100) g")
        conn.execute(f"ALTER TABLE accounts OWNER TO {owner}")
        conn.execute(f"GRANT SELECT ON accounts TO {reader}")
    store = tmp_path / "store"
    store.mkdir()
    subprocess.run(["pg_dump", "--format=custom", "-h", pg.host, "-p", str(pg.port), "-U", pg.superuser,
                    "-f", str(store / "managed-nightly.dump"), "managed"], check=True,
                   env={**os.environ, "PGPASSWORD": pg.password})

    def restore_test(owners: bool, check_sql: str) -> tuple[int, dict]:
        extra = f"""restore_owners = {str(owners).lower()}

[[restore_test.sql_checks]]
database = "prod"
name = "ownership as expected"
sql = "{check_sql}"
"""
        return run_json(capsys, _restore_config(tmp_path, pg, f"file://{store}/", extra), "restore-test")

    # The roles exist: restore_owners keeps the owner and the GRANT (the check returns no row).
    code, report = restore_test(True, f"SELECT tablename FROM pg_tables WHERE tablename = 'accounts' AND "
                                      f"(tableowner <> '{owner}' OR NOT has_table_privilege('{reader}', "
                                      f"'public.accounts', 'SELECT'))")
    assert code == 0, report["findings"]

    with pg.connect(autocommit=True) as conn:
        conn.execute("DROP DATABASE IF EXISTS managed")
        conn.execute(f"DROP ROLE {owner}")
        conn.execute(f"DROP ROLE {reader}")

    # The roles are gone: by default everything is the restoring role's, and it restores.
    code, report = restore_test(False, "SELECT tablename FROM pg_tables WHERE schemaname = 'public' "
                                       "AND tableowner <> current_user")
    assert code == 0, report["findings"]
    assert {f["check"]: f["severity"] for f in report["findings"]}["sql-check"] == "ok"

    # restore_owners with the roles missing: critical, naming both roles and the switch.
    code, report = restore_test(True, "SELECT 1 WHERE false")
    [bad] = [f for f in report["findings"] if f["severity"] == "critical"]
    assert code == 2 and f"no role {owner}, {reader}, which the dump names" in bad["message"], bad
    assert "restore_owners = false" in bad["message"], bad
    assert _scratch_databases(pg) == []
