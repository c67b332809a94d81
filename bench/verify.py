"""Benchmark: maint's backup verification against the plain tools, on the same file, in one run.

    .venv/bin/python bench/verify.py [--size-mib 1024] [--small-mib 100] [--repeat 1] [--workdir DIR] [--keep]

Starts a throwaway PostgreSQL (maint.tasks.postgres.server.ThrowawayPostgres), fills two databases with poorly
compressible generated rows (base64 of sha512 digests), makes one backup of each with maint's own
`backup` duty into a local file:// store (so each has a manifest), then on the large dump times

    md5sum FILE
    pg_restore -f /dev/null FILE
    maint (a) the streamed pass alone: read_backup_in_one_pass.fn(store, newest)
    maint (b) the whole `backup-verification` flow as `maint run` runs it (flows._duty.run_now),
              Prefect API already up and warmed
    maint (c) the same flow called plainly, Prefect's flow-run heartbeat on (as under a deployment)

and reports maint / max(md5sum, pg_restore) against the 1.10 target, plus the peak RSS of a fresh
`maint run backup-verification` process for the small and the large backup against the 64 MiB
target. A measurement, not a test: it exits 0 whatever the figures, non-zero only if it breaks.
"""

from __future__ import annotations

import argparse
import logging
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

# Importing _common also puts this checkout on sys.path, for the imports of maint and flows.
from _common import (MIB, ROOT, in_parallel, make_backup, postgres_bin_on_path, prefect_api, prefect_telemetry_off,
                     say, timed_command, timed_ok_run, verdict, workdir, write_backup_config)

prefect_telemetry_off()
postgres_bin_on_path()

from maint.tasks.postgres.server import ThrowawayPostgres  # noqa: E402

PASSWORD_ENV = "MAINT_BENCH_DB_PASSWORD"
RATIO_TARGET = 1.10
RSS_TARGET_MIB = 64
# Per row: 8 sha512 digests (512 pseudo-random bytes) as base64, ~700 characters of text that
# deflate can only shrink to about 3/4 (6 bits of entropy per character). Not TOASTed (< 2 kB).
_DIGESTS_PER_ROW = 8
_PAYLOAD = "encode(" + " || ".join(f"sha512(('{chr(97 + k)}' || g)::bytea)" for k in range(_DIGESTS_PER_ROW)) + ", 'base64')"
_GUESS_DUMP_BYTES_PER_ROW = 540.0  # refined from the small dump before the large one is generated
_BATCH_ROWS = 100_000


# --- data -----------------------------------------------------------------------------------------

def generate(server: ThrowawayPostgres, dbname: str, rows: int) -> float:
    """An UNLOGGED table of `rows` poorly compressible rows, in two connections (two cores)."""
    started = time.monotonic()
    server.create_database(dbname)
    with server.connect(dbname, autocommit=True) as conn:
        conn.execute("CREATE UNLOGGED TABLE blobs (id bigint NOT NULL, payload text NOT NULL)")
    insert = f"INSERT INTO blobs SELECT g, {_PAYLOAD} FROM generate_series(%s::bigint, %s::bigint) g"
    in_parallel(server, dbname, [(insert, (lo, min(lo + _BATCH_ROWS - 1, rows)))
                                 for lo in range(1, rows + 1, _BATCH_ROWS)])
    with server.connect(dbname, autocommit=True) as conn:
        conn.execute("ANALYZE blobs")
    return time.monotonic() - started


# --- timing ---------------------------------------------------------------------------------------

class Cache:
    """Cold page cache before every timed run when we may drop it, else one warm read first."""

    def __init__(self) -> None:
        self.can_drop = self._drop()
        self.mode = ("cold: page cache dropped (sync; echo 3 > /proc/sys/vm/drop_caches) before every timed run"
                     if self.can_drop else
                     "warm: cannot drop the page cache, so the file was read once untimed before every timed run "
                     "and every tool reads it from cache")

    @staticmethod
    def _drop() -> bool:
        try:
            os.sync()
            with open("/proc/sys/vm/drop_caches", "w") as f:
                f.write("3\n")
            return True
        except OSError:
            return False

    def prepare(self, path: Path) -> None:
        if self.can_drop and self._drop():
            return
        with open(path, "rb") as f:
            while f.read(8 * MIB):
                pass


def measured(action) -> tuple[float, float, float]:
    """(wall seconds, CPU seconds of this process and the children it waited for, load average
    before): CPU far below wall for a CPU-bound tool means it was starved by other work."""
    import resource

    load = os.getloadavg()[0]
    before = [resource.getrusage(who) for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)]
    started = time.perf_counter()
    action()
    wall = time.perf_counter() - started
    after = [resource.getrusage(who) for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)]
    cpu = sum((a.ru_utime - b.ru_utime) + (a.ru_stime - b.ru_stime) for a, b in zip(after, before))
    return wall, cpu, load


class PassTimes(logging.Handler):
    """Picks the flow's own "read URL (SIZE) in N.Ns" line, to split the flow's time."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.seconds: list[float] = []

    def emit(self, record: logging.LogRecord) -> None:
        match = re.match(r"read .* in ([0-9.]+)s$", record.getMessage())
        if match:
            self.seconds.append(float(match.group(1)))


def streamed_pass(config: Path) -> tuple[float, object]:
    """maint (a): the task's own function on the newest entry, as the flow would hand it over."""
    from maint.flows.steps import list_backups, read_backup_in_one_pass
    from maint.tasks.environment import load_config
    from maint.backups import newest_first

    store_config = load_config(config).backup_stores[0]
    newest = newest_first(list_backups.fn(store_config))[0]
    started = time.perf_counter()
    result = read_backup_in_one_pass.fn(store_config, newest)
    elapsed = time.perf_counter() - started
    if not result.archive_ok or result.sha256 != newest.manifest.sha256 or result.bytes_read != newest.size_bytes:
        raise RuntimeError(f"the streamed pass did not verify the backup: {result}")
    return elapsed, result


def whole_flow(config: Path, prefect_defaults: bool = False) -> tuple[float, dict]:
    """maint (b): the backup-verification flow, end to end, as `maint run` calls it."""
    from maint.flows.backup_verification import backup_verification

    return timed_ok_run(backup_verification, prefect_defaults, config_path=str(config))


# --- memory ---------------------------------------------------------------------------------------

_RSS_PROBE = """
import resource, sys
from maint.cli import main
code = main(["--config", sys.argv[1], "run", "backup-verification", "--json"])
sys.stdout.flush()
print("\\nMAXRSS_KIB", code, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, flush=True)
"""


def peak_rss_kib(config: Path, api_url: str | None) -> tuple[int, int]:
    """Peak RSS (KiB) of a fresh `maint run backup-verification` process; its children excluded."""
    env = dict(os.environ)
    if api_url:
        env["PREFECT_API_URL"] = api_url  # the harness's server: the probe starts none of its own
    done = subprocess.run([sys.executable, "-c", _RSS_PROBE, str(config)], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=1800)
    match = re.search(r"^MAXRSS_KIB (-?\d+) (\d+)$", done.stdout, re.M)
    if done.returncode != 0 or not match:
        raise RuntimeError(f"RSS probe failed ({done.returncode}):\n{done.stdout[-2000:]}\n{done.stderr[-3000:]}")
    code, kib = int(match.group(1)), int(match.group(2))
    if code != 0:
        raise RuntimeError(f"maint run backup-verification exited {code} in the RSS probe:\n{done.stdout[-3000:]}")
    return kib, code


# --- main -----------------------------------------------------------------------------------------

def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size-mib", type=int, default=1024, help="size of the large dump, MiB (default 1024)")
    parser.add_argument("--small-mib", type=int, default=100, help="size of the small dump, MiB (default 100)")
    parser.add_argument("--workdir", help="where stores and configs go (default: a new directory under /tmp)")
    parser.add_argument("--keep", action="store_true", help="keep the workdir at the end")
    parser.add_argument("--repeat", type=int, default=1, help="timed runs per tool; the best is reported (default 1)")
    args = parser.parse_args(argv)
    if args.size_mib < 1 or args.small_mib < 1 or args.repeat < 1:
        parser.error("--size-mib, --small-mib and --repeat must be positive")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    with workdir(args.workdir, "maint-bench-", args.keep,
                 leftovers=("store-small", "store-large", "small.toml", "large.toml")) as work:
        return run(args, work)


def run(args: argparse.Namespace, work: Path) -> int:
    from prefect.settings import PREFECT_API_URL

    clock = time.monotonic()
    say(f"== maint verification benchmark: workdir {work}, {os.cpu_count()} CPU(s), "
        f"{shutil.which('pg_restore')}, Python {sys.version.split()[0]}")
    stores = {k: work / f"store-{k}" for k in ("small", "large")}
    for store in stores.values():
        store.mkdir()
    with ThrowawayPostgres() as server, prefect_api("harness"):
        os.environ[PASSWORD_ENV] = server.password
        api_url = PREFECT_API_URL.value()
        say(f"   PostgreSQL on {server.host}:{server.port}; Prefect API (test harness) at {api_url}")
        configs = {k: write_backup_config(work / f"{k}.toml", server, f"bench_{k}", stores[k], PASSWORD_ENV)
                   for k in stores}
        dumps: dict[str, Path] = {}
        per_row = _GUESS_DUMP_BYTES_PER_ROW
        for kind, mib in (("small", args.small_mib), ("large", args.size_mib)):
            rows = max(1, int(mib * MIB / per_row))
            say(f"\n== generating bench_{kind}: {rows} rows for a ~{mib} MiB dump", )
            seconds = generate(server, f"bench_{kind}", rows)
            say(f"   generated in {seconds:.1f}s; taking the backup with maint's `backup` duty")
            dumps[kind], seconds = make_backup(configs[kind], stores[kind])
            size = dumps[kind].stat().st_size
            per_row = size / rows  # calibrates the large one on the small one
            say(f"   {dumps[kind].name}: {size} bytes ({size / MIB:.1f} MiB) in {seconds:.1f}s")
            with server.connect(autocommit=True) as conn:  # free the disk; the dump is all we need
                conn.execute(f"DROP DATABASE bench_{kind}")
        server.stop()  # verification never touches the database; keep its CPU and cache out of it
        large = dumps["large"]

        say("\n== warming up: one backup-verification flow run on the small store")
        warm_seconds, _ = whole_flow(configs["small"])
        say(f"   {warm_seconds:.2f}s")

        cache = Cache()
        say(f"\n== timing on {large} ({large.stat().st_size} bytes), {args.repeat} round(s)\n   {cache.mode}")
        handler = PassTimes()
        verification_log = logging.getLogger("maint.verification")
        old_level = verification_log.level
        verification_log.setLevel(logging.INFO)
        verification_log.addHandler(handler)
        tools = {"md5sum": [], "pg_restore": [], "maint (a) streamed pass": [], "maint (b) whole flow": [],
                 "maint (c) flow, heartbeat on": []}
        inside_flow: list[float] = []
        try:
            for round_no in range(1, args.repeat + 1):
                cache.prepare(large)
                tools["md5sum"].append(measured(lambda: timed_command(["md5sum", str(large)])))
                cache.prepare(large)
                tools["pg_restore"].append(measured(lambda: timed_command(["pg_restore", "-f", "/dev/null", str(large)])))
                cache.prepare(large)
                handler.seconds.clear()
                tools["maint (a) streamed pass"].append(measured(lambda: streamed_pass(configs["large"])))
                cache.prepare(large)
                handler.seconds.clear()
                tools["maint (b) whole flow"].append(measured(lambda: whole_flow(configs["large"])))
                inside_flow.append(handler.seconds[-1] if handler.seconds else float("nan"))
                cache.prepare(large)
                tools["maint (c) flow, heartbeat on"].append(
                    measured(lambda: whole_flow(configs["large"], prefect_defaults=True)))
                say(f"   round {round_no} (load average {tools['md5sum'][-1][2]:.2f} at its start): "
                    + ", ".join(f"{k} {v[-1][0]:.2f}s" for k, v in tools.items()))
        finally:
            verification_log.removeHandler(handler)
            verification_log.setLevel(old_level)

        say("\n== peak RSS: a fresh `maint run backup-verification --json` process per backup "
            "(pointed at the Prefect API already up, so it starts no server of its own)")
        rss = {}
        for kind in ("small", "large"):
            rss[kind], _ = peak_rss_kib(configs[kind], api_url)
            say(f"   {kind}: {rss[kind] / 1024:.1f} MiB")

    best_run = {k: min(v) for k, v in tools.items()}  # by wall time
    best = {k: v[0] for k, v in best_run.items()}
    plain = max(best["md5sum"], best["pg_restore"])
    slower = "md5sum" if best["md5sum"] >= best["pg_restore"] else "pg_restore"
    size = large.stat().st_size
    ratio_a, ratio_b = best["maint (a) streamed pass"] / plain, best["maint (b) whole flow"] / plain
    ratio_c = best["maint (c) flow, heartbeat on"] / plain
    rss_diff_mib = (rss["large"] - rss["small"]) / 1024

    say("\n" + "=" * 78)
    say("RESULTS")
    say("=" * 78)
    say(f"dumps (pg_dump --format=custom --compress=6, made by maint's backup duty):")
    for kind in ("small", "large"):
        say(f"  {kind:<6} {dumps[kind].stat().st_size:>14,} bytes  ({dumps[kind].stat().st_size / MIB:8.1f} MiB)  "
            f"{dumps[kind].name}")
    say(f"page cache: {cache.mode}")
    say(f"\ntimes on the large dump, best of {args.repeat} (all runs in brackets):")
    say(f"  {'tool':<34}{'seconds':>9}{'MiB/s':>9}{'CPU s':>8}   runs (wall s)")
    for name, runs in tools.items():
        label = {"md5sum": "md5sum FILE", "pg_restore": "pg_restore -f /dev/null FILE"}.get(name, name)
        say(f"  {label:<34}{best[name]:>9.2f}{size / MIB / best[name]:>9.0f}{best_run[name][1]:>8.2f}   "
            f"[{', '.join(f'{r[0]:.2f}' for r in runs)}]")
    say("  (CPU s: user+sys of the process and its children, for maint the whole Python process with\n"
        "   Prefect's threads plus its pg_restore child; maint's hashing runs beside pg_restore, on the other core)")
    per_round = [run[0] - inside for run, inside in zip(tools["maint (b) whole flow"], inside_flow) if inside == inside]
    if per_round:
        say(f"  (maint (b) minus the pass inside it, from the flow's own 'read ... in N.Ns' log line, per round: "
            f"{', '.join(f'{o:.1f}' for o in per_round)}s: Prefect's share of the flow)")
    wall, cpu, load = best_run["pg_restore"]
    if wall > 1.15 * cpu + 0.2:
        say(f"  WARNING: pg_restore got {cpu:.2f}s of CPU in {wall:.2f}s (load average {load:.2f}): other work "
            f"competed for the CPUs, so these ratios are unreliable; rerun on a quiet machine or with --repeat 3")
    say(f"\nratios to the slower plain tool ({slower}, {plain:.2f}s):")
    say(f"  maint (b) whole flow         / max(md5sum, pg_restore) = {ratio_b:.3f}   target <= {RATIO_TARGET:.2f}  "
        f"{verdict(ratio_b <= RATIO_TARGET)}")
    say(f"  maint (a) streamed pass      / max(md5sum, pg_restore) = {ratio_a:.3f}   (information; "
        f"{verdict(ratio_a <= RATIO_TARGET)} against the same bound)")
    say(f"  maint (c) flow, heartbeat on / max(md5sum, pg_restore) = {ratio_c:.3f}   (information: the flow called plainly, "
        f"Prefect's flow-run heartbeat on, as under a deployment)")
    say(f"\npeak RSS of the maint process (ru_maxrss of a fresh `maint run backup-verification`; "
        f"pg_restore's memory is its own child process's, not counted):")
    say(f"  small backup ({dumps['small'].stat().st_size / MIB:.0f} MiB): {rss['small'] / 1024:8.1f} MiB")
    say(f"  large backup ({dumps['large'].stat().st_size / MIB:.0f} MiB): {rss['large'] / 1024:8.1f} MiB")
    say(f"  difference:                  {rss_diff_mib:8.1f} MiB   target <= {RSS_TARGET_MIB} MiB  "
        f"{verdict(rss_diff_mib <= RSS_TARGET_MIB)}")
    say(f"\nsummary: ratio {verdict(ratio_b <= RATIO_TARGET)} ({ratio_b:.3f}), "
        f"RSS {verdict(rss_diff_mib <= RSS_TARGET_MIB)} ({rss_diff_mib:+.1f} MiB); "
        f"benchmark took {time.monotonic() - clock:.0f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
