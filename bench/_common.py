"""What the benchmark scripts in bench/ share.

Not a package: a script run as `.venv/bin/python bench/NAME.py` has bench/ first on sys.path, so
it imports this module as `_common`. Importing it puts the checkout itself on sys.path (maint and
tests as they are here, not an installed copy); the rest is called explicitly:

  - the environment: Prefect's telemetry off, the PostgreSQL server binaries on PATH;
  - output: lines that stay on the terminal (`say`) while Prefect's console output goes to a file
    (`prefect_console_to`), seconds in a column (`fmt`), PASS or FAIL (`verdict`);
  - the Prefect API (`prefect_api`), one flow run as `maint run` runs it or with Prefect's
    defaults (`run_flow_state`; `timed_ok_run` for a duty that must report ok), and its task
    runs as the API recorded them (`task_times`);
  - CPU accounting from /proc: every live process's CPU seconds (`process_table`), the processes
    below some (`descendants`), the whole machine's (`machine_cpu`), the load average;
  - the throwaway PostgreSQL server: its postmaster, its [[databases]] entry in maint.toml,
    libpq's environment for the command-line tools, a timed command, statements on parallel
    connections, DROP DATABASE;
  - for the backup benchmarks (verify, restore): the working directory, maint's configuration and
    a backup taken by maint's own `backup` duty.
"""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterable
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

MIB = 1024 * 1024
CLK_TCK = os.sysconf("SC_CLK_TCK")


# --- the environment ------------------------------------------------------------------------------

def prefect_telemetry_off() -> None:
    """Before Prefect is imported: no analytics from the API server, no telemetry (unless the
    environment already says otherwise)."""
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("DO_NOT_TRACK", "1")


def postgres_bin_on_path() -> None:
    """Debian keeps the PostgreSQL server binaries (initdb, pg_ctl) off PATH: the newest version's
    bin directory goes at the end of it, unless it is there already."""
    pg_bins = sorted(glob.glob("/usr/lib/postgresql/*/bin"))
    if pg_bins and pg_bins[-1] not in os.environ["PATH"].split(os.pathsep):
        os.environ["PATH"] += os.pathsep + pg_bins[-1]


# --- output ---------------------------------------------------------------------------------------

_terminal = None  # fd 1 as it was before prefect_console_to sent it to a file


def say(text: str = "") -> None:
    (_terminal or sys.stdout).write(text + "\n")
    (_terminal or sys.stdout).flush()


@contextmanager
def prefect_console_to(path: Path):
    """Send fd 1 and 2 to `path` (Prefect logs a line per finding and per task run: hundreds a
    run), keep `say` on the terminal. At fd level, so whatever handler Prefect built keeps writing
    as it would."""
    global _terminal
    sys.stdout.flush()
    sys.stderr.flush()
    saved_out, saved_err = os.dup(1), os.dup(2)
    _terminal = os.fdopen(os.dup(saved_out), "w", buffering=1)
    with open(path, "ab") as log:
        os.dup2(log.fileno(), 1)
        os.dup2(log.fileno(), 2)
    try:
        yield
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os.dup2(saved_out, 1)
        os.dup2(saved_err, 2)
        os.close(saved_out)
        os.close(saved_err)
        _terminal.close()
        _terminal = None


def fmt(seconds: float) -> str:
    return f"{seconds:8.3f} s"


def verdict(ok: bool) -> str:
    return "PASS" if ok else "FAIL"


# --- Prefect --------------------------------------------------------------------------------------

def prefect_api(kind: str):
    """The Prefect API the flows are to run against, as a context manager to enter: "harness", a
    temporary server with its own database (prefect_test_harness, as the tests); "ephemeral", the
    one `maint run` starts in-process when PREFECT_API_URL is not set."""
    if kind == "harness":
        from prefect.testing.utilities import prefect_test_harness

        return prefect_test_harness(server_startup_timeout=120)
    os.environ.pop("PREFECT_API_URL", None)
    return nullcontext()


def run_flow_state(flow, prefect_defaults: bool = False, **parameters):
    """One flow run in this process as `maint run` runs it (flows._duty.run_now: Prefect's
    flow-run heartbeat off), or with `prefect_defaults` as a plain call of the flow (heartbeat on,
    as under a deployment: its thread sleeps in 1 s steps and is joined when the run ends).
    Returns the final state."""
    if not prefect_defaults:
        try:
            from maint.flows._duty import run_now
        except ImportError:  # older maint: the flow called as it is
            pass
        else:
            return run_now(flow, **parameters)
    return flow(**parameters, return_state=True)


def report_of_state(flow, state) -> dict:
    """The report a duty's run produced (a critical one included); raises when there is none."""
    from maint.flows._duty import report_of

    result = state.result(raise_on_failure=False)
    report = report_of(result)
    if report is None:
        raise RuntimeError(f"the {flow.name} flow did not produce a report: {state.type} {result!r}")
    return report


def timed_ok_run(flow, prefect_defaults: bool = False, **parameters) -> tuple[float, dict]:
    """One flow run (see run_flow_state) of a duty that must report status ok: the seconds until
    its result was in hand, and the result."""
    started = time.perf_counter()
    state = run_flow_state(flow, prefect_defaults, **parameters)
    result = state.result(raise_on_failure=False)
    elapsed = time.perf_counter() - started
    if not (isinstance(result, dict) and result.get("status") == "ok"):
        raise RuntimeError(f"{flow.name} did not report ok: {result!r}")
    return elapsed, result


def task_times(flow_run_id: str) -> list[tuple[str, float, float]]:
    """(task name, seconds from the flow run's start to the task's start, task run time) for one
    flow run, read back from the Prefect API; and last the flow run's own start-to-end time."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    with get_client(sync_client=True) as client:
        flow_run = client.read_flow_run(uuid.UUID(flow_run_id))
        runs = client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[uuid.UUID(flow_run_id)])))
    origin = flow_run.start_time or flow_run.expected_start_time
    rows = []
    for run in runs:
        offset = (run.start_time - origin).total_seconds() if run.start_time and origin else float("nan")
        took = (run.end_time - run.start_time).total_seconds() if run.start_time and run.end_time else float("nan")
        rows.append((run.name.rsplit("-", 1)[0] if run.name else run.task_key, offset, took))
    rows.sort(key=lambda r: r[1])
    flow_took = ((flow_run.end_time - flow_run.start_time).total_seconds()
                 if flow_run.start_time and flow_run.end_time else float("nan"))
    rows.append(("(flow run, start to end as Prefect records it)", 0.0, flow_took))
    return rows


# --- CPU accounting (the machine has 2 cores and may be shared) -----------------------------------

@dataclass(frozen=True)
class ProcessCpu:
    ppid: int
    own: float  # utime + stime, seconds
    reaped: float  # cutime + cstime: what it collected from children that exited and were waited for


def process_table() -> dict[int, ProcessCpu]:
    """Every live process's CPU seconds so far, by pid, from /proc/PID/stat."""
    table = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                raw = f.read()
        except OSError:  # exited since the listing
            continue
        # The fields after the command name, which is in parentheses and may hold spaces:
        # [1] ppid; [11] utime, [12] stime, [13] cutime, [14] cstime, in clock ticks.
        fields = raw[raw.rindex(")") + 2:].split()
        table[int(entry)] = ProcessCpu(int(fields[1]), (int(fields[11]) + int(fields[12])) / CLK_TCK,
                                       (int(fields[13]) + int(fields[14])) / CLK_TCK)
    return table


def descendants(roots: Iterable[int], table: dict[int, ProcessCpu]) -> set[int]:
    """The live processes below `roots` in `table`, at any depth; not the roots themselves."""
    children: dict[int, list[int]] = {}
    for pid, process in table.items():
        children.setdefault(process.ppid, []).append(pid)
    found, todo = set(), list(roots)
    while todo:
        for child in children.get(todo.pop(), []):
            if child not in found:
                found.add(child)
                todo.append(child)
    return found


def machine_cpu() -> tuple[float, float]:
    """(busy, steal) CPU seconds of the whole machine since boot. Busy is user, nice, system, irq
    and softirq time; steal is time the hypervisor gave to someone else while this machine had
    work: the same work then takes longer."""
    with open("/proc/stat") as f:
        ticks = [int(x) for x in f.readline().split()[1:9]]  # user nice system idle iowait irq softirq steal
    return (ticks[0] + ticks[1] + ticks[2] + ticks[5] + ticks[6]) / CLK_TCK, ticks[7] / CLK_TCK


def load_average() -> str:
    """The 1, 5 and 15 minute load averages, as the kernel writes them."""
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "unknown"


# --- the throwaway PostgreSQL server (maint.tasks.postgres.server.ThrowawayPostgres) -------------------------------

def postmaster_pid(server) -> int:
    return int((server.datadir / "postmaster.pid").read_text().split()[0])


def database_entry(server, password_env: str, dbname: str, name: str = "bench",
                   connect_timeout: str | None = None) -> str:
    """maint.toml's [[databases]] entry for `server`, its password in the environment variable
    `password_env`."""
    entry = f"""[[databases]]
name = "{name}"
host = "{server.host}"
port = {server.port}
dbname = "{dbname}"
user = "{server.superuser}"
password_env = "{password_env}"
sslmode = "disable"
"""
    return entry + (f'connect_timeout = "{connect_timeout}"\n' if connect_timeout else "")


def libpq_env(server) -> dict[str, str]:
    """This process's environment plus what the PostgreSQL command-line tools need to reach `server`."""
    return {**os.environ, "PGHOST": server.host, "PGPORT": str(server.port), "PGUSER": server.superuser,
            "PGPASSWORD": server.password}


def timed_command(argv: list[str], env: dict[str, str] | None = None) -> float:
    """Seconds `argv` took; its output discarded, its stderr in the error if it fails."""
    started = time.perf_counter()
    done = subprocess.run(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    elapsed = time.perf_counter() - started
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} failed ({done.returncode}): {done.stderr.decode(errors='replace')[-800:]}")
    return elapsed


def in_parallel(server, dbname: str, statements: list[tuple[str, object]], workers: int = 2) -> None:
    """Run the (statement, parameters) pairs on `workers` connections (two cores), taken in list
    order; the first error stops them all and is raised."""
    pending, lock, errors = list(statements), threading.Lock(), []

    def worker() -> None:
        try:
            with server.connect(dbname, autocommit=True) as conn:
                while True:
                    with lock:
                        if not pending or errors:
                            return
                        statement, params = pending.pop(0)
                    conn.execute(statement, params)
        except BaseException as exc:  # noqa: BLE001 - re-raised below
            errors.append(exc)

    threads = [threading.Thread(target=worker) for _ in range(workers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]


def drop_database(server, dbname: str) -> None:
    from psycopg import sql

    with server.connect(autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(dbname)))


# --- the backup benchmarks (verify, restore) ------------------------------------------------------

@contextmanager
def workdir(given: str | None, prefix: str, keep: bool, leftovers: tuple[str, ...]):
    """Where stores and configs go: `given` (--workdir), or a new directory under /tmp. At the
    end, unless `keep`, a new one is removed, and of a given one only the `leftovers` in it."""
    work = Path(given or tempfile.mkdtemp(prefix=prefix, dir="/tmp")).resolve()
    work.mkdir(parents=True, exist_ok=True)
    try:
        yield work
    finally:
        if keep:
            say(f"\nworkdir kept: {work}")
        elif given is None:
            shutil.rmtree(work, ignore_errors=True)
        else:
            for name in leftovers:
                target = work / name
                shutil.rmtree(target, ignore_errors=True) if target.is_dir() else target.unlink(missing_ok=True)


def write_backup_config(path: Path, server, dbname: str, store: Path | str, password_env: str,
                        more_sections: str = "", store_keys: str = "") -> Path:
    """The same shape as tests/conftest.py write_config: one database, one store (a local
    directory, or the URL given as a string: s3://bucket/prefix/ with its `store_keys`, TOML
    lines such as endpoint_url), the backup duty; `more_sections` (TOML, ending in a blank line)
    go before [schedules]."""
    url = store if isinstance(store, str) else f"file://{store}/"
    path.write_text(f"""
timezone = "UTC"

[notify]
page_on = ["critical"]

{database_entry(server, password_env, dbname, connect_timeout="10s")}
[[backup_stores]]
name = "bench-dumps"
url = "{url}"
database = "bench"
rpo = "26h"
{store_keys}
[backup]
database = "bench"
store = "bench-dumps"

{more_sections}[schedules]
backup = "0 1 * * *"
""")
    return path


def make_backup(config: Path, store: Path, prefect_defaults: bool = False) -> tuple[Path, float]:
    """One backup by maint's own `backup` duty into the empty local `store` (so the dump has a
    manifest); returns the dump and the seconds the flow run took."""
    from maint.flows.backup import backup

    elapsed, _ = timed_ok_run(backup, prefect_defaults, config_path=str(config))
    dumps = sorted(store.glob("*.dump"))
    if len(dumps) != 1 or not Path(f"{dumps[0]}.manifest.json").exists():
        raise RuntimeError(f"expected one dump with a manifest in {store}, found {dumps}")
    return dumps[0], elapsed
