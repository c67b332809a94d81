"""Restore into scratch databases: list, create and drop them (by the scratch-name rule only),
pg_restore an archive into one, and count its rows."""

from __future__ import annotations

import re
import subprocess
from datetime import timedelta

from psycopg import sql

from maint.config import DatabaseConfig
from maint.errors import DumpError
from maint.redaction import redact
from maint.restore import check_scratch_name
from maint.tasks.postgres.connection import client_environment, connect, describe
from maint.tasks.postgres.programs import StderrTail
from maint.tasks.postgres.snapshot import count_table_rows

_MISSING_ROLE = re.compile(r'role "([^"]+)" does not exist')  # the server's message; lc_messages is English


def list_databases(server: DatabaseConfig) -> list[str]:
    with connect(server, autocommit=True, statement_timeout=timedelta(seconds=30)) as conn:
        return [row[0] for row in conn.execute("SELECT datname FROM pg_database ORDER BY 1")]


def create_scratch_database(server: DatabaseConfig, name: str, *, prefix: str, protected: set[str]) -> None:
    check_scratch_name(name, prefix, protected)  # before any connection
    with connect(server, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))


def drop_scratch_database(server: DatabaseConfig, name: str, *, prefix: str, protected: set[str]) -> None:
    check_scratch_name(name, prefix, protected)  # before any connection
    with connect(server, autocommit=True) as conn:
        # FORCE: a pg_restore killed mid-way may leave sessions behind.
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


def archive_listing(path: str) -> str:
    result = subprocess.run(["pg_restore", "--list", path], capture_output=True, text=True)
    if result.returncode != 0:
        raise DumpError(f"pg_restore --list {path} failed: {result.stderr.strip()[-500:]}")
    return result.stdout


def restore_archive(server: DatabaseConfig, dbname: str, path: str, *, jobs: int, owners: bool = False) -> None:
    """pg_restore into `dbname` with `jobs` workers (the file is seekable). Unless `owners`,
    objects are owned by the restoring role and GRANTs are left out, since the scratch server need
    not have the production roles; with it, a role the dump names and the server lacks fails the
    restore, naming the role."""
    ownership = [] if owners else ["--no-owner", "--no-privileges"]
    args = ["pg_restore", *ownership, "--no-password", f"--jobs={jobs}", f"--dbname={dbname}", path]
    process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                               env=client_environment(server, dbname))
    stderr = StderrTail(process.stderr, lines=20)
    try:
        returncode = process.wait()
    except BaseException:
        process.kill()
        raise
    errors = stderr.text()
    if returncode != 0 or "error:" in errors:
        how = f"was killed by signal {-returncode}" if returncode < 0 else f"exited with status {returncode}"
        missing = sorted(set(_MISSING_ROLE.findall(errors)))
        if missing:  # only with owners: the message says what to do about it before the stderr tail
            raise DumpError(f"pg_restore into {describe(server, dbname)} {how}: the scratch server has no role "
                            f"{', '.join(missing)}, which the dump names as owner or grantee; create "
                            f"{'them' if len(missing) > 1 else 'it'} there, or set [restore_test].restore_owners = "
                            f"false to restore without owners and privileges: {redact(errors)}")
        raise DumpError(f"pg_restore into {describe(server, dbname)} {how}: {redact(errors) or 'no message'}")


def count_rows(server: DatabaseConfig, dbname: str) -> dict[str, int]:
    with connect(server, dbname=dbname, autocommit=False) as conn:
        return {t.qualified_name: t.rows for t in count_table_rows(conn)}
