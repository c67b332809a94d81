"""Connections: libpq keywords and PG* variables from the configuration, and every psycopg error
translated into `maint.errors`, naming host:port/dbname and never the password."""

from __future__ import annotations

import os
from contextlib import contextmanager
from datetime import timedelta
from typing import Iterator

import psycopg

from maint.config import DatabaseConfig
from maint.redaction import redact
from maint.tasks.environment import resolve_secret
from maint.errors import DatabaseError, DatabaseUnavailable

# SQLSTATEs and libpq messages that mean "try again in a moment", not "you are wrong".
_UNAVAILABLE_SQLSTATES = {"57P03", "57P01", "57P02", "08006", "08001", "53300"}
_UNAVAILABLE_TEXT = ("connection refused", "starting up", "shutting down", "timeout expired",
                     "could not connect", "no route to host", "server closed the connection",
                     "connection reset", "too many clients", "in recovery mode")


def _password(db: DatabaseConfig) -> str | None:
    return resolve_secret(db.password_env, field=f"databases.{db.name}.password_env")


def connection_kwargs(db: DatabaseConfig, dbname: str | None = None, application_name: str = "maint") -> dict:
    """Keyword arguments for psycopg.connect; the password is the only secret among them."""
    kwargs = {"host": db.host, "port": db.port, "dbname": dbname or db.dbname, "user": db.user,
              "sslmode": db.sslmode, "connect_timeout": max(1, int(db.connect_timeout.total_seconds())),
              "application_name": application_name}
    if db.sslrootcert:
        kwargs["sslrootcert"] = db.sslrootcert
    password = _password(db)
    if password is not None:
        kwargs["password"] = password
    return kwargs


def client_environment(db: DatabaseConfig, dbname: str | None = None) -> dict[str, str]:
    """Environment for pg_dump/pg_restore/psql: connection by PG* variables, no command-line secret."""
    env = dict(os.environ)
    env.update({"PGHOST": db.host, "PGPORT": str(db.port), "PGDATABASE": dbname or db.dbname,
                "PGUSER": db.user, "PGSSLMODE": db.sslmode, "PGAPPNAME": "maint",
                "PGCONNECT_TIMEOUT": str(max(1, int(db.connect_timeout.total_seconds())))})
    if db.sslrootcert:
        env["PGSSLROOTCERT"] = db.sslrootcert
    password = _password(db)
    if password is not None:
        env["PGPASSWORD"] = password
    else:
        env.pop("PGPASSWORD", None)
    return env


def describe(db: DatabaseConfig, dbname: str | None = None) -> str:
    """How a database is named in messages: config name, host:port/dbname, user. No password."""
    return f"database '{db.name}' ({db.host}:{db.port}/{dbname or db.dbname} as {db.user})"


def _libpq_reason(exc: Exception) -> str:
    """The useful line of a libpq error, e.g. 'password authentication failed for user "maint"'."""
    text = str(exc).strip()
    first = text.splitlines()[0] if text else type(exc).__name__
    if "failed: " in first:
        first = first.rsplit("failed: ", 1)[1]
    return first.replace("FATAL:  ", "").strip()


def translate_connect_error(db: DatabaseConfig, exc: psycopg.Error, dbname: str | None = None) -> Exception:
    reason = redact(_libpq_reason(exc))
    sqlstate = getattr(exc, "sqlstate", None)
    lowered = str(exc).lower()
    if sqlstate in _UNAVAILABLE_SQLSTATES or any(t in lowered for t in _UNAVAILABLE_TEXT):
        return DatabaseUnavailable(f"cannot connect to {describe(db, dbname)}: {reason}")
    return DatabaseError(f"cannot connect to {describe(db, dbname)}: {reason}")


def _is_connection_loss(exc: psycopg.Error) -> bool:
    """Connection class (08), admin shutdown (57P0x), or no SQLSTATE at all (the socket went away);
    a lock or statement timeout is the query's failure, not the connection's."""
    sqlstate = getattr(exc, "sqlstate", None)
    return sqlstate is None and isinstance(exc, psycopg.OperationalError) or (
        sqlstate is not None and (sqlstate.startswith("08") or sqlstate in ("57P01", "57P02", "57P03")))


def _milliseconds(delta: timedelta) -> int:
    """0 stays 0 (no limit); anything else at least 1 ms."""
    return 0 if delta <= timedelta(0) else max(1, int(delta.total_seconds() * 1000))


def open_connection(db: DatabaseConfig, *, dbname: str | None = None, autocommit: bool = False,
                    statement_timeout: timedelta | None = None, lock_timeout: timedelta | None = None,
                    application_name: str = "maint", settings: dict[str, int] | None = None) -> psycopg.Connection:
    """A connection the caller closes; the timeouts (and `settings`, name to integer) are set at
    startup, so they bind every statement including the first."""
    kwargs = connection_kwargs(db, dbname, application_name)
    options = [f"-c {name}={int(value)}" for name, value in (settings or {}).items()]
    if statement_timeout is not None:
        options.append(f"-c statement_timeout={_milliseconds(statement_timeout)}")
    if lock_timeout is not None:
        options.append(f"-c lock_timeout={_milliseconds(lock_timeout)}")
    if options:
        kwargs["options"] = " ".join(options)
    try:
        return psycopg.connect(**kwargs, autocommit=autocommit)
    except psycopg.Error as exc:
        raise translate_connect_error(db, exc, dbname) from None  # libpq text can echo conninfo


def translate_query_error(db: DatabaseConfig, exc: psycopg.Error, dbname: str | None = None) -> DatabaseError:
    if _is_connection_loss(exc):
        return DatabaseUnavailable(f"lost connection to {describe(db, dbname)}: {redact(_libpq_reason(exc))}")
    return DatabaseError(f"query failed on {describe(db, dbname)}: {redact(_libpq_reason(exc))}")


@contextmanager
def connect(db: DatabaseConfig, *, dbname: str | None = None, autocommit: bool = False,
            statement_timeout: timedelta | None = None, lock_timeout: timedelta | None = None,
            application_name: str = "maint") -> Iterator[psycopg.Connection]:
    """open_connection, closed on exit; psycopg errors become DatabaseError naming the database."""
    conn = open_connection(db, dbname=dbname, autocommit=autocommit, statement_timeout=statement_timeout,
                           lock_timeout=lock_timeout, application_name=application_name)
    try:
        yield conn
    except psycopg.Error as exc:
        raise translate_query_error(db, exc, dbname) from exc
    finally:
        conn.close()
