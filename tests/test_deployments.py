"""Deployments and `maint serve`: schedules from [schedules] in [timezone], typed parameters."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from maint.deployments import build_deployments, plan_deployments, schedule_slug
from maint.errors import ConfigError
from maint.tasks.environment import load_config
from tests.conftest import DB_PASSWORD_ENV, NO_SERVER, write_config


def test_one_deployment_per_configured_duty_with_its_schedule(tmp_path, monkeypatch):
    monkeypatch.setenv(DB_PASSWORD_ENV, "only-read-by-the-config-check")
    config_file = write_config(tmp_path / "maint.toml", NO_SERVER, f"file://{tmp_path}/")
    config = load_config(config_file)

    deployments = {d.name: d for d in build_deployments(plan_deployments(config))}

    assert set(deployments) == {"backup", "backup-verification"}
    assert deployments["backup-verification"].schedules == [], "not in [schedules]: manual runs only"
    deployment = deployments["backup"]
    # No path of this machine: served runs read $MAINT_CONFIG, which `maint serve` sets for them.
    assert deployment.parameters == {}
    assert deployment.entrypoint == "maint.flows.backup.backup"
    assert deployment.concurrency_limit == 1
    assert {"maint", "backup"} <= set(deployment.tags)
    [schedule] = deployment.schedules
    assert schedule.schedule.cron == "0 1 * * *"
    assert schedule.schedule.timezone == "Asia/Taipei"
    assert schedule.slug == schedule_slug("backup") == "maint-backup"
    # The UI builds its run form from this schema: config_path is a typed, optional string.
    from prefect.utilities.callables import parameter_schema

    from maint.flows.backup import backup

    schema = parameter_schema(backup)
    assert schema.properties["config_path"]["anyOf"] == [{"type": "string"}, {"type": "null"}]
    assert schema.properties["config_path"]["default"] is None


def test_unconfigured_duty_gets_no_deployment(tmp_path):
    config_file = tmp_path / "maint.toml"
    config_file.write_text('[[databases]]\nname = "prod"\nhost = "h"\ndbname = "d"\nuser = "u"\n')
    assert plan_deployments(load_config(config_file)) == []


@pytest.mark.parametrize("command", [["serve"], ["deploy", "--pool", "maint"]])
def test_serve_and_deploy_without_a_prefect_server_say_what_to_do(tmp_path, command):
    config_file = tmp_path / "maint.toml"
    config_file.write_text('[[certificates]]\nhost = "example.com"\n')
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env["PREFECT_HOME"] = str(tmp_path / "prefect-home")  # no profile with an API URL either
    result = subprocess.run([sys.executable, "-m", "maint.cli", "--config", str(config_file), *command],
                            capture_output=True, text=True, env=env, timeout=120)
    assert result.returncode == 3
    assert "PREFECT_API_URL is not set" in result.stderr and "prefect server start" in result.stderr


def test_help_everywhere(capsys):
    # The real entry point once, as a shell runs it; then every subcommand through the same main().
    result = subprocess.run([sys.executable, "-m", "maint.cli", "--help"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0 and "usage: maint" in result.stdout, result.stderr
    from maint.cli import main

    for argv in (["config"], ["config", "check"], ["run"], ["deploy"], ["serve"], ["demo"]):
        with pytest.raises(SystemExit) as exited:
            main([*argv, "--help"])
        out, err = capsys.readouterr()
        assert exited.value.code == 0, (argv, err)
        assert out.startswith("usage: maint " + " ".join(argv)), (argv, out)


def test_per_duty_parameters_and_job_variables_from_the_config(tmp_path):
    config_file = tmp_path / "maint.toml"
    body = '''
[[certificates]]
host = "example.com"

[deploy.job_variables.cert-check]
memory_limit = "1Gi"

[deploy.parameters.cert-check]
config_path = "/etc/maint/other.toml"
'''
    config_file.write_text(body)
    [plan] = plan_deployments(load_config(config_file), job_variables={"image": "maint:1"})
    assert plan.parameters == {"config_path": "/etc/maint/other.toml"}
    assert plan.job_variables == {"image": "maint:1", "memory_limit": "1Gi"}
    [served] = build_deployments([plan])
    assert served.parameters == {"config_path": "/etc/maint/other.toml"}

    config_file.write_text(body + 'fan_out = true\n')
    with pytest.raises(ConfigError) as refused:
        plan_deployments(load_config(config_file))
    assert refused.value.problems == ["deploy.parameters.cert-check.fan_out: cert-check takes no such parameter "
                                      "(it takes: config_path)"]
    config_file.write_text(body.replace("[deploy.parameters.cert-check]", "[deploy.parameters.cert-chek]"))
    with pytest.raises(ConfigError, match="deploy.parameters.cert-chek: unknown duty"):
        load_config(config_file)
