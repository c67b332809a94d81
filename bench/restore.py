"""Benchmark: maint's restore test against a plain `pg_restore -j 2`, on the same dump, in one run.

    .venv/bin/python bench/restore.py [--size-mib 500] [--repeat 1] [--jobs 2] [--workdir DIR] [--keep]

Starts a throwaway PostgreSQL (maint.tasks.postgres.server.ThrowawayPostgres, max_wal_size raised so checkpoints
come from the explicit CHECKPOINT before every timed run rather than at random) and a Prefect API
(the test harness). Fills a database with a small shop: customers, orders, order_items,
documents (poorly compressible base64 bodies) and events (jsonb), with primary keys, secondary
indexes, a unique index and foreign keys, so a restore has COPY, index and FK work for its
workers. The rows per "order" are calibrated on a tiny database first so that the custom-format
dump comes out at about --size-mib. Each database is backed up by maint's own `backup` duty into a
local file:// store (so the dump has a manifest with exact row counts), then dropped.

Warm-up (untimed): the tiny database's backup and one `restore-test` flow run on its store, so the
Prefect API's startup and the first flow run's imports are not counted.

Then, `--repeat` rounds on the large dump (alternating which goes first), each after a CHECKPOINT:

  plain   createdb bench_plain_N && pg_restore -j JOBS --no-owner -d bench_plain_N FILE
          (PG* environment variables and PGPASSWORD), then, untimed: table sizes, exact counts of
          every table twice (what maint's validation does: the first pass on a fresh restore also
          sets hint bits), and DROP DATABASE;
  maint   the whole `restore-test` flow in-process as `maint run` runs it
          (flows._duty.run_now(flows.restore_test.restore_test, ...); with --prefect-defaults the
          flow called directly, Prefect's flow-run heartbeat on, as under a deployment) on the same
          store, [restore_test] jobs = JOBS, server = the same [[databases]] entry: find the
          newest backup, fetch it (a local store's file is used in place), create the scratch
          database, pg_restore, validate every table's exact row count against the manifest,
          drop the scratch database, publish the report.

For every timed run it also records the CPU seconds of this benchmark's own processes (this
Python, its children such as pg_restore and the Prefect API server, and every PostgreSQL
backend) and of the whole machine from /proc, so CPU taken by other processes on a shared
machine is visible.

Prints both wall times, maint's own phase timings from the report's details (download, restore,
validation, total), the ratio maint / plain with PASS/FAIL against the 1.10 target, how much of
maint's time is validation, and the ratio of maint's restore phase alone to the plain run. A
measurement, not a test: exits 0 whatever the figures, non-zero only if the benchmark breaks.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

# Importing _common also puts this checkout on sys.path, for the imports of maint and flows.
from _common import (MIB, descendants, drop_database, in_parallel, libpq_env, load_average, machine_cpu, make_backup,
                     postgres_bin_on_path, postmaster_pid, prefect_api, prefect_telemetry_off, process_table,
                     say, timed_command, timed_ok_run, verdict, workdir, write_backup_config)

prefect_telemetry_off()
postgres_bin_on_path()

from psycopg import sql  # noqa: E402

from maint.tasks.postgres.server import ThrowawayPostgres  # noqa: E402

PASSWORD_ENV = "MAINT_BENCH_RESTORE_PASSWORD"
RATIO_TARGET = 1.10
SCRATCH_PREFIX = "maint_scratch_"
TINY_MIB = 4
_GUESS_DUMP_BYTES_PER_UNIT = 320.0  # one order and what hangs off it; calibrated on the tiny database
_BATCH_UNITS = 50_000
SERVER_SETTINGS = {"max_wal_size": "4GB", "checkpoint_timeout": "30min"}
DISTURBED_SHARE = 0.10  # a run during which other processes took more of the machine's CPU is "disturbed"


# --- data -----------------------------------------------------------------------------------------

SCHEMA = """
CREATE TABLE customers (id bigint NOT NULL, name text NOT NULL, email text NOT NULL, country char(2) NOT NULL,
                        created_at timestamptz NOT NULL);
CREATE TABLE orders (id bigint NOT NULL, customer_id bigint NOT NULL, status text NOT NULL,
                     total_cents bigint NOT NULL, currency char(3) NOT NULL, placed_at timestamptz NOT NULL,
                     note text);
CREATE TABLE order_items (order_id bigint NOT NULL, line int NOT NULL, sku text NOT NULL, quantity int NOT NULL,
                          price_cents bigint NOT NULL);
CREATE TABLE documents (id bigint NOT NULL, order_id bigint NOT NULL, kind text NOT NULL, body text NOT NULL);
CREATE TABLE events (id bigint NOT NULL, at timestamptz NOT NULL, kind text NOT NULL, payload jsonb NOT NULL);
"""

# One "unit" is one order: 3 items, half a document, 2 events, a tenth of a customer.
LOADS = {
    "customers": """INSERT INTO customers SELECT g, 'Customer ' || g, 'c' || g || '@example.com',
        (ARRAY['TW','DE','US','FR','JP'])[1 + g %% 5], '2020-01-01'::timestamptz + g * interval '37 seconds'
        FROM generate_series(%(lo)s::bigint, %(hi)s::bigint) g""",
    "orders": """INSERT INTO orders SELECT g, 1 + (g * 7919) %% %(customers)s,
        (ARRAY['placed','paid','shipped','delivered','returned'])[1 + g %% 5], (g * 7717) %% 500000, 'EUR',
        '2021-01-01'::timestamptz + g * interval '17 seconds',
        CASE WHEN g %% 4 = 0 THEN NULL ELSE 'gift note ' || md5(g::text) END
        FROM generate_series(%(lo)s::bigint, %(hi)s::bigint) g""",
    "order_items": """INSERT INTO order_items SELECT o, l, 'SKU-' || lpad(((o * l * 31) %% 20000)::text, 6, '0'),
        1 + (o + l) %% 5, 100 + (o * 13 + l * 7) %% 99900
        FROM generate_series(%(lo)s::bigint, %(hi)s::bigint) o, generate_series(1, 3) l""",
    "documents": """INSERT INTO documents SELECT g / 2, g, 'invoice',
        encode(sha512(('a' || g)::bytea) || sha512(('b' || g)::bytea) || sha512(('c' || g)::bytea)
               || sha512(('d' || g)::bytea), 'base64')
        FROM generate_series(%(lo)s::bigint, %(hi)s::bigint) g WHERE g %% 2 = 0""",
    "events": """INSERT INTO events SELECT 2 * g + k, '2021-01-01'::timestamptz + g * interval '17 seconds'
        + k * interval '1 minute', (ARRAY['view','cart','checkout','payment'])[1 + (g + k) %% 4],
        jsonb_build_object('order_id', g, 'ip', '10.' || (g %% 256) || '.' || (g / 256 %% 256) || '.' || k,
                           'agent', 'Mozilla/5.0 (X11; Linux x86_64) shop-frontend/4.2', 'session', md5(g::text || k))
        FROM generate_series(%(lo)s::bigint, %(hi)s::bigint) g, generate_series(0, 1) k""",
}

CONSTRAINTS = [  # phase 1: keys and indexes, phase 2: foreign keys (need the referenced keys)
    ["ALTER TABLE customers ADD PRIMARY KEY (id)",
     "CREATE UNIQUE INDEX customers_email ON customers (email)",
     "ALTER TABLE orders ADD PRIMARY KEY (id)",
     "CREATE INDEX orders_customer_id ON orders (customer_id)",
     "CREATE INDEX orders_placed_at ON orders (placed_at)",
     "ALTER TABLE order_items ADD PRIMARY KEY (order_id, line)",
     "CREATE INDEX order_items_sku ON order_items (sku)",
     "ALTER TABLE documents ADD PRIMARY KEY (id)",
     "ALTER TABLE events ADD PRIMARY KEY (id)",
     "CREATE INDEX events_at ON events (at)"],
    ["ALTER TABLE orders ADD FOREIGN KEY (customer_id) REFERENCES customers",
     "ALTER TABLE order_items ADD FOREIGN KEY (order_id) REFERENCES orders",
     "ALTER TABLE documents ADD FOREIGN KEY (order_id) REFERENCES orders"],
]


def generate(server: ThrowawayPostgres, dbname: str, units: int) -> float:
    started = time.monotonic()
    server.create_database(dbname)
    with server.connect(dbname, autocommit=True) as conn:
        conn.execute(SCHEMA)
    customers = max(1, units // 10)
    jobs: list[tuple[str, dict | None]] = []
    for table, statement in LOADS.items():
        count = customers if table == "customers" else units
        for lo in range(1, count + 1, _BATCH_UNITS):
            params = {"lo": lo, "hi": min(lo + _BATCH_UNITS - 1, count), "customers": customers}
            jobs.append((statement, params))
    in_parallel(server, dbname, jobs)
    for phase in CONSTRAINTS:
        in_parallel(server, dbname, [(s, None) for s in phase])
    with server.connect(dbname, autocommit=True) as conn:
        conn.execute("ANALYZE")
    return time.monotonic() - started


def write_config(path: Path, server: ThrowawayPostgres, dbname: str, store: Path, jobs: int) -> Path:
    """write_backup_config's configuration, plus [restore_test] on the same server."""
    return write_backup_config(path, server, dbname, store, PASSWORD_ENV, more_sections=f"""[restore_test]
store = "bench-dumps"
server = "bench"
scratch_prefix = "{SCRATCH_PREFIX}"
jobs = {jobs}

""")


# --- CPU accounting -------------------------------------------------------------------------------

def tree_cpu_seconds(roots: list[int]) -> float:
    """CPU seconds of the live processes under `roots`, roots included, with what they reaped from
    dead children."""
    processes = process_table()
    tree = (set(roots) | descendants(roots, processes)) & processes.keys()
    return sum(processes[pid].own + processes[pid].reaped for pid in tree)


def machine_busy_seconds() -> float:
    return machine_cpu()[0]


class CpuMeter:
    """Wall time, this benchmark's CPU (Python + children + PostgreSQL) and the machine's CPU."""

    def __init__(self, postmaster_pid: int):
        self.roots = [os.getpid(), postmaster_pid]

    def __enter__(self) -> "CpuMeter":
        self.load_before = load_average()
        self._ours, self._machine = tree_cpu_seconds(self.roots), machine_busy_seconds()
        self._wall = time.perf_counter()
        return self

    def __exit__(self, *exc) -> None:
        self.wall = time.perf_counter() - self._wall
        self.ours = tree_cpu_seconds(self.roots) - self._ours
        self.machine = machine_busy_seconds() - self._machine
        self.others = max(0.0, self.machine - self.ours)
        self.load_after = load_average()

    @property
    def disturbed(self) -> bool:
        """Other processes took more than DISTURBED_SHARE of the machine's CPU during the run."""
        return self.others > DISTURBED_SHARE * (os.cpu_count() or 1) * self.wall

    def line(self) -> str:
        cores = os.cpu_count() or 1
        return (f"wall {self.wall:.2f}s; CPU: this benchmark {self.ours:.1f}s, other processes {self.others:.1f}s, "
                f"machine {self.machine:.1f}s of {cores * self.wall:.1f}s available; "
                f"load {self.load_before} -> {self.load_after}" + ("; DISTURBED" if self.disturbed else ""))


def wait_for_quiet(roots: list[int], max_cores: float, timeout: float, window: float = 3.0) -> str:
    """Wait until other processes use less than `max_cores` cores over `window` seconds (a shared
    machine: other jobs' CPU would be charged to whichever contender runs beside them)."""
    started = time.monotonic()
    while True:
        ours, machine = tree_cpu_seconds(roots), machine_busy_seconds()
        time.sleep(window)
        others = max(0.0, (machine_busy_seconds() - machine) - (tree_cpu_seconds(roots) - ours)) / window
        waited = time.monotonic() - started
        if others < max_cores:
            return f"machine quiet after {waited:.0f}s (other processes at {others:.2f} cores)"
        if waited >= timeout:
            return f"machine NOT quiet after {waited:.0f}s (other processes at {others:.2f} cores): timing anyway"


# --- the two contenders ---------------------------------------------------------------------------

def checkpoint(server: ThrowawayPostgres) -> None:
    with server.connect(autocommit=True) as conn:
        conn.execute("CHECKPOINT")
    os.sync()


def plain_restore(server: ThrowawayPostgres, dump: Path, dbname: str, jobs: int) -> dict[str, float]:
    env = {**libpq_env(server), "PGDATABASE": "postgres", "PGSSLMODE": "disable"}
    createdb = timed_command(["createdb", dbname], env)
    restore = timed_command(["pg_restore", f"--jobs={jobs}", "--no-owner", f"--dbname={dbname}", str(dump)], env)
    return {"createdb": createdb, "pg_restore": restore}


def table_sizes(server: ThrowawayPostgres, dbname: str) -> list[tuple[str, int, int]]:
    with server.connect(dbname) as conn:
        return conn.execute("""
            SELECT c.relname, pg_table_size(c.oid), pg_indexes_size(c.oid) FROM pg_class c
            JOIN pg_namespace n ON n.oid = c.relnamespace
            WHERE c.relkind = 'r' AND n.nspname = 'public' ORDER BY pg_table_size(c.oid) DESC""").fetchall()


def exact_counts(server: ThrowawayPostgres, dbname: str) -> tuple[float, dict[str, tuple[int, float]]]:
    """What maint's validation does: one connection, one transaction, count(*) of every table in turn."""
    found = {}
    started = time.perf_counter()
    with server.connect(dbname) as conn:
        tables = [r[0] for r in conn.execute("SELECT c.relname FROM pg_class c JOIN pg_namespace n ON "
                                             "n.oid = c.relnamespace WHERE c.relkind = 'r' AND n.nspname = 'public' "
                                             "ORDER BY 1")]
        for table in tables:
            clock = time.perf_counter()
            rows = conn.execute(sql.SQL("SELECT count(*) FROM ONLY public.{}").format(sql.Identifier(table))).fetchone()[0]
            found[table] = (rows, time.perf_counter() - clock)
    return time.perf_counter() - started, found


def maint_restore_test(config: Path, prefect_defaults: bool = False) -> tuple[float, dict]:
    """One restore-test flow run in this process, as `maint run restore-test` runs it
    (flows._duty.run_now: Prefect's flow-run heartbeat off), or with `prefect_defaults` as a plain
    call of the flow (heartbeat on, as under a deployment: its thread sleeps in 1 s steps and is
    joined when the run ends)."""
    from maint.flows.restore_test import restore_test

    return timed_ok_run(restore_test, prefect_defaults, config_path=str(config))


def scratch_databases(server: ThrowawayPostgres) -> list[str]:
    with server.connect() as conn:
        return [r[0] for r in conn.execute("SELECT datname FROM pg_database WHERE datname LIKE %s",
                                           (SCRATCH_PREFIX.replace("_", "\\_") + "%",))]


# --- main -----------------------------------------------------------------------------------------

def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size-mib", type=int, default=500, help="size of the dump, MiB (default 500)")
    parser.add_argument("--repeat", type=int, default=1, help="timed rounds; the best of each is reported (default 1)")
    parser.add_argument("--jobs", type=int, default=2, help="pg_restore workers for both (default 2)")
    parser.add_argument("--quiet-cores", type=float, default=0.3,
                        help="before each timed run, wait until other processes use fewer cores than this (default 0.3)")
    parser.add_argument("--quiet-timeout", type=float, default=300,
                        help="wait at most this many seconds for that (default 300)")
    parser.add_argument("--prefect-defaults", action="store_true",
                        help="time the flow called directly with Prefect's defaults (heartbeat on, as under a "
                             "deployment) instead of as `maint run` runs it")
    parser.add_argument("--workdir", help="where stores and configs go (default: a new directory under /tmp)")
    parser.add_argument("--keep", action="store_true", help="keep the workdir at the end")
    args = parser.parse_args(argv)
    if args.size_mib < 1 or args.repeat < 1 or args.jobs < 1:
        parser.error("--size-mib, --repeat and --jobs must be positive")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    with workdir(args.workdir, "maint-bench-restore-", args.keep,
                 leftovers=("store-tiny", "store-large", "tiny.toml", "large.toml")) as work:
        return run(args, work)


def run(args: argparse.Namespace, work: Path) -> int:
    from prefect.settings import PREFECT_API_URL

    clock = time.monotonic()
    say(f"== maint restore benchmark: workdir {work}, {os.cpu_count()} CPU(s), {shutil.which('pg_restore')} "
        f"({subprocess.run(['pg_restore', '--version'], capture_output=True, text=True).stdout.strip()}), "
        f"Python {sys.version.split()[0]}; load average {load_average()}")
    stores = {k: work / f"store-{k}" for k in ("tiny", "large")}
    for store in stores.values():
        store.mkdir()
    with ThrowawayPostgres(settings=SERVER_SETTINGS) as server, prefect_api("harness"):
        os.environ[PASSWORD_ENV] = server.password
        postmaster = postmaster_pid(server)
        say(f"   PostgreSQL on {server.host}:{server.port} (settings {server.settings}); "
            f"Prefect API (test harness) at {PREFECT_API_URL.value()}")
        configs = {k: write_config(work / f"{k}.toml", server, f"bench_{k}", stores[k], args.jobs) for k in stores}
        dumps: dict[str, Path] = {}
        manifests_rows: dict[str, int] = {}
        per_unit = _GUESS_DUMP_BYTES_PER_UNIT
        for kind, mib in (("tiny", TINY_MIB), ("large", args.size_mib)):
            units = max(100, int(mib * MIB / per_unit))
            say(f"\n== generating bench_{kind}: {units:,} orders (with their customers, items, documents, events) "
                f"for a ~{mib} MiB dump")
            seconds = generate(server, f"bench_{kind}", units)
            with server.connect(f"bench_{kind}") as conn:
                db_bytes = conn.execute("SELECT pg_database_size(current_database())").fetchone()[0]
            say(f"   generated in {seconds:.1f}s ({db_bytes / MIB:.0f} MiB on disk); "
                f"taking the backup with maint's `backup` duty")
            dumps[kind], seconds = make_backup(configs[kind], stores[kind], prefect_defaults=True)
            size = dumps[kind].stat().st_size
            per_unit = size / units  # calibrates the large one on the tiny one
            manifest = json.loads(Path(f"{dumps[kind]}.manifest.json").read_text())
            manifests_rows[kind] = sum(t["rows"] for t in manifest["tables"])
            say(f"   {dumps[kind].name}: {size:,} bytes ({size / MIB:.1f} MiB) in {seconds:.1f}s; manifest: "
                f"{len(manifest['tables'])} tables, {manifests_rows[kind]:,} rows")
            # The dump is all the restore needs; an empty database of the same name stays, since
            # [restore_test].server is this [[databases]] entry and maint connects to its dbname.
            drop_database(server, f"bench_{kind}")
            server.create_database(f"bench_{kind}")
        large = dumps["large"]

        say("\n== warming up: one restore-test flow run on the tiny store (Prefect API, imports, first flow run)")
        warm, _ = maint_restore_test(configs["tiny"], args.prefect_defaults)
        say(f"   {warm:.2f}s")

        say(f"\n== timing on {large} ({large.stat().st_size:,} bytes), {args.repeat} round(s), jobs = {args.jobs}; "
            "the dump is in the page cache for both (written moments ago; 24 GiB of RAM)")
        plain_runs: list[dict] = []
        maint_runs: list[dict] = []
        for round_no in range(1, args.repeat + 1):
            order = ("plain", "maint") if round_no % 2 else ("maint", "plain")
            for contender in order:
                checkpoint(server)
                say(f"   round {round_no} {contender}: "
                    f"{wait_for_quiet([os.getpid(), postmaster], args.quiet_cores, args.quiet_timeout)}")
                if contender == "plain":
                    dbname = f"bench_plain_{round_no}"
                    with CpuMeter(postmaster) as meter:
                        parts = plain_restore(server, large, dbname, args.jobs)
                    sizes = table_sizes(server, dbname)
                    with server.connect(dbname) as conn:
                        db_bytes = conn.execute("SELECT pg_database_size(current_database())").fetchone()[0]
                    count_first, counted = exact_counts(server, dbname)
                    count_second, _ = exact_counts(server, dbname)
                    drop_clock = time.perf_counter()
                    drop_database(server, dbname)
                    drop_seconds = time.perf_counter() - drop_clock
                    if sum(rows for rows, _ in counted.values()) != manifests_rows["large"]:
                        raise RuntimeError(f"the plain restore holds {counted}, the manifest "
                                           f"{manifests_rows['large']:,} rows")
                    plain_runs.append({"wall": meter.wall, **parts, "meter": meter, "sizes": sizes,
                                       "db_bytes": db_bytes, "count_first": count_first,
                                       "count_second": count_second, "counted": counted, "drop": drop_seconds})
                    say(f"   round {round_no} plain: createdb {parts['createdb']:.2f}s + pg_restore "
                        f"{parts['pg_restore']:.2f}s; {meter.line()}")
                    say(f"     (untimed: exact counts on the fresh restore {count_first:.2f}s, again "
                        f"{count_second:.2f}s; database {db_bytes / MIB:.0f} MiB, DROP DATABASE {drop_seconds:.2f}s)")
                else:
                    with CpuMeter(postmaster) as meter:
                        _, report = maint_restore_test(configs["large"], args.prefect_defaults)
                    leftovers = scratch_databases(server)
                    if leftovers:
                        raise RuntimeError(f"maint left scratch databases behind: {leftovers}")
                    details = report["details"]
                    maint_runs.append({"wall": meter.wall, "meter": meter, "details": details,
                                       "findings": report["findings"]})
                    say(f"   round {round_no} maint: download {details['download_seconds']:.2f}s, restore "
                        f"{details['restore_seconds']:.2f}s, validation {details['validation_seconds']:.2f}s, "
                        f"total {details['total_seconds']:.2f}s; {meter.line()}")

    def best(runs: list[dict]) -> dict:
        """The fastest run among those no other process disturbed; the fastest of all if none."""
        calm = [r for r in runs if not r["meter"].disturbed]
        return min(calm or runs, key=lambda r: r["wall"])

    best_plain, best_maint = best(plain_runs), best(maint_runs)
    plain = best_plain["wall"]
    d = best_maint["details"]
    maint_wall = best_maint["wall"]
    ratio = maint_wall / plain
    ratio_total = d["total_seconds"] / plain
    ratio_restore = d["restore_seconds"] / plain
    create_drop = d["total_seconds"] - d["download_seconds"] - d["restore_seconds"] - d["validation_seconds"]
    outside = maint_wall - d["total_seconds"]
    size = large.stat().st_size

    say("\n" + "=" * 78)
    say("RESULTS")
    say("=" * 78)
    say(f"dump: {large.name}, {size:,} bytes ({size / MIB:.1f} MiB), pg_dump --format=custom by maint's backup "
        f"duty; {manifests_rows['large']:,} rows in its manifest")
    say(f"restored database: {best_plain['db_bytes'] / MIB:.0f} MiB; tables (heap+toast / indexes, MiB; rows; "
        f"exact count on the fresh restore):")
    for name, heap, indexes in best_plain["sizes"]:
        rows, seconds = best_plain["counted"][name]
        say(f"  {name:<14}{heap / MIB:>8.0f}{indexes / MIB:>8.0f}{rows:>12,}{seconds:>8.2f}s")
    say(f"\nwall times, best undisturbed run of {args.repeat} (all rounds in brackets, * = disturbed: other "
        f"processes took over {DISTURBED_SHARE:.0%} of the machine's CPU):")
    say(f"  plain: createdb + pg_restore -j {args.jobs} --no-owner   {plain:8.2f}s   "
        "[" + ", ".join(f"{r['wall']:.2f}" + "*" * r["meter"].disturbed for r in plain_runs) + "]")
    how = "flow called directly, heartbeat on" if args.prefect_defaults else "as `maint run` runs it"
    say(f"  maint: the whole restore-test flow ({how})")
    say(f"                                                  {maint_wall:8.2f}s   "
        "[" + ", ".join(f"{r['wall']:.2f}" + "*" * r["meter"].disturbed for r in maint_runs) + "]")
    say(f"\nmaint's own phases (report details of its best run):")
    say(f"  download (a local store's file is used in place) {d['download_seconds']:8.2f}s")
    say(f"  restore (pg_restore -j {args.jobs} into the scratch db)     {d['restore_seconds']:8.2f}s")
    say(f"  validation (exact row count of every table)      {d['validation_seconds']:8.2f}s   "
        f"{d['validation_seconds'] / maint_wall:.1%} of maint's wall time")
    say(f"  create + drop scratch db, progress artifacts     {create_drop:8.2f}s")
    say(f"  total (restore_and_validate)                     {d['total_seconds']:8.2f}s")
    say(f"  outside it (config, leftovers, listing, report)  {outside:8.2f}s")
    say(f"  plain createdb {best_plain['createdb']:.2f}s + pg_restore {best_plain['pg_restore']:.2f}s; the same "
        f"counts on the plain restore took {best_plain['count_first']:.2f}s fresh, {best_plain['count_second']:.2f}s "
        f"with hint bits set, its DROP DATABASE {best_plain['drop']:.2f}s")
    say(f"\nCPU during the best runs (this benchmark = Python, its children incl. the Prefect API, PostgreSQL):")
    say(f"  plain: {best_plain['meter'].line()}")
    say(f"  maint: {best_maint['meter'].line()}")
    say(f"\nratios to the plain restore ({plain:.2f}s):")
    say(f"  maint wall (whole flow) / plain          = {ratio:.3f}   target <= {RATIO_TARGET:.2f}  "
        f"{verdict(ratio <= RATIO_TARGET)}")
    say(f"  maint total_seconds (report) / plain     = {ratio_total:.3f}   (information)")
    say(f"  maint restore phase / plain              = {ratio_restore:.3f}   (information)")
    say(f"  without validation: (wall - validation) / plain = {(maint_wall - d['validation_seconds']) / plain:.3f}"
        f"   (information)")
    say(f"  CPU of this benchmark's processes, maint / plain = "
        f"{best_maint['meter'].ours / best_plain['meter'].ours:.3f}   (information: less sensitive to other "
        f"processes; maint's includes the Prefect API server's)")
    if best_plain["meter"].disturbed or best_maint["meter"].disturbed:
        say("  CAUTION: every run of at least one contender was disturbed by other processes: the wall-time "
            "ratio is not reliable; rerun on a quiet machine or with more --repeat")
    say(f"\nsummary: ratio {verdict(ratio <= RATIO_TARGET)} ({ratio:.3f}); benchmark took "
        f"{time.monotonic() - clock:.0f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
