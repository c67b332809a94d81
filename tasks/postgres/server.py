"""A PostgreSQL cluster started from the server binaries on PATH (initdb, pg_ctl), for the demo,
the tests and the benchmarks; never for production use."""

from __future__ import annotations

import os
import pwd
import secrets
import shutil
import subprocess
import tempfile
from pathlib import Path

import psycopg
import psycopg.sql

from maint.tasks.environment import free_port  # noqa: F401 (the tests and benchmarks import it from here)


class ThrowawayPostgres:
    """A PostgreSQL cluster in a temporary directory, on 127.0.0.1 and a free port.

    initdb refuses to run as root, so as root the cluster belongs to the `postgres` user.
    TCP connections need a password (scram-sha-256), so wrong-password cases are real."""

    def __init__(self, *, superuser: str = "postgres", settings: dict[str, str] | None = None,
                 tls: tuple[bytes, bytes] | None = None):
        self.superuser = superuser
        self.password = secrets.token_urlsafe(18)
        self.host = "127.0.0.1"
        self.port = free_port()
        self.settings = {"listen_addresses": "127.0.0.1", "fsync": "off", "synchronous_commit": "off",
                         "full_page_writes": "off", "max_connections": "50", **(settings or {})}
        self.base = Path(tempfile.mkdtemp(prefix="maint-pg-"))
        self.datadir = self.base / "data"
        self.logfile = self.base / "postgres.log"
        self._run_as = "postgres" if os.geteuid() == 0 else None
        self.tls = tls  # (certificate chain PEM, private key PEM): ssl = on

    def _run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        for program in ("initdb", "pg_ctl"):
            if args[0] == program and shutil.which(program) is None:
                raise RuntimeError(f"{program} not found on PATH: install the PostgreSQL server binaries")
        return subprocess.run(args, check=check, capture_output=True, text=True, cwd=self.base,
                              user=self._run_as, env={**os.environ, "LC_ALL": "C"})

    def start(self) -> "ThrowawayPostgres":
        if self._run_as:
            account = pwd.getpwnam(self._run_as)
            os.chown(self.base, account.pw_uid, account.pw_gid)
        pwfile = self.base / "pwfile"
        pwfile.write_text(self.password + "\n")
        if self._run_as:
            os.chown(pwfile, pwd.getpwnam(self._run_as).pw_uid, -1)
        try:
            self._run("initdb", "-D", str(self.datadir), "-U", self.superuser, "--pwfile", str(pwfile),
                      "--auth-local=trust", "--auth-host=scram-sha-256", "-E", "UTF8", "--locale=C", "--no-sync")
        except subprocess.CalledProcessError as exc:
            raise RuntimeError(f"initdb failed: {exc.stderr.strip()}") from None
        pwfile.unlink()
        if self.tls:
            self._install_tls(*self.tls)
        with open(self.datadir / "postgresql.conf", "a") as conf:
            conf.write(f"\nport = {self.port}\nunix_socket_directories = '{self.base}'\n")
            for key, value in self.settings.items():
                conf.write(f"{key} = '{value}'\n")
        try:
            self._run("pg_ctl", "-D", str(self.datadir), "-l", str(self.logfile), "-w", "-t", "60", "start")
        except subprocess.CalledProcessError:
            raise RuntimeError(f"PostgreSQL did not start:\n{self.log_tail()}") from None
        return self

    def _install_tls(self, chain: bytes, key: bytes) -> None:
        cert_file, key_file = self.base / "server.crt", self.base / "server.key"
        cert_file.write_bytes(chain)
        key_file.write_bytes(key)
        os.chmod(key_file, 0o600)  # PostgreSQL refuses a key others can read
        if self._run_as:
            account = pwd.getpwnam(self._run_as)
            for path in (cert_file, key_file):
                os.chown(path, account.pw_uid, account.pw_gid)
        self.settings.update({"ssl": "on", "ssl_cert_file": str(cert_file), "ssl_key_file": str(key_file)})

    def log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.logfile.read_text().splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def stop(self, mode: str = "fast") -> None:
        if (self.datadir / "postmaster.pid").exists():
            self._run("pg_ctl", "-D", str(self.datadir), "-m", mode, "-w", "stop", check=False)

    def restart(self) -> None:
        self._run("pg_ctl", "-D", str(self.datadir), "-l", str(self.logfile), "-m", "fast", "-w", "restart")

    def cleanup(self) -> None:
        self.stop("immediate")
        shutil.rmtree(self.base, ignore_errors=True)

    def __enter__(self) -> "ThrowawayPostgres":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.cleanup()

    def connect(self, dbname: str = "postgres", **kwargs) -> psycopg.Connection:
        return psycopg.connect(host=self.host, port=self.port, user=self.superuser, password=self.password,
                               dbname=dbname, **kwargs)

    def create_database(self, name: str) -> None:
        with self.connect(autocommit=True) as conn:
            conn.execute(psycopg.sql.SQL("CREATE DATABASE {}").format(psycopg.sql.Identifier(name)))
