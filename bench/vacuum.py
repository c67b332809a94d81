"""Benchmark: maint's `vacuum` duty against `vacuumdb --analyze --jobs=2`, on the same bloated state.

    .venv/bin/python bench/vacuum.py [--tables 8] [--rows 400000] [--clean 2] [--repeat 1] [--settle 60]
                                     [--no-heartbeat-variant] [--keep-log]

Starts a throwaway PostgreSQL (maint.tasks.postgres.server.ThrowawayPostgres; autovacuum off server-wide and on
every bench table, checkpoints pushed out of the way) and, for each repeat, builds the same
database two or three times (`bench_a_N`, `bench_b_N`, `bench_c_N`), by the same statements in
the same order:

  - `--tables` tables of order-like rows (bigint key, customer id, status, amount, currency,
    a nullable note of 0-96 characters, timestamps; a primary key and a customer index),
    `--rows` rows each, loaded and then VACUUM (ANALYZE)d as autovacuum would have done;
  - `--clean` tables that are never bloated (half the rows, vacuumed and analyzed);
  - the bloat: UPDATEs and DELETEs, a different amount per table (5% to 200% of the rows);
  - statistics in three states: ANALYZEd after the bloat ("fresh"), analyzed only before it
    ("stale": pg_class.relpages still counts the pages of before), and one table never vacuumed
    or analyzed at all ("none").

CREATE DATABASE ... TEMPLATE would copy the files but not the cumulative statistics
(pg_stat_all_tables is keyed by database oid): the clone would show no dead tuples and maint would
rightly plan nothing. Hence the separate builds; the two copies are compared (pages, live and dead
tuples, pgstattuple's figures) before anything is timed.

Before vacuuming: maint's own statistics read and bloat estimate (maint.tasks.postgres.table_statistics
+ maint.vacuum.estimate_bloat) against pgstattuple's measured dead_tuple_len + free_space, per
bench table. pgstattuple runs on every copy, so all start with the same hint bits and page cache.

Then, after a CHECKPOINT and a wait for other processes on the machine to go quiet (--settle),
in an order that rotates from round to round:
  vacuumdb   `vacuumdb --analyze --jobs=2 -d bench_a_N` (PG* environment, PGPASSWORD);
  maint      the whole `vacuum` flow in-process as `maint run` runs it
             (flows._duty.run_now(flows.vacuum.vacuum, config_path=...): Prefect's flow-run
             heartbeat off) on bench_b_N, jobs = 2, thresholds low enough to select every bloated
             table and none of the clean ones; the Prefect API (test harness) is started and
             warmed beforehand by dry runs on a tiny `warmup` database, which also measure a flow
             run's fixed cost;
  hb on      (unless --no-heartbeat-variant) the flow called directly with Prefect's defaults
             (flow-run heartbeat on, as under a deployment; its thread sleeps in 1 s steps and is
             joined when the run ends) on a third copy, bench_c_N: a diagnostic, not the verdict.

Each timed database logs every statement's duration (ALTER DATABASE ... SET
log_min_duration_statement = 0), so the server log says, for both tools alike, which tables were
vacuumed, for how long, and from when to when; the Prefect API gives maint's task runs; /proc
gives the CPU seconds spent by PostgreSQL, this process and the rest of the machine.

Prints the times, the ratio maint / vacuumdb with PASS/FAIL against the 1.10 target, where each
tool's time went, and the bloat-estimate table. A measurement, not a test: exits 0 whatever the
figures, non-zero only if the benchmark itself breaks.
"""

from __future__ import annotations

import argparse
import heapq
import os
import re
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

# Importing _common also puts this checkout on sys.path, for the imports of maint.
from _common import (MIB, report_of_state, database_entry, descendants, drop_database, libpq_env, machine_cpu, postgres_bin_on_path,
                     postmaster_pid, prefect_api, prefect_console_to, prefect_telemetry_off, process_table,
                     run_flow_state, say, task_times)

prefect_telemetry_off()
postgres_bin_on_path()

from psycopg import sql  # noqa: E402

from maint.tasks.postgres.server import ThrowawayPostgres  # noqa: E402

PASSWORD_ENV = "MAINT_BENCH_VACUUM_PASSWORD"
RATIO_TARGET = 1.10
JOBS = 2
SERVER_SETTINGS = {
    "autovacuum": "off",  # no background worker competing with the timed runs
    "max_wal_size": "16GB", "checkpoint_timeout": "1h",  # no checkpoint in the middle of a run
    "log_line_prefix": "%m [%p] %d ",  # the log tells the databases apart
}

# (label, statements): the bloat of each bench table, cycled when --tables > 8.
PROFILES: list[tuple[str, list[str]]] = [
    ("update 100%", ["UPDATE {t} SET status = 'paid', updated_at = created_at + interval '1 day'"]),
    ("update 50%", ["UPDATE {t} SET status = 'shipped', updated_at = created_at + interval '2 days' "
                    "WHERE id % 2 = 0"]),
    ("delete 30%", ["DELETE FROM {t} WHERE id % 10 < 3"]),
    ("upd 20% + del 10%", ["UPDATE {t} SET total_cents = total_cents + 1, updated_at = created_at "
                           "WHERE id % 5 = 1",
                           "DELETE FROM {t} WHERE id % 10 = 7"]),
    ("update 100% twice", ["UPDATE {t} SET status = 'paid', updated_at = created_at + interval '1 day'",
                           "UPDATE {t} SET status = 'delivered', updated_at = created_at + interval '5 days'"]),
    ("delete 60%", ["DELETE FROM {t} WHERE id % 5 < 3"]),
    ("update 10%", ["UPDATE {t} SET note = coalesce(note, '') || '!', updated_at = created_at "
                    "WHERE id % 10 = 3"]),
    ("update 5%", ["UPDATE {t} SET status = 'cancelled', updated_at = created_at WHERE id % 20 = 0"]),
]


# --- the bloated database -------------------------------------------------------------------------

@dataclass(frozen=True)
class BenchTable:
    name: str
    rows: int
    profile: str  # "clean" for the never-bloated ones
    statements: tuple[str, ...]
    stats: str  # "fresh" | "stale" | "none"


def bench_tables(count: int, rows: int, clean: int) -> list[BenchTable]:
    tables = []
    for i in range(count):
        label, statements = PROFILES[i % len(PROFILES)]
        if count >= 3 and i == count - 1:
            state = "none"
        else:
            state = "fresh" if i % 2 == 0 else "stale"
        tables.append(BenchTable(f"orders_{i + 1:02d}", rows, label, tuple(statements), state))
    for i in range(clean):
        tables.append(BenchTable(f"clean_{i + 1:02d}", max(rows // 2, 1), "clean", (), "fresh"))
    return tables


_CREATE = """
CREATE TABLE {t} (
    id bigint PRIMARY KEY,
    customer_id bigint NOT NULL,
    status text NOT NULL,
    total_cents bigint NOT NULL,
    currency char(3) NOT NULL,
    note text,
    created_at timestamptz NOT NULL,
    updated_at timestamptz
) WITH (autovacuum_enabled = off)
"""
# Deterministic rows (no random()): both builds write the very same bytes in the same order.
_LOAD = """
INSERT INTO {t}
SELECT g, 1 + (g * 7919) % 50000,
       (ARRAY['new', 'paid', 'shipped', 'delivered', 'cancelled'])[1 + g % 5],
       (g * 37) % 100000, (ARRAY['EUR', 'USD', 'GBP'])[1 + g % 3],
       CASE WHEN g % 3 = 0 THEN NULL ELSE repeat(md5(g::text), (1 + g % 3)::int) END,
       '2026-01-01'::timestamptz + g * interval '1 minute', NULL
FROM generate_series(1::bigint, {rows}) g
"""


def build_database(server: ThrowawayPostgres, dbname: str, tables: list[BenchTable]) -> float:
    """One copy of the bench state, always by the same statements in the same order."""
    started = time.perf_counter()
    server.create_database(dbname)
    with server.connect(dbname, autocommit=True) as conn:
        def run(statement) -> None:
            conn.execute(statement)
            # A backend sends its table counters to the shared statistics when idle, at most once a
            # second; VACUUM and ANALYZE set n_live_tup/n_dead_tup outright. Counters of an earlier
            # statement still pending when they do are added on top later (n_live_tup doubled), and
            # whether they are is a matter of timing: flush after every statement, so both copies
            # get the same figures.
            conn.execute("SELECT pg_stat_force_next_flush()")

        for t in tables:
            ident = sql.Identifier(t.name)
            run(sql.SQL(_CREATE).format(t=ident))
            run(sql.SQL(_LOAD).format(t=ident, rows=sql.Literal(t.rows)))
            run(sql.SQL("CREATE INDEX {} ON {} (customer_id)").format(sql.Identifier(f"{t.name}_customer"), ident))
        for t in tables:  # what autovacuum would have done after the load
            if t.stats != "none":
                run(sql.SQL("VACUUM (ANALYZE) {}").format(sql.Identifier(t.name)))
        for t in tables:
            for statement in t.statements:
                run(sql.SQL(statement).format(t=sql.Identifier(t.name)))
        for t in tables:
            if t.stats == "fresh" and t.profile != "clean":
                run(sql.SQL("ANALYZE {}").format(sql.Identifier(t.name)))
        run("CREATE EXTENSION pgstattuple")
    return time.perf_counter() - started


@dataclass
class Measured:
    pages: int  # pg_relation_size / block size
    relpages: int
    live: int
    dead: int
    table_len: int
    tuple_count: int
    dead_tuple_count: int
    dead_tuple_len: int
    free_space: int

    @property
    def reclaimable(self) -> int:
        return self.dead_tuple_len + self.free_space


def measure(server: ThrowawayPostgres, dbname: str, tables: list[BenchTable]) -> dict[str, Measured]:
    """The statistics views and pgstattuple's full scan of each bench table."""
    result = {}
    with server.connect(dbname, autocommit=True) as conn:
        for t in tables:
            row = conn.execute(
                "SELECT pg_relation_size(c.oid) / current_setting('block_size')::int, c.relpages,"
                "       coalesce(s.n_live_tup, 0), coalesce(s.n_dead_tup, 0),"
                "       p.table_len, p.tuple_count, p.dead_tuple_count, p.dead_tuple_len, p.free_space"
                "  FROM pg_class c JOIN pg_stat_all_tables s ON s.relid = c.oid,"
                "       LATERAL pgstattuple(c.oid) p"
                " WHERE c.oid = %s::regclass", (f"public.{t.name}",)).fetchone()
            result[t.name] = Measured(*row)
    return result


def dead_left(server: ThrowawayPostgres, dbname: str, tables: list[BenchTable]) -> int:
    with server.connect(dbname, autocommit=True) as conn:
        rows = conn.execute("SELECT coalesce(sum(n_dead_tup), 0) FROM pg_stat_user_tables WHERE relname = ANY(%s)",
                            ([t.name for t in tables],)).fetchone()
    return int(rows[0])


def checkpoint(server: ThrowawayPostgres) -> float:
    started = time.perf_counter()
    with server.connect(autocommit=True) as conn:
        conn.execute("CHECKPOINT")
    return time.perf_counter() - started


def log_statements(server: ThrowawayPostgres, dbname: str) -> None:
    with server.connect(autocommit=True) as conn:
        conn.execute(sql.SQL("ALTER DATABASE {} SET log_min_duration_statement = 0").format(sql.Identifier(dbname)))


# --- maint's configuration ------------------------------------------------------------------------

def write_config(path: Path, server: ThrowawayPostgres, dbname: str, name: str) -> Path:
    path.write_text(f"""# Written by bench/vacuum.py
timezone = "UTC"

{database_entry(server, PASSWORD_ENV, dbname, name=name)}
[vacuum]
databases = ["{name}"]
min_dead_tuples = 100
min_dead_ratio = 0.01
stale_analyze = "7d"
lock_timeout = "2s"
window = "2h"
jobs = {JOBS}
""")
    return path


def estimates(config_path: Path, name: str) -> dict[str, object]:
    """What the flow's first two steps compute: table_statistics, then estimate_bloat."""
    from datetime import timedelta

    from maint.tasks.environment import load_config
    from maint.vacuum import estimate_bloat
    from maint.tasks import postgres

    config = load_config(config_path)
    db = config.database(name)
    tables = postgres.table_statistics(db, statement_timeout=timedelta(seconds=60),
                                       lock_timeout=config.vacuum.lock_timeout)
    return {t.name: (t, estimate_bloat(t)) for t in tables if t.schema == "public"}


# --- the server log -------------------------------------------------------------------------------

_LOG_LINE = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d+) \S+ \[(\d+)\] (\S*) LOG:  duration: ([\d.]+) ms  "
                       r"(?:statement|execute [^:]*): (.*)$")
_TABLE_IN = re.compile(r'^(?:VACUUM|ANALYZE)\b(?:\s*\([^)]*\))?\s+(.+?);?\s*$', re.IGNORECASE)


@dataclass
class Statement:
    pid: int
    start: float  # seconds since the epoch, server clock
    end: float
    seconds: float
    text: str

    @property
    def table(self) -> str:
        m = _TABLE_IN.match(self.text)
        return m.group(1).replace('"', "") if m else ""

    @property
    def verb(self) -> str:
        return self.text.split(None, 1)[0].upper() if self.text else ""


def log_size(server: ThrowawayPostgres) -> int:
    try:
        return server.logfile.stat().st_size
    except OSError:
        return 0


def read_statements(server: ThrowawayPostgres, offset: int, dbname: str) -> list[Statement]:
    time.sleep(0.3)  # the logger writes the last lines a moment after the client sees its result
    with open(server.logfile, "rb") as f:
        f.seek(offset)
        text = f.read().decode(errors="replace")
    out = []
    for line in text.splitlines():
        m = _LOG_LINE.match(line)
        if not m or m.group(3) != dbname:
            continue
        end = datetime.strptime(m.group(1), "%Y-%m-%d %H:%M:%S.%f").timestamp()
        seconds = float(m.group(4)) / 1000
        out.append(Statement(int(m.group(2)), end - seconds, end, seconds, m.group(5).strip()))
    return out


@dataclass
class LogSummary:
    vacuums: list[Statement]  # VACUUM and ANALYZE statements
    others: list[Statement]

    @property
    def span(self) -> float:
        if not self.vacuums:
            return 0.0
        return max(s.end for s in self.vacuums) - min(s.start for s in self.vacuums)

    @property
    def busy(self) -> float:
        return sum(s.seconds for s in self.vacuums)

    def on(self, names: set[str]) -> list[Statement]:
        return [s for s in self.vacuums if s.table.split(".")[-1] in names]


def summarize_log(statements: list[Statement]) -> LogSummary:
    vac = [s for s in statements if s.verb in ("VACUUM", "ANALYZE")]
    return LogSummary(vac, [s for s in statements if s not in vac])


def makespan(durations: list[float], workers: int) -> float:
    """Greedy list scheduling in the given order, each table to the first free worker: what a pool
    of `workers` does when handed the tables in that order."""
    free = [0.0] * workers
    heapq.heapify(free)
    end = 0.0
    for d in durations:
        t = heapq.heappop(free) + d
        end = max(end, t)
        heapq.heappush(free, t)
    return end


# --- CPU accounting -------------------------------------------------------------------------------

@dataclass
class CpuSnapshot:
    postgres: float  # our cluster: the postmaster, its live children, and what it reaped from exited ones
    me: float  # this process, all threads (maint, the Prefect client)
    descendants: float  # live processes started by this one (the Prefect API server of the harness)
    reaped: float  # children of this process that exited (vacuumdb)
    busy: float  # the whole machine
    steal: float  # time the hypervisor ran someone else


def cpu_snapshot(postmaster_pid: int) -> CpuSnapshot:
    processes = process_table()
    cluster = descendants([postmaster_pid], processes) | {postmaster_pid}
    mine = descendants([os.getpid()], processes) - cluster
    pg = sum(processes[p].own for p in cluster if p in processes)
    if postmaster_pid in processes:
        pg += processes[postmaster_pid].reaped
    live_children = sum(processes[p].own for p in mine)
    me = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    busy, steal = machine_cpu()
    return CpuSnapshot(pg, me.ru_utime + me.ru_stime, live_children, kids.ru_utime + kids.ru_stime, busy, steal)


def _ours(a: CpuSnapshot, b: CpuSnapshot) -> float:
    return (b.postgres - a.postgres) + (b.me - a.me) + (b.descendants - a.descendants) + (b.reaped - a.reaped)


def cpu_delta(a: CpuSnapshot, b: CpuSnapshot) -> dict[str, float]:
    """CPU seconds between two snapshots. "Everything else" is the machine's busy time minus ours:
    it counts other sessions' processes that came and went between the snapshots (and the kernel's
    own work), which a sum over the live processes would miss."""
    return {"postgres": b.postgres - a.postgres, "this process": b.me - a.me,
            "Prefect API server": b.descendants - a.descendants, "vacuumdb": b.reaped - a.reaped,
            "everything else": max((b.busy - a.busy) - _ours(a, b), 0.0), "machine busy": b.busy - a.busy,
            "stolen by the hypervisor": b.steal - a.steal}


def settle(postmaster: int, limit: float, quiet: float = 0.25) -> str:
    """Wait (up to `limit` seconds) until processes that are not ours use under `quiet` of a core:
    other sessions on a shared machine make the timings noisy. Says what it saw."""
    deadline = time.monotonic() + limit
    waited = time.monotonic()
    calm = 0
    while True:
        a, t0 = cpu_snapshot(postmaster), time.monotonic()
        time.sleep(1.0)
        b, t1 = cpu_snapshot(postmaster), time.monotonic()
        load = max((b.busy - a.busy) - _ours(a, b), 0.0) / (t1 - t0)
        calm = calm + 1 if load < quiet else 0
        if calm >= 2 or time.monotonic() >= deadline:
            return (f"other processes on the machine used {load:.2f} core(s) in the last second "
                    f"(waited {time.monotonic() - waited:.0f}s for them)")


# --- the two contenders ---------------------------------------------------------------------------

@dataclass
class RunResult:
    tool: str
    seconds: float
    log: LogSummary
    cpu: dict[str, float]
    report: dict | None = None
    tasks: list[tuple[str, float, float]] = field(default_factory=list)
    output: str = ""


def run_vacuumdb(server: ThrowawayPostgres, dbname: str) -> RunResult:
    env = {**libpq_env(server), "PGSSLMODE": "disable"}
    env.pop("PGDATABASE", None)
    offset = log_size(server)
    pm = postmaster_pid(server)
    before = cpu_snapshot(pm)
    started = time.perf_counter()
    done = subprocess.run(["vacuumdb", "--analyze", f"--jobs={JOBS}", "-d", dbname], env=env,
                          capture_output=True, text=True)
    seconds = time.perf_counter() - started
    after = cpu_snapshot(pm)
    if done.returncode != 0:
        raise RuntimeError(f"vacuumdb exited {done.returncode}: {done.stderr.strip()}")
    return RunResult("vacuumdb", seconds, summarize_log(read_statements(server, offset, dbname)),
                     cpu_delta(before, after), output=(done.stdout + done.stderr).strip())


def run_flow(config: Path, dry_run: bool = False, prefect_defaults: bool = False) -> tuple[float, dict]:
    """One flow run in this process, as `maint run` runs it (flows._duty.run_now: Prefect's flow-run
    heartbeat off), or with `prefect_defaults` as a plain call of the flow (heartbeat on, as under
    a deployment)."""
    from maint.flows.vacuum import vacuum

    started = time.perf_counter()
    state = run_flow_state(vacuum, prefect_defaults, config_path=str(config), dry_run=dry_run)
    elapsed = time.perf_counter() - started
    report = report_of_state(vacuum, state)
    return elapsed, report


AS_MAINT_RUN = "dry run again, as `maint run` runs it (run_now: heartbeat off)"
PREFECT_DEFAULTS = "dry run again, the flow called directly (Prefect's defaults: heartbeat every 180s)"


def fixed_costs(config: Path, runs: int = 5) -> dict[str, list[float]]:
    """The fixed cost of one flow run with the API up (a dry run on a tiny database does almost no
    work), as `maint run` runs it and as a plain call with Prefect's defaults: Prefect 3.9 starts a
    heartbeat thread per flow run that sleeps in whole seconds and joins it at the end."""
    return {AS_MAINT_RUN: [run_flow(config, dry_run=True)[0] for _ in range(runs)],
            PREFECT_DEFAULTS: [run_flow(config, dry_run=True, prefect_defaults=True)[0] for _ in range(runs)]}


def run_maint(server: ThrowawayPostgres, config: Path, dbname: str, prefect_defaults: bool = False) -> RunResult:
    offset = log_size(server)
    pm = postmaster_pid(server)
    before = cpu_snapshot(pm)
    seconds, report = run_flow(config, prefect_defaults=prefect_defaults)
    after = cpu_snapshot(pm)
    result = RunResult("maint", seconds, summarize_log(read_statements(server, offset, dbname)),
                       cpu_delta(before, after), report=report)
    try:
        result.tasks = task_times(report["details"]["flow_run_id"])
    except Exception as exc:  # a diagnostic only
        say(f"   (no task breakdown from the Prefect API: {exc.__class__.__name__}: {exc})")
    return result


_REPORTED_SECONDS = re.compile(r" in (\d+(?:\.\d+)?)s")


def reported_seconds(report: dict) -> dict[str, float]:
    """Per table, the seconds maint's own findings report ('VACUUM (ANALYZE) in 1.2s; ...')."""
    out = {}
    for f in report["findings"]:
        if f["check"] in ("vacuum", "analyze"):
            m = _REPORTED_SECONDS.search(f["message"])
            if m:
                out[f["subject"].split(":", 1)[1]] = float(m.group(1))
    return out


# --- output ---------------------------------------------------------------------------------------

def mib(n: float) -> str:
    return f"{n / MIB:8.1f}"


def print_state(tables: list[BenchTable], ref_name: str, measured: dict[str, dict[str, Measured]]) -> int:
    """The state of the reference copy, and whether every other copy matches it table by table."""
    ref = measured[ref_name]
    others = [n for n in measured if n != ref_name]
    say(f"   {'table':<11} {'bloat':<18} {'stats':<5} {'pages':>7} {'relpages':>8} {'live':>8} {'n_dead':>8} "
        f"{'pgst dead':>9} {'MiB':>8}   same in {', '.join(others)}?")
    differ = 0
    for t in tables:
        x = ref[t.name]
        verdicts = []
        for name in others:
            y = measured[name][t.name]
            same = (x.pages, x.live, x.dead, x.table_len, x.dead_tuple_count, x.tuple_count) == \
                   (y.pages, y.live, y.dead, y.table_len, y.dead_tuple_count, y.tuple_count)
            differ += not same
            verdict = "yes" if same else (f"NO: {name} has pages {y.pages}, live {y.live}, n_dead {y.dead}, "
                                          f"pgstattuple dead {y.dead_tuple_count}")
            if x.relpages != y.relpages:
                verdict += f" (relpages {y.relpages}: ANALYZE samples)"
            verdicts.append(verdict)
        say(f"   {t.name:<11} {t.profile:<18} {t.stats:<5} {x.pages:>7} {x.relpages:>8} {x.live:>8} {x.dead:>8} "
            f"{x.dead_tuple_count:>9} {mib(x.table_len)}   {'; '.join(verdicts)}")
    return differ


def print_bloat(tables: list[BenchTable], est: dict[str, object], measured: dict[str, Measured]) -> None:
    say(f"   {'table':<11} {'bloat':<18} {'stats':<5} {'table MiB':>9} {'est. MiB':>9} {'dead MiB':>9} "
        f"{'free MiB':>9} {'dead+free':>9} {'est/meas':>8}   note")
    tot_est = tot_meas = 0
    for t in tables:
        m = measured[t.name]
        stats, e = est[t.name]
        notes = []
        if stats.relpages != m.pages:
            notes.append(f"relpages {stats.relpages} vs {m.pages} pages now")
        if stats.reltuples is not None and m.tuple_count and abs(stats.reltuples - m.tuple_count) > 0.05 * m.tuple_count:
            notes.append(f"reltuples {stats.reltuples:,.0f} vs {m.tuple_count:,} live now")
        if notes:
            notes.append("pg_class as of the last VACUUM/ANALYZE/CREATE INDEX, before the bloat")
        note = "; ".join(notes)
        if not e.estimated:
            est_txt, ratio = f"{'-':>9}", f"{'-':>8}"
            note = f"not estimated: {e.reason}" + (f"; {note}" if note else "")
        else:
            est_txt = f"{e.bloat_bytes / MIB:9.1f}"
            ratio = f"{e.bloat_bytes / m.reclaimable:8.2f}" if m.reclaimable >= MIB else f"{'n/a':>8}"
            tot_est += e.bloat_bytes
            tot_meas += m.reclaimable
        say(f"   {t.name:<11} {t.profile:<18} {t.stats:<5} {m.table_len / MIB:9.1f} {est_txt} "
            f"{m.dead_tuple_len / MIB:9.1f} {m.free_space / MIB:9.1f} {m.reclaimable / MIB:9.1f} {ratio}   {note}")
    if tot_meas:
        say(f"   {'estimated tables, total':<36} {'':>9} {tot_est / MIB:9.1f} {'':>9} {'':>9} {tot_meas / MIB:9.1f} "
            f"{tot_est / tot_meas:8.2f}")
    say("   est. = maint.vacuum.estimate_bloat (relpages minus the pages the live rows need, from pg_class and "
        "pg_stats, never below n_dead_tup times the estimated row size); dead+free = pgstattuple's dead_tuple_len + free_space, the measured reclaimable space")


def print_run(r: RunResult, bench_names: set[str], relpages: dict[str, int]) -> None:
    bench = r.log.on(bench_names)
    other = [s for s in r.log.vacuums if s not in bench]
    say(f"   {r.tool}: {r.seconds:.3f}s wall; {len(r.log.vacuums)} VACUUM/ANALYZE statements "
        f"({len(bench)} on bench tables, {len(other)} on other tables, system catalogs included)")
    say(f"     server side: statements from first start to last end {r.log.span:.3f}s; sum of statement times "
        f"{r.log.busy:.3f}s (bench tables {sum(s.seconds for s in bench):.3f}s, others "
        f"{sum(s.seconds for s in other):.3f}s)")
    if r.log.vacuums:
        first = min(s.start for s in r.log.vacuums)
        say(f"     {'statement (table)':<46} {'pid':>7} {'start':>8} {'seconds':>8}")
        for s in sorted(r.log.vacuums, key=lambda s: s.start):
            if s in bench or s.seconds >= 0.05:
                say(f"     {(s.verb + ' ' + s.table)[:46]:<46} {s.pid:>7} {s.start - first:+8.3f} {s.seconds:8.3f}")
        small = [s for s in other if s.seconds < 0.05]
        if small:
            say(f"     ... and {len(small)} statements under 0.05s each on other tables, {sum(s.seconds for s in small):.3f}s in all")
    if r.log.others:
        say(f"     other statements in that database: {len(r.log.others)}, {sum(s.seconds for s in r.log.others):.3f}s "
            "in all (catalog queries, dead-tuple reads)")
        for s in r.log.others:
            if s.seconds >= 0.05:
                say(f"       {s.seconds:.3f}s: {' '.join(s.text.split())[:90]}")
    say("     CPU seconds during the run: " + ", ".join(f"{k} {v:.2f}" for k, v in r.cpu.items())
        + f" (of {r.seconds * (os.cpu_count() or 1):.2f} available)")
    # What would the pool's finish have been, with these very statement times, in other orders?
    dur = {s.table.split(".")[-1]: s.seconds for s in bench}
    if dur:
        in_order = [s.seconds for s in sorted(bench, key=lambda s: s.start)]
        largest_first = [dur[n] for n in sorted(dur, key=lambda n: -relpages.get(n, 0))]
        longest_first = sorted(dur.values(), reverse=True)
        say(f"     bench tables on {JOBS} workers, these statement times: in the order run {makespan(in_order, JOBS):.3f}s; "
            f"largest relpages first (vacuumdb's order) {makespan(largest_first, JOBS):.3f}s; "
            f"longest first {makespan(longest_first, JOBS):.3f}s; lower bound {max(sum(dur.values()) / JOBS, max(dur.values())):.3f}s")


# --- the whole run --------------------------------------------------------------------------------

@dataclass
class Round:
    vacuumdb: RunResult
    maint: RunResult
    ratio: float
    order: tuple[str, ...]
    defaults: RunResult | None = None  # the flow called with Prefect's defaults (heartbeat on), third copy

    @property
    def defaults_ratio(self) -> float | None:
        return self.defaults.seconds / self.vacuumdb.seconds if self.defaults else None


def foreign_load(r: RunResult | None) -> float:
    if r is None or not r.seconds:
        return 0.0
    return r.cpu.get("everything else", 0.0) / r.seconds


HB_ON = "flow, Prefect defaults (hb on)"


def one_round(args, server: ThrowawayPostgres, work: Path, index: int, tables: list[BenchTable],
              show_bloat: bool) -> Round:
    dbs = {"vacuumdb": f"bench_a_{index}", "maint": f"bench_b_{index}"}
    if args.heartbeat_variant:
        dbs[HB_ON] = f"bench_c_{index}"
    names = list(dbs.values())
    say(f"\n== round {index}: building {', '.join(names)} (the same statements, one copy after the other)")
    timings: dict[str, float] = {}
    errors: list[BaseException] = []

    def build(name: str) -> None:
        try:
            timings[name] = build_database(server, name, tables)
        except Exception as exc:  # re-raised below
            errors.append(exc)

    # One after the other: whether a statement prunes the dead tuples an earlier one left (HOT
    # pruning on the pages it reads) depends on the oldest transaction running anywhere in the
    # cluster, so builds running side by side come out different (seen: 40,000 vs 120,000 dead).
    for name in names:
        build(name)
    if errors:
        raise errors[0]
    time.sleep(1.0)  # the sessions' statistics reach the shared stats (they flush on exit, forced before)
    say("   built in " + ", ".join(f"{n} {s:.1f}s" for n, s in timings.items()))

    configs = {tool: write_config(work / f"maint-{db}.toml", server, db, "bench")
               for tool, db in dbs.items() if tool != "vacuumdb"}
    est = estimates(configs["maint"], "bench")  # before pgstattuple: the catalog as the flow will find it
    missing = [t.name for t in tables if t.name not in est]
    if missing:
        raise RuntimeError(f"table_statistics did not return {missing}")

    started = time.perf_counter()
    measured = {db: measure(server, db, tables) for db in names}
    say(f"   pgstattuple on every copy: {time.perf_counter() - started:.1f}s; the state of {dbs['vacuumdb']}:")
    differ = print_state(tables, dbs["vacuumdb"], measured)
    if differ:
        say(f"   WARNING: {differ} table(s) differ between the copies; the comparison below is not like for like")

    if show_bloat:
        say(f"\n== bloat report vs pgstattuple ({dbs['maint']}, before vacuuming)")
        print_bloat(tables, est, measured[dbs["maint"]])

    from maint.flows._duty import utcnow
    from maint.tasks.environment import load_config
    from maint.vacuum import plan_vacuum

    plan = plan_vacuum([st for st, _ in est.values()], utcnow(), load_config(configs["maint"]).vacuum)
    bloated = {t.name for t in tables if t.profile != "clean"}
    planned = {a.table.name for a in plan}
    say(f"   maint's plan on {dbs['maint']}: {len(plan)} table(s): "
        + ", ".join(f"{a.table.name} ({a.action})" for a in plan))
    if planned != bloated:
        say(f"   WARNING: the plan is not the bloated tables: missing {sorted(bloated - planned)}, "
            f"extra {sorted(planned - bloated)}")

    for db in names:
        log_statements(server, db)
    relpages = {name: st.relpages for name, (st, _) in est.items()}
    tools = list(dbs)
    shift = (index - 1) % len(tools)
    order = tuple(tools[shift:] + tools[:shift])  # who goes first changes from round to round
    results: dict[str, RunResult] = {}
    for tool in order:
        cp = checkpoint(server)
        quiet = settle(postmaster_pid(server), args.settle)
        say(f"\n   CHECKPOINT {cp:.2f}s; {quiet}; then {tool} on {dbs[tool]}")
        if tool == "vacuumdb":
            results[tool] = run_vacuumdb(server, dbs[tool])
        elif tool == HB_ON:
            results[tool] = run_maint(server, configs[tool], dbs[tool], prefect_defaults=True)
            results[tool].tool = HB_ON
        else:
            results[tool] = run_maint(server, configs[tool], dbs[tool])
        print_run(results[tool], bench_names={t.name for t in tables}, relpages=relpages)
        if tool != "vacuumdb":
            print_maint_report(results[tool])

    time.sleep(0.5)
    left = {db: dead_left(server, db, [t for t in tables if t.profile != "clean"]) for db in names}
    say("   dead tuples left on the bench tables: " + ", ".join(f"{n} {v}" for n, v in left.items()))
    for db in names:
        drop_database(server, db)
    return Round(results["vacuumdb"], results["maint"], results["maint"].seconds / results["vacuumdb"].seconds,
                 order, results.get(HB_ON))


def print_maint_report(r: RunResult) -> None:
    findings = [f for f in r.report["findings"] if f["check"] in ("vacuum", "analyze")]
    bad = [f for f in findings if f["severity"] != "ok"]
    say(f"     report of {r.tool}: status {r.report['status']}; {len(findings)} table(s) acted on"
        + (f"; NOT ok: {[f['message'] for f in bad]}" if bad else ""))
    per_table = reported_seconds(r.report)
    say(f"     its own per-table seconds (findings, 0.1s resolution): sum {sum(per_table.values()):.1f}s over "
        f"{len(per_table)} tables, i.e. {sum(per_table.values()) / JOBS:.2f}s per worker at jobs = {JOBS}")
    for name, offset, took in r.tasks:
        say(f"     task {name:<48} started +{offset:7.3f}s  took {took:7.3f}s")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tables", type=int, default=8, help="bloated tables")
    parser.add_argument("--rows", type=int, default=400_000, help="rows per bloated table")
    parser.add_argument("--clean", type=int, default=2, help="never-bloated tables (rows/2 each)")
    parser.add_argument("--repeat", type=int, default=1, help="rounds, each on a fresh double build")
    parser.add_argument("--settle", type=float, default=60.0,
                        help="before each timed run, wait up to this long for other processes to go quiet")
    parser.add_argument("--no-heartbeat-variant", dest="heartbeat_variant", action="store_false",
                        help="skip the third copy, timed with the flow called directly (Prefect's defaults)")
    parser.add_argument("--keep-log", action="store_true", help="keep the workdir (server and Prefect logs)")
    args = parser.parse_args(argv)
    if args.tables < 1 or args.rows < 1 or args.repeat < 1 or args.clean < 0:
        parser.error("--tables, --rows and --repeat must be positive, --clean not negative")
    if not shutil.which("vacuumdb"):
        print("bench/vacuum.py: vacuumdb is not on PATH", file=sys.stderr)
        return 3

    work = Path(tempfile.mkdtemp(prefix="maint-bench-vacuum-"))
    clock = time.monotonic()
    version = subprocess.run(["vacuumdb", "--version"], capture_output=True, text=True).stdout.strip()
    say(f"== maint vacuum benchmark: {os.cpu_count()} CPU(s), Python {sys.version.split()[0]}, {version} "
        f"({shutil.which('vacuumdb')}); {args.tables} bloated tables x {args.rows:,} rows, {args.clean} clean; "
        f"jobs = {JOBS}; workdir {work}")
    try:
        return run(args, work, clock)
    finally:
        if args.keep_log:
            say(f"   kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)


def run(args, work: Path, clock: float) -> int:
    tables = bench_tables(args.tables, args.rows, args.clean)
    rounds: list[Round] = []
    fixed: dict[str, list[float]] = {}
    with ThrowawayPostgres(settings=SERVER_SETTINGS) as server:
        os.environ[PASSWORD_ENV] = server.password
        with server.connect(autocommit=True) as conn:
            pg_version = conn.execute("SHOW server_version").fetchone()[0]
            shared = conn.execute("SHOW shared_buffers").fetchone()[0]
        say(f"   PostgreSQL {pg_version} on {server.host}:{server.port} ({server.datadir}); shared_buffers {shared}; "
            + ", ".join(f"{k} = {v}" for k, v in SERVER_SETTINGS.items()))
        server.create_database("warmup")
        with server.connect("warmup", autocommit=True) as conn:
            conn.execute("CREATE TABLE w (id int PRIMARY KEY, v text) WITH (autovacuum_enabled = off)")
            conn.execute("INSERT INTO w SELECT g, md5(g::text) FROM generate_series(1, 2000) g")
            conn.execute("UPDATE w SET v = v || 'x'")
        warm_config = write_config(work / "maint-warmup.toml", server, "warmup", "warmup")

        with prefect_console_to(work / "prefect-console.log"), prefect_api("harness"):
            from prefect.settings import PREFECT_API_URL

            say("\n== warm-up: the vacuum flow with dry_run=True on the tiny `warmup` database "
                "(starts the Prefect API, imports, first connections)")
            seconds, report = run_flow(warm_config, dry_run=True)
            say(f"   {seconds:.2f}s (status {report['status']}, {len(report['findings'])} findings); "
                f"Prefect API {PREFECT_API_URL.value()}")
            fixed = fixed_costs(warm_config)
            for label, times in fixed.items():
                say(f"   {label}: median {statistics.median(times):.3f}s of " + ", ".join(f"{t:.2f}" for t in times))

            for index in range(1, args.repeat + 1):
                rounds.append(one_round(args, server, work, index, tables, show_bloat=index == 1))

    say("\n== results (seconds; span = first VACUUM/ANALYZE start to last end in the server log)")
    extra = any(r.defaults for r in rounds)
    say(f"   {'round':<6} {'order':<34} {'vacuumdb':>9} {'maint':>9} {'ratio':>7}"
        + (f" {'hb on':>9} {'ratio':>7}" if extra else "")
        + f"   {'spans: vacuumdb':>15} {'maint':>7}" + (f" {'hb on':>7}" if extra else "")
        + "   statements (vacuumdb; maint)   other load, cores (vacuumdb; maint" + ("; hb on)" if extra else ")"))
    for i, r in enumerate(rounds, 1):
        order = " > ".join("hb on" if t == HB_ON else t for t in r.order)
        say(f"   {i:<6} {order:<34} {r.vacuumdb.seconds:9.3f} {r.maint.seconds:9.3f} {r.ratio:7.3f}"
            + (f" {r.defaults.seconds:9.3f} {r.defaults_ratio:7.3f}" if r.defaults else "")
            + f"   {r.vacuumdb.log.span:15.3f} {r.maint.log.span:7.3f}"
            + (f" {r.defaults.log.span:7.3f}" if r.defaults else "")
            + f"   {f'{len(r.vacuumdb.log.vacuums)}; {len(r.maint.log.vacuums)}':<30} "
            + "; ".join(f"{foreign_load(x):.2f}" for x in (r.vacuumdb, r.maint, r.defaults) if x))
    if any(max(foreign_load(r.vacuumdb), foreign_load(r.maint), foreign_load(r.defaults)) > 0.2 for r in rounds):
        say("   (other load = the machine's busy CPU time that was neither PostgreSQL's nor this benchmark's, per "
            "second: other sessions on the machine ran during some timed runs and slowed them on these 2 cores; "
            "compare the server-side spans and CPU above)")
    ratio = statistics.median(r.ratio for r in rounds)
    best_ratio = min(r.maint.seconds for r in rounds) / min(r.vacuumdb.seconds for r in rounds)
    verdict = "PASS" if ratio <= RATIO_TARGET else "FAIL"
    say(f"\n   maint / vacuumdb = {ratio:.3f} (median of {len(rounds)} round(s); best/best {best_ratio:.3f}): "
        f"target <= {RATIO_TARGET:.2f}: {verdict}")
    if extra:
        q = statistics.median(r.defaults_ratio for r in rounds if r.defaults)
        say(f"   the flow called directly with Prefect's defaults (heartbeat on, as under a deployment): {q:.3f} "
            "(median); a diagnostic, not the verdict")
    say(f"   tables vacuumed or analyzed: vacuumdb {len(rounds[-1].vacuumdb.log.vacuums)} (every table, system "
        f"catalogs included), maint {len(rounds[-1].maint.log.vacuums)} (the bloated ones it selected)")
    for i, rnd in enumerate(rounds, 1):
        for r in (rnd.maint, rnd.defaults, rnd.vacuumdb):
            if r:
                say(f"   round {i}, {r.tool}: {r.seconds:.3f}s = vacuum statements' span {r.log.span:.3f}s + "
                    f"{r.seconds - r.log.span:.3f}s around them")
    around = statistics.median(r.maint.seconds - r.maint.log.span for r in rounds)
    around_db = statistics.median(r.vacuumdb.seconds - r.vacuumdb.log.span for r in rounds)
    same_speed = statistics.median((r.vacuumdb.log.span + r.maint.seconds - r.maint.log.span) / r.vacuumdb.seconds
                                   for r in rounds)
    say(f"   time around the vacuum statements (median): maint {around:.3f}s, vacuumdb {around_db:.3f}s. The "
        f"statements' own speed varies from run to run with the host (see 'stolen by the hypervisor' and the "
        f"spans); had maint's statements taken exactly as long as vacuumdb's in the same round, the ratio "
        f"would be {same_speed:.3f} (median; an estimate, not a measurement)")
    if fixed:
        say(f"   a dry run's fixed cost (warm-up): {statistics.median(fixed[AS_MAINT_RUN]):.3f}s as `maint run` runs "
            f"it, {statistics.median(fixed[PREFECT_DEFAULTS]):.3f}s called directly with Prefect's defaults")
    say(f"\n   benchmark took {time.monotonic() - clock:.0f}s; Prefect's console output went to a log file "
        f"({'kept' if args.keep_log else 'removed with the workdir'})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
