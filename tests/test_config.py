"""The configuration file: the example (maint.example.toml) parses, and every bad file names each problem exactly."""

from __future__ import annotations

import os
import tomllib
from datetime import timedelta
from pathlib import Path

import pytest

import maint.redaction
from maint.cli import main
from maint.config import parse_config
from maint.duties import DUTIES
from maint.errors import ConfigError
from maint.redaction import redact
from maint.tasks.environment import load_config, resolve_secret

EXAMPLE = Path(__file__).resolve().parents[1] / "maint.example.toml"  # the repository's own copy
EXAMPLE_ENV = {
    "MAINT_SLACK_WEBHOOK_URL": "https://hooks.slack.example/T000/B000/slack-test-secret",
    "MAINT_PAGERDUTY_ROUTING_KEY": "pd-routing-key-test-secret",
    "MAINT_PROD_DB_PASSWORD": "prod-password-test-secret",
    "MAINT_SCRATCH_DB_PASSWORD": "scratch-password-test-secret",
    "MAINT_REDIS_PASSWORD": "redis-password-test-secret",
}

# A small, complete configuration of our own, so the bad-config tests do not depend on the example.
MINIMAL = """
timezone = "UTC"

[notify]
pagerduty_routing_key_env = "MAINT_TEST_PD_KEY"

[[databases]]
name = "prod"
host = "10.0.0.5"
port = 5432
dbname = "app"
user = "maint"
password_env = "MAINT_TEST_DB_PASSWORD"

[[databases]]
name = "scratch"
host = "10.0.0.9"
dbname = "postgres"
user = "maint_restore"

[[backup_stores]]
name = "prod-dumps"
url = "gs://acme-backups/database/"
database = "prod"
rpo = "26h"

[backup]
database = "prod"
store = "prod-dumps"

[restore_test]
store = "prod-dumps"
server = "scratch"

[schedules]
backup = "0 1 * * *"
"""


@pytest.fixture
def isolated_secrets(monkeypatch):
    """resolve_secret remembers values for redact(); keep this test's values out of the others."""
    monkeypatch.setattr(maint.redaction, "_known_secrets", set(maint.redaction._known_secrets))


@pytest.fixture
def example_path() -> Path:
    assert EXAMPLE.is_file(), f"the example configuration is missing: {EXAMPLE}"
    return EXAMPLE


@pytest.fixture
def example_env(monkeypatch):
    for name, value in EXAMPLE_ENV.items():
        monkeypatch.setenv(name, value)


@pytest.fixture
def minimal_env(monkeypatch):
    monkeypatch.setenv("MAINT_TEST_PD_KEY", "pd-key-value-for-tests")
    monkeypatch.setenv("MAINT_TEST_DB_PASSWORD", "db-password-value-for-tests")


def minimal() -> dict:
    return tomllib.loads(MINIMAL)


def problems_of(raw: dict, *, check_env: bool = False) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        parse_config(raw, environ=os.environ if check_env else None)
    return caught.value.problems


# --- the example file ----------------------------------------------------------------------------

def test_example_parses_without_environment(example_path, monkeypatch):
    for name in EXAMPLE_ENV:
        monkeypatch.delenv(name, raising=False)
    config = load_config(example_path, check_env=False)
    assert config.timezone == "Asia/Taipei"
    assert [d.name for d in config.databases] == ["prod", "scratch"]
    assert config.database("prod").address == "10.0.0.5:5432/app"
    assert config.database("prod").sslmode == "require"
    assert config.store("prod-dumps").rpo == timedelta(hours=26)
    assert config.store("prod-dumps").url == "gs://acme-backups/database/"
    assert config.notify.page_on == ["critical"]
    assert config.health_check.long_query == timedelta(minutes=5)
    assert config.vacuum.max_xid_age == 200_000_000
    assert config.dr_drill.rto_target == timedelta(minutes=30)
    assert config.certificates[0].host == "api.example.com"
    assert set(config.schedules) == set(DUTIES)
    assert config.schedules["backup"] == "0 1 * * *"


def test_example_parses_with_environment_checked(example_path, example_env):
    config = load_config(example_path, check_env=True)
    assert config.notify.pagerduty_routing_key_env == "MAINT_PAGERDUTY_ROUTING_KEY"
    assert config.database("scratch").password_env == "MAINT_SCRATCH_DB_PASSWORD"


def test_example_reports_each_unset_variable(example_path, monkeypatch):
    for name in EXAMPLE_ENV:
        monkeypatch.delenv(name, raising=False)
    with pytest.raises(ConfigError) as caught:
        load_config(example_path, check_env=True)
    assert caught.value.problems == [
        "notify.slack_webhook_url_env: environment variable MAINT_SLACK_WEBHOOK_URL is not set (or empty)",
        "notify.pagerduty_routing_key_env: environment variable MAINT_PAGERDUTY_ROUTING_KEY is not set (or empty)",
        "databases[0].password_env: environment variable MAINT_PROD_DB_PASSWORD is not set (or empty)",
        "databases[1].password_env: environment variable MAINT_SCRATCH_DB_PASSWORD is not set (or empty)",
        "health_check.redis[0].password_env: environment variable MAINT_REDIS_PASSWORD is not set (or empty)",
    ]


def test_minimal_config_is_valid(minimal_env):
    config = parse_config(minimal(), environ=os.environ)
    assert config.database("scratch").port == 5432  # the default
    assert config.backup.store == "prod-dumps"


# --- bad configurations: one problem each, named exactly ---------------------------------------------

def _set(path: str, value):
    """A mutation setting `a.b[0].c` (value None deletes the key)."""
    def mutate(raw: dict) -> None:
        *parents, last = path.split(".")
        node = raw
        for part in parents:
            name, _, index = part.partition("[")
            node = node[name]
            if index:
                node = node[int(index.rstrip("]"))]
        if value is None:
            del node[last]
        else:
            node[last] = value
    return mutate


BAD = [
    pytest.param(_set("databases[0].host", None), ["databases[0].host: required, but missing"],
                 id="missing-required-field"),
    pytest.param(_set("databases[0].port", 70000), ["databases[0].port: must be 1-65535, got 70000"],
                 id="port-too-high"),
    pytest.param(_set("databases[0].port", 0), ["databases[0].port: must be 1-65535, got 0"], id="port-zero"),
    pytest.param(_set("databases[0].port", "5432x"), ["databases[0].port: must be a whole number, got '5432x'"],
                 id="port-not-a-number"),
    pytest.param(_set("backup_stores[0].rpo", "26 hours"),
                 ["backup_stores[0].rpo: must be a duration like '500ms', '90s', '5m', '26h' or '7d', "
                  "got '26 hours'"], id="bad-duration"),
    pytest.param(_set("schedules.backup", "61 * * * *"),
                 ["schedules.backup: not a valid cron expression (Bad minute), got '61 * * * *'"], id="bad-cron"),
    pytest.param(_set("databases[0].hostname", "10.0.0.6"),
                 ["databases[0].hostname: unknown key (check its spelling)"], id="unknown-key"),
    pytest.param(_set("colour", "blue"), ["colour: unknown key (check its spelling)"], id="unknown-top-level-key"),
    pytest.param(_set("backup_stores[0].url", "azure://acme-backups/database/"),
                 ["backup_stores[0].url: must start with gs://, s3:// or file://, got 'azure://acme-backups/database/'"],
                 id="store-url-scheme"),
    pytest.param(_set("backup_stores[0].url", "s3://Acme_Backups/database/"),
                 ["backup_stores[0].url: must be s3://BUCKET/PREFIX/ with a valid bucket name, "
                  "got 's3://Acme_Backups/database/'"], id="store-url-s3-bucket"),
    pytest.param(_set("backup_stores[0].endpoint_url", "http://127.0.0.1:9000"),
                 ["backup_stores[0]: endpoint_url: only for s3:// stores, and this store is gs://acme-backups/database/"],
                 id="s3-key-on-a-gcs-store"),
    pytest.param(_set("cloud_sql", [{"project": "acme-prod", "instance": "Acme_DB"}]),
                 ["cloud_sql[0].instance: must match ^[a-z][a-z0-9-]{0,97}$, got 'Acme_DB'"], id="cloud-sql-instance"),
    pytest.param(_set("health_check", {"redis": [{"url": "redis://:hunter2@cache:6379/0"}]}),
                 ["health_check.redis[0]: url: no password in the url (the file is not for secrets); use password_env"],
                 id="redis-password-in-url"),
    pytest.param(_set("velero", {"namespace": "velero", "rpo": "soon"}),
                 ["velero.rpo: must be a duration like '500ms', '90s', '5m', '26h' or '7d', got 'soon'"],
                 id="velero-rpo"),
    pytest.param(_set("backup_stores[0].url", "file://backups/"),
                 ["backup_stores[0].url: must be an absolute path: file:///var/backups/database/, "
                  "got 'file://backups/'"], id="store-url-relative-file"),
    pytest.param(_set("backup_stores[0].url", "gs://Acme_Backups/"),
                 ["backup_stores[0].url: must be gs://BUCKET/PREFIX/ with a valid bucket name, "
                  "got 'gs://Acme_Backups/'"], id="store-url-bad-bucket"),
    pytest.param(_set("timezone", "Mars/Olympus_Mons"),
                 ["timezone: unknown time zone (use an IANA name such as 'UTC' or 'Asia/Taipei'), "
                  "got 'Mars/Olympus_Mons'"], id="unknown-timezone"),
    pytest.param(_set("backup_stores", [
        {"name": "prod-dumps", "url": "gs://acme-backups/a/", "database": "prod"},
        {"name": "prod-dumps", "url": "gs://acme-backups/b/", "database": "prod"}]),
        ["backup_stores[1].name: duplicate name, got 'prod-dumps'"], id="duplicate-store-name"),
    pytest.param(_set("backup.store", "nightly"),
                 ["backup.store: no [[backup_stores]] entry named 'nightly' (known: 'prod-dumps')"],
                 id="unknown-store-reference"),
    pytest.param(_set("backup_stores[0].database", "staging"),
                 ["backup_stores[0].database: no [[databases]] entry named 'staging' (known: 'prod', 'scratch')"],
                 id="unknown-database-reference"),
    pytest.param(_set("restore_test.server", "staging"),
                 ["restore_test.server: no [[databases]] entry named 'staging' (known: 'prod', 'scratch')"],
                 id="unknown-server-reference"),
    pytest.param(_set("schedules.coffee", "0 1 * * *"),
                 ["schedules.coffee: unknown duty (known: backup, backup-verification, health-check, vacuum, "
                  "restore-test, backup-retention, dr-drill, cert-check, query-review)"], id="unknown-schedule-duty"),
    pytest.param(_set("restore_test.sql_checks", [{"database": "scratch", "name": "orders", "sql": "SELECT 1"}]),
                 ["restore_test.sql_checks[0].database: the checks run on the restored copy of store 'prod-dumps', "
                  "which holds dumps of 'prod', not 'scratch'"], id="restore-check-on-another-database"),
    pytest.param(_set("dr_drill", {"store": "prod-dumps", "server": "scratch", "sql_checks": [
        {"database": "scratch", "name": "orders", "sql": "SELECT 1"}]}),
                 ["dr_drill.sql_checks[0].database: the checks run on the restored copy of store 'prod-dumps', "
                  "which holds dumps of 'prod', not 'scratch'"], id="drill-check-on-another-database"),
    pytest.param(_set("notify.page_on", ["info"]),
                 ["notify.page_on[0]: must be one of 'warning' or 'critical', got 'info'"], id="bad-page-on"),
]


@pytest.mark.parametrize("mutate, expected", BAD)
def test_bad_config_names_the_problem(mutate, expected):
    raw = minimal()
    mutate(raw)
    assert problems_of(raw) == expected


def test_restore_checks_on_the_store_database_are_valid():
    raw = minimal()
    raw["restore_test"]["sql_checks"] = [{"database": "prod", "name": "orders", "sql": "SELECT 1"}]
    assert parse_config(raw).restore_test.sql_checks[0].database == "prod"


def test_duplicate_database_name_is_reported():
    raw = minimal()
    raw["databases"][1]["name"] = "prod"
    problems = problems_of(raw)
    assert "databases[1].name: duplicate name, got 'prod'" in problems
    # ...and what referred to the vanished 'scratch' is reported too, in the same pass.
    assert any(p.startswith("restore_test.server: no [[databases]] entry named 'scratch'") for p in problems)


def test_every_problem_is_reported_at_once(monkeypatch):
    monkeypatch.delenv("MAINT_TEST_PD_KEY", raising=False)
    monkeypatch.setenv("MAINT_TEST_DB_PASSWORD", "db-password-value-for-tests")
    raw = minimal()
    raw["databases"][0]["port"] = 70000
    del raw["databases"][1]["host"]
    raw["backup_stores"][0]["rpo"] = "26 hours"
    raw["backup_stores"][0]["bucket"] = "acme"
    raw["backup"]["store"] = "nightly"
    raw["schedules"]["backup"] = "61 * * * *"
    raw["schedules"]["coffee"] = "0 1 * * *"
    raw["timezone"] = "Nowhere/Special"
    problems = problems_of(raw, check_env=True)
    assert sorted(problems) == sorted([
        "databases[0].port: must be 1-65535, got 70000",
        "databases[1].host: required, but missing",
        "backup_stores[0].rpo: must be a duration like '500ms', '90s', '5m', '26h' or '7d', got '26 hours'",
        "backup_stores[0].bucket: unknown key (check its spelling)",
        "backup.store: no [[backup_stores]] entry named 'nightly' (known: 'prod-dumps')",
        "schedules.backup: not a valid cron expression (Bad minute), got '61 * * * *'",
        "schedules.coffee: unknown duty (known: backup, backup-verification, health-check, vacuum, "
        "restore-test, backup-retention, dr-drill, cert-check, query-review)",
        "timezone: unknown time zone (use an IANA name such as 'UTC' or 'Asia/Taipei'), got 'Nowhere/Special'",
        "notify.pagerduty_routing_key_env: environment variable MAINT_TEST_PD_KEY is not set (or empty)",
    ])
    assert "db-password-value-for-tests" not in str(ConfigError(problems))


# --- secrets ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("value", [None, ""], ids=["unset", "empty"])
def test_unset_secret_variable_is_named(monkeypatch, minimal_env, value):
    if value is None:
        monkeypatch.delenv("MAINT_TEST_DB_PASSWORD")
    else:
        monkeypatch.setenv("MAINT_TEST_DB_PASSWORD", value)
    assert problems_of(minimal(), check_env=True) == [
        "databases[0].password_env: environment variable MAINT_TEST_DB_PASSWORD is not set (or empty)"]


def test_environment_is_not_checked_when_not_asked(monkeypatch):
    monkeypatch.delenv("MAINT_TEST_DB_PASSWORD", raising=False)
    monkeypatch.delenv("MAINT_TEST_PD_KEY", raising=False)
    assert parse_config(minimal()).database("prod").password_env == "MAINT_TEST_DB_PASSWORD"


def test_secret_value_never_appears_in_problems(minimal_env):
    raw = minimal()
    raw["databases"][0]["port"] = 70000
    raw["notify"]["timeout"] = "forever"
    error = pytest.raises(ConfigError, parse_config, raw, environ=os.environ).value
    assert error.problems == [
        "notify.timeout: must be a duration like '500ms', '90s', '5m', '26h' or '7d', got 'forever'",
        "databases[0].port: must be 1-65535, got 70000",
    ]
    for text in (str(error), *error.problems):
        assert "db-password-value-for-tests" not in text
        assert "pd-key-value-for-tests" not in text


def test_resolve_secret_names_an_unset_variable(monkeypatch):
    monkeypatch.delenv("MAINT_TEST_NOT_SET", raising=False)
    with pytest.raises(ConfigError) as caught:
        resolve_secret("MAINT_TEST_NOT_SET", field="databases[0].password_env")
    assert caught.value.problems == [
        "databases[0].password_env: environment variable MAINT_TEST_NOT_SET is not set (or empty)"]


def test_resolve_secret_without_a_variable_is_none():
    assert resolve_secret(None, field="notify.slack_webhook_url_env") is None


def test_redact_replaces_a_resolved_secret(monkeypatch, isolated_secrets):
    monkeypatch.setenv("MAINT_TEST_SECRET", "s3cr3t-Zq8v")
    assert redact("password s3cr3t-Zq8v rejected") == "password s3cr3t-Zq8v rejected"  # not resolved yet
    assert resolve_secret("MAINT_TEST_SECRET", field="x") == "s3cr3t-Zq8v"
    assert redact("password s3cr3t-Zq8v rejected; again s3cr3t-Zq8v") == \
        "password [REDACTED] rejected; again [REDACTED]"
    assert redact("nothing secret here") == "nothing secret here"


def test_redact_ignores_very_short_secrets(monkeypatch, isolated_secrets):
    monkeypatch.setenv("MAINT_TEST_SHORT", "abc")
    assert resolve_secret("MAINT_TEST_SHORT", field="x") == "abc"
    assert redact("abc def") == "abc def"


# --- loading files -------------------------------------------------------------------------------

def test_load_config_missing_file(tmp_path):
    path = tmp_path / "absent.toml"
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    assert caught.value.problems == [
        f"{path}: configuration file not found (give --config PATH, set MAINT_CONFIG, or create ./maint.toml)"]


def test_load_config_invalid_toml(tmp_path):
    path = tmp_path / "broken.toml"
    path.write_text('timezone = "UTC"\n[notify\npage_on = ["critical"]\n')
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    [problem] = caught.value.problems
    assert problem.startswith(f"{path}: not valid TOML: ")
    assert "line 2" in problem


# --- the CLI -------------------------------------------------------------------------------------

def _write(tmp_path: Path, raw_text: str, name: str = "maint.toml") -> Path:
    path = tmp_path / name
    path.write_text(raw_text)
    return path


OK_LINE = "OK: 2 database(s), 1 backup store(s); schedules in UTC: backup (0 1 * * *)"


@pytest.mark.parametrize("argv", [
    lambda p: ["--config", str(p), "config", "check"],
    lambda p: ["config", "check", "--config", str(p)],
], ids=["global-option", "subcommand-option"])
def test_cli_config_check_good_file(tmp_path, minimal_env, capsys, argv):
    path = _write(tmp_path, MINIMAL)
    assert main(argv(path)) == 0
    out, err = capsys.readouterr()
    assert out == f"{path}: {OK_LINE}\n"
    assert err == ""


def test_cli_config_check_example(example_path, example_env, capsys):
    assert main(["--config", str(example_path), "config", "check"]) == 0
    out, _ = capsys.readouterr()
    assert out.startswith(f"{example_path}: OK: 2 database(s), 2 backup store(s), 1 Cloud SQL instance(s), "
                          "Velero in namespace velero; schedules in Asia/Taipei: ")
    assert "dr-drill (0 4 1 * *)" in out


def test_cli_config_check_bad_file(tmp_path, minimal_env, capsys):
    raw = MINIMAL.replace("port = 5432", "port = 70000").replace('rpo = "26h"', 'rpo = "26 hours"')
    path = _write(tmp_path, raw + 'coffee = "0 1 * * *"\n')
    assert main(["--config", str(path), "config", "check"]) == 3
    out, err = capsys.readouterr()
    assert out == ""
    assert err.splitlines() == [
        f"{path}: 3 problem(s):",
        "  databases[0].port: must be 1-65535, got 70000",
        "  backup_stores[0].rpo: must be a duration like '500ms', '90s', '5m', '26h' or '7d', got '26 hours'",
        "  schedules.coffee: unknown duty (known: backup, backup-verification, health-check, vacuum, "
        "restore-test, backup-retention, dr-drill, cert-check, query-review)",
    ]
    assert "db-password-value-for-tests" not in err


def test_cli_bad_arguments_exit_3(capsys):
    with pytest.raises(SystemExit) as caught:
        main(["run", "nonsense"])
    assert caught.value.code == 3
    assert "invalid choice: 'nonsense'" in capsys.readouterr().err


def test_cli_uses_maint_config_variable(tmp_path, monkeypatch, minimal_env, capsys):
    path = _write(tmp_path, MINIMAL, name="from-env.toml")
    _write(tmp_path, "this is not TOML")  # ./maint.toml, which must not be read
    monkeypatch.setenv("MAINT_CONFIG", str(path))
    monkeypatch.chdir(tmp_path)
    assert main(["config", "check"]) == 0
    assert capsys.readouterr().out == f"{path}: {OK_LINE}\n"


def test_cli_option_wins_over_maint_config_variable(tmp_path, monkeypatch, minimal_env, capsys):
    path = _write(tmp_path, MINIMAL, name="chosen.toml")
    monkeypatch.setenv("MAINT_CONFIG", str(tmp_path / "absent.toml"))
    assert main(["--config", str(path), "config", "check"]) == 0
    assert capsys.readouterr().out == f"{path}: {OK_LINE}\n"


def test_cli_defaults_to_maint_toml_in_working_directory(tmp_path, monkeypatch, minimal_env, capsys):
    monkeypatch.delenv("MAINT_CONFIG", raising=False)
    _write(tmp_path, MINIMAL)
    monkeypatch.chdir(tmp_path)
    assert main(["config", "check"]) == 0
    assert capsys.readouterr().out == f"maint.toml: {OK_LINE}\n"


def test_cli_without_any_config_file(tmp_path, monkeypatch, capsys):
    monkeypatch.delenv("MAINT_CONFIG", raising=False)
    monkeypatch.chdir(tmp_path)
    assert main(["config", "check"]) == 3
    assert capsys.readouterr().err.splitlines() == [
        "maint.toml: 1 problem(s):",
        "  maint.toml: configuration file not found (give --config PATH, set MAINT_CONFIG, or create ./maint.toml)",
    ]
