"""A local HTTP server speaking the Cloud SQL Admin API v1 paths that `maint.tasks.cloud_sql`
calls, for the real google-api-python-client (its `api_endpoint` pointed here), and builders for
DatabaseInstance and BackupRun JSON with the field names of the discovery document
(googleapiclient/discovery_cache/documents/sqladmin.v1.json).

Paths (the document's rootUrl is https://sqladmin.googleapis.com/ with an empty servicePath, so
the client sends them under the endpoint as they stand):

    GET /v1/projects/{project}/instances/{instance}                          instances.get
    GET /v1/projects/{project}/instances/{instance}/backupRuns               backupRuns.list
    GET /v1/projects/{project}/instances/{instance}/getLatestRecoveryTime    projects.instances.getLatestRecoveryTime

The server keeps instances by (project, name) as the test sets them (`add`). An unknown instance
is a 404 (the real API may also answer 403 for it); `fail[(project, name)] = 403` (or any status)
answers that for everything about the instance, in the error JSON Google's APIs send.
`backupRuns.list` pages with `maxResults` and `pageToken`, newest enqueued first as the API
documents; `getLatestRecoveryTime` answers what `recovery` holds, or a 400 when the instance has
none set. Every request is recorded (`requests`) so a test can assert what the client called;
`delay` holds every answer back, for timeouts.
"""

from __future__ import annotations

import json
import re
import threading
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, unquote, urlparse

_PATH = re.compile(r"^/v1/projects/(?P<project>[^/]+)/instances/(?P<instance>[^/]+)(?:/(?P<what>[A-Za-z]+))?$")
_STATUS = {400: "INVALID_ARGUMENT", 401: "UNAUTHENTICATED", 403: "PERMISSION_DENIED", 404: "NOT_FOUND",
           412: "FAILED_PRECONDITION", 429: "RESOURCE_EXHAUSTED", 500: "INTERNAL", 503: "UNAVAILABLE"}
# What Cloud SQL says for each, as far as maint's messages go (message, errors[].reason).
_MESSAGE = {
    400: ("Invalid request: Point in time recovery is not enabled for this instance.", "invalid"),
    401: ("Request had invalid authentication credentials.", "authError"),
    403: ("The client is not authorized to make this request.", "notAuthorized"),
    404: ("The Cloud SQL instance does not exist.", "instanceDoesNotExist"),
    429: ("Quota exceeded for quota metric 'Queries'.", "rateLimitExceeded"),
    500: ("Internal error encountered.", "backendError"),
    503: ("The service is currently unavailable.", "backendError"),
}


@dataclass(frozen=True)
class SeenRequest:
    method: str
    path: str
    query: dict[str, str]
    authorization: str | None


def error_json(code: int, message: str | None = None, reason: str | None = None) -> dict:
    """Google's API error answer: {"error": {"code", "message", "errors": [...], "status"}}."""
    default_message, default_reason = _MESSAGE.get(code, ("Error.", "unknown"))
    message = message or default_message
    return {"error": {"code": code, "message": message, "status": _STATUS.get(code, "UNKNOWN"),
                      "errors": [{"message": message, "domain": "global", "reason": reason or default_reason}]}}


class SqlAdminServer:
    """`with SqlAdminServer() as api:`; `api.url` is the `api_endpoint`."""

    def __init__(self):
        self.instances: dict[tuple[str, str], dict] = {}
        self.backup_runs: dict[tuple[str, str], list[dict]] = {}
        self.recovery: dict[tuple[str, str], dict] = {}
        self.fail: dict[tuple[str, str], int | tuple[int, str, str]] = {}  # status, or (status, message, reason)
        self.requests: list[SeenRequest] = []
        self.delay = 0.0  # seconds before every answer, for timeouts (cut short when the server stops)
        self.stopping = threading.Event()
        self.lock = threading.Lock()
        api = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def do_GET(self):
                url = urlparse(self.path)
                query = {k: v[-1] for k, v in parse_qs(url.query).items()}
                with api.lock:
                    api.requests.append(SeenRequest("GET", url.path, query, self.headers.get("Authorization")))
                    code, answer = api.answer(url.path, query)
                if api.delay:
                    api.stopping.wait(api.delay)
                payload = json.dumps(answer).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json; charset=UTF-8")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)  # the kernel picks a free port
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        # A short poll: shutdown() waits for it, at the end of every test.
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)

    def add(self, instance: dict, runs: list[dict] = (), recovery: dict | None = None) -> tuple[str, str]:
        """Keep an instance (a `database_instance`), its backup runs and its recovery time."""
        key = (instance["project"], instance["name"])
        with self.lock:
            self.instances[key] = instance
            self.backup_runs[key] = sorted(runs, key=lambda r: r.get("enqueuedTime") or "", reverse=True)
            if recovery is not None:
                self.recovery[key] = recovery
        return key

    def answer(self, path: str, query: dict[str, str]) -> tuple[int, dict]:
        match = _PATH.match(path)
        if not match or match["what"] not in (None, "backupRuns", "getLatestRecoveryTime"):
            return 404, error_json(404, f"Method not found: {path}", "notFound")
        key = (unquote(match["project"]), unquote(match["instance"]))
        if key in self.fail:
            code, *said = self.fail[key] if isinstance(self.fail[key], tuple) else (self.fail[key],)
            return code, error_json(code, *said)
        if key not in self.instances:
            return 404, error_json(404)
        if match["what"] is None:
            return 200, self.instances[key]
        if match["what"] == "backupRuns":
            runs = self.backup_runs[key]
            start = int(query.get("pageToken") or 0)
            size = int(query.get("maxResults") or 1000)
            page = {"kind": "sql#backupRunsList", "items": runs[start:start + size]}
            if start + size < len(runs):
                page["nextPageToken"] = str(start + size)
            return 200, page
        if key not in self.recovery:
            return 400, error_json(400)
        return 200, {"kind": "sql#getLatestRecoveryTime", **self.recovery[key]}

    def requests_to(self, what: str) -> list[SeenRequest]:
        """The requests of one call: "instance", "backupRuns" or "getLatestRecoveryTime"."""
        with self.lock:
            return [r for r in self.requests
                    if (_PATH.match(r.path) or {"what": "?"})["what"] == (None if what == "instance" else what)]

    def __enter__(self) -> "SqlAdminServer":
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stopping.set()
        self.server.shutdown()
        self.server.server_close()


# --- JSON builders ---------------------------------------------------------------------------------

def ts(moment: datetime) -> str:
    """RFC 3339 with milliseconds, as the API writes them: 2012-11-15T16:19:00.094Z."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def database_instance(project: str, name: str, *, state: str = "RUNNABLE", database_version: str = "POSTGRES_16",
                      backups: bool = True, pitr: bool = True, binary_log: bool = False, log_days: int | None = 7,
                      retained: int | None = 7, activation_policy: str = "ALWAYS", start_time: str = "23:00",
                      instance_type: str = "CLOUD_SQL_INSTANCE", **extra: Any) -> dict:
    """A DatabaseInstance as `instances.get` answers it (its main fields; `extra` adds or replaces
    top-level ones, such as masterInstanceName or suspensionReason)."""
    mysql = database_version.startswith("MYSQL")
    backup: dict[str, Any] = {"kind": "sql#backupConfiguration", "enabled": backups, "startTime": start_time,
                              "location": "us", "backupTier": "STANDARD",
                              "transactionalLogStorageState": "CLOUD_STORAGE"}
    if mysql:
        backup["binaryLogEnabled"] = binary_log
    else:
        backup["pointInTimeRecoveryEnabled"] = pitr
    if log_days is not None:
        backup["transactionLogRetentionDays"] = log_days
    if retained is not None:
        backup["backupRetentionSettings"] = {"retentionUnit": "COUNT", "retainedBackups": retained}
    body = {
        "kind": "sql#instance", "state": state, "databaseVersion": database_version,
        "settings": {"kind": "sql#settings", "tier": "db-custom-2-7680", "activationPolicy": activation_policy,
                     "availabilityType": "REGIONAL", "dataDiskSizeGb": "100", "settingsVersion": "42",
                     "backupConfiguration": backup, "pricingPlan": "PER_USE", "storageAutoResize": True},
        "etag": "a1b2c3", "project": project, "name": name, "region": "us-central1", "gceZone": "us-central1-a",
        "connectionName": f"{project}:us-central1:{name}", "backendType": "SECOND_GEN",
        "instanceType": instance_type, "createTime": "2024-01-02T03:04:05.678Z",
        "selfLink": f"https://sqladmin.googleapis.com/v1/projects/{project}/instances/{name}",
        "serviceAccountEmailAddress": "p123456789-abcdef@gcp-sa-cloud-sql.iam.gserviceaccount.com",
    }
    body.update(extra)
    return body


def backup_run(project: str, instance: str, run_id: str | int, status: str = "SUCCESSFUL", *,
               window_start: datetime, duration: timedelta = timedelta(minutes=12), run_type: str = "AUTOMATED",
               error: tuple[str, str] | None = None, database_version: str = "POSTGRES_16") -> dict:
    """A BackupRun of `backupRuns.list`. A run that ran has enqueued/start times a minute into its
    window and an endTime `duration` later; SKIPPED has only its window and enqueued time; ENQUEUED,
    OVERDUE and RUNNING have no endTime. `error`: (code, message), for FAILED or SKIPPED."""
    enqueued = window_start + timedelta(minutes=1)
    body: dict[str, Any] = {
        "kind": "sql#backupRun", "status": status, "enqueuedTime": ts(enqueued), "id": str(run_id),
        "windowStartTime": ts(window_start), "type": run_type, "instance": instance, "location": "us",
        "backupKind": "SNAPSHOT", "databaseVersion": database_version,
        "selfLink": f"https://sqladmin.googleapis.com/v1/projects/{project}/instances/{instance}/backupRuns/{run_id}",
    }
    if status in ("SUCCESSFUL", "FAILED", "RUNNING", "DELETED"):
        body["startTime"] = ts(enqueued)
    if status in ("SUCCESSFUL", "FAILED", "DELETED"):
        body["endTime"] = ts(enqueued + duration)
    if error is not None:
        body["error"] = {"kind": "sql#operationError", "code": error[0], "message": error[1]}
    if run_type == "ON_DEMAND":
        body["description"] = "before the schema migration"
    return body


def recovery_time(latest: datetime, earliest: datetime | None = None) -> dict:
    """getLatestRecoveryTime's answer (without its kind, which the server adds)."""
    body = {"latestRecoveryTime": ts(latest)}
    if earliest is not None:
        body["earliestRecoveryTime"] = ts(earliest)
    return body


def daily_runs(project: str, instance: str, now: datetime, days: int = 7, *, first_id: int = 1700000000000,
               last_window_ago: timedelta = timedelta(hours=10)) -> list[dict]:
    """`days` successful automated runs, one a day, the newest window `last_window_ago` before now."""
    return [backup_run(project, instance, first_id + day, window_start=now - last_window_ago - timedelta(days=day))
            for day in range(days)]
