"""Benchmark: maint's retention planning over a very large store, in-process, no I/O.

    .venv/bin/python bench/retention.py [--objects 100000] [--repeat 5] [--timezone Europe/Berlin] [--seed 1]

Builds `--objects` synthetic backups, one about every 15 minutes (with up to two minutes of
jitter) back from a fixed "now", so 100,000 backups span about 2.9 years. Their names are
deliberately not in time order (a random permutation of serial numbers, so sorting by name would
be wrong), the list is shuffled, and the newest few carry a manifest whose snapshot time is their
real creation time (as `list_backups` attaches manifests only to the newest `size_window + 3`).

Then times, `--repeat` times each:

  plan      maint.retention.plan_retention(backups, RetentionConfig(keep_last 7, keep_daily 14,
            keep_weekly 8, keep_monthly 12, min_keep 3), now, rpo=26h, verified=<a recent backup>,
            zone=ZoneInfo(--timezone)), the call flows/backup_retention.py makes;
  group     maint.backups.group_backups over the matching maint.tasks.storage.StoredObject list
            (one dump and one manifest object per backup, shuffled: what a store listing hands
            over) followed by newest_first, as every run does before planning;
  pipeline  group + plan together: the pure part of a real run, end to end;
  (info)    what the flow does with the plan afterwards: the report's `plan` detail (every kept
            backup and the first deletions, as flows/backup_retention.py shows them), the markdown
            report artifact and the JSON report (`--json`). Not part of the
            target; printed so their cost is visible too.

PASS/FAIL against the < 2 s target is the slowest timed run of plan_retention (wall clock); the
pipeline is held against the same bound for information. CPU seconds of this process are printed
beside the wall times, with the load average: on a shared machine wall time includes waiting for
a core. A measurement, not a test: exits 0 whatever the figures, non-zero only if it breaks.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import sys
import time
from datetime import datetime, timedelta, timezone
from zoneinfo import ZoneInfo

# Importing _common also puts this checkout on sys.path, for the imports of maint below.
from _common import load_average, say

from maint.backups import BackupEntry, Manifest, TableCount, group_backups, newest_first
from maint.config import RetentionConfig
from maint.report import Finding, Report, Severity
from maint.retention import plan_retention
from maint.tasks.storage import StoredObject

TARGET_SECONDS = 2.0
NOW = datetime(2026, 11, 27, 5, 0, tzinfo=timezone.utc)
EVERY = timedelta(minutes=15)
RPO = timedelta(hours=26)
POLICY = RetentionConfig(store="bench", keep_last=7, keep_daily=14, keep_weekly=8, keep_monthly=12, min_keep=3)
STORE_URL = "gs://acme-backups/prod/"
MANIFESTS_ATTACHED = 10  # size_window (7) + 3, as list_backups reads


def synthetic_store(count: int, seed: int) -> tuple[list[BackupEntry], list[StoredObject]]:
    """`count` backups (shuffled BackupEntry list) and their store listing (shuffled StoredObjects)."""
    rng = random.Random(seed)
    serials = list(range(count))
    rng.shuffle(serials)  # name order has nothing to do with time order
    tables = [TableCount("public", t, rng.randrange(10_000, 10_000_000))
              for t in ("customers", "orders", "order_items", "events", "invoices")]
    entries, objects = [], []
    for i in range(count):  # i = 0 is the newest
        snapshot = NOW - timedelta(minutes=5) - i * EVERY - timedelta(seconds=rng.randrange(0, 120))
        written = snapshot + timedelta(seconds=rng.randrange(30, 600))  # the object lands after the dump ran
        name = f"prod-{serials[i]:07d}.dump"
        size = rng.randrange(400, 600) * 1024 * 1024
        generation = 1_700_000_000_000_000 + i
        manifest = None
        if i < MANIFESTS_ATTACHED:
            manifest = Manifest(database="prod", dbname="shop", host="10.0.0.5", port=5432, server_version="15.8",
                                pg_dump_version="pg_dump (PostgreSQL) 15.8", snapshot_time=snapshot,
                                started_at=snapshot, finished_at=written, dump_name=name, size_bytes=size,
                                sha256="0" * 64, crc32c="AAAAAA==", tables=tables)
        entries.append(BackupEntry(name=name, url=STORE_URL + name, kind="custom", size_bytes=size,
                                   object_created_at=written, generation=generation, crc32c="AAAAAA==",
                                   md5=None, manifest_name=name + ".manifest.json",
                                   manifest_generation=generation + 1, manifest=manifest))
        objects.append(StoredObject(name=name, url=STORE_URL + name, size_bytes=size, created_at=written,
                                    generation=generation, crc32c="AAAAAA=="))
        objects.append(StoredObject(name=name + ".manifest.json", url=STORE_URL + name + ".manifest.json",
                                    size_bytes=1500, created_at=written + timedelta(seconds=1),
                                    generation=generation + 1, crc32c="AAAAAA=="))
    rng.shuffle(entries)
    rng.shuffle(objects)
    return entries, objects


def timed(fn, repeat: int) -> tuple[list[float], list[float], object]:
    """Wall seconds and CPU seconds of this process (the machine may be shared: CPU time shows
    what the code itself costs, wall time what a run would see)."""
    runs, cpu, result = [], [], None
    for _ in range(repeat):
        result = None
        started, started_cpu = time.perf_counter(), time.process_time()
        result = fn()
        runs.append(time.perf_counter() - started)
        cpu.append(time.process_time() - started_cpu)
    return runs, cpu, result


def describe(runs: list[float], cpu: list[float]) -> str:
    return (f"wall best {min(runs):.3f}s median {statistics.median(runs):.3f}s worst {max(runs):.3f}s; "
            f"cpu median {statistics.median(cpu):.3f}s  [wall {', '.join(f'{r:.3f}' for r in runs)}]")


def reason_kind(reason: str) -> str:
    for prefix in ("one of the newest", "newest of day", "newest of ISO week", "newest of month", "min_keep",
                   "the newest backup that passed verification"):
        if reason.startswith(prefix):
            return prefix
    return reason


def check_plan(plan, entries: list[BackupEntry], verified: str) -> dict[str, int]:
    """The plan is sane: everything decided once, newest first, the newest and the verified kept."""
    decisions = plan.decisions
    if plan.refused:
        raise RuntimeError(f"the plan refused: {plan.refused}")
    if len(decisions) != len(entries) or len({d.backup.name for d in decisions}) != len(entries):
        raise RuntimeError(f"{len(decisions)} decisions for {len(entries)} backups")
    times = [d.backup.created_at for d in decisions]
    if any(a < b for a, b in zip(times, times[1:])):
        raise RuntimeError("decisions are not newest first")
    newest = max(entries, key=lambda e: e.created_at).name
    keep = {d.backup.name for d in decisions if d.keep}
    if newest not in keep or verified not in keep:
        raise RuntimeError("the newest or the verified backup is not kept")
    if not all(d.reasons for d in decisions):
        raise RuntimeError("a decision without a reason")
    return {"keep": len(keep), "delete": len(decisions) - len(keep)}


def report_cost(plan) -> dict[str, float]:
    """What flows/backup_retention.py and finish_duty do with the plan, minus the I/O."""
    try:  # the flow shows every kept backup and only the first deletions
        from maint.flows.backup_retention import _SHOWN_DELETIONS as shown_deletions
    except ImportError:  # older maint: every decision
        shown_deletions = None
    timings = {}
    clock = time.perf_counter()
    report = Report(duty="backup-retention", started_at=NOW)
    shown = plan.decisions if shown_deletions is None else (
        [d for d in plan.decisions if d.keep] + plan.deletions[:shown_deletions])
    report.details["plan"] = [{"backup": d.backup.name, "created": d.backup.created_at.isoformat(timespec="seconds"),
                               "decision": "keep" if d.keep else "delete", "why": "; ".join(d.reasons)}
                              for d in sorted(shown, key=lambda d: d.backup.created_at, reverse=True)]
    report.add(Finding("retention", STORE_URL, Severity.OK, "dry run"))
    report.finished_at = NOW
    timings[f"details 'plan' list ({len(shown):,} rows)"] = time.perf_counter() - clock
    clock = time.perf_counter()
    markdown = report.to_markdown(None)
    timings["to_markdown (report artifact)"] = time.perf_counter() - clock
    clock = time.perf_counter()
    as_json = json.dumps(report.to_dict())
    timings["json.dumps(to_dict()) (--json)"] = time.perf_counter() - clock
    timings["_sizes"] = (len(markdown), len(as_json))  # type: ignore[assignment]
    return timings


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--objects", type=int, default=100_000, help="number of backups (default 100000)")
    parser.add_argument("--repeat", type=int, default=5, help="timed runs of each step (default 5)")
    parser.add_argument("--timezone", default="Europe/Berlin", help="the config's timezone (default Europe/Berlin)")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args(argv)
    if args.objects < 10 or args.repeat < 1:
        parser.error("--objects must be at least 10 and --repeat positive")
    zone = ZoneInfo(args.timezone)

    say(f"== maint retention benchmark: {args.objects:,} backups, Python {sys.version.split()[0]}")
    clock = time.perf_counter()
    entries, objects = synthetic_store(args.objects, args.seed)
    span = max(e.created_at for e in entries) - min(e.created_at for e in entries)
    say(f"   built {len(entries):,} BackupEntry and {len(objects):,} StoredObject in "
        f"{time.perf_counter() - clock:.1f}s; span {span.days} days ({span.days / 365.25:.2f} years), "
        f"one every ~{EVERY.total_seconds() / 60:.0f} min; names shuffled against time; "
        f"{MANIFESTS_ATTACHED} newest with a manifest")
    by_name = sorted(entries, key=lambda e: e.name)
    by_time = newest_first(entries)
    say(f"   name order vs time order: first by name {by_name[0].name} is "
        f"{by_time.index(by_name[0]) + 1:,}th newest; newest is {by_time[0].name}")
    verified = by_time[30].name  # verification passed a few hours back
    say(f"   policy: keep_last {POLICY.keep_last}, keep_daily {POLICY.keep_daily}, keep_weekly {POLICY.keep_weekly}, "
        f"keep_monthly {POLICY.keep_monthly}, min_keep {POLICY.min_keep}; rpo 26h; zone {args.timezone}; "
        f"verified {verified}")

    def plan():
        return plan_retention(entries, POLICY, NOW, rpo=RPO, verified=verified, zone=zone)

    def group():
        return newest_first(group_backups(objects))

    def pipeline():
        grouped = group_backups(objects)
        return plan_retention(grouped, POLICY, NOW, rpo=RPO, verified=verified, zone=zone)

    say(f"\n== timing, {args.repeat} run(s) each")
    say(f"   load average before: {load_average()} on {os.cpu_count()} CPU(s)")
    plan_runs, plan_cpu, the_plan = timed(plan, args.repeat)
    counts = check_plan(the_plan, entries, verified)
    say(f"   plan_retention:                 {describe(plan_runs, plan_cpu)}")
    group_runs, group_cpu, grouped = timed(group, args.repeat)
    if len(grouped) != len(entries) or not all(e.manifest_name for e in grouped):
        raise RuntimeError(f"group_backups gave {len(grouped)} backups for {len(entries)}")
    say(f"   group_backups + newest_first:   {describe(group_runs, group_cpu)}")
    pipeline_runs, pipeline_cpu, pipeline_plan = timed(pipeline, args.repeat)
    pipeline_counts = check_plan(pipeline_plan, entries, verified)
    say(f"   group_backups + plan_retention: {describe(pipeline_runs, pipeline_cpu)}")
    say(f"   load average after: {load_average()}")
    costs = report_cost(the_plan)
    sizes = costs.pop("_sizes")

    kept_reasons: dict[str, int] = {}
    for d in the_plan.decisions:
        if d.keep:
            for reason in d.reasons:
                kind = reason_kind(reason)
                kept_reasons[kind] = kept_reasons.get(kind, 0) + 1

    def verdict(seconds: float) -> str:
        return "PASS" if seconds < TARGET_SECONDS else "FAIL"

    say("\n" + "=" * 78)
    say("RESULTS")
    say("=" * 78)
    say(f"{args.objects:,} backups over {span.days} days; plan: keep {counts['keep']}, delete {counts['delete']:,} "
        f"(from the listing: keep {pipeline_counts['keep']}, delete {pipeline_counts['delete']:,})")
    say("kept because (a backup may have several reasons): "
        + ", ".join(f"'{k}' x{v}" for k, v in sorted(kept_reasons.items())))
    say(f"\n  {'step':<44}{'wall best':>10}{'median':>8}{'worst':>8}{'cpu median':>12}")
    for label, runs, cpu in (("plan_retention", plan_runs, plan_cpu),
                             ("group_backups + newest_first", group_runs, group_cpu),
                             ("group_backups + plan_retention (pipeline)", pipeline_runs, pipeline_cpu)):
        say(f"  {label:<44}{min(runs):>9.3f}s{statistics.median(runs):>7.3f}s{max(runs):>7.3f}s"
            f"{statistics.median(cpu):>11.3f}s")
    say("\n  after planning, for information (one run each, not part of the target):")
    for label, seconds in costs.items():
        say(f"  {label:<44}{seconds:>7.3f}s")
    say(f"  (report artifact {sizes[0] / 1e3:,.0f} kB of markdown, JSON report {sizes[1] / 1e3:,.0f} kB)")
    say(f"\nplanning over {args.objects:,} objects, worst of {args.repeat}: {max(plan_runs):.3f}s   "
        f"target < {TARGET_SECONDS:.0f}s  {verdict(max(plan_runs))}")
    say(f"  (median {statistics.median(plan_runs):.3f}s wall, {statistics.median(plan_cpu):.3f}s CPU)")
    say(f"for information, group + plan (the pure part of a real run), worst of {args.repeat}: "
        f"{max(pipeline_runs):.3f}s (median {statistics.median(pipeline_runs):.3f}s wall, "
        f"{statistics.median(pipeline_cpu):.3f}s CPU)   same bound: {verdict(max(pipeline_runs))}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
