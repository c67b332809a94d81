"""`maint demo`: a throwaway PostgreSQL, a sample schema, a local backup store, the duties run
through Prefect against them, and the server stopped again. Needs only Python and the
PostgreSQL server binaries (initdb, pg_ctl) on PATH. The server is
`maint.tasks.postgres.server.ThrowawayPostgres`, the one the tests and benchmarks start too.

`maint demo --ui` runs the same steps against a real Prefect server it starts
(`maint.tasks.prefect_server.LocalPrefectServer`, its home in the workdir), then serves the
deployments with `maint serve` and leaves the UI up until Ctrl-C; everything it started is
stopped on the way out.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import threading
import time
from pathlib import Path
from typing import Callable, Iterator

from maint.demo_s3 import HOW_TO_SEE_IT, OFFSITE_STORE, copy_newest_backup_offsite, offsite_store_config, s3_on_loopback
from maint.tasks.postgres.server import ThrowawayPostgres

DEMO_PASSWORD_ENV = "MAINT_DEMO_DB_PASSWORD"


SAMPLE_SCHEMA = """
CREATE TABLE customers (id bigint PRIMARY KEY, name text NOT NULL, email text UNIQUE,
                        created_at timestamptz NOT NULL DEFAULT now());
CREATE TABLE orders (id bigint PRIMARY KEY, customer_id bigint NOT NULL REFERENCES customers,
                     total_cents bigint NOT NULL, delivery_date date, placed_at timestamptz NOT NULL);
CREATE TABLE order_items (order_id bigint NOT NULL REFERENCES orders, line int NOT NULL,
                          sku text NOT NULL, quantity int NOT NULL, PRIMARY KEY (order_id, line));
CREATE TABLE events (id bigserial, at timestamptz NOT NULL, kind text NOT NULL) PARTITION BY RANGE (at);
CREATE TABLE events_2026 PARTITION OF events FOR VALUES FROM ('2026-01-01') TO ('2027-01-01');
CREATE TABLE events_2027 PARTITION OF events FOR VALUES FROM ('2027-01-01') TO ('2028-01-01');
INSERT INTO customers SELECT g, 'customer ' || g, 'c' || g || '@example.com', '2026-01-01'::timestamptz + g * interval '1 hour'
  FROM generate_series(1, 2000) g;
INSERT INTO orders SELECT g, 1 + g % 2000, (g * 37) % 100000,
  CASE WHEN g % 50 = 0 THEN NULL ELSE '2026-02-01'::date + g % 300 END, '2026-01-15'::timestamptz + g * interval '7 minutes'
  FROM generate_series(1, 20000) g;
INSERT INTO order_items SELECT o, l, 'SKU-' || ((o * l) % 500), 1 + (o + l) % 5
  FROM generate_series(1, 20000) o, generate_series(1, 3) l;
INSERT INTO events (at, kind) SELECT '2026-06-01'::timestamptz + g * interval '6 hours', 'kind-' || g % 7
  FROM generate_series(1, 1500) g;
ANALYZE;
"""


def load_sample_schema(server: ThrowawayPostgres, dbname: str) -> None:
    with server.connect(dbname) as conn:
        conn.execute(SAMPLE_SCHEMA)


def demo_config(server: ThrowawayPostgres, store_dir: Path, corrupted_dir: Path, endpoint_url: str,
                ca_file: Path, s3_endpoint: str | None = None) -> str:
    return f"""# Written by `maint demo`: a throwaway PostgreSQL and a local backup store.
timezone = "UTC"

[notify]
page_on = ["critical"]

[[databases]]
name = "demo"
host = "{server.host}"
port = {server.port}
dbname = "shop"
user = "{server.superuser}"
password_env = "{DEMO_PASSWORD_ENV}"
sslmode = "verify-full"
sslrootcert = "{ca_file}"

[[backup_stores]]
name = "demo-dumps"
url = "file://{store_dir.resolve()}/"
database = "demo"
rpo = "26h"

[[backup_stores]]
name = "demo-corrupted-copy"      # the demo copies a backup here and flips one byte of it
url = "file://{corrupted_dir.resolve()}/"
database = "demo"
rpo = "26h"
{offsite_store_config(s3_endpoint)}
[backup]
database = "demo"
store = "demo-dumps"

[health_check]
databases = ["demo"]
long_query = "5m"
idle_in_transaction = "10m"
blocked = "1m"

[[health_check.endpoints]]
url = "{endpoint_url}"
expect_status = 200
max_latency = "500ms"

[[health_check.sql_checks]]
database = "demo"
name = "orders without a delivery date"
sql = "SELECT id, placed_at FROM orders WHERE delivery_date IS NULL ORDER BY id"
severity = "warning"

[vacuum]
databases = ["demo"]
lock_timeout = "2s"
window = "10m"

[restore_test]
store = "demo-dumps"
server = "demo"                     # the demo's only server: scratch names keep them apart
scratch_prefix = "maint_scratch_"
jobs = 2

[retention]                         # the demo only shows the plan: no --apply
store = "demo-dumps"
keep_last = 1
keep_daily = 0
keep_weekly = 0
keep_monthly = 0
min_keep = 1

[dr_drill]
store = "demo-dumps"
server = "demo"
rto_target = "30m"
rpo_target = "26h"

[[certificates]]
host = "localhost"
port = {server.port}
protocol = "postgres"
ca_file = "{ca_file}"
warning_days = 28
critical_days = 14

[query_review]                      # the demo's PostgreSQL preloads pg_stat_statements
databases = ["demo"]
top = 5

[dead_mans_switch]                  # no Slack or PagerDuty here: the switch would have no one to tell
enabled = false

[schedules]
backup = "0 1 * * *"
backup-verification = "0 6 * * *"
health-check = "0 8 * * *"
vacuum = "0 3 * * 1"
restore-test = "0 4 * * 5"
backup-retention = "0 5 * * 5"
dr-drill = "0 4 1 * *"
cert-check = "0 9 * * 1"
query-review = "0 9 * * 1"
"""


def can_preload_pg_stat_statements() -> bool:
    """Whether the PostgreSQL on PATH has the pg_stat_statements library (contrib): preloading a
    library that is not there would keep the demo's server from starting at all."""
    postgres = shutil.which("postgres")
    if postgres is None:
        return False
    bindir = Path(postgres).resolve().parent
    libdirs = [bindir.parent / "lib"]
    if (bindir / "pg_config").exists():
        found = subprocess.run([str(bindir / "pg_config"), "--pkglibdir"], capture_output=True, text=True)
        libdirs.insert(0, Path(found.stdout.strip()))
    return any((d / "pg_stat_statements.so").exists() for d in libdirs)


def demo_certificates(directory: Path) -> tuple[Path, bytes, bytes]:
    """A throwaway CA and a server certificate for localhost/127.0.0.1: (CA file, chain, key)."""
    import datetime as dt
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = dt.datetime.now(dt.timezone.utc)
    ca_key, key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "maint demo CA")])
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name).public_key(ca_key.public_key())
          .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(hours=1))
          .not_valid_after(now + dt.timedelta(days=365))
          .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
          .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                       content_commitment=False, key_encipherment=False, data_encipherment=False,
                                       key_agreement=False, encipher_only=False, decipher_only=False), critical=True)
          .sign(ca_key, hashes.SHA256()))
    leaf = (x509.CertificateBuilder().subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")]))
            .issuer_name(ca_name).public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(hours=1)).not_valid_after(now + dt.timedelta(days=90))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost"),
                                                        x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                           critical=False)
            .sign(ca_key, hashes.SHA256()))
    directory.mkdir(parents=True, exist_ok=True)
    ca_file = directory / "demo-ca.pem"
    ca_file.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    key_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
    return ca_file, leaf.public_bytes(serialization.Encoding.PEM), key_pem


class _HealthEndpoint:
    def __init__(self):
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
        import threading

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):
                body = b'{"status": "ok"}'
                self.send_response(200 if self.path == "/api/v1/health" else 404)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/api/v1/health"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def shutdown(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def start_health_endpoint() -> _HealthEndpoint:
    """A local stand-in for the application's health endpoint."""
    return _HealthEndpoint()


def corrupt_a_copy(store_dir: Path, corrupted_dir: Path) -> Path:
    """Copy the newest backup and its manifest, then flip one byte in the middle of the copy."""
    newest = max(store_dir.glob("*.dump"), key=lambda p: p.stat().st_mtime)
    for stale in corrupted_dir.iterdir():
        stale.unlink()
    copy = corrupted_dir / newest.name
    shutil.copy2(newest, copy)
    shutil.copy2(Path(f"{newest}.manifest.json"), Path(f"{copy}.manifest.json"))
    with open(copy, "r+b") as f:
        middle = copy.stat().st_size // 2
        f.seek(middle)
        byte = f.read(1)
        f.seek(middle)
        f.write(bytes([byte[0] ^ 0xFF]))
    return copy


@contextlib.contextmanager
def prefect_server_for_ui(home: Path) -> Iterator[object]:
    """For `--ui`: a real Prefect server, and this process (and the flow runs it starts) pointed at
    it. Nothing has imported Prefect yet (the CLI imports it only to run a duty), so setting
    the environment is enough: `maint run` then uses this server instead of a temporary one."""
    from maint.tasks.prefect_server import LocalPrefectServer

    shutil.rmtree(home, ignore_errors=True)  # a fresh server: no runs or deployments of an earlier demo
    server = LocalPrefectServer(home)
    print(f"== starting a Prefect server on {server.api_url} (its home: {home})", flush=True)
    try:
        server.start()
        os.environ.update(PREFECT_API_URL=server.api_url, PREFECT_UI_URL=server.ui_url)
        yield server
    finally:  # also when start() itself was interrupted: its process group may be up already
        print("\n== stopping the Prefect server", flush=True)
        server.stop()


class _Interrupts:
    """Ctrl-C (or SIGTERM) and the demo. The CLI's main turns a Ctrl-C into exit 3 and returns, so
    the demo would go on to its next step: `step` notes it and stops the demo instead. SIGTERM is
    taken as a Ctrl-C, so a `kill` also stops the servers. While the demo stops what it started,
    both are ignored, so that a second one cannot leave a server behind."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self):
        self.pressed = False
        self._in_main_thread = threading.current_thread() is threading.main_thread()  # signals live there
        self._original: dict = {}

    def __enter__(self) -> "_Interrupts":
        if self._in_main_thread:
            self._original = {signum: signal.getsignal(signum) for signum in self.SIGNALS}
            if self._original[signal.SIGTERM] == signal.SIG_DFL:
                signal.signal(signal.SIGTERM, self._as_ctrl_c)
        return self

    def __exit__(self, *exc) -> None:
        for signum, handler in self._original.items():
            signal.signal(signum, handler)

    def _as_ctrl_c(self, signum, frame):
        self.pressed = True
        signal.default_int_handler(signum, frame)  # raises KeyboardInterrupt

    def step(self, run: Callable[[], int]) -> int:
        if self._in_main_thread and self._original[signal.SIGINT] == signal.default_int_handler:
            signal.signal(signal.SIGINT, self._as_ctrl_c)  # not when started with Ctrl-C ignored (`&`)
        try:
            code = run()
        finally:
            if self._in_main_thread:
                signal.signal(signal.SIGINT, self._original[signal.SIGINT])
        if self.pressed:
            raise KeyboardInterrupt
        return code

    @contextlib.contextmanager
    def ignored_on_the_way_out(self) -> Iterator[None]:
        try:
            yield
        finally:
            if self._in_main_thread:
                for signum in self.SIGNALS:
                    signal.signal(signum, signal.SIG_IGN)


def run_demo(workdir: str, run_command: Callable[[list[str]], int], *, ui: bool = False) -> int:
    """Each step is a `maint` command line, run by `run_command` (the CLI's own main), so the
    demo shows exactly what an operator would type and see. With `ui`, the runs go to a real
    Prefect server, and `maint serve` then serves the deployments until Ctrl-C."""
    started = time.monotonic()
    work = Path(workdir).resolve()
    store_dir, corrupted_dir = work / "backups", work / "corrupted-copy"
    prefect_home = work / "prefect"
    store_dir.mkdir(parents=True, exist_ok=True)
    corrupted_dir.mkdir(parents=True, exist_ok=True)
    config_file = work / "maint.toml"
    with contextlib.ExitStack() as started_here:  # stopped in reverse: PostgreSQL, then Prefect's server
        interrupts = started_here.enter_context(_Interrupts())
        prefect = started_here.enter_context(prefect_server_for_ui(prefect_home)) if ui else None
        print(f"== maint demo: starting a throwaway PostgreSQL ({shutil.which('postgres') or 'postgres'})",
              flush=True)
        ca_file, chain, key = demo_certificates(work / "tls")
        statements = can_preload_pg_stat_statements()
        settings = {"shared_preload_libraries": "pg_stat_statements"} if statements else {}
        server = started_here.enter_context(ThrowawayPostgres(tls=(chain, key), settings=settings))
        started_here.enter_context(interrupts.ignored_on_the_way_out())
        server.create_database("shop")
        load_sample_schema(server, "shop")
        if statements:  # what an operator does once; the query review itself never creates it
            with server.connect("shop", autocommit=True) as conn:
                conn.execute("CREATE EXTENSION pg_stat_statements")
        os.environ[DEMO_PASSWORD_ENV] = server.password
        endpoint = start_health_endpoint()
        s3_endpoint = started_here.enter_context(s3_on_loopback())
        config_file.write_text(demo_config(server, store_dir, corrupted_dir, endpoint.url, ca_file, s3_endpoint))
        print(f"   PostgreSQL on {server.host}:{server.port}, database 'shop' loaded with a sample schema")
        print(f"   configuration: {config_file}")
        print(f"   backup store:  file://{store_dir}/", flush=True)
        if s3_endpoint:
            print(f"   S3 (moto):     {s3_endpoint}, bucket with versioning for store {OFFSITE_STORE}", flush=True)

        def step(title: str, *argv: str) -> int:
            print(f"\n== {title}", flush=True)
            return interrupts.step(lambda: run_command(["--config", str(config_file), *argv]))

        expected_and_got = []
        for attempt in (1, 2):
            expected_and_got.append((0, step(f"maint run backup (run {attempt} of 2, through Prefect)", "run", "backup")))
        expected_and_got.append((0, step("maint run backup-verification --store demo-dumps",
                                         "run", "backup-verification", "--store", "demo-dumps")))
        if s3_endpoint:
            url = copy_newest_backup_offsite(config_file, "demo-dumps")
            print(f"\n== copied the newest backup and its manifest to {url} through maint's S3 store "
                  "(a multipart upload with a full-object CRC32C)")
            expected_and_got.append((0, step(f"maint run backup-verification --store {OFFSITE_STORE} (read back pinned "
                                             "to its VersionId, S3's CRC32C compared)", "run", "backup-verification",
                                             "--store", OFFSITE_STORE)))
        else:
            print(f"\n== {HOW_TO_SEE_IT}")
        copy = corrupt_a_copy(store_dir, corrupted_dir)
        print(f"\n== flipped one byte in the middle of a copy: {copy}")
        expected_and_got.append((2, step("maint run backup-verification --store demo-corrupted-copy "
                                         "(expected: CRITICAL)", "run", "backup-verification",
                                         "--store", "demo-corrupted-copy")))
        expected_and_got.append((1, step("maint run health-check (expected: WARNING, the sample data has orders "
                                         "without a delivery date)", "run", "health-check")))
        if prefect is None:  # else it stays up for health-check runs started from the UI
            endpoint.shutdown()
        expected_and_got.append((0, step("maint run vacuum --dry-run", "run", "vacuum", "--dry-run")))
        expected_and_got.append((0, step("maint run vacuum", "run", "vacuum")))
        expected_and_got.append((0, step("maint run restore-test", "run", "restore-test")))
        expected_and_got.append((0, step("maint run backup-retention (a dry run: nothing is deleted)",
                                         "run", "backup-retention")))
        expected_and_got.append((0, step("maint run cert-check (PostgreSQL started with ssl = on)",
                                         "run", "cert-check")))
        expected_and_got.append((0, step("maint run dr-drill (prints the drill record)", "run", "dr-drill")))
        if statements:
            expected_and_got.append((0, step("maint run query-review (the first review: the top queries, "
                                             "kept for next week's comparison)", "run", "query-review")))
        else:
            expected_and_got.append((1, step("maint run query-review (expected: WARNING, this PostgreSQL has no "
                                             "pg_stat_statements to preload)", "run", "query-review")))
        print(f"\n== files in {work}:")
        for path in sorted(work.rglob("*")):
            if path.is_file() and not path.name.startswith(".") and prefect_home not in path.parents:
                print(f"   {path.stat().st_size:>10}  {path}")
        if prefect is not None:
            elapsed = time.monotonic() - started  # the duties' time, not how long the UI stayed up
            print(f"\n== the duties ran in {elapsed:.1f}s; now `maint serve` serves their deployments on the "
                  "demo's [schedules]", flush=True)
            print(f"\n   Prefect UI: {prefect.ui_url}  (Ctrl-C to stop)"
                  f"\n   for the prefect CLI in another shell: export PREFECT_API_URL={prefect.api_url}\n", flush=True)
            # Ctrl-C (or SIGTERM) stops `prefect.serve`'s runner and it returns: `maint serve` exits 0.
            expected_and_got.append((0, run_command(["--config", str(config_file), "serve"])))
            endpoint.shutdown()
        print("\n== stopping PostgreSQL", flush=True)
    if prefect is None:
        elapsed = time.monotonic() - started
    surprises = [(e, g) for e, g in expected_and_got if e != g]
    print(f"\n== demo finished in {elapsed:.1f}s: " + (
        "every duty behaved as expected (the corrupted copy was caught)" if not surprises
        else f"{len(surprises)} step(s) did not exit as expected: {surprises}"))
    return 0 if not surprises else max(g for _, g in surprises) or 3


