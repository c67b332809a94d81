"""Benchmark: maint's `cert-check` against the runbook's sequential `openssl s_client` loop.

    .venv/bin/python bench/certs.py [--endpoints 200] [--repeat 3] [--loop-repeat 1]
                                    [--prefect ephemeral|harness] [--keep]

Starts `--endpoints` local TLS servers on 127.0.0.1, one listening port each, in a child process
of their own (one asyncio loop over every listener), so the servers' handshakes do not share this process's
GIL with maint's probes: real endpoints are on other machines. Each port presents its own trustme
leaf for "localhost", signed by one trustme CA: most valid for years, about 5% expiring in 20 days
(a warning at the default 28), 5% in 7 days (critical at 14) and 2.5% expired two days ago (a
verification failure, so maint makes its second, non-verifying handshake there). maint.toml has
one [[certificates]] entry per port: host "localhost", ca_file the CA's PEM.

Then times, on those same endpoints:

  loop    the runbook, as a shell runs it: for every port, one after another,
              openssl s_client -connect localhost:PORT -servername localhost -CAfile ca.pem \\
                  </dev/null 2>/dev/null | openssl x509 -noout -dates
          (two processes per endpoint, one pipeline), in one `sh` script; best of `--loop-repeat`;
  maint   the whole `cert-check` flow in-process (flows.cert_check.cert_check(config_path=...)),
          after one untimed warm-up run that starts the Prefect API (ephemeral by default: what
          `maint run` does without PREFECT_API_URL), best and median of `--repeat`;
  plain   maint's probing without Prefect: maint.tasks.tls.probe_all over the same targets plus
          maint.certs.assess_certificate for each, best of `--repeat`; flow minus plain is what
          Prefect adds (flow run, task runs, artifacts, one log line per finding);
  floor   (diagnostic) an empty Prefect flow on the same API, as Prefect runs it by default and
          with flow-run heartbeats off: Prefect's fixed cost per run, whatever the duty does.

Both sides' results are checked against what was served (how many certificates each saw, and how
many expire within 28 and 14 days or have expired), so a fast wrong answer cannot pass. Prints the
times, CPU seconds (this process, the TLS server process, other descendants such as the Prefect
server, the loop's openssl processes) beside them, the ratio loop / maint flow and PASS/FAIL
against the issue's target of at least 20 times faster. A measurement, not a test: exits 0
whatever the figures, non-zero only if the benchmark itself breaks.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

# Importing _common also puts this checkout on sys.path, for the imports of maint.
from _common import (CLK_TCK, report_of_state, descendants, fmt, load_average, prefect_api, prefect_console_to,
                     prefect_telemetry_off, process_table, run_flow_state, say, task_times)

prefect_telemetry_off()
# The ephemeral API's start (migrating a fresh SQLite database) takes more than Prefect's default
# 20 s on a busy 2-core machine; it is the warm-up, not timed.
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "180")

RATIO_TARGET = 20.0
WARNING_DAYS, CRITICAL_DAYS = 28, 14  # maint's defaults, written explicitly into maint.toml
# Kind -> (share of the endpoints, days from now to notAfter). The rest are valid for years.
KINDS = {"warning": (0.05, 20), "critical": (0.05, 7), "expired": (0.025, -2)}


# --- CPU accounting (the machine has 2 cores and may be shared) -----------------------------------

class CpuMeter:
    """CPU seconds spent between start and stop by this process, the TLS server process, other
    live descendants (the Prefect server), reaped children (the loop's sh and openssl), and the
    whole machine (so CPU taken by other work on a shared machine is visible)."""

    def __init__(self, server_pid: int):
        self.server_pid = server_pid

    def _sample(self) -> dict[str, float]:
        own = resource.getrusage(resource.RUSAGE_SELF)
        reaped = resource.getrusage(resource.RUSAGE_CHILDREN)
        processes = process_table()
        server = processes.get(self.server_pid)
        with open("/proc/stat") as f:
            cpu = [int(v) for v in f.readline().split()[1:]]
        others = (descendants([os.getpid()], processes) - {self.server_pid}
                  - descendants([self.server_pid], processes))
        return {"maint process": own.ru_utime + own.ru_stime,
                "TLS servers": server.own if server else 0.0,
                "other descendants": sum(processes[pid].own for pid in others),
                "reaped children": reaped.ru_utime + reaped.ru_stime,
                "machine busy": (sum(cpu) - cpu[3] - cpu[4]) / CLK_TCK}

    def __enter__(self):
        self.before = self._sample()
        self.wall = time.perf_counter()
        return self

    def __exit__(self, *exc):
        self.wall = time.perf_counter() - self.wall
        after = self._sample()
        self.used = {k: after[k] - self.before[k] for k in after}

    def line(self, keys: tuple[str, ...]) -> str:
        return "CPU " + ", ".join(f"{k} {self.used[k]:.2f}s" for k in keys) + \
            f" (machine {self.used['machine busy']:.2f}s of {self.wall * (os.cpu_count() or 1):.2f}s available)"


# --- the TLS servers (child process) --------------------------------------------------------------

def serve(manifest: Path) -> int:
    """Child process: one listener per PEM in the manifest; prints the ports as one JSON line;
    serves until its stdin closes. One asyncio loop over every listener: each connection
    completes the handshake and waits for the client to go (a thread per connection costs this
    machine more CPU than the handshake, and real endpoints are on machines of their own)."""
    import asyncio

    pems = json.loads(manifest.read_text())

    async def handshake_then_wait(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await asyncio.wait_for(reader.read(1), 30)
        except (OSError, ssl.SSLError, asyncio.TimeoutError):
            pass
        finally:
            writer.close()

    async def main() -> None:
        ports = []
        for pem in pems:
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.load_cert_chain(pem)
            server = await asyncio.start_server(handshake_then_wait, "127.0.0.1", 0, ssl=context, backlog=256)
            ports.append(server.sockets[0].getsockname()[1])
        sys.stdout.write(json.dumps(ports) + "\n")
        sys.stdout.flush()
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)  # the parent closes it: stop

    logging_off = open(os.devnull, "w")
    sys.stderr = logging_off  # handshakes the lenient probe abandons are not news
    asyncio.run(main())
    os._exit(0)


class TlsServers:
    def __init__(self, pems: list[Path], work: Path):
        manifest = work / "servers.json"
        manifest.write_text(json.dumps([str(p) for p in pems]))
        self.process = subprocess.Popen([sys.executable, str(Path(__file__).resolve()), "--serve", str(manifest)],
                                        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        line = self.process.stdout.readline()
        if not line:
            self.process.wait(10)
            raise RuntimeError(f"the TLS server process exited with {self.process.returncode} before listening")
        self.ports: list[int] = json.loads(line)
        self.pid = self.process.pid

    def close(self) -> None:
        try:
            self.process.stdin.close()
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


# --- certificates and configuration ---------------------------------------------------------------

def spread(count: int, share: float, taken: set[int]) -> list[int]:
    """About count * share indices spread evenly over range(count), none already taken."""
    n = max(1, round(count * share)) if count >= 20 else 0
    picked = []
    for i in range(n):
        index = int((i + 0.5) * count / n)
        while index in taken:
            index = (index + 1) % count
        taken.add(index)
        picked.append(index)
    return picked


def make_certificates(work: Path, count: int, now: datetime) -> tuple[Path, list[Path], list[str]]:
    """A trustme CA and one leaf for "localhost" per endpoint; returns (ca.pem, leaf PEMs, kinds)."""
    import trustme

    ca = trustme.CA()
    ca_file = work / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    kinds = ["valid"] * count
    taken: set[int] = set()
    for kind, (share, _days) in KINDS.items():
        for index in spread(count, share, taken):
            kinds[index] = kind
    pems = []
    for i, kind in enumerate(kinds):
        if kind == "valid":
            leaf = ca.issue_cert("localhost")
        else:
            days = KINDS[kind][1]
            leaf = ca.issue_cert("localhost", not_before=now - timedelta(days=90),
                                 not_after=now + timedelta(days=days))
        pem = work / f"leaf-{i:04d}.pem"
        leaf.private_key_and_cert_chain_pem.write_to_path(str(pem))
        pems.append(pem)
    return ca_file, pems, kinds


def write_config(path: Path, ports: list[int], ca_file: Path) -> Path:
    body = "".join(f'\n[[certificates]]\nhost = "localhost"\nport = {port}\nprotocol = "https"\n'
                   f'ca_file = "{ca_file}"\nwarning_days = {WARNING_DAYS}\ncritical_days = {CRITICAL_DAYS}\n'
                   for port in ports)
    path.write_text(body.lstrip())
    return path


def expected_counts(kinds: list[str]) -> dict[str, int]:
    return {"seen": len(kinds), "expired": kinds.count("expired"),
            f"<= {CRITICAL_DAYS} days (not expired)": kinds.count("critical"),
            f"<= {WARNING_DAYS} days (not critical)": kinds.count("warning")}


def classify(days_left: list[float]) -> dict[str, int]:
    return {"seen": len(days_left), "expired": sum(d < 0 for d in days_left),
            f"<= {CRITICAL_DAYS} days (not expired)": sum(0 <= d <= CRITICAL_DAYS for d in days_left),
            f"<= {WARNING_DAYS} days (not critical)": sum(CRITICAL_DAYS < d <= WARNING_DAYS for d in days_left)}


def check_counts(label: str, seen: dict[str, int], expected: dict[str, int]) -> str:
    text = ", ".join(f"{k} {v}" for k, v in seen.items())
    if seen != expected:
        return f"{text}  UNEXPECTED for {label}: served " + ", ".join(f"{k} {v}" for k, v in expected.items())
    return text + "  (as served)"


# --- (a) the runbook loop -------------------------------------------------------------------------

def write_loop(path: Path, ports: list[int], ca_file: Path) -> Path:
    lines = ["#!/bin/sh", "# the runbook: every endpoint, one after another", f"for port in {' '.join(map(str, ports))}; do",
             '  echo "== localhost:$port"',
             f'  openssl s_client -connect localhost:$port -servername localhost -CAfile "{ca_file}" '
             "</dev/null 2>/dev/null | openssl x509 -noout -dates",
             "done", ""]
    path.write_text("\n".join(lines))
    return path


def run_loop(script: Path, now: datetime) -> tuple[float, list[float], str]:
    started = time.perf_counter()
    done = subprocess.run(["sh", str(script)], capture_output=True, text=True)
    elapsed = time.perf_counter() - started
    days_left = []
    for line in done.stdout.splitlines():
        if line.startswith("notAfter="):
            when = datetime.strptime(line[len("notAfter="):].strip(), "%b %d %H:%M:%S %Y %Z")
            days_left.append((when.replace(tzinfo=timezone.utc) - now).total_seconds() / 86400)
    return elapsed, days_left, done.stderr.strip()[:300]


# --- (b) the flow, (c) the probing without Prefect ------------------------------------------------

def report_counts(report: dict) -> dict[str, int]:
    expiry = [f for f in report["findings"] if f["check"] == "expiry"]
    counts = {"seen": len(expiry), "expired": sum(" expired " in f["message"] for f in expiry),
              f"<= {CRITICAL_DAYS} days (not expired)": sum(f["severity"] == "critical" and " expired " not in f["message"]
                                                            for f in expiry),
              f"<= {WARNING_DAYS} days (not critical)": sum(f["severity"] == "warning" for f in expiry)}
    return counts


def run_flow(config: Path) -> tuple[float, dict]:
    from maint.flows.cert_check import cert_check

    started = time.perf_counter()
    state = run_flow_state(cert_check, config_path=str(config))  # exactly as `maint run cert-check`
    elapsed = time.perf_counter() - started
    report = report_of_state(cert_check, state)
    return elapsed, report


def run_empty_flows(repeat: int) -> tuple[list[float], list[float] | None]:
    """Prefect's own floor on the same API: a flow with no task and no log line, as Prefect runs
    it by default, then with flow-run heartbeats off (the sync engine joins its heartbeat thread,
    which sleeps in whole seconds, at the end of every run). None if this Prefect has no such
    setting."""
    from prefect import flow

    @flow(name="maint-bench-empty")
    def empty() -> dict:
        return {"findings": []}

    def timed() -> float:
        started = time.perf_counter()
        empty()
        return time.perf_counter() - started

    default = [timed() for _ in range(repeat)]
    try:
        from prefect.settings import PREFECT_FLOWS_HEARTBEAT_FREQUENCY, temporary_settings
    except ImportError:
        return default, None
    with temporary_settings({PREFECT_FLOWS_HEARTBEAT_FREQUENCY: None}):
        quiet = [timed() for _ in range(repeat)]
    return default, quiet


def run_plain(config: Path) -> tuple[float, dict[str, float], dict]:
    """What the flow does, without Prefect: load the config, probe every target, assess each."""
    from maint.certs import assess_certificate
    from maint.tasks.environment import load_config
    from maint.tasks.tls import probe_all

    parts = {}
    started = time.perf_counter()
    targets = load_config(config).certificates
    parts["load config"] = time.perf_counter() - started
    step = time.perf_counter()
    probes = probe_all(targets)
    parts["probe_all"] = time.perf_counter() - step
    step = time.perf_counter()
    now = datetime.now(timezone.utc)
    findings = [f for target, probe in zip(targets, probes)
                for f in assess_certificate(probe, now, target.warning_days, target.critical_days)]
    parts["assess"] = time.perf_counter() - step
    elapsed = time.perf_counter() - started
    report = {"findings": [{"check": f.check, "severity": f.severity.value, "message": f.message} for f in findings]}
    return elapsed, parts, report


# --- main -----------------------------------------------------------------------------------------

def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--endpoints", type=int, default=200)
    parser.add_argument("--repeat", type=int, default=3, help="timed runs of maint (flow, and without Prefect)")
    parser.add_argument("--loop-repeat", type=int, default=1, help="timed runs of the openssl loop (best kept)")
    parser.add_argument("--prefect", choices=("ephemeral", "harness"), default="ephemeral",
                        help="ephemeral: what `maint run` does without PREFECT_API_URL (its database in the "
                             "workdir); harness: prefect_test_harness, as the tests")
    parser.add_argument("--keep", action="store_true", help="keep the workdir (certificates, config, loop, logs)")
    parser.add_argument("--serve", metavar="MANIFEST", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.serve:
        return serve(Path(args.serve))
    if args.endpoints < 1 or args.repeat < 1 or args.loop_repeat < 1:
        parser.error("--endpoints, --repeat and --loop-repeat must be at least 1")
    if not shutil.which("openssl"):
        print("bench/certs.py: openssl is not on PATH", file=sys.stderr)
        return 3

    work = Path(tempfile.mkdtemp(prefix="maint-bench-certs-"))
    # The ephemeral Prefect API keeps its SQLite database under PREFECT_HOME: one of our own, so
    # neither the operator's history nor another benchmark's runs are in it (set before any import).
    os.environ["PREFECT_HOME"] = str(work / "prefect-home")
    clock = time.monotonic()
    openssl_version = subprocess.run(["openssl", "version"], capture_output=True, text=True).stdout.strip()
    say(f"== maint cert-check benchmark: {os.cpu_count()} CPU(s), Python {sys.version.split()[0]}, "
        f"{openssl_version}, ssl module {ssl.OPENSSL_VERSION}; load average {load_average()}; workdir {work}")
    try:
        return run(args, work, clock)
    finally:
        if args.keep:
            say(f"   workdir kept: {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)


def run(args, work: Path, clock: float) -> int:
    now = datetime.now(timezone.utc)
    step = time.perf_counter()
    ca_file, pems, kinds = make_certificates(work, args.endpoints, now)
    expected = expected_counts(kinds)
    servers = TlsServers(pems, work)
    console_log = work / "prefect-console.log"
    try:
        config = write_config(work / "maint.toml", servers.ports, ca_file)
        loop_script = write_loop(work / "loop.sh", servers.ports, ca_file)
        say(f"   {args.endpoints} TLS servers on 127.0.0.1 ports {min(servers.ports)}-{max(servers.ports)} "
            f"(child process {servers.pid}), one trustme leaf each for localhost: "
            + ", ".join(f"{kinds.count(k)} {k}" for k in ("valid", *KINDS))
            + f"; CA {ca_file.name}; config {config.name}; set up in {time.perf_counter() - step:.1f}s")
        meter_keys = ("maint process", "TLS servers", "other descendants")

        with prefect_console_to(console_log), prefect_api(args.prefect):
            from prefect.settings import PREFECT_API_URL

            say(f"\n== warm-up: one cert-check flow run (starts the Prefect API: "
                f"{'test harness' if args.prefect == 'harness' else 'ephemeral, as `maint run`'}); not timed")
            seconds, report = run_flow(config)
            say(f"   {seconds:.2f}s; Prefect API {PREFECT_API_URL.value() or '(ephemeral)'}; status {report['status']}; "
                f"{len(report['findings'])} findings")

            say(f"\n== (b) maint: the whole cert-check flow, {args.repeat} run(s)")
            flow_times, last = [], report
            for i in range(args.repeat):
                with CpuMeter(servers.pid) as meter:
                    seconds, last = run_flow(config)
                flow_times.append(seconds)
                say(f"   run {i + 1}: {seconds:.3f}s; " + meter.line(meter_keys))
            say(f"   saw: {check_counts('the flow', report_counts(last), expected)}; status {last['status']}")
            try:
                for name, offset, took in task_times(last["details"]["flow_run_id"]):
                    say(f"     {name:<48} started +{offset:6.3f}s  took {took:6.3f}s")
            except Exception as exc:  # a diagnostic only
                say(f"   (no task breakdown from the Prefect API: {exc.__class__.__name__}: {exc})")

            say(f"\n== (c) maint without Prefect: load_config + maint.tasks.tls.probe_all + assess_certificate, "
                f"{args.repeat} run(s)")
            plain_times, plain_report = [], None
            for i in range(args.repeat):
                with CpuMeter(servers.pid) as meter:
                    seconds, parts, plain_report = run_plain(config)
                plain_times.append(seconds)
                say(f"   run {i + 1}: {seconds:.3f}s (" + ", ".join(f"{k} {v:.3f}s" for k, v in parts.items())
                    + "); " + meter.line(meter_keys))
            say(f"   saw: {check_counts('probe_all', report_counts(plain_report), expected)}")

            say(f"\n== (d) Prefect's floor on this API: an empty flow (no task, no log line), {args.repeat} run(s) "
                "each, as Prefect runs it by default and with flows.heartbeat_frequency = None")
            empty_default, empty_quiet = run_empty_flows(args.repeat)
            say("   default:        " + ", ".join(f"{t:.3f}s" for t in empty_default))
            if empty_quiet is not None:
                say("   heartbeats off: " + ", ".join(f"{t:.3f}s" for t in empty_quiet))

        say(f"\n== (a) the runbook loop: sequential `openssl s_client | openssl x509 -dates`, "
            f"{args.loop_repeat} run(s)")
        loop_times = []
        for i in range(args.loop_repeat):
            with CpuMeter(servers.pid) as meter:
                seconds, days_left, errors = run_loop(loop_script, now)
            loop_times.append(seconds)
            say(f"   run {i + 1}: {seconds:.3f}s ({seconds / args.endpoints * 1000:.1f} ms per endpoint); "
                + meter.line(("reaped children", "TLS servers")))
            say(f"   saw: {check_counts('the loop', classify(days_left), expected)}")
            if errors:
                say(f"   loop stderr: {errors}")
    finally:
        servers.close()

    best, median = min(flow_times), statistics.median(flow_times)
    plain_best, loop = min(plain_times), min(loop_times)
    ratio, ratio_median = loop / best, loop / median
    say("\n== results")
    say(f"   {'(a) runbook loop (openssl s_client | openssl x509), best':<60}{fmt(loop)}")
    say(f"   {'(b) maint cert-check flow (Prefect API up), best':<60}{fmt(best)}")
    say(f"   {'(b) maint cert-check flow (Prefect API up), median':<60}{fmt(median)}")
    say(f"   {'(c) maint probing without Prefect, best':<60}{fmt(plain_best)}")
    say(f"   {'    -> Prefect overhead (flow best - plain best)':<60}{fmt(best - plain_best)}")
    say(f"   {'(d) empty Prefect flow on the same API, best':<60}{fmt(min(empty_default))}")
    if empty_quiet is not None:
        say(f"   {'(d) empty Prefect flow, heartbeats off, best':<60}{fmt(min(empty_quiet))}")
    say(f"   {'ratio loop / maint flow (best; median)':<60}{ratio:8.1f} x ; {ratio_median:.1f} x")
    say(f"   {'ratio loop / maint without Prefect':<60}{loop / plain_best:8.1f} x")
    say(f"   {'(for 20x the flow must take at most)':<60}{fmt(loop / RATIO_TARGET)}")
    say(f"\n   maint at least {RATIO_TARGET:g}x faster than the loop: {'PASS' if ratio >= RATIO_TARGET else 'FAIL'}"
        f" ({ratio:.1f}x with the best flow run, {ratio_median:.1f}x with the median)")
    say(f"\n   benchmark took {time.monotonic() - clock:.0f}s; load average now {load_average()}"
        f"; Prefect's console output went to {console_log.name} in the workdir")
    return 0


if __name__ == "__main__":
    sys.exit(main())
