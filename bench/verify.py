"""Benchmark: maint's backup verification against the plain tools, on the same file, in one run.

    .venv/bin/python bench/verify.py [--size-mib 1024] [--small-mib 100] [--repeat 1] [--workdir DIR] [--keep]
                                     [--store {local,s3,both}] [--moto-listing {metadata,copying}]

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

With --store s3 (or both) the same two dumps and their manifests go, through maint's own S3 writer
(a multipart upload with a full-object CRC32C, as the backup duty writes), into versioned buckets
of moto's server on loopback, run as a process of its own (`python -m moto.server`: its CPU and
GIL are not the benchmark's; its CPU per run is reported). On the same object, in the same rounds:

    peer: a Python boto3 script (its own process) streaming get_object's body into
          `pg_restore -f /dev/null` on stdin, wall time of the whole pipeline; and boto3's
          download alone to /dev/null, for the record
    maint (a) the streamed pass alone, (b) the whole flow, on the s3:// configuration

and reports maint (b) / peer against the 1.15 target, that both sides' verdicts agree, and the
peak RSS of a fresh `maint run backup-verification` on the S3 store for both backups. moto's
listing copies every stored byte, which S3's does not: see _MOTO_METADATA_LISTING.
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
                     process_table, say, timed_command, timed_ok_run, verdict, workdir, write_backup_config)

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


# --- the S3 store (moto's server on loopback) ----------------------------------------------------

S3_RATIO_TARGET = 1.15
S3_REGION = "eu-west-1"
S3_BUCKET = "maint-bench-{kind}"  # one versioned bucket per dump: moto lists a bucket by copying all of it
S3_KEY_ENV, S3_SECRET_ENV = "MAINT_BENCH_S3_ACCESS_KEY_ID", "MAINT_BENCH_S3_SECRET_ACCESS_KEY"
S3_FAKE_CREDENTIALS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                       "AWS_EC2_METADATA_DISABLED": "true"}  # moto takes any
PEER_CHUNK = 1024 * 1024


# moto's ListObjectVersions deep-copies every version the bucket holds, bytes and all (a FakeKey's
# __getstate__ reads its value; moto/s3/models.py, list_object_versions), so in moto a listing
# costs seconds per GiB stored, where S3 lists from its index without touching the data. With
# --moto-listing metadata (the default) moto's server runs with that one copy made of the key's
# attributes alone (the listing reads only name, size, dates, version and ETag; the object's
# buffer is shared, never read or closed through the copy): moto then lists as S3 does, and what is timed is maint and the
# peer, not the emulator. --moto-listing copying runs moto as shipped.
_MOTO_METADATA_LISTING = """
import copy, runpy, sys
import moto.s3.models as models

class _ListedKey(models.FakeKey):
    __module__ = "moto.s3.models"  # moto's model registry names a class by its module

    def dispose(self, garbage=False):
        pass  # the buffer is the listed key's own: closing it with the copy would lose the object


class _MetadataCopy:
    copy = staticmethod(copy.copy)

    @staticmethod
    def deepcopy(obj, memo=None):
        if isinstance(obj, list):  # the versions of one key
            return [_MetadataCopy.deepcopy(item) for item in obj]
        if isinstance(obj, models.FakeKey):
            obj.etag  # computed from the bytes once and kept, so the copy never reads the shared buffer
            clone = object.__new__(_ListedKey)
            clone.__dict__.update(obj.__dict__)
            return clone
        return copy.deepcopy(obj, memo)

_listing = models.S3Backend.list_object_versions

def list_object_versions(self, *args, **kwargs):
    models.copy = _MetadataCopy
    try:
        return _listing(self, *args, **kwargs)
    finally:
        models.copy = copy

models.S3Backend.list_object_versions = list_object_versions
sys.argv = ["moto.server", *sys.argv[1:]]
runpy.run_module("moto.server", run_name="__main__")
"""


class MotoServer:
    """`python -m moto.server -H 127.0.0.1 -p PORT` in a process of its own, the same server for
    both sides: its CPU and its GIL are not this process's. `cpu()` is its CPU seconds so far
    (all of its threads), from /proc. Objects up to `in_memory_bytes` stay in its memory
    (MOTO_S3_DEFAULT_KEY_BUFFER_SIZE) rather than in temporary files of its own: what it costs is
    then CPU, not its own disk, and nothing in the benchmark depends on the page cache."""

    def __init__(self, log_path: Path, in_memory_bytes: int, listing: str = "metadata") -> None:
        import socket
        import urllib.request

        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        self.url = f"http://127.0.0.1:{port}"
        self._log = open(log_path, "ab")
        start = ["-c", _MOTO_METADATA_LISTING] if listing == "metadata" else ["-m", "moto.server"]
        self.process = subprocess.Popen([sys.executable, *start, "-H", "127.0.0.1", "-p", str(port)],
                                        stdout=self._log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                        env={**os.environ, "MOTO_S3_DEFAULT_KEY_BUFFER_SIZE": str(in_memory_bytes)})
        deadline = time.monotonic() + 60
        while True:
            try:
                urllib.request.urlopen(f"{self.url}/moto-api/", timeout=2).close()
                return
            except OSError:
                if self.process.poll() is not None or time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError(f"moto's server did not come up on {self.url}; see {log_path}") from None
                time.sleep(0.2)

    def cpu(self) -> float:
        return process_table()[self.process.pid].own

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._log.close()


def s3_admin_client(endpoint_url: str):
    """boto3 as the bench's own administrator: the bucket, and HEAD of what was uploaded."""
    import boto3

    return boto3.client("s3", endpoint_url=endpoint_url, region_name=S3_REGION,
                        aws_access_key_id=S3_FAKE_CREDENTIALS["AWS_ACCESS_KEY_ID"],
                        aws_secret_access_key=S3_FAKE_CREDENTIALS["AWS_SECRET_ACCESS_KEY"])


def upload_backup(config: Path, dump: Path) -> tuple[object, float]:
    """The dump and then its manifest into the config's S3 store through maint's own S3 writer,
    as the backup duty writes them: a multipart upload with a full-object CRC32C, then PutObject.
    Returns the dump's StoredObject (its VersionId and CRC32C) and the seconds it took."""
    from maint.backups import manifest_name
    from maint.tasks.environment import load_config
    from maint.tasks.storage import open_store

    store = open_store(load_config(config).backup_stores[0])
    started = time.perf_counter()
    writer = store.open_writer(dump.name)
    with open(dump, "rb") as f:
        while chunk := f.read(8 * MIB):
            writer.write(chunk)
    stored = writer.commit()
    store.put_bytes(manifest_name(dump.name), Path(f"{dump}.manifest.json").read_bytes())
    return stored, time.perf_counter() - started


# The peer, "the AWS client alone plus pg_restore", as a team would script it: its own process,
# get_object, the body streamed into pg_restore's stdin; credentials from the AWS_* variables.
# It prints the seconds from just before get_object to pg_restore's exit (after Python and
# boto3 started), for the record; the benchmark times the whole process.
_PEER_SCRIPT = r"""
import subprocess, sys, time
import boto3
from botocore.config import Config

endpoint, region, bucket, key, mode, chunk_size = sys.argv[1:7]
s3 = boto3.client("s3", endpoint_url=endpoint, region_name=region, config=Config(s3={"addressing_style": "path"}))
started = time.perf_counter()
body = s3.get_object(Bucket=bucket, Key=key)["Body"]
restore = subprocess.Popen(["pg_restore", "-f", "/dev/null"], stdin=subprocess.PIPE) if mode == "pg_restore" else None
sink = restore.stdin if restore else open("/dev/null", "wb")
try:
    for chunk in body.iter_chunks(int(chunk_size)):
        sink.write(chunk)
    sink.close()
except BrokenPipeError:  # pg_restore gave up: its exit code says why
    pass
code = restore.wait() if restore else 0
print("PEER", code, time.perf_counter() - started, flush=True)
sys.exit(code)
"""


def peer(endpoint_url: str, bucket: str, key: str, mode: str) -> float:
    """The peer pipeline (`mode` "pg_restore"), or boto3's download alone to /dev/null
    ("download"); returns the seconds after Python and boto3 started. Raises unless it exits 0."""
    env = {**os.environ, **S3_FAKE_CREDENTIALS}
    done = subprocess.run([sys.executable, "-c", _PEER_SCRIPT, endpoint_url, S3_REGION, bucket, key, mode,
                           str(PEER_CHUNK)], env=env, capture_output=True, text=True, timeout=1800)
    match = re.search(r"^PEER (-?\d+) ([0-9.]+)$", done.stdout, re.M)
    if done.returncode != 0 or not match:
        raise RuntimeError(f"the peer ({mode}) failed ({done.returncode}):\n{done.stdout[-1000:]}\n{done.stderr[-2000:]}")
    return float(match.group(2))


def time_s3(args: argparse.Namespace, work: Path, server: ThrowawayPostgres, dumps: dict[str, Path],
            api_url: str | None) -> dict:
    """The same dumps in an S3 store (a versioned bucket in moto's server on loopback): the peer
    (boto3 get_object | pg_restore), boto3's download alone, maint (a) and (b), on the same
    object in the same rounds; then the peak RSS per backup."""
    say("\n== S3 store: moto's server on loopback, a process of its own (python -m moto.server)")
    moto = MotoServer(work / "moto.log", in_memory_bytes=2 * max(d.stat().st_size for d in dumps.values()),
                      listing=args.moto_listing)
    try:
        return _time_s3(args, work, server, dumps, api_url, moto)
    finally:
        moto.stop()


def _time_s3(args, work, server, dumps, api_url, moto: MotoServer) -> dict:
    os.environ[S3_KEY_ENV] = S3_FAKE_CREDENTIALS["AWS_ACCESS_KEY_ID"]
    os.environ[S3_SECRET_ENV] = S3_FAKE_CREDENTIALS["AWS_SECRET_ACCESS_KEY"]
    buckets = {kind: S3_BUCKET.format(kind=kind) for kind in ("small", "large")}
    say(f"   {moto.url}, pid {moto.process.pid}; versioned buckets {', '.join(buckets.values())}")
    admin = s3_admin_client(moto.url)
    for bucket in buckets.values():
        admin.create_bucket(Bucket=bucket, CreateBucketConfiguration={"LocationConstraint": S3_REGION})
        admin.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
    store_keys = (f'endpoint_url = "{moto.url}"\nregion = "{S3_REGION}"\n'
                  f'access_key_id_env = "{S3_KEY_ENV}"\nsecret_access_key_env = "{S3_SECRET_ENV}"\n')
    configs, stored, heads = {}, {}, {}
    for kind in ("small", "large"):
        configs[kind] = write_backup_config(work / f"s3-{kind}.toml", server, f"bench_{kind}",
                                            f"s3://{buckets[kind]}/dumps/", PASSWORD_ENV, store_keys=store_keys)
        stored[kind], seconds = upload_backup(configs[kind], dumps[kind])
        heads[kind] = admin.head_object(Bucket=buckets[kind], Key=f"dumps/{dumps[kind].name}", ChecksumMode="ENABLED",
                                        VersionId=stored[kind].generation)
        say(f"   {stored[kind].url} (version {stored[kind].generation}): uploaded through maint's S3 writer "
            f"in {seconds:.1f}s; CRC32C {heads[kind].get('ChecksumCRC32C')} ({heads[kind].get('ChecksumType')})")
        if heads[kind].get("ChecksumType") != "FULL_OBJECT" or not heads[kind].get("ChecksumCRC32C"):
            raise RuntimeError(f"{stored[kind].url} carries no full-object CRC32C: {heads[kind]}")
    key = f"dumps/{dumps['large'].name}"

    say("\n== warming up: one backup-verification flow run on the small S3 store, one peer download")
    warm_seconds, _ = whole_flow(configs["small"])
    peer(moto.url, buckets["small"], f"dumps/{dumps['small'].name}", "download")
    say(f"   {warm_seconds:.2f}s")

    cache_mode = ("left as it is: the object is in moto's memory and no tool reads a file (dropping the cache "
                  "would only make the peer's fresh Python import boto3 from disk)")
    say(f"\n== timing on {stored['large'].url} ({stored['large'].size_bytes} bytes), {args.repeat} round(s)\n"
        f"   page cache {cache_mode}")
    handler = PassTimes()
    verification_log = logging.getLogger("maint.steps")  # where read_backup_in_one_pass logs its "read ... in"
    old_level = verification_log.level
    verification_log.setLevel(logging.INFO)
    verification_log.addHandler(handler)
    peer_inner: dict[str, list[float]] = {"peer": [], "download": []}
    passes, reports, inside_flow = [], [], []
    actions = {
        "peer: boto3 | pg_restore":
            lambda: peer_inner["peer"].append(peer(moto.url, buckets["large"], key, "pg_restore")),
        "boto3 download alone":
            lambda: peer_inner["download"].append(peer(moto.url, buckets["large"], key, "download")),
        "maint (a) streamed pass": lambda: passes.append(streamed_pass(configs["large"])[1]),
        "maint (b) whole flow": lambda: reports.append(whole_flow(configs["large"])[1]),
    }
    tools: dict[str, list] = {name: [] for name in actions}
    moto_cpu: dict[str, list[float]] = {name: [] for name in actions}
    listing: list[float] = []  # moto's own cost of the one ListObjectVersions a verification makes
    try:
        for round_no in range(1, args.repeat + 1):
            started = time.perf_counter()
            admin.list_object_versions(Bucket=buckets["large"], Prefix="dumps/", Delimiter="/")
            listing.append(time.perf_counter() - started)
            for name, action in actions.items():
                handler.seconds.clear()
                before = moto.cpu()
                tools[name].append(measured(action))
                moto_cpu[name].append(moto.cpu() - before)
                if name == "maint (b) whole flow":
                    inside_flow.append(handler.seconds[-1] if handler.seconds else float("nan"))
            say(f"   round {round_no} (load average {tools['peer: boto3 | pg_restore'][-1][2]:.2f} at its start): "
                + ", ".join(f"{k} {v[-1][0]:.2f}s" for k, v in tools.items()) + f"; moto's listing {listing[-1]:.2f}s")
    finally:
        verification_log.removeHandler(handler)
        verification_log.setLevel(old_level)

    say("\n== peak RSS on the S3 store: a fresh `maint run backup-verification --json` process per backup")
    rss = {}
    for kind in ("small", "large"):
        rss[kind], _ = peak_rss_kib(configs[kind], api_url)
        say(f"   {kind}: {rss[kind] / 1024:.1f} MiB")
    return {"tools": tools, "moto_cpu": moto_cpu, "peer_inner": peer_inner, "passes": passes, "reports": reports,
            "inside_flow": inside_flow, "rss": rss, "cache": cache_mode, "stored": stored, "heads": heads,
            "listing": listing,
            "moto": f"python -m moto.server -H 127.0.0.1 (pid {moto.process.pid})"}


def report_s3(args: argparse.Namespace, dumps: dict[str, Path], s3: dict, clock: float) -> None:
    tools, moto_cpu, rss, stored = s3["tools"], s3["moto_cpu"], s3["rss"], s3["stored"]
    best_run = {k: min(v) for k, v in tools.items()}  # by wall time
    best = {k: v[0] for k, v in best_run.items()}
    best_moto = {k: moto_cpu[k][v.index(best_run[k])] for k, v in tools.items()}
    peer_name = "peer: boto3 | pg_restore"
    plain = best[peer_name]
    size = stored["large"].size_bytes
    ratio_a, ratio_b = best["maint (a) streamed pass"] / plain, best["maint (b) whole flow"] / plain
    rss_diff_mib = (rss["large"] - rss["small"]) / 1024
    head = s3["heads"]["large"]

    say("\n" + "=" * 78)
    say("RESULTS: S3 store (moto's server on loopback)")
    say("=" * 78)
    say("dumps (pg_dump --format=custom --compress=6, made by maint's backup duty), uploaded with their manifests "
        "through maint's S3 writer (multipart, full-object CRC32C) into a versioned bucket each:")
    for kind in ("small", "large"):
        say(f"  {kind:<6} {stored[kind].size_bytes:>14,} bytes  ({stored[kind].size_bytes / MIB:8.1f} MiB)  "
            f"{stored[kind].url} version {stored[kind].generation}")
    say(f"S3 server: {s3['moto']}, the same for every tool, a process of its own (its CPU is in 'moto CPU s', "
        f"not in 'CPU s')")
    say(f"page cache: {s3['cache']}")
    say(f"\ntimes on the large object, best of {args.repeat} (all runs in brackets):")
    say(f"  {'tool':<34}{'seconds':>9}{'MiB/s':>9}{'CPU s':>8}{'moto CPU s':>12}   runs (wall s)")
    for name, runs in tools.items():
        say(f"  {name:<34}{best[name]:>9.2f}{size / MIB / best[name]:>9.0f}{best_run[name][1]:>8.2f}"
            f"{best_moto[name]:>12.2f}   [{', '.join(f'{r[0]:.2f}' for r in runs)}]")
    say(f"  (peer and download: the whole process, Python and boto3 start-up included; from get_object to the end, "
        f"per run: peer [{', '.join(f'{x:.2f}' for x in s3['peer_inner']['peer'])}], download "
        f"[{', '.join(f'{x:.2f}' for x in s3['peer_inner']['download'])}]; body read in {PEER_CHUNK // 1024} KiB "
        f"chunks)")
    say("  (CPU s: user+sys of the process and the children it waited for: the peer's Python and pg_restore; for "
        "maint this whole\n   Python process with Prefect's threads plus its pg_restore child)")
    per_round = [run[0] - inside for run, inside in zip(tools["maint (b) whole flow"], s3["inside_flow"])
                 if inside == inside]
    if per_round:
        say(f"  (maint (b) minus the pass inside it, from the flow's own 'read ... in N.Ns' log line, per round: "
            f"{', '.join(f'{o:.1f}' for o in per_round)}s: Prefect's share of the flow)")
    listing = min(s3["listing"])
    say(f"  (moto's ListObjectVersions of the large bucket, the one listing a verification makes and the peer does "
        f"not: {listing:.2f}s, runs [{', '.join(f'{x:.2f}' for x in s3['listing'])}]; moto deep-copies every version "
        f"it holds to list them, so this grows with the bytes stored; S3 lists from its index"
        + (": here that copy is made of the attributes alone, --moto-listing metadata)" if args.moto_listing == "metadata"
           else "; moto as shipped, --moto-listing copying)"))
    wall, cpu, load = best_run[peer_name]
    if wall > 1.15 * cpu + 0.2:
        say(f"  WARNING: the peer got {cpu:.2f}s of CPU in {wall:.2f}s (load average {load:.2f}): other work "
            f"competed for the CPUs, so these ratios are unreliable; rerun on a quiet machine or with --repeat 3")
    say(f"\nratios to the peer (boto3 get_object streamed into pg_restore -f /dev/null, {plain:.2f}s):")
    say(f"  maint (b) whole flow    / peer = {ratio_b:.3f}   target <= {S3_RATIO_TARGET:.2f}  "
        f"{verdict(ratio_b <= S3_RATIO_TARGET)}")
    say(f"  maint (a) streamed pass / peer = {ratio_a:.3f}   (information; "
        f"{verdict(ratio_a <= S3_RATIO_TARGET)} against the same bound)")
    say(f"  (maint (b) - moto's listing) / peer = {(best['maint (b) whole flow'] - listing) / plain:.3f}   "
        f"(information: without what moto alone costs the listing)")
    say(f"  boto3 download alone    / peer = {best['boto3 download alone'] / plain:.3f}   (information: the "
        f"transfer's share; pg_restore sets the pace)")
    passes, reports = s3["passes"], s3["reports"]
    crc_ok = all(p.crc32c == head["ChecksumCRC32C"] for p in passes)
    maint_ok = (all(r.get("status") == "ok" for r in reports)
                and all(p.archive_ok for p in passes)
                and all(stored["large"].url in str(r.get("details", {})) for r in reports))
    say(f"\nverdicts: the peer pipeline exited 0 in all {len(tools[peer_name])} runs (pg_restore read the whole "
        f"archive); maint reported status ok on {stored['large'].url} in all {len(reports)} flow runs, pg_restore's "
        f"check ok in all {len(passes)} streamed passes, CRC32C read {passes[-1].crc32c if passes else '?'} = "
        f"S3's {head['ChecksumCRC32C']}: {'AGREE' if maint_ok and crc_ok else 'DISAGREE'}")
    say("\npeak RSS of the maint process on the S3 store (ru_maxrss of a fresh `maint run backup-verification`; "
        "pg_restore's memory is its own child process's, not counted):")
    say(f"  small backup ({stored['small'].size_bytes / MIB:.0f} MiB): {rss['small'] / 1024:8.1f} MiB")
    say(f"  large backup ({stored['large'].size_bytes / MIB:.0f} MiB): {rss['large'] / 1024:8.1f} MiB")
    say(f"  difference:                  {rss_diff_mib:8.1f} MiB   target <= {RSS_TARGET_MIB} MiB  "
        f"{verdict(rss_diff_mib <= RSS_TARGET_MIB)}")
    say(f"\nsummary (S3): ratio {verdict(ratio_b <= S3_RATIO_TARGET)} ({ratio_b:.3f}), "
        f"RSS {verdict(rss_diff_mib <= RSS_TARGET_MIB)} ({rss_diff_mib:+.1f} MiB), verdicts "
        f"{'agree' if maint_ok and crc_ok else 'DISAGREE'}; benchmark took {time.monotonic() - clock:.0f}s")


# --- main -----------------------------------------------------------------------------------------

def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size-mib", type=int, default=1024, help="size of the large dump, MiB (default 1024)")
    parser.add_argument("--small-mib", type=int, default=100, help="size of the small dump, MiB (default 100)")
    parser.add_argument("--workdir", help="where stores and configs go (default: a new directory under /tmp)")
    parser.add_argument("--keep", action="store_true", help="keep the workdir at the end")
    parser.add_argument("--repeat", type=int, default=1, help="timed runs per tool; the best is reported (default 1)")
    parser.add_argument("--moto-listing", choices=("metadata", "copying"), default="metadata",
                        help="metadata (default): moto lists versions from their attributes, as S3 does; "
                             "copying: moto as shipped, copying every stored byte per listing")
    parser.add_argument("--store", choices=("local", "s3", "both"), default="local",
                        help="time the verification on the local file:// store (default), on an S3 store "
                             "(moto's server on loopback, in a process of its own), or both")
    args = parser.parse_args(argv)
    if args.size_mib < 1 or args.small_mib < 1 or args.repeat < 1:
        parser.error("--size-mib, --small-mib and --repeat must be positive")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    with workdir(args.workdir, "maint-bench-", args.keep,
                 leftovers=("store-small", "store-large", "small.toml", "large.toml", "s3-small.toml",
                            "s3-large.toml", "moto.log")) as work:
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
        local = time_local(args, configs, dumps, api_url) if args.store in ("local", "both") else None
        s3 = time_s3(args, work, server, dumps, api_url) if args.store in ("s3", "both") else None
    if local:
        report_local(args, dumps, *local, clock)
    if s3:
        report_s3(args, dumps, s3, clock)
    return 0


def time_local(args: argparse.Namespace, configs: dict[str, Path], dumps: dict[str, Path], api_url: str | None):
    """The local file:// store: md5sum, pg_restore and maint (a), (b), (c) on the large dump, then
    the peak RSS per backup."""
    large = dumps["large"]

    say("\n== warming up: one backup-verification flow run on the small store")
    warm_seconds, _ = whole_flow(configs["small"])
    say(f"   {warm_seconds:.2f}s")

    cache = Cache()
    say(f"\n== timing on {large} ({large.stat().st_size} bytes), {args.repeat} round(s)\n   {cache.mode}")
    handler = PassTimes()
    verification_log = logging.getLogger("maint.steps")
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
    return tools, inside_flow, rss, cache


def report_local(args, dumps, tools, inside_flow, rss, cache, clock: float) -> None:
    large = dumps["large"]
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


if __name__ == "__main__":
    sys.exit(main())
