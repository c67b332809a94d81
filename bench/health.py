"""Benchmark: maint's `health-check` against the runbook's sequential loop, on the same targets.

    .venv/bin/python bench/health.py [--endpoints 200] [--slow 20] [--slow-seconds 0.3] [--pods 1000]
                                     [--repeat 3] [--loop-repeat 1] [--pause 2] [--prefect harness|ephemeral]
                                     [--no-heartbeat-variant] [--new-parts] [--nodes 10]

Starts, all local:
  - a throwaway PostgreSQL (maint.tasks.postgres.server.ThrowawayPostgres) with a `shop` database (the sample schema);
  - one asyncio HTTP server on 127.0.0.1 serving `--endpoints` health paths, `--slow` of them
    answering after `--slow-seconds`;
  - a fake Kubernetes API (tests.k8s_server.KubeApiServer, bearer token) holding `--pods` pods in
    a few namespaces, mostly healthy with a mix of failing states, and a kubeconfig ($KUBECONFIG);
  the two servers in a forked child process of their own, as real endpoints are on other machines
  (in this process they would share maint's GIL).
With `--new-parts` (issue 16's parts of the check), also:
  - one real `redis-server` on loopback (no persistence, its own directory), as [[health_check.redis]];
  - one real `prometheus-alertmanager` on loopback (no clustering, its own storage and a null
    receiver), fed a few alerts through `POST /api/v2/alerts`, as [[health_check.alertmanager]];
  - `--nodes` nodes in the fake Kubernetes API, one in ten with a problem, and metrics-server's
    usage for them (without the option the API has its default single node, which the check
    lists too: [health_check.kubernetes].nodes is on by default).

Then times, on those same targets:
  maint       the whole `health-check` flow in-process as `maint run` runs it
              (flows._duty.run_now(flows.health_check.health_check, ...)), after one warm-up run so
              the Prefect API is up: best and median of `--repeat` runs, `--pause` seconds apart;
              then, as a diagnostic, the flow called directly with Prefect's defaults, flow-run
              heartbeat on (its thread sleeps in 1 s steps and is joined when the run ends);
  plain       maint's own check functions without Prefect (maint.tasks.http.check_endpoints,
              maint.tasks.postgres.server_health, maint.tasks.kubernetes.list_pods + maint.pods.assess_pods)
              side by side in a thread pool: what Prefect adds is the difference;
  floor       every endpoint fetched at once with bare asyncio sockets: what the local endpoint
              server allows on this machine, whatever the client;
  runbook     the runbook's way, one step after another: `curl` per endpoint, `psql -c` per
              query, `curl` with the bearer token per namespace page of pods.

Prints the table and PASS/FAIL for the two targets of the issue: maint at least 20 times faster
than the loop, and under 3 s once the Prefect API is up. A measurement, not a test: exits 0
whatever the figures, non-zero only if the benchmark itself breaks.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import copy
import json
import logging
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path

# Importing _common also puts this checkout on sys.path, for the imports of maint and tests.
from _common import (database_entry, report_of_state, fmt, libpq_env, postgres_bin_on_path, prefect_api, prefect_console_to,
                     prefect_telemetry_off, run_flow_state, say, task_times)

prefect_telemetry_off()
postgres_bin_on_path()

from maint.demo import load_sample_schema  # noqa: E402
from maint.tasks.postgres.server import ThrowawayPostgres  # noqa: E402
from tests.k8s_server import KubeApiServer, pods_in_every_state, write_kubeconfig  # noqa: E402

try:  # the node builders (issue 16); the benchmark of older checkouts runs without them
    from tests.k8s_server import ago, node, node_metrics  # noqa: E402
except ImportError:  # pragma: no cover
    ago = node = node_metrics = None

PASSWORD_ENV = "MAINT_BENCH_HEALTH_PASSWORD"
KUBE_TOKEN = "bench-kube-token-" + uuid.uuid4().hex[:12]
RATIO_TARGET = 20.0
SECONDS_TARGET = 3.0
PAGE_SIZE = 500  # kubectl's --chunk-size, and maint's
# Namespace -> share of the pods. The first is large enough to need two pages of 500.
NAMESPACES = {"shop": 0.55, "payments": 0.2, "search": 0.15, "batch": 0.10}
MAX_RESTARTS = 5


# --- the endpoints --------------------------------------------------------------------------------

class EndpointServer:
    """`count` health paths on one asyncio HTTP/1.1 server; the paths in `slow` answer after
    `delay`. Served from a child process of its own, with the fake Kubernetes API (see
    `ServersProcess`): real endpoints are on other machines, so their work must not share this
    process's GIL with maint's client, and a thread per request would cost the machine more CPU
    than the request."""

    def __init__(self, count: int, slow: set[int], delay: float):
        self.count, self.slow, self.delay = count, slow, delay
        self.base = ""

    async def _answer(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            parts = head.split(b" ", 2)[1].decode().strip("/").split("/")  # svc/NNN/health
            index = int(parts[1]) if len(parts) == 3 and parts[0] == "svc" and parts[2] == "health" else -1
            if not 0 <= index < self.count:
                code, body = "404 Not Found", b'{"status": "unknown service"}'
            else:
                if index in self.slow:
                    await asyncio.sleep(self.delay)
                code, body = "200 OK", b'{"status": "ok"}'
            writer.write(f"HTTP/1.1 {code}\r\nContent-Type: application/json\r\nContent-Length: {len(body)}\r\n"
                         f"Connection: close\r\n\r\n".encode() + body)
            await writer.drain()
        except (OSError, ValueError, IndexError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            pass
        finally:
            writer.close()

    def serve_forever(self, ready) -> None:
        """In the child: listen, report the base URL through `ready`, serve until killed."""
        async def main() -> None:
            server = await asyncio.start_server(self._answer, "127.0.0.1", 0, backlog=4096)
            ready(f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}")
            await asyncio.Event().wait()

        asyncio.run(main())

    def urls(self) -> list[str]:
        return [f"{self.base}/svc/{i:03d}/health" for i in range(self.count)]


class ServersProcess:
    """The endpoint server and the fake Kubernetes API, in one forked child process; stopped (and
    its children with it) on exit. Forked before this process starts any thread."""

    def __init__(self, web: EndpointServer, pods: dict[str, list[dict]], **api_options):
        self.web, self.pods, self.api_options = web, pods, api_options  # api_options: nodes=, metrics=
        self.api_url = ""

    def __enter__(self) -> "ServersProcess":
        import multiprocessing

        context = multiprocessing.get_context("fork")
        receive, send = context.Pipe(duplex=False)
        web, pods, api_options = self.web, self.pods, self.api_options

        def child() -> None:
            api = KubeApiServer(pods, token=KUBE_TOKEN, **api_options).__enter__()
            web.serve_forever(lambda base: send.send((base, api.url)))

        self.process = context.Process(target=child, daemon=True, name="bench-servers")
        self.process.start()
        if not receive.poll(30):
            raise RuntimeError("the endpoint and Kubernetes servers did not start within 30 s")
        self.web.base, self.api_url = receive.recv()
        return self

    def __exit__(self, *exc) -> None:
        self.process.kill()
        self.process.join(10)


def spread(count: int, chosen: int) -> set[int]:
    """`chosen` indexes spread evenly over range(count)."""
    chosen = max(0, min(chosen, count))
    return {int(i * count / chosen) for i in range(chosen)} if chosen else set()


# --- the pods ------------------------------------------------------------------------------------

def build_pods(total: int) -> dict[str, list[dict]]:
    """`total` pods across NAMESPACES: nine in ten running and ready, the tenth cycling through the
    other states tests.k8s_server knows (crash loops, image pulls, pending, init, completed jobs...)."""
    templates = pods_in_every_state("bench")
    healthy = templates.pop("running-ready")
    others = list(templates.values())
    names = list(NAMESPACES)
    sizes = [int(total * NAMESPACES[ns]) for ns in names]
    sizes[0] += total - sum(sizes)
    pods: dict[str, list[dict]] = {}
    serial = 0
    for ns, size in zip(names, sizes):
        members = []
        for i in range(size):
            template = others[(serial // 10) % len(others)] if serial % 10 == 9 else healthy
            body = copy.deepcopy(template)
            meta = body["metadata"]
            meta["name"] = f"{meta['name'].rsplit('-', 1)[0] if '-' in meta['name'] else meta['name']}-{serial:05d}"
            meta["namespace"] = ns
            meta["uid"] = str(uuid.uuid5(uuid.NAMESPACE_URL, f"{ns}/{meta['name']}"))
            members.append(body)
            serial += 1
        pods[ns] = members
    return pods


# --- issue 16's parts: nodes, Redis, Alertmanager ------------------------------------------------

def build_nodes(total: int) -> tuple[list[dict], list[dict]]:
    """`total` nodes and their NodeMetrics: nine in ten Ready and quiet, the tenth cycling through
    NotReady, memory pressure, a cordon and a node metrics-server has not measured yet."""
    troubles = [dict(ready=False, since=ago(minutes=40)), dict(pressure=("MemoryPressure",)),
                dict(unschedulable=True), None]
    nodes, metrics = [], []
    for i in range(total):
        name = f"worker-{i + 1:03d}"
        trouble = troubles[(i // 10) % len(troubles)] if i % 10 == 9 else {}
        nodes.append(node(name, **(trouble or {})))
        if trouble is not None:  # None: not measured
            metrics.append(node_metrics(name, cpu=f"{500 + 97 * i % 3000}m", memory=f"{2 + i % 9}Gi"))
    return nodes, metrics


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def poll(condition, what: str, timeout: float = 30.0, interval: float = 0.02):
    deadline = time.monotonic() + timeout
    while True:
        result = condition()
        if result:
            return result
        if time.monotonic() > deadline:
            raise RuntimeError(f"gave up after {timeout:g}s waiting for {what}")
        time.sleep(interval)


def _stop(process: subprocess.Popen) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@contextlib.contextmanager
def redis_server(directory: Path):
    """One redis-server on a free loopback port, no persistence; yields its port once it PONGs."""
    directory.mkdir(parents=True)
    port = free_port()
    process = subprocess.Popen(["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                                "--appendonly", "no", "--daemonize", "no", "--dir", str(directory),
                                "--logfile", str(directory / "redis.log")],
                               stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)

    def pongs() -> bool:
        if process.poll() is not None:
            raise RuntimeError(f"redis-server exited {process.returncode}: "
                               f"{(directory / 'redis.log').read_text(errors='replace')[-1000:]}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1) as s:
                s.sendall(b"PING\r\n")
                return s.recv(16).startswith(b"+PONG")
        except OSError:
            return False
    try:
        poll(pongs, f"redis-server on port {port}")
        yield port
    finally:
        _stop(process)


ALERTMANAGER_CONFIG = """route:
  receiver: "null"
  group_wait: 1h  # nothing is sent anywhere: the null receiver has no integrations
receivers:
  - name: "null"
"""
BENCH_ALERTS = [{"labels": {"alertname": "NodeDown", "severity": "critical", "instance": "db1:9100"},
                 "annotations": {"summary": "db1 is down"}},
                {"labels": {"alertname": "DiskFilling", "severity": "warning", "mountpoint": "/var"},
                 "annotations": {"summary": "/var is 91% full"}},
                {"labels": {"alertname": "BackupLate", "severity": "info", "team": "sre"}}]


@contextlib.contextmanager
def alertmanager_server(directory: Path):
    """prometheus-alertmanager on a free loopback port (no clustering, its own storage), fed
    BENCH_ALERTS; yields its URL once it lists all of them."""
    import httpx

    directory.mkdir(parents=True)
    (directory / "alertmanager.yml").write_text(ALERTMANAGER_CONFIG)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log = open(directory / "alertmanager.log", "wb")
    process = subprocess.Popen([shutil.which("prometheus-alertmanager") or "prometheus-alertmanager",
                                f"--config.file={directory / 'alertmanager.yml'}",
                                f"--storage.path={directory / 'data'}", f"--web.listen-address=127.0.0.1:{port}",
                                "--cluster.listen-address="], stdout=log, stderr=subprocess.STDOUT)
    client = httpx.Client(base_url=url, timeout=10)

    def ready() -> bool:
        if process.poll() is not None:
            raise RuntimeError(f"prometheus-alertmanager exited {process.returncode}: "
                               f"{(directory / 'alertmanager.log').read_text(errors='replace')[-1000:]}")
        try:
            return client.get("/-/ready").status_code == 200
        except httpx.TransportError:
            return False
    try:
        poll(ready, f"Alertmanager ready at {url}")
        now = datetime.now(UTC)
        stamp = lambda moment: moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")  # noqa: E731
        client.post("/api/v2/alerts", json=[{"startsAt": stamp(now - timedelta(hours=2)),
                                            "endsAt": stamp(now + timedelta(hours=3)), **a}
                                           for a in BENCH_ALERTS]).raise_for_status()
        poll(lambda: len(client.get("/api/v2/alerts").json()) == len(BENCH_ALERTS),
             f"Alertmanager at {url} to list the {len(BENCH_ALERTS)} alerts")
        yield url
    finally:
        client.close()
        _stop(process)
        log.close()


# --- maint's configuration --------------------------------------------------------------------------

def write_config(path: Path, server: ThrowawayPostgres, urls: list[str], max_latency_ms: int,
                 redis_port: int | None = None, alertmanager_url: str | None = None) -> Path:
    endpoints = "".join(f'\n[[health_check.endpoints]]\nurl = "{url}"\nexpect_status = 200\n'
                        f'max_latency = "{max_latency_ms}ms"\n' for url in urls)
    namespaces = ", ".join(f'"{ns}"' for ns in NAMESPACES)
    if redis_port is not None:
        endpoints += f'\n[[health_check.redis]]\nurl = "redis://127.0.0.1:{redis_port}/0"\n'
    if alertmanager_url is not None:
        endpoints += f'\n[[health_check.alertmanager]]\nurl = "{alertmanager_url}"\n'
    path.write_text(f"""# Written by bench/health.py
timezone = "UTC"

{database_entry(server, PASSWORD_ENV, "shop", connect_timeout="3s")}
[health_check]
databases = ["bench"]
long_query = "5m"
idle_in_transaction = "10m"
blocked = "1m"
{endpoints}
[health_check.kubernetes]
namespaces = [{namespaces}]
max_restarts = {MAX_RESTARTS}
""")
    return path


# --- maint through Prefect ------------------------------------------------------------------------

class ClientRetries(logging.Handler):
    """Counts the Prefect client's "retryable status code" retries (a 503 from a busy SQLite-backed
    server costs a ~2 s back-off inside the flow run's own timing)."""

    def __init__(self):
        super().__init__(logging.DEBUG)
        self.count = 0

    def emit(self, record):
        if "retryable" in record.getMessage():
            self.count += 1

    def __enter__(self) -> "ClientRetries":
        client_log = logging.getLogger("prefect.client")
        self._level = client_log.level
        client_log.setLevel(logging.DEBUG)  # the retry notice is a DEBUG record; the client logs little else
        client_log.addHandler(self)
        return self

    def __exit__(self, *exc) -> None:
        client_log = logging.getLogger("prefect.client")
        client_log.removeHandler(self)
        client_log.setLevel(self._level)


def time_flow_runs(config: Path, repeat: int, pause: float, label: str,
                   prefect_defaults: bool = False) -> tuple[list[float], dict, int]:
    times, report, retries = [], {}, 0
    for i in range(repeat):
        if pause:
            time.sleep(pause)  # let the API server finish writing the previous run's events and logs
        with ClientRetries() as counter:
            seconds, report = run_flow(config, prefect_defaults)
        times.append(seconds)
        retries += counter.count
        say(f"   {label} run {i + 1}: {seconds:.3f}s" + (f"  ({counter.count} Prefect client retry(ies) "
                                                         "after a 503 from the API server)" if counter.count else ""))
    return times, report, retries


def run_flow(config: Path, prefect_defaults: bool = False) -> tuple[float, dict]:
    """One flow run in this process, as `maint run` runs it (flows._duty.run_now: Prefect's flow-run
    heartbeat off), or with `prefect_defaults` as a plain call of the flow (heartbeat on, as under
    a deployment)."""
    from maint.flows.health_check import health_check

    started = time.perf_counter()
    state = run_flow_state(health_check, prefect_defaults, config_path=str(config))
    elapsed = time.perf_counter() - started
    report = report_of_state(health_check, state)
    return elapsed, report


def summarize(report: dict, endpoints: int, every_check: bool = False) -> str:
    findings = report["findings"]
    by = {}
    for f in findings:
        by.setdefault(f["check"], {}).setdefault(f["severity"], 0)
        by[f["check"]][f["severity"]] += 1
    parts = []
    checks = ["endpoint", "reachable", "connections", "pods"]
    if every_check:  # --new-parts: the rest too (nodes, node-usage, redis-*, alert, alertmanager...)
        checks += sorted(set(by) - set(checks))
    for check in checks:
        if check in by:
            parts.append(f"{check}: " + ", ".join(f"{n} {s}" for s, n in sorted(by[check].items())))
    bad_endpoints = [f for f in findings if f["check"] == "endpoint" and f["severity"] != "ok"]
    if bad_endpoints or by.get("endpoint", {}).get("ok", 0) != endpoints:
        parts.append(f"UNEXPECTED: {len(bad_endpoints)} endpoint(s) not ok, e.g. "
                     f"{bad_endpoints[0]['message'] if bad_endpoints else '(missing)'}")
    return f"status {report['status']}; {len(findings)} findings; " + "; ".join(parts)


# --- maint without Prefect ------------------------------------------------------------------------

def run_plain(config_path: Path) -> tuple[float, dict[str, float], int]:
    """maint's check functions, concurrently, as the flow runs them, but without Prefect."""
    from maint.tasks.environment import load_config
    from maint.health import assess_endpoint
    from maint.pods import assess_pods
    from maint.tasks import http, postgres
    from maint.tasks.kubernetes import list_pods

    config = load_config(config_path)
    hc = config.health_check
    parts: dict[str, float] = {}

    def timed(name, fn):
        def run():
            started = time.perf_counter()
            try:
                return fn()
            finally:
                parts[name] = time.perf_counter() - started
        return run

    def endpoints():
        results = http.check_endpoints(hc.endpoints)
        return [assess_endpoint(e.url, e.expect_status, e.max_latency, r) for e, r in zip(hc.endpoints, results)]

    def database(name):
        return postgres.server_health(config.database(name), long_query=hc.long_query,
                                      idle_in_transaction=hc.idle_in_transaction, blocked=hc.blocked,
                                      statement_timeout=hc.statement_timeout, lock_timeout=hc.lock_timeout)

    def pods():
        from maint.flows._duty import utcnow

        listed = list_pods(hc.kubernetes.namespaces, context=hc.kubernetes.context)
        return assess_pods(listed, utcnow(), hc.kubernetes.max_restarts, namespaces=hc.kubernetes.namespaces)

    started = time.perf_counter()
    with ThreadPoolExecutor(max_workers=4) as pool:
        futures = [pool.submit(timed("endpoints", endpoints)),
                   *(pool.submit(timed(f"database {n}", lambda n=n: database(n))) for n in hc.databases),
                   pool.submit(timed("pods (list + assess)", pods))]
        results = [f.result() for f in futures]
    elapsed = time.perf_counter() - started
    bad = sum(f.severity.value != "ok" for f in results[0])
    return elapsed, parts, bad


# --- what the endpoint server itself allows -------------------------------------------------------------

async def _raw_get(url: str) -> int:
    rest = url.split("://", 1)[1]
    hostport, _, path = rest.partition("/")
    host, _, port = hostport.partition(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    try:
        writer.write(f"GET /{path} HTTP/1.1\r\nHost: {hostport}\r\nConnection: close\r\n\r\n".encode())
        await writer.drain()
        answer = await reader.read()
    finally:
        writer.close()
    return int(answer.split(b" ", 2)[1])


def fixture_floor(urls: list[str]) -> tuple[float, int]:
    """All endpoints at once with bare asyncio sockets (no HTTP library, no TLS context, no checks):
    how fast this machine and this Python server can answer, whatever the client."""
    async def all_of_them():
        return await asyncio.gather(*(_raw_get(u) for u in urls))

    started = time.perf_counter()
    codes = asyncio.run(all_of_them())
    return time.perf_counter() - started, sum(c == 200 for c in codes)


# --- the runbook's loop ---------------------------------------------------------------------------

# The same questions tasks/postgres/health.py asks, one `psql -c` each, as the runbook has them typed.
RUNBOOK_SQL = [
    ("connections vs max_connections",
     "SELECT count(*) FILTER (WHERE backend_type = 'client backend') AS clients, "
     "current_setting('max_connections')::int AS max_connections, "
     "current_setting('superuser_reserved_connections')::int AS reserved FROM pg_stat_activity"),
    ("long-running queries",
     "SELECT pid, usename, application_name, now() - query_start AS running, left(query, 200) "
     "FROM pg_stat_activity WHERE backend_type = 'client backend' AND state = 'active' "
     "AND now() - query_start > interval '5 minutes' AND pid <> pg_backend_pid()"),
    ("idle in transaction",
     "SELECT pid, usename, application_name, now() - state_change AS idle, left(query, 200) "
     "FROM pg_stat_activity WHERE state IN ('idle in transaction', 'idle in transaction (aborted)') "
     "AND now() - state_change > interval '10 minutes'"),
    ("blocked queries and their blockers",
     "SELECT pid, usename, now() - query_start AS waiting, pg_blocking_pids(pid) AS blocked_by, "
     "left(query, 200) FROM pg_stat_activity WHERE cardinality(pg_blocking_pids(pid)) > 0 "
     "AND now() - query_start > interval '1 minute'"),
    ("xid / multixact wraparound ages",
     "SELECT datname, age(datfrozenxid) AS xid_age, mxid_age(datminmxid) AS mxid_age "
     "FROM pg_database ORDER BY 2 DESC"),
    ("ten largest tables",
     "SELECT format('%I.%I', n.nspname, c.relname), pg_size_pretty(c.relpages::bigint * "
     "current_setting('block_size')::bigint) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
     "WHERE c.relkind IN ('r', 'm') AND n.nspname NOT IN ('pg_catalog', 'information_schema') "
     "ORDER BY c.relpages DESC LIMIT 10"),
]


def run_loop(urls: list[str], server: ThrowawayPostgres, api_url: str) -> tuple[float, dict[str, float], dict]:
    """One step after another, one process per step, as an on-call engineer's shell would."""
    parts: dict[str, float] = {}
    seen: dict = {}

    started = time.perf_counter()
    statuses = []
    for url in urls:
        out = subprocess.run(["curl", "-s", "-o", "/dev/null", "-w", "%{http_code} %{time_total}",
                              "--max-time", "10", url], capture_output=True, text=True).stdout
        statuses.append(out.split()[0] if out else "000")
    parts["endpoints (curl each)"] = time.perf_counter() - started
    seen["endpoints answering 200"] = sum(s == "200" for s in statuses)

    step = time.perf_counter()
    env = {**libpq_env(server), "PGDATABASE": "shop", "PGCONNECT_TIMEOUT": "3"}
    failures = 0
    for _title, query in RUNBOOK_SQL:
        done = subprocess.run(["psql", "-X", "-A", "-c", query], capture_output=True, text=True, env=env)
        failures += done.returncode != 0
    parts[f"database ({len(RUNBOOK_SQL)} x psql -c)"] = time.perf_counter() - step
    seen["psql failures"] = failures

    step = time.perf_counter()
    pods = 0
    requests = 0
    for ns in NAMESPACES:
        token = ""
        while True:
            url = f"{api_url}/api/v1/namespaces/{ns}/pods?limit={PAGE_SIZE}" + (f"&continue={token}" if token else "")
            body = subprocess.run(["curl", "-s", "--max-time", "10", "-H", f"Authorization: Bearer {KUBE_TOKEN}",
                                   "-H", "Accept: application/json", url], capture_output=True).stdout
            requests += 1
            document = json.loads(body)
            pods += len(document.get("items") or [])
            token = (document.get("metadata") or {}).get("continue") or ""
            if not token:
                break
    parts[f"pods (curl, {requests} list requests)"] = time.perf_counter() - step
    seen["pods listed"] = pods
    return time.perf_counter() - started, parts, seen


def kubectl_note() -> str:
    path = shutil.which("kubectl")
    if not path:
        return "kubectl is not installed: the loop lists pods with curl and the bearer token."
    return (f"kubectl is on PATH ({os.path.realpath(path)}), but it cannot talk to the fake API server: "
            "it does not send a bearer token over plain http and `get pods` needs the discovery "
            "endpoints (/api, /apis) the fake does not serve. The loop sends kubectl's list request "
            f"with curl instead (GET /api/v1/namespaces/NS/pods?limit={PAGE_SIZE}, bearer token); a real "
            "kubectl adds its own start-up (~0.1 s a call here) and discovery, so the loop is flattered.")


# --- the whole run ----------------------------------------------------------------------------------

def machine_load() -> str:
    one, five, _ = os.getloadavg()
    cpus = os.cpu_count() or 1
    note = (f" -- the machine is busy with other work ({one:.1f} runnable on {cpus} CPUs): "
            "expect noisy, slower figures" if one > cpus / 2 else "")
    return f"load average {one:.2f} (1 min), {five:.2f} (5 min) on {cpus} CPU(s){note}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--endpoints", type=int, default=200)
    parser.add_argument("--slow", type=int, default=20, help="how many endpoints answer slowly")
    parser.add_argument("--slow-seconds", type=float, default=0.3)
    parser.add_argument("--pods", type=int, default=1000)
    parser.add_argument("--repeat", type=int, default=3, help="timed runs of maint (flow and plain)")
    parser.add_argument("--loop-repeat", type=int, default=1, help="timed runs of the runbook loop (best kept)")
    parser.add_argument("--pause", type=float, default=2.0,
                        help="seconds between timed flow runs, so the API server has written the previous "
                             "run's events and logs (back to back, its SQLite answers 503 and the client "
                             "backs off ~2 s)")
    parser.add_argument("--no-heartbeat-variant", action="store_true",
                        help="skip the diagnostic runs of the flow with Prefect's defaults (heartbeat on)")
    parser.add_argument("--new-parts", action="store_true",
                        help="also a real redis-server and prometheus-alertmanager (fed a few alerts) in the "
                             "check, and --nodes nodes with metrics in the fake Kubernetes API (issue 16)")
    parser.add_argument("--nodes", type=int, default=10, help="with --new-parts: nodes in the fake Kubernetes API")
    parser.add_argument("--prefect", choices=("harness", "ephemeral"), default="harness",
                        help="harness: a temporary Prefect server with its own database (as the tests); "
                             "ephemeral: what `maint run` does without PREFECT_API_URL")
    args = parser.parse_args(argv)
    for tool in ("curl", "psql"):
        if not shutil.which(tool):
            print(f"bench/health.py: {tool} is not on PATH", file=sys.stderr)
            return 3

    work = Path(tempfile.mkdtemp(prefix="maint-bench-health-"))
    os.environ["HOME"] = str(work)  # no ~/.kube/config of the operator's, no stray profile
    os.environ.pop("KUBERNETES_SERVICE_HOST", None)
    console_log = work / "prefect-console.log"
    clock = time.monotonic()
    say(f"== maint health-check benchmark: {os.cpu_count()} CPU(s), Python {sys.version.split()[0]}, "
        f"{shutil.which('curl')}, {shutil.which('psql')}; workdir {work}")
    say(f"   {machine_load()}")
    try:
        return run(args, work, console_log, clock)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def run(args, work: Path, console_log: Path, clock: float) -> int:
    slow = spread(args.endpoints, args.slow)
    pods = build_pods(args.pods)
    max_latency_ms = int(max(2.0, args.slow_seconds + 1.0) * 1000)
    web = EndpointServer(args.endpoints, slow, args.slow_seconds)
    api_options: dict = {}
    if args.new_parts:
        if node is None:
            print("bench/health.py: --new-parts needs tests.k8s_server's node builders (issue 16)", file=sys.stderr)
            return 3
        api_options["nodes"], api_options["metrics"] = build_nodes(args.nodes)
    with ServersProcess(web, pods, **api_options) as servers, ThrowawayPostgres() as server, \
            contextlib.ExitStack() as new_parts:
        redis_port = alertmanager_url = None
        if args.new_parts:
            redis_port = new_parts.enter_context(redis_server(work / "redis"))
            alertmanager_url = new_parts.enter_context(alertmanager_server(work / "alertmanager"))
        server.create_database("shop")
        load_sample_schema(server, "shop")
        os.environ[PASSWORD_ENV] = server.password
        os.environ["KUBECONFIG"] = str(write_kubeconfig(work / "kubeconfig", {"bench": (servers.api_url, KUBE_TOKEN)}))
        config = write_config(work / "maint.toml", server, web.urls(), max_latency_ms, redis_port, alertmanager_url)
        say(f"   PostgreSQL {server.host}:{server.port}/shop (sample schema); {args.endpoints} endpoints at "
            f"{web.base}/svc/NNN/health, {len(slow)} answering after {args.slow_seconds:g}s "
            f"(max_latency {max_latency_ms}ms); fake Kubernetes API at {servers.api_url} with "
            + ", ".join(f"{ns} {len(p)}" for ns, p in pods.items()) + f" pods; config {config}")
        if args.new_parts:
            say(f"   new parts: redis-server 127.0.0.1:{redis_port}; Alertmanager {alertmanager_url} with "
                f"{len(BENCH_ALERTS)} alerts; {len(api_options['nodes'])} nodes, {len(api_options['metrics'])} "
                "measured by metrics-server")
        say(f"   {kubectl_note()}")

        with prefect_console_to(console_log), prefect_api(args.prefect):
            from prefect.settings import PREFECT_API_URL

            say(f"\n== warm-up: one health-check flow run (starts the Prefect API: "
                f"{'test harness' if args.prefect == 'harness' else 'ephemeral, as `maint run`'})")
            seconds, report = run_flow(config)
            say(f"   {seconds:.2f}s; Prefect API {PREFECT_API_URL.value() or '(ephemeral, in-process)'}; "
                f"{summarize(report, args.endpoints, args.new_parts)}")

            say(f"\n== maint: the whole flow as `maint run` runs it (flows._duty.run_now), {args.repeat} run(s), "
                f"{args.pause:g}s apart")
            flow_times, last, retries = time_flow_runs(config, args.repeat, args.pause, "flow")
            say(f"   last report: {summarize(last, args.endpoints, args.new_parts)}")
            try:
                breakdown = task_times(last["details"]["flow_run_id"])
            except Exception as exc:  # a diagnostic only
                breakdown = []
                say(f"   (no task breakdown from the Prefect API: {exc.__class__.__name__}: {exc})")
            if breakdown:
                say("   the last run as the Prefect API recorded it:")
            for name, offset, took in breakdown:
                say(f"     {name:<48} started +{offset:6.3f}s  took {took:6.3f}s")

            default_times: list[float] = []
            if not args.no_heartbeat_variant:
                say(f"\n== diagnostic: the flow called directly with Prefect's defaults (flow-run heartbeat "
                    f"on, as under a deployment), {args.repeat} run(s)")
                default_times, _, _ = time_flow_runs(config, args.repeat, args.pause, "heartbeat-on flow",
                                                     prefect_defaults=True)

            say(f"\n== maint without Prefect: the same check functions in a thread pool, {args.repeat} run(s)")
            plain_times = []
            for i in range(args.repeat):
                if args.pause:
                    time.sleep(args.pause)
                seconds, parts, bad = run_plain(config)
                plain_times.append(seconds)
                say(f"   run {i + 1}: {seconds:.3f}s (" + ", ".join(f"{k} {v:.3f}s" for k, v in parts.items())
                    + f"); endpoints not ok: {bad}")

            say(f"\n== the endpoint server's own floor: all {args.endpoints} endpoints at once with bare asyncio "
                f"sockets, {args.repeat} run(s)")
            floor_times = []
            for i in range(args.repeat):
                seconds, ok = fixture_floor(web.urls())
                floor_times.append(seconds)
                say(f"   run {i + 1}: {seconds:.3f}s ({ok} answered 200)")

        say(f"\n== the runbook loop: sequential, one process per check, {args.loop_repeat} run(s)")
        loop_times = []
        for i in range(args.loop_repeat):
            seconds, parts, seen = run_loop(web.urls(), server, servers.api_url)
            loop_times.append(seconds)
            say(f"   run {i + 1}: {seconds:.3f}s (" + ", ".join(f"{k} {v:.3f}s" for k, v in parts.items()) + ")")
            say("   saw: " + ", ".join(f"{k} {v}" for k, v in seen.items()))

    best, median = min(flow_times), statistics.median(flow_times)
    plain_best, plain_median = min(plain_times), statistics.median(plain_times)
    floor = min(floor_times)
    loop = min(loop_times)
    ratio = loop / best
    say("\n== results")
    rows = [("maint health-check flow, Prefect API up: best", fmt(best)),
            ("maint health-check flow, Prefect API up: median", fmt(median))]
    if retries:
        rows.append(("  (Prefect client retries after a 503 in those runs)", f"{retries:8d}"))
    if default_times:
        rows += [("diagnostic: flow with Prefect's heartbeat on: best", fmt(min(default_times))),
                 ("diagnostic: flow with Prefect's heartbeat on: median", fmt(statistics.median(default_times)))]
    rows += [("maint checks without Prefect (thread pool): best", fmt(plain_best)),
             ("maint checks without Prefect (thread pool): median", fmt(plain_median)),
             ("  -> Prefect's share (flow best - plain best)", fmt(best - plain_best)),
             ("endpoint server floor (bare asyncio sockets): best", fmt(floor)),
             ("runbook loop (curl each / psql -c each / curl): best", fmt(loop)),
             ("ratio loop / maint flow: best; median", f"{ratio:8.1f} x ; {loop / median:.1f} x"),
             ("ratio loop / maint without Prefect: best", f"{loop / plain_best:8.1f} x"),
             ("ratio loop / endpoint server floor (no client can beat)", f"{loop / floor:8.1f} x")]
    for label, value in rows:
        say(f"   {label:<58}{value}")
    say(f"\n   maint at least {RATIO_TARGET:g}x faster than the loop: {'PASS' if ratio >= RATIO_TARGET else 'FAIL'}"
        f" ({ratio:.1f}x; needs maint <= {loop / RATIO_TARGET:.2f}s)")
    say(f"   maint under {SECONDS_TARGET:g} s with the Prefect API up:  {'PASS' if best < SECONDS_TARGET else 'FAIL'}"
        f" (best {best:.2f}s, median {median:.2f}s)")
    say(f"\n   at the end: {machine_load()}")
    say(f"   benchmark took {time.monotonic() - clock:.0f}s; Prefect's console output went to a log "
        "file (removed with the workdir)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
