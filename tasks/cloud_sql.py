"""Cloud SQL: read an instance, its backup runs and its latest recovery time through the Admin API
(google-api-python-client's `sqladmin` v1), as maint's `CloudSqlState`.

Calls, all reads: `instances.get`, `backupRuns.list` (every page, up to `MAX_PAGES`; the API
lists runs newest enqueued first) and, when point-in-time recovery is on,
`projects.instances.getLatestRecoveryTime`. The role `roles/cloudsql.viewer` allows them all.

Credentials: Application Default Credentials (`GOOGLE_APPLICATION_CREDENTIALS`, the metadata
server of GCE/GKE/Cloud Run, or `gcloud auth application-default login`), asked for the
`cloud-platform` scope: the discovery document lets these methods take it or `sqlservice.admin`,
and `cloud-platform` is what user ADC and Workload Identity tokens carry; what the identity may do
is IAM's part. One exception: an `api_endpoint` starting `http://` is an emulator or a test server,
and is sent anonymous requests, since a bearer token must never cross the wire in clear text
(an `https://` endpoint, such as a Private Service Connect one, gets the ADC token).

The client is built from the discovery document bundled with the library (`static_discovery`):
no network fetch before the first call. Every request has `timeout` (an `httplib2.Http` socket
timeout); a 429/5xx or a dropped connection is retried once by the client (`num_retries`), and
the flow's task may retry a `TransientCloudSqlError` once more. Every failure becomes a
`CloudSqlError` naming project:instance, the cause and the next step, never a token.
"""

from __future__ import annotations

import json
import socket
from typing import Any

from maint.cloud_sql import CloudSqlState, cloud_sql_state_from_json, instance_from_json
from maint.config import CloudSqlConfig
from maint.errors import CloudSqlError, TransientCloudSqlError

SCOPES = ["https://www.googleapis.com/auth/cloud-platform"]
DEFAULT_ENDPOINT = "https://sqladmin.googleapis.com"
PAGE_SIZE = 100  # backup runs per page: a year of daily runs is four pages
MAX_PAGES = 10
RETRIES = 1


def read_cloud_sql(config: CloudSqlConfig) -> CloudSqlState:
    """The instance, every backup run (up to MAX_PAGES * PAGE_SIZE) and, when point-in-time
    recovery is on, its latest recovery time. Raises CloudSqlError (TransientCloudSqlError for
    what may pass: unreachable, 429, 5xx)."""
    from google.auth.exceptions import GoogleAuthError

    try:
        service, credentials = _service(config)
    except GoogleAuthError as exc:
        raise _auth_error(config, exc) from exc
    with service:
        read = _Reader(config, credentials)
        instance = read("reading the instance", service.instances().get(
            project=config.project, instance=config.instance))
        try:
            has_pitr = instance_from_json(instance).has_point_in_time_recovery
        except _NOT_THE_API as exc:
            raise _not_the_api(config, exc) from exc
        runs: list[dict[str, Any]] = []
        token = None
        for _ in range(MAX_PAGES):
            page = read("listing backup runs", service.backupRuns().list(
                project=config.project, instance=config.instance, maxResults=PAGE_SIZE,
                **({"pageToken": token} if token else {})))
            runs += page.get("items") or []
            token = page.get("nextPageToken")
            if not token:
                break
        recovery, recovery_error = None, ""
        if has_pitr:
            try:
                recovery = read("reading the latest recovery time", service.projects().instances()
                                .getLatestRecoveryTime(project=config.project, instance=config.instance),
                                may_be_unsupported=True)
            except _Unsupported as exc:
                recovery_error = str(exc)
    try:
        return cloud_sql_state_from_json(instance, runs, recovery, recovery_error, runs_truncated=bool(token))
    except _NOT_THE_API as exc:
        raise _not_the_api(config, exc) from exc


_NOT_THE_API = (KeyError, ValueError, TypeError, AttributeError)


def _not_the_api(config: CloudSqlConfig, exc: Exception) -> CloudSqlError:
    return CloudSqlError(f"{config.subject}: the answer of {_endpoint(config)} is not the Cloud SQL Admin API's "
                         f"({exc.__class__.__name__}: {exc})",
                         "is api_endpoint right? It must be the Admin API's base URL")


def _endpoint(config: CloudSqlConfig) -> str:
    return config.api_endpoint or DEFAULT_ENDPOINT


def _service(config: CloudSqlConfig):
    """The sqladmin v1 client and the credentials it uses (imports here: the CLI starts fast)."""
    import google.auth
    import google_auth_httplib2
    import httplib2
    from google.auth.credentials import AnonymousCredentials
    from googleapiclient.discovery import build

    if config.api_endpoint and config.api_endpoint.startswith("http://"):
        credentials = AnonymousCredentials()
    else:
        credentials, _ = google.auth.default(scopes=SCOPES)
    http = google_auth_httplib2.AuthorizedHttp(credentials, http=httplib2.Http(timeout=config.timeout.total_seconds()))
    options = {"api_endpoint": config.api_endpoint.rstrip("/") + "/"} if config.api_endpoint else None
    service = build("sqladmin", "v1", http=http, static_discovery=True, cache_discovery=False,
                    client_options=options)
    return service, credentials


class _Unsupported(CloudSqlError):
    """The API refused a request as not applicable to this instance (400, 412)."""


class _Reader:
    """Runs one request and translates whatever goes wrong into a CloudSqlError."""

    def __init__(self, config: CloudSqlConfig, credentials):
        self.config = config
        self.credentials = credentials

    def __call__(self, doing: str, request, *, may_be_unsupported: bool = False) -> dict[str, Any]:
        """`may_be_unsupported`: a 400 or 412 means the call does not apply to this instance
        (raised as `_Unsupported`), not that something is wrong."""
        import httplib2
        from google.auth.exceptions import GoogleAuthError
        from googleapiclient.errors import HttpError

        config = self.config
        where = f"{config.subject}: {doing} from {_endpoint(config)}"
        try:
            return request.execute(num_retries=RETRIES) or {}
        except HttpError as exc:
            raise self._refused(where, exc, may_be_unsupported) from exc
        except GoogleAuthError as exc:
            raise _auth_error(config, exc) from exc
        except (socket.timeout, TimeoutError) as exc:
            raise TransientCloudSqlError(f"{where}: no answer within {config.timeout.total_seconds():g}s",
                                         _reach_hint(config)) from exc
        except (httplib2.HttpLib2Error, OSError) as exc:
            raise TransientCloudSqlError(f"{where}: cannot reach it: {_network_reason(exc)}",
                                         _reach_hint(config)) from exc
        except ValueError as exc:  # the answer was not JSON
            raise CloudSqlError(f"{where}: the answer is not JSON ({exc})",
                                "is api_endpoint right? It must be the Admin API's base URL") from exc

    def _refused(self, where: str, exc, may_be_unsupported: bool) -> CloudSqlError:
        config = self.config
        status = exc.status_code or (exc.resp.status if exc.resp is not None else 0)
        error = _error_body(exc.content)
        message = error.get("message") or exc.reason or ""
        reasons = {e.get("reason") for e in error.get("errors") or [] if isinstance(e, dict)}
        code = error.get("status") or ""
        said = f"{where}: {status} {code}".rstrip() + (f": {message}" if message else "")
        if status == 401:
            return CloudSqlError(said, "the credentials were refused: are Application Default Credentials valid "
                                       "(GOOGLE_APPLICATION_CREDENTIALS, or gcloud auth application-default login)?")
        if status == 403 and ({"accessNotConfigured", "SERVICE_DISABLED"} & (reasons | {code})
                              or "has not been used in project" in message):
            return CloudSqlError(said, f"enable the Admin API: gcloud services enable sqladmin.googleapis.com "
                                       f"--project={config.project}")
        if status == 403:
            return CloudSqlError(said, f"grant roles/cloudsql.viewer on project {config.project} to "
                                       f"{self._identity()}; and is the instance name right? Cloud SQL answers 403 "
                                       f"for an instance that does not exist too (gcloud sql instances list "
                                       f"--project={config.project})")
        if status == 404:
            return CloudSqlError(said, "is the instance name right? gcloud sql instances list "
                                       f"--project={config.project} (and is [[cloud_sql]].project the project ID, "
                                       "not its name or number?)")
        if status in (400, 412) and may_be_unsupported:
            return _Unsupported(f"{status} {code}".rstrip() + (f": {message}" if message else ""))
        if status == 429 or status >= 500:
            return TransientCloudSqlError(said, "the Admin API is overloaded or failing: the next run retries; "
                                                "see https://status.cloud.google.com if it persists")
        return CloudSqlError(said, f"gcloud sql instances describe {config.instance} --project={config.project} "
                                   "as this host's identity: does it work?")

    def _identity(self) -> str:
        email = getattr(self.credentials, "service_account_email", None)
        return email if email and email != "default" else "this host's identity (its service account)"


def _error_body(content: bytes | None) -> dict:
    """The `error` object of a Google API error answer, if it sent one."""
    try:
        body = json.loads(content or b"")
    except (ValueError, TypeError):
        return {}
    error = body.get("error") if isinstance(body, dict) else None
    return error if isinstance(error, dict) else {}


def _auth_error(config: CloudSqlConfig, exc: Exception) -> CloudSqlError:
    from google.auth.exceptions import DefaultCredentialsError

    if isinstance(exc, DefaultCredentialsError):
        return CloudSqlError(f"{config.subject}: no Application Default Credentials to read it with",
                             "run on GCP with a service account, set GOOGLE_APPLICATION_CREDENTIALS to a key file, "
                             "or gcloud auth application-default login; the identity needs roles/cloudsql.viewer")
    # The first argument is the description; later ones may hold the token endpoint's whole answer.
    detail = exc.args[0] if exc.args else exc.__class__.__name__
    kind = TransientCloudSqlError if getattr(exc, "retryable", False) else CloudSqlError
    return kind(f"{config.subject}: cannot get an access token: {detail}",
                                  "are Application Default Credentials valid, and is the token endpoint (or the "
                                  "metadata server) reachable from this host?")


def _reach_hint(config: CloudSqlConfig) -> str:
    return f"is {_endpoint(config)} reachable from this host (DNS, firewall, proxy)? The next run retries"


def _network_reason(exc: Exception) -> str:
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return str(exc) or exc.__class__.__name__
