"""The configuration model: one TOML document, validated before any I/O, every problem reported
at once. Pure: the document and the environment come in (`maint.tasks.environment` reads them).

Shape and key names follow maint.example.toml. Secrets never live in the file: a `*_env` key
names the environment variable holding the secret (`maint.tasks.environment.resolve_secret`).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from cronsim import CronSim, CronSimError
from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, model_validator

from maint.duties import DUTIES
from maint.durations import parse_duration
from maint.errors import ConfigError


def _duration(value: Any) -> timedelta:
    if isinstance(value, timedelta):
        return value
    return parse_duration(value)


def _port(value: int) -> int:
    if not 1 <= value <= 65535:
        raise ValueError("must be 1-65535")
    return value


def _env_name(value: str) -> str:
    if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", value):
        raise ValueError("must be an environment variable name (letters, digits, underscore)")
    return value


def _cron(value: str) -> str:
    try:
        CronSim(value, datetime(2000, 1, 1))
    except (CronSimError, ValueError, TypeError) as exc:
        raise ValueError(f"not a valid cron expression ({exc})") from None
    if len(value.split()) != 5:
        raise ValueError("must be a 5-field cron expression (minute hour day month weekday)")
    return value


def _store_url(value: str) -> str:
    if value.startswith("gs://"):
        if not re.fullmatch(r"gs://[a-z0-9][a-z0-9._-]{1,220}[a-z0-9](/.*)?", value):
            raise ValueError("must be gs://BUCKET/PREFIX/ with a valid bucket name")
    elif value.startswith("s3://"):
        # S3's bucket naming rules: 3-63 lower-case letters, digits, dots and hyphens.
        if not re.fullmatch(r"s3://[a-z0-9][a-z0-9.-]{1,61}[a-z0-9](/.*)?", value):
            raise ValueError("must be s3://BUCKET/PREFIX/ with a valid bucket name")
    elif value.startswith("file://"):
        if not value.startswith("file:///"):
            raise ValueError("must be an absolute path: file:///var/backups/database/")
    else:
        raise ValueError("must start with gs://, s3:// or file://")
    return value


def _share(value: float) -> float:
    if not 0 < value <= 1:
        raise ValueError("must be a share between 0 and 1, e.g. 0.80")
    return value


def _positive(value: int) -> int:
    if value < 1:
        raise ValueError("must be at least 1")
    return value


def _non_negative(value: int) -> int:
    if value < 0:
        raise ValueError("must be 0 or more")
    return value


def _timezone(value: str) -> str:
    try:
        ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError("unknown time zone (use an IANA name such as 'UTC' or 'Asia/Taipei')") from None
    return value


Duration = Annotated[timedelta, BeforeValidator(_duration)]
Port = Annotated[int, AfterValidator(_port)]
EnvName = Annotated[str, AfterValidator(_env_name)]
Cron = Annotated[str, AfterValidator(_cron)]
StoreUrl = Annotated[str, AfterValidator(_store_url)]
Share = Annotated[float, AfterValidator(_share)]
PositiveInt = Annotated[int, AfterValidator(_positive)]
NonNegativeInt = Annotated[int, AfterValidator(_non_negative)]
Name = Annotated[str, Field(min_length=1)]
SeverityName = Literal["warning", "critical"]


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class NotifyConfig(_Section):
    slack_webhook_url_env: EnvName | None = None
    pagerduty_routing_key_env: EnvName | None = None
    pagerduty_events_url: str = "https://events.pagerduty.com/v2/enqueue"
    page_on: list[SeverityName] = ["critical"]
    timeout: Duration = timedelta(seconds=10)


class DatabaseConfig(_Section):
    name: Name
    host: Name
    port: Port = 5432
    dbname: Name
    user: Name
    password_env: EnvName | None = None
    sslmode: Literal["disable", "allow", "prefer", "require", "verify-ca", "verify-full"] = "prefer"
    sslrootcert: str | None = None
    connect_timeout: Duration = timedelta(seconds=10)

    @property
    def address(self) -> str:
        """How findings name the database: never with credentials."""
        return f"{self.host}:{self.port}/{self.dbname}"


class BackupStoreConfig(_Section):
    name: Name
    url: StoreUrl
    database: Name
    rpo: Duration = timedelta(hours=26)
    size_window: PositiveInt = 7
    # S3 only (s3:// URLs). Without the *_env keys, boto3's standard chain finds the credentials
    # (AWS_* variables, ~/.aws, the instance's or pod's role).
    endpoint_url: Annotated[str, Field(pattern=r"^https?://[^/\s]+")] | None = None  # S3-compatible services
    region: Annotated[str, Field(pattern=r"^[a-z0-9-]+$")] | None = None
    access_key_id_env: EnvName | None = None
    secret_access_key_env: EnvName | None = None
    session_token_env: EnvName | None = None
    part_size: Annotated[int, Field(ge=5 * 1024 * 1024, le=5 * 1024**3)] = 8 * 1024 * 1024  # first multipart part

    @model_validator(mode="after")
    def _s3_keys_only_for_s3(self) -> "BackupStoreConfig":
        if not self.url.startswith("s3://"):
            given = [k for k in S3_ONLY_KEYS if getattr(self, k) is not None]
            if given:
                raise ValueError(f"{', '.join(given)}: only for s3:// stores, and this store is {self.url}")
        if (self.access_key_id_env is None) != (self.secret_access_key_env is None):
            raise ValueError("access_key_id_env and secret_access_key_env go together: set both, or neither "
                             "(then the standard AWS chain is used)")
        return self


S3_ONLY_KEYS = ("endpoint_url", "region", "access_key_id_env", "secret_access_key_env", "session_token_env")


class BackupConfig(_Section):
    database: Name
    store: Name
    compress: Annotated[int, Field(ge=0, le=9)] = 6  # pg_dump -Z level for the custom format
    chunk_size: Annotated[int, Field(ge=256 * 1024)] = 8 * 1024 * 1024  # GCS upload chunk, bytes
    connect_attempts: PositiveInt = 4  # tries for 'not yet accepting connections'


class SqlCheckConfig(_Section):
    database: Name
    name: Name
    sql: Name
    severity: SeverityName = "warning"
    timeout: Duration = timedelta(seconds=30)  # statement_timeout for the check


class EndpointConfig(_Section):
    url: Annotated[str, Field(pattern=r"^https?://[^/\s]+")]
    expect_status: Annotated[int, Field(ge=100, le=599)] = 200
    max_latency: Duration = timedelta(seconds=2)
    timeout: Duration = timedelta(seconds=10)
    ca_file: str = ""  # PEM bundle to trust instead of the system store


class KubernetesConfig(_Section):
    namespaces: list[Name] = ["default"]
    max_restarts: NonNegativeInt = 5
    context: str | None = None
    nodes: bool = True  # every node's conditions, cordons and usage (a ClusterRole: README, Kubernetes)
    node_cpu_warning: Share = 0.90  # usage from metrics.k8s.io against allocatable
    node_memory_warning: Share = 0.90


class RedisConfig(_Section):
    """A Redis server the morning check PINGs and reads INFO from (redis-py)."""

    url: Annotated[str, Field(pattern=r"^rediss?://[^\s]+$")] | None = None  # redis://host:port/db; rediss:// is TLS
    host: Name | None = None  # or host and port instead of url
    port: Port = 6379
    db: NonNegativeInt = 0
    username: str | None = None  # Redis 6 ACL user; default: the `default` user
    password_env: EnvName | None = None
    tls: bool = False
    ca_file: str = ""  # PEM bundle to trust for TLS instead of the system store
    protocol: Literal[2, 3] = 2  # RESP2 or RESP3
    max_latency: Duration = timedelta(milliseconds=100)  # PING slower than this is a warning
    timeout: Duration = timedelta(seconds=5)
    memory_warning: Share = 0.80  # used_memory / maxmemory
    memory_critical: Share = 0.95
    clients_warning: Share = 0.80  # connected_clients / maxclients

    @model_validator(mode="after")
    def _url_or_host(self) -> "RedisConfig":
        if (self.url is None) == (self.host is None):
            raise ValueError("url, host: give url (redis://host:port/db) or host (with port), not both")
        if self.url and urlsplit(self.url).password:
            raise ValueError("url: no password in the url (the file is not for secrets); use password_env")
        if self.memory_warning > self.memory_critical:
            raise ValueError("memory_warning: must not be above memory_critical")
        return self

    @property
    def address(self) -> str:
        """How findings name the server: host:port/db, never a password in a URL."""
        if self.url is not None:
            parts = urlsplit(self.url)
            db = parts.path.lstrip("/") or "0"
            return f"{parts.hostname}:{parts.port or 6379}/{db}"
        return f"{self.host}:{self.port}/{self.db}"


class AlertmanagerConfig(_Section):
    """An Alertmanager whose firing alerts the morning check reads (the v2 API)."""

    url: Annotated[str, Field(pattern=r"^https?://[^/\s]+")]
    matchers: list[Name] = []  # Alertmanager filter matchers, e.g. 'team="sre"', 'severity=~"critical|page"'
    severity_label: Name = "severity"  # the alert label that says how bad it is
    critical_values: list[Name] = ["critical", "page"]  # label values that are a critical finding
    warning_values: list[Name] = ["warning"]  # others (and no label) are a warning too, unless ignored
    ignore_values: list[Name] = ["info", "none"]  # label values reported as ok (counted, never paged)
    timeout: Duration = timedelta(seconds=10)
    ca_file: str = ""


class HealthCheckConfig(_Section):
    databases: list[Name] = []
    statement_timeout: Duration = timedelta(seconds=5)  # for maint's own monitoring queries
    lock_timeout: Duration = timedelta(seconds=1)
    long_query: Duration = timedelta(minutes=5)
    idle_in_transaction: Duration = timedelta(minutes=10)
    blocked: Duration = timedelta(minutes=1)
    connections_warning: Share = 0.80
    connections_critical: Share = 0.95
    endpoints: list[EndpointConfig] = []
    kubernetes: KubernetesConfig | None = None
    sql_checks: list[SqlCheckConfig] = []
    redis: list[RedisConfig] = []
    alertmanager: list[AlertmanagerConfig] = []


class VacuumConfig(_Section):
    databases: list[Name] = []
    min_dead_tuples: NonNegativeInt = 1000
    min_dead_ratio: Share = 0.10
    max_xid_age: PositiveInt = 200_000_000
    stale_analyze: Duration = timedelta(days=7)
    lock_timeout: Duration = timedelta(seconds=2)
    window: Duration = timedelta(hours=2)
    jobs: PositiveInt = 1


class QueryReviewConfig(_Section):
    """The weekly review of the slowest queries, from pg_stat_statements, week over week."""

    databases: list[Name] = []
    top: PositiveInt = 10  # queries listed by total and by mean execution time
    slower_warning: Annotated[float, Field(gt=1)] = 3.0  # mean time this many times last review's: a warning
    min_calls: PositiveInt = 10  # queries called fewer times since the last review are not compared
    statement_timeout: Duration = timedelta(seconds=30)


class ScratchSettings(_Section):
    """How restores into scratch databases are made: the restore test's, which the DR drill uses
    too (with these defaults when there is no [restore_test])."""

    scratch_prefix: Annotated[str, Field(pattern=r"^[a-z_][a-z0-9_]{2,40}$")] = "maint_scratch_"
    jobs: PositiveInt = 2  # pg_restore --jobs
    # false: pg_restore --no-owner --no-privileges, everything owned by the restoring role, so a dump
    # naming roles the scratch server lacks (Supabase's, a managed service's) restores; true: the
    # dump's owners and GRANTs too, which proves them, and every role it names must exist there.
    restore_owners: bool = False


class RestoreTestConfig(ScratchSettings):
    store: Name
    server: Name
    sql_checks: list[SqlCheckConfig] = []
    leftover_age: Duration = timedelta(hours=6)  # scratch databases older than this are from crashed runs


class RetentionConfig(_Section):
    store: Name
    keep_last: NonNegativeInt = 7
    keep_daily: NonNegativeInt = 14
    keep_weekly: NonNegativeInt = 8
    keep_monthly: NonNegativeInt = 12
    min_keep: PositiveInt = 3


class DrDrillConfig(_Section):
    store: Name
    server: Name
    rto_target: Duration = timedelta(minutes=30)
    rpo_target: Duration = timedelta(hours=26)
    sql_checks: list[SqlCheckConfig] = []


class CertificateConfig(_Section):
    host: Name
    port: Port = 443
    protocol: Literal["https", "postgres"] = "https"
    ca_file: str = ""
    warning_days: NonNegativeInt = 28
    critical_days: NonNegativeInt = 14


class CloudSqlConfig(_Section):
    """A Cloud SQL instance whose automated backups and point-in-time recovery are checked
    (backup-verification), through the Admin API with the host's Application Default Credentials."""

    project: Annotated[str, Field(pattern=r"^[a-z][a-z0-9:.-]{4,61}[a-z0-9]$")]
    instance: Annotated[str, Field(pattern=r"^[a-z][a-z0-9-]{0,97}$")]
    rpo: Duration = timedelta(hours=26)
    api_endpoint: Annotated[str, Field(pattern=r"^https?://[^/\s]+")] | None = None  # default: Google's
    timeout: Duration = timedelta(seconds=30)

    @property
    def subject(self) -> str:
        """How findings name the instance, as gcloud's connection names do."""
        return f"{self.project}:{self.instance}"


class VeleroConfig(_Section):
    """Velero's backups of the cluster, read through the Kubernetes API (backup-verification)."""

    namespace: Name = "velero"
    rpo: Duration = timedelta(hours=26)
    schedules: list[Name] = []  # Schedules that must exist; empty: every Schedule in the namespace
    in_progress_limit: Duration = timedelta(hours=4)  # an InProgress backup older than this is stuck
    context: str | None = None  # kubeconfig context; default: the usual discovery, as kubectl


class LocksConfig(_Section):
    """Every run of a duty that changes something takes a lock on what it changes, whichever way it
    was started (a deployment, `maint run`, another machine): a second run waits this long, then
    refuses with a finding naming the holder."""

    wait: Duration = timedelta(0)
    store_lock_ttl: Duration = timedelta(hours=12)  # a lock object older than this is a dead run's


class DeadMansSwitchConfig(_Section):
    """Prefect automations that page when a scheduled duty has had no Completed run for its
    schedule's period plus a grace, or when a run is stuck Running or was marked Crashed."""

    enabled: bool = True
    grace: Duration = timedelta(minutes=30)
    grace_share: Annotated[float, Field(ge=0, le=10)] = 0.10  # of the schedule's period, added to grace
    stuck_after: Duration = timedelta(hours=6)  # a run still Running after this long pages
    windows: dict[str, Duration] = {}  # per duty: the whole window instead of period plus grace


class DeployConfig(_Section):
    """What `maint deploy` (and `maint serve`) add to a duty's deployment: job variables of the
    work pool's base job template, per duty (a kubernetes pool's `cpu_request`, `memory_limit`,
    ...; a process pool's `working_dir`), which override the pool's defaults for that duty only;
    and default parameters, per duty."""

    job_variables: dict[str, dict[str, Any]] = {}
    # Per duty: the deployment's default parameters, e.g. backup-verification's fan_out = true.
    # Never secrets (a deployment's parameters are shown in the UI): those stay in *_env variables.
    parameters: dict[str, dict[str, Any]] = {}


class MaintConfig(_Section):
    timezone: Annotated[str, AfterValidator(_timezone)] = "UTC"
    notify: NotifyConfig = NotifyConfig()
    databases: list[DatabaseConfig] = []
    backup_stores: list[BackupStoreConfig] = []
    backup: BackupConfig | None = None
    health_check: HealthCheckConfig | None = None
    vacuum: VacuumConfig | None = None
    restore_test: RestoreTestConfig | None = None
    retention: RetentionConfig | None = None
    dr_drill: DrDrillConfig | None = None
    certificates: list[CertificateConfig] = []
    cloud_sql: list[CloudSqlConfig] = []
    velero: VeleroConfig | None = None
    query_review: QueryReviewConfig | None = None
    schedules: dict[str, Cron] = {}
    locks: LocksConfig = LocksConfig()
    dead_mans_switch: DeadMansSwitchConfig = DeadMansSwitchConfig()
    deploy: DeployConfig = DeployConfig()

    def database(self, name: str) -> DatabaseConfig:
        return next(d for d in self.databases if d.name == name)

    def store(self, name: str) -> BackupStoreConfig:
        return next(s for s in self.backup_stores if s.name == name)

    @property
    def scratch(self) -> ScratchSettings:
        return self.restore_test or ScratchSettings()


# --- validation ----------------------------------------------------------------------------------

def parse_config(raw: dict[str, Any], *, environ: Mapping[str, str] | None = None) -> MaintConfig:
    """Validate a parsed TOML document; raise ConfigError listing every problem found. With
    `environ`, every `*_env` key must also name a variable set (and not empty) in it."""
    problems: list[str] = []
    config = None
    try:
        config = MaintConfig.model_validate(raw)
    except ValidationError as exc:
        problems += [_describe(error) for error in exc.errors()]
    problems += _reference_problems(raw)
    if environ is not None:
        problems += _environment_problems(raw, environ)
    if problems:
        raise ConfigError(problems)
    assert config is not None
    return config


def _field_path(loc: tuple) -> str:
    path = ""
    for part in loc:
        if isinstance(part, int):
            path += f"[{part}]"
        elif part in ("function-after", "function-before") or str(part).startswith(("function-", "constrained-")):
            continue
        else:
            path += f".{part}" if path else str(part)
    return path or "(top level)"


_TYPE_MESSAGES = {
    "int_parsing": "must be a whole number", "int_type": "must be a whole number",
    "int_from_float": "must be a whole number", "float_parsing": "must be a number",
    "float_type": "must be a number", "string_type": "must be a string",
    "bool_type": "must be true or false", "bool_parsing": "must be true or false",
    "list_type": "must be a list", "dict_type": "must be a table", "model_type": "must be a table",
    "missing": "required, but missing", "extra_forbidden": "unknown key (check its spelling)",
}


def _describe(error: dict) -> str:
    """`databases[0].port: must be 1-65535, got 70000`."""
    kind = error["type"]
    path = _field_path(error["loc"])
    if kind in _TYPE_MESSAGES:
        message = _TYPE_MESSAGES[kind]
    elif kind == "literal_error":
        message = "must be one of " + error["msg"].removeprefix("Input should be ")
    elif kind == "string_pattern_mismatch":
        message = f"must match {error['ctx']['pattern']}"
    else:
        message = error["msg"].removeprefix("Value error, ")
        message = message[:1].lower() + message[1:]
    if kind in ("missing", "extra_forbidden") or isinstance(error["input"], dict):
        return f"{path}: {message}"  # a whole section's problem: its message names the keys
    return f"{path}: {message}, got {error['input']!r}"


def _names(raw: dict, section: str) -> list:
    entries = raw.get(section)
    if not isinstance(entries, list):
        return []
    return [e.get("name") for e in entries if isinstance(e, dict)]


def _reference_problems(raw: dict) -> list[str]:
    """Cross-references between sections, checked on the raw document so they are reported
    together with type errors rather than after them."""
    problems = []
    databases, stores = _names(raw, "databases"), _names(raw, "backup_stores")
    for section, names in (("databases", databases), ("backup_stores", stores)):
        seen = set()
        for i, name in enumerate(names):
            if name in seen:
                problems.append(f"{section}[{i}].name: duplicate name, got {name!r}")
            seen.add(name)

    def expect(path: str, value: Any, known: list, what: str) -> None:
        if isinstance(value, str) and value not in known:
            listed = ", ".join(repr(k) for k in dict.fromkeys(known) if isinstance(k, str)) or "none defined"
            problems.append(f"{path}: no {what} named {value!r} (known: {listed})")

    for i, store in enumerate(raw.get("backup_stores") or []):
        if isinstance(store, dict):
            expect(f"backup_stores[{i}].database", store.get("database"), databases, "[[databases]] entry")
    for section, keys in (("backup", ("database", "store")), ("restore_test", ("store", "server")),
                          ("retention", ("store",)), ("dr_drill", ("store", "server"))):
        body = raw.get(section)
        if isinstance(body, dict):
            for key in keys:
                known, what = (stores, "[[backup_stores]] entry") if key == "store" else (
                    databases, "[[databases]] entry")
                expect(f"{section}.{key}", body.get(key), known, what)
    for section in ("health_check", "vacuum", "query_review"):
        body = raw.get(section)
        if isinstance(body, dict) and isinstance(body.get("databases"), list):
            for j, name in enumerate(body["databases"]):
                expect(f"{section}.databases[{j}]", name, databases, "[[databases]] entry")
    store_database = {s.get("name"): s.get("database") for s in raw.get("backup_stores") or [] if isinstance(s, dict)}
    for section in ("health_check", "restore_test", "dr_drill"):
        body = raw.get(section)
        if isinstance(body, dict) and isinstance(body.get("sql_checks"), list):
            for j, check in enumerate(body["sql_checks"]):
                if not isinstance(check, dict):
                    continue
                path = f"{section}.sql_checks[{j}].database"
                expect(path, check.get("database"), databases, "[[databases]] entry")
                # After a restore the checks run on the restored copy, which is of the store's
                # database: a check written for another database would fail for the wrong reason.
                source = store_database.get(body.get("store"))
                if section != "health_check" and check.get("database") in databases and source \
                        and check.get("database") != source:
                    problems.append(f"{path}: the checks run on the restored copy of store {body.get('store')!r}, "
                                    f"which holds dumps of {source!r}, not {check.get('database')!r}")
    schedules = raw.get("schedules")
    if isinstance(schedules, dict):
        for duty in schedules:
            if duty not in DUTIES:
                problems.append(f"schedules.{duty}: unknown duty (known: {', '.join(DUTIES)})")
    for section, key in (("dead_mans_switch", "windows"), ("deploy", "job_variables"), ("deploy", "parameters")):
        per_duty = (raw.get(section) or {}).get(key) if isinstance(raw.get(section), dict) else None
        if isinstance(per_duty, dict):
            for duty in per_duty:
                if duty not in DUTIES:
                    problems.append(f"{section}.{key}.{duty}: unknown duty (known: {', '.join(DUTIES)})")
    return problems


def _environment_problems(raw: Any, environ: Mapping[str, str], path: str = "") -> list[str]:
    """Every `*_env` key must name a variable that is set. The value is never printed."""
    problems = []
    if isinstance(raw, dict):
        for key, value in raw.items():
            here = f"{path}.{key}" if path else key
            if key.endswith("_env") and isinstance(value, str) and value:
                if not environ.get(value):
                    problems.append(f"{here}: environment variable {value} is not set (or empty)")
            else:
                problems += _environment_problems(value, environ, here)
    elif isinstance(raw, list):
        for i, value in enumerate(raw):
            problems += _environment_problems(value, environ, f"{path}[{i}]")
    return problems
