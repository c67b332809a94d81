"""The error tree, shaped by what the caller does with an error.

Library exceptions (psycopg, google.api_core, httpx) are translated at the boundary in `tasks/`
into one of these, with the host, database, bucket or object named and the original chained.
A duty turns a `MaintError` into a critical finding; anything else is an internal error.
"""


class MaintError(Exception):
    """An expected failure with a message fit for an on-call engineer."""


class CriticalReport(MaintError):
    """A duty finished and its report is critical: the product working, not an internal error.

    The run ends Failed with `str(self)`, one line naming the duty and its worst findings; the
    report itself rides along for `maint run`, which prints it and exits 2."""

    def __init__(self, reason: str, report: dict):
        super().__init__(reason)
        self.report = report

    def __reduce__(self):  # results are pickled: keep the report through a round trip
        return (type(self), (str(self), self.report))


class ConfigError(MaintError):
    """The configuration is unusable; `problems` lists every problem, each naming its field."""

    def __init__(self, problems: list[str]):
        self.problems = problems
        super().__init__("invalid configuration:\n" + "\n".join(f"  {p}" for p in problems))


class TransientError(MaintError):
    """Worth retrying: the same call may succeed in a moment (GCS 429/5xx, reset, starting up)."""


class DatabaseError(MaintError):
    """The database refused or failed: down, auth refused, query error."""


class DatabaseUnavailable(DatabaseError, TransientError):
    """The server is not accepting connections (yet): refused, starting up, shutting down."""


class StorageError(MaintError):
    """The backup store refused or failed: bucket missing, permission denied, object gone."""


class TransientStorageError(StorageError, TransientError):
    pass


class ChecksumMismatch(StorageError):
    """The bytes read back do not match the checksum the store holds for the object: it is
    corrupt (bit rot, or changed under the store). Never retried: reading again gives the same."""


class DeleteRefused(StorageError):
    """The store would not delete an object (a hold, a retention lock, or it changed meanwhile):
    reported and skipped, never an error of the run."""


class DumpError(MaintError):
    """pg_dump (or another PostgreSQL client program) exited with an error."""


class NotificationError(MaintError):
    """A notification could not be delivered. Never swallowed: the run fails loudly."""


class KubernetesError(MaintError):
    """The Kubernetes API could not be reached or refused us: names the server and namespace."""


class CloudSqlError(MaintError):
    """The Cloud SQL Admin API could not be reached or refused us: names project:instance and the
    cause, never a token; `hint` is the next step (the role to grant, the name to check)."""

    def __init__(self, message: str, hint: str = ""):
        super().__init__(message)
        self.hint = hint

    def __reduce__(self):  # results are pickled: keep the hint through a round trip
        return (type(self), (str(self), self.hint))


class TransientCloudSqlError(CloudSqlError, TransientError):
    """The Admin API was unreachable or answered 429/5xx: the same read may succeed in a moment."""


class RedisError(MaintError):
    """A Redis server could not be sampled: names the server (host:port/db) and the cause, never
    the password. `kind` says which cause, for the finding's next step: "refused", "timeout",
    "wrong-password", "no-password", "password-not-set", "no-permission", "tls", "not-tls",
    "loading", "connect" (DNS, unreachable network) or "error" (another error reply); `detail`
    is the library's own reason, already free of the secret."""

    def __init__(self, address: str, kind: str, detail: str = ""):
        self.address, self.kind, self.detail = address, kind, detail
        super().__init__(f"redis {address}: {kind}" + (f": {detail}" if detail else ""))

    def __reduce__(self):  # task results are pickled: keep address, kind and detail
        return (type(self), (self.address, self.kind, self.detail))


class AlertmanagerError(MaintError):
    """Alertmanager could not be read: names its URL (never userinfo) and the cause; `hint` is
    the next step for that cause (the URL to check, the matcher to fix)."""

    def __init__(self, message: str, hint: str = ""):
        super().__init__(message)
        self.hint = hint

    def __reduce__(self):  # task results are pickled: keep the hint through a round trip
        return (type(self), (str(self), self.hint))
