"""Production on Prefect work pools, against a real `prefect server start` and real workers:
`maint deploy` on a process pool, `prefect worker start --run-once` executing the runs, stale
schedules removed under deploy and serve, and the dead man's switch firing at real receivers."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from datetime import timedelta
from pathlib import Path

import pytest

from maint import __version__
from maint.dead_mans_switch import switch_dedup_key
from maint.duties import DUTIES
from tests.conftest import (DB_PASSWORD_ENV, forget_maint, interrupt, maint_process, prefect_api, run_worker_once,
                            wait_for)

CRONS = {"health-check": "0 8 * * *", "cert-check": "0 9 * * 1"}
ROUTING_KEY = "routing-key-that-must-stay-secret"
SLACK_PATH = "/services/T000/B000/secret-slack-path"


def health_and_certs_config(path: Path, endpoint: str, *, crons=CRONS, extra: str = "") -> Path:
    schedules = "\n".join(f'{duty} = "{cron}"' for duty, cron in crons.items())
    path.write_text(f"""
timezone = "Asia/Taipei"

[health_check]

[[health_check.endpoints]]
url = "{endpoint}"
expect_status = 200

[[certificates]]                    # nothing listens there: a critical finding
host = "127.0.0.1"
port = 9

[schedules]
{schedules}
{extra}
""")
    return path


@pytest.fixture
def work_pool(prefect_server):
    """A fresh process work pool on the session's Prefect server; everything maint registered
    is deleted afterwards."""
    from prefect.client.schemas.actions import WorkPoolCreate

    name = f"maint-{uuid.uuid4().hex[:8]}"
    with prefect_api(prefect_server) as client:
        client.create_work_pool(WorkPoolCreate(name=name, type="process"))
    yield name
    forget_maint(prefect_server)


def deployments_of(server) -> dict:
    with prefect_api(server) as client:
        return {d.name: d for d in client.read_deployments()}


def deploy(server, config: Path, pool: str, env: dict | None = None) -> subprocess.CompletedProcess:
    result = maint_process(server, "--config", str(config), "deploy", "--pool", pool, env=env)
    assert result.returncode == 0, result.stdout + result.stderr
    return result


def run_deployment(server, deployment, pool: str, config: Path, env: dict | None = None):
    """One manual run of a deployment, executed by a real worker; returns (flow run, worker output)."""
    with prefect_api(server) as client:
        flow_run = client.create_flow_run_from_deployment(deployment.id)
    worker = run_worker_once(server, pool, env={"MAINT_CONFIG": str(config), **(env or {})})
    with prefect_api(server) as client:
        return client.read_flow_run(flow_run.id), worker.stdout + worker.stderr


def artifacts_by_key(server, flow_run_id) -> dict:
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    with prefect_api(server) as client:
        artifacts = client.read_artifacts(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id])))
    return {a.key: a for a in artifacts}


def test_deploy_registers_module_path_deployments_and_a_worker_runs_them(prefect_server, work_pool, httpserver,
                                                                        tmp_path):
    httpserver.expect_request("/healthz").respond_with_data("ok")
    config = health_and_certs_config(tmp_path / "maint.toml", httpserver.url_for("/healthz"))

    first = deploy(prefect_server, config, work_pool)

    deployments = deployments_of(prefect_server)
    assert set(deployments) == set(CRONS), first.stdout
    for name, deployment in deployments.items():
        module = name.replace("-", "_")
        assert deployment.entrypoint == f"maint.flows.{module}.{module}"
        assert deployment.path is None and deployment.pull_steps == [], "the worker imports the installed package"
        assert deployment.work_pool_name == work_pool
        assert deployment.version == __version__
        assert {"maint", *DUTIES[name].tags} == set(deployment.tags)
        [schedule] = deployment.schedules
        assert (schedule.slug, schedule.schedule.cron, schedule.schedule.timezone, schedule.active) == \
            (f"maint-{name}", CRONS[name], "Asia/Taipei", True)
        properties = deployment.parameter_openapi_schema["properties"]
        assert properties and all(p.get("description") for p in properties.values()), properties
        assert "$MAINT_CONFIG" in deployment.description
        # No path of the deploying machine anywhere in what the worker gets.
        assert str(tmp_path) not in deployment.model_dump_json()
        assert deployment.parameters == {}
    assert deployments["cert-check"].global_concurrency_limit is None
    assert "created" in first.stdout

    second = deploy(prefect_server, config, work_pool)
    again = deployments_of(prefect_server)
    lines = [line for line in second.stdout.splitlines() if line.startswith("deployment ")]
    assert len(lines) == 2 and all(": unchanged;" in line for line in lines), second.stdout
    for name in CRONS:
        assert again[name].updated == deployments[name].updated, f"{name} was written again"
        assert [s.id for s in again[name].schedules] == [s.id for s in deployments[name].schedules]

    flow_run, output = run_deployment(prefect_server, deployments["health-check"], work_pool, config)
    assert flow_run.state.is_completed(), output
    artifacts = artifacts_by_key(prefect_server, flow_run.id)
    assert {"health-check-report", "health-check-findings"} <= set(artifacts)
    assert httpserver.url_for("/healthz") in artifacts["health-check-report"].data


def test_a_critical_run_under_a_worker_ends_failed_with_one_line(prefect_server, work_pool, httpserver, tmp_path):
    config = health_and_certs_config(tmp_path / "maint.toml", httpserver.url_for("/healthz"))
    deploy(prefect_server, config, work_pool)

    flow_run, output = run_deployment(prefect_server, deployments_of(prefect_server)["cert-check"], work_pool, config)

    assert flow_run.state.is_failed(), output
    reason = flow_run.state.message
    assert reason.startswith("cert-check: CRITICAL (1 critical): https://127.0.0.1:9: tls: cannot connect"), reason
    assert "\n" not in reason
    for noise in ("TypeError", "Traceback", "Unexpected result", "'findings'", "exhaustive_checks"):
        assert noise not in output, f"{noise!r} in the worker's output:\n{output}"
    assert f"CriticalReport: {reason}" in output, output
    with prefect_api(prefect_server) as client:
        from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId

        logs = client.read_logs(LogFilter(flow_run_id=LogFilterFlowRunId(any_=[flow_run.id])))
    assert logs and not [log.message for log in logs if "Traceback" in log.message or "TypeError" in log.message]
    assert "cert-check-report" in artifacts_by_key(prefect_server, flow_run.id), "the report is still published"


def test_a_removed_cron_loses_its_schedule_under_deploy_and_under_serve(prefect_server, work_pool, httpserver,
                                                                       tmp_path):
    endpoint = httpserver.url_for("/healthz")
    config = health_and_certs_config(tmp_path / "maint.toml", endpoint)
    deploy(prefect_server, config, work_pool)
    kept = deployments_of(prefect_server)["health-check"].schedules

    only_health = health_and_certs_config(tmp_path / "only-health.toml", endpoint, crons={"health-check": CRONS["health-check"]})
    result = deploy(prefect_server, only_health, work_pool)

    deployments = deployments_of(prefect_server)
    assert deployments["cert-check"].schedules == [], result.stdout
    assert "schedule maint-cert-check removed" in result.stdout
    assert [s.id for s in deployments["health-check"].schedules] == [s.id for s in kept], "the other one untouched"

    # Under serve: served with both crons, then served again without cert-check's.
    forget_maint(prefect_server)
    with serving(prefect_server, config):
        assert deployments_of(prefect_server)["cert-check"].schedules
    with serving(prefect_server, only_health) as output:
        served = deployments_of(prefect_server)
        assert served["cert-check"].schedules == [], "".join(output)
        [schedule] = served["health-check"].schedules
        assert (schedule.slug, schedule.schedule.cron) == ("maint-health-check", CRONS["health-check"])


def test_a_critical_run_under_serve_ends_failed_with_one_line(prefect_server, httpserver, tmp_path):
    config = health_and_certs_config(tmp_path / "maint.toml", httpserver.url_for("/healthz"))
    try:
        with serving(prefect_server, config) as output:
            with prefect_api(prefect_server) as client:
                flow_run = client.create_flow_run_from_deployment(deployments_of(prefect_server)["cert-check"].id)

            def finished():
                with prefect_api(prefect_server) as client:
                    state = client.read_flow_run(flow_run.id).state
                return state if state.is_final() else None

            state = wait_for(finished, timeout=120, what="the served cert-check run to finish")
            wait_for(lambda: any("CriticalReport: " in line for line in output), timeout=30,
                     what=lambda: "serve's output to name the reason:\n" + "".join(output))
    finally:
        forget_maint(prefect_server)
    assert state.is_failed() and state.message.startswith("cert-check: CRITICAL (1 critical): "), state
    printed = "".join(output)
    for noise in ("TypeError", "Traceback", "Unexpected result", "'findings'", "exhaustive_checks"):
        assert noise not in printed, f"{noise!r} in serve's output:\n{printed}"


@contextlib.contextmanager
def serving(server, config: Path):
    """`maint serve` as its own process, until it says it is serving; stopped with Ctrl-C after."""
    lines: list[str] = []
    serve = subprocess.Popen([sys.executable, "-m", "maint.cli", "--config", str(config), "serve"],
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=server.client_env())
    threading.Thread(target=lambda: lines.extend(iter(serve.stdout.readline, "")), daemon=True).start()
    try:
        wait_for(lambda: any(line.startswith("serving ") for line in lines) or serve.poll() is not None,
                 timeout=120, what=lambda: f"`maint serve` to start serving:\n{''.join(lines)}")
        assert serve.poll() is None, "".join(lines)
        yield lines
    finally:
        interrupt(serve)


def vacuum_config(path: Path, pg, extra: str = "") -> Path:
    path.write_text(f"""
[[databases]]
name = "shop"
host = "{pg.host}"
port = {pg.port}
dbname = "shop"
user = "{pg.superuser}"
password_env = "{DB_PASSWORD_ENV}"

[vacuum]
databases = ["shop"]
{extra}
""")
    return path


def test_overlapping_runs_of_one_duty_never_run_at_once(prefect_server, work_pool, pg, db_password, tmp_path):
    """Run A of the vacuum deployment waits on the duty's lock, held here as a `maint run` would;
    run B of the same deployment is cancelled by the deployment's concurrency limit meanwhile.
    Released, A vacuums and completes."""
    from maint.locks import lock_key
    from maint.tasks.environment import load_config
    from maint.tasks.postgres.lock import AdvisoryLock

    config = vacuum_config(tmp_path / "maint.toml", pg, extra='[locks]\nwait = "120s"\n')
    deploy(prefect_server, config, work_pool)
    vacuum = deployments_of(prefect_server)["vacuum"]
    assert vacuum.global_concurrency_limit.limit == 1
    assert vacuum.concurrency_options.collision_strategy.value == "CANCEL_NEW"
    held_here = AdvisoryLock(load_config(config).database("shop"), lock_key("vacuum", "shop"), "maint vacuum run cli test")
    assert held_here.acquire(timedelta(0))
    env = {"MAINT_CONFIG": str(config), DB_PASSWORD_ENV: db_password}

    def state_of(flow_run_id):
        with prefect_api(prefect_server) as client:
            return client.read_flow_run(flow_run_id).state

    with prefect_api(prefect_server) as client:
        run_a = client.create_flow_run_from_deployment(vacuum.id)
    worker_a = subprocess.Popen([sys.executable, "-m", "prefect", "worker", "start", "--pool", work_pool, "--run-once"],
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                env=prefect_server.client_env({**os.environ, **env}))
    try:
        wait_for(lambda: state_of(run_a.id).is_running(), timeout=120, what="run A to be Running (waiting on the lock)")
        with prefect_api(prefect_server) as client:
            run_b = client.create_flow_run_from_deployment(vacuum.id)
        worker_b = run_worker_once(prefect_server, work_pool, env=env)
        assert state_of(run_b.id).is_cancelled(), worker_b.stdout + worker_b.stderr
        assert state_of(run_a.id).is_running(), "A still waits on the lock: B never ran beside it"
    finally:
        held_here.release()
        output_a = worker_a.communicate(timeout=180)[0]
    final = state_of(run_a.id)
    assert final.is_completed(), output_a
    report = artifacts_by_key(prefect_server, run_a.id)["vacuum-report"].data
    assert "refused" not in report and "holds the lock" not in report


def engine_processes_of(flow_run_id) -> list[int]:
    """The pids of `python -m prefect.engine` processes running this flow run (the worker's child)."""
    pids = []
    for proc in Path("/proc").iterdir():
        try:
            if proc.name.isdigit() and f"PREFECT__FLOW_RUN_ID={flow_run_id}".encode() in (proc / "environ").read_bytes():
                pids.append(int(proc.name))
        except OSError:
            continue
    return pids


@pytest.mark.parametrize("fate", ["killed", "stuck"])
def test_a_crashed_or_stuck_run_pages_from_the_server(fate, prefect_server, work_pool, httpserver, pg, db_password,
                                                      tmp_path):
    """A vacuum run waits on its lock (held here). Killed: its process is SIGKILLed, so no hook of
    its own can page; the worker marks it Crashed. Stuck: it is still Running after stuck_after
    (12 s here). Either way the server's "run stuck or crashed" automation pages on-call, and the
    stuck one's page is resolved when it completes."""
    from werkzeug import Response

    from maint.locks import lock_key
    from maint.paging import RUN_FAILED_CHECK, dedup_key
    from maint.tasks.environment import load_config
    from maint.tasks.postgres.lock import AdvisoryLock

    events: list[dict] = []
    httpserver.expect_request("/pagerduty", method="POST").respond_with_handler(
        lambda request: (events.append(request.get_json()), Response("{}", 202))[1])
    config = vacuum_config(tmp_path / "maint.toml", pg, extra=f"""
[locks]
wait = "120s"

[notify]
pagerduty_routing_key_env = "MAINT_TEST_PD_KEY"
pagerduty_events_url = "{httpserver.url_for('/pagerduty')}"

[dead_mans_switch]
stuck_after = "{'6h' if fate == 'killed' else '12s'}"
""")
    env = {"MAINT_CONFIG": str(config), DB_PASSWORD_ENV: db_password, "MAINT_TEST_PD_KEY": ROUTING_KEY}
    deploy(prefect_server, config, work_pool, env=env)
    key = dedup_key("vacuum", RUN_FAILED_CHECK, "vacuum")

    def from_the_server(action: str):
        # The worker also runs a killed flow's on_crashed hook, which pages the same incident (one
        # dedup key): the server's page is the one that needs neither the run's process nor the worker.
        return [e for e in events if e["dedup_key"] == key and e["event_action"] == action
                and (action == "resolve" or e["payload"]["source"] == "maint (Prefect automation)")]

    held_here = AdvisoryLock(load_config(config, check_env=False).database("shop"), lock_key("vacuum", "shop"),
                             "maint vacuum run cli test")
    assert held_here.acquire(timedelta(0))
    try:
        with prefect_api(prefect_server) as client:
            flow_run = client.create_flow_run_from_deployment(deployments_of(prefect_server)["vacuum"].id)
        worker = subprocess.Popen([sys.executable, "-m", "prefect", "worker", "start", "--pool", work_pool,
                                   "--run-once"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                  env=prefect_server.client_env({**os.environ, **env}))
        [engine] = wait_for(lambda: engine_processes_of(flow_run.id), timeout=120, what="the flow run's process")
        with prefect_api(prefect_server) as client:
            wait_for(lambda: client.read_flow_run(flow_run.id).state.is_running(), timeout=120, what="Running")
        if fate == "killed":
            os.kill(engine, signal.SIGKILL)
        else:
            wait_for(lambda: from_the_server("trigger"), timeout=60, what=lambda: f"the stuck page; events: {events}")
    finally:
        held_here.release()
    output = worker.communicate(timeout=120)[0]
    with prefect_api(prefect_server) as client:
        final = client.read_flow_run(flow_run.id).state
    [page] = wait_for(lambda: from_the_server("trigger"), timeout=60, what=lambda: f"the page; events: {events}")[:1]
    assert flow_run.name in page["payload"]["summary"], "the automation names the run"
    assert page["routing_key"] == ROUTING_KEY
    if fate == "killed":
        assert final.is_crashed(), output
        assert "a run crashed, or is still Running after 6h" in page["payload"]["summary"]
    else:
        assert final.is_completed(), output
        assert "a run crashed, or is still Running after 12s" in page["payload"]["summary"]
        wait_for(lambda: from_the_server("resolve"), timeout=60, what=lambda: f"the resolve; events: {events}")


def test_dead_mans_switch_pages_a_silent_duty_and_not_a_running_one(prefect_server, work_pool, httpserver, pg,
                                                                    db_password, tmp_path):
    """health-check completes every few seconds under a real worker; vacuum never runs until
    its switch fires. Both windows are 20 s. Then vacuum completes once, which resolves its page."""
    from werkzeug import Response

    events: list[dict] = []
    slack: list[dict] = []
    httpserver.expect_request("/healthz").respond_with_data("ok")
    httpserver.expect_request("/pagerduty", method="POST").respond_with_handler(
        lambda request: (events.append(request.get_json()), Response("{}", 202))[1])
    httpserver.expect_request(SLACK_PATH, method="POST").respond_with_handler(
        lambda request: (slack.append(request.get_json()), Response("ok", 200))[1])
    env = {"MAINT_TEST_SLACK": httpserver.url_for(SLACK_PATH), "MAINT_TEST_PD_KEY": ROUTING_KEY,
           DB_PASSWORD_ENV: db_password}
    config = tmp_path / "maint.toml"
    config.write_text(f"""
[notify]
slack_webhook_url_env = "MAINT_TEST_SLACK"
pagerduty_routing_key_env = "MAINT_TEST_PD_KEY"
pagerduty_events_url = "{httpserver.url_for('/pagerduty')}"
page_on = ["critical"]

{vacuum_config(tmp_path / "vacuum.toml", pg).read_text()}
[health_check]

[[health_check.endpoints]]
url = "{httpserver.url_for('/healthz')}"

[schedules]
health-check = "0 8 * * *"
vacuum = "0 3 * * 1"

[dead_mans_switch]
windows = {{ health-check = "20s", vacuum = "20s" }}
""")
    deployed_at = time.monotonic()
    result = deploy(prefect_server, config, work_pool, env=env)
    assert "automation 'maint vacuum: no completed run': created" in result.stdout, result.stdout
    with prefect_api(prefect_server) as client:
        automations = client.read_automations()
    stored = json.dumps([json.loads(a.model_dump_json()) for a in automations])
    assert ROUTING_KEY not in stored and "secret-slack-path" not in stored, "secrets only in the blocks"
    assert ROUTING_KEY not in result.stdout + result.stderr

    def pages(key: str, action: str) -> list[dict]:
        return [e for e in events if e.get("dedup_key") == key and e.get("event_action") == action]

    deployments = deployments_of(prefect_server)
    health_runs = 0
    while not pages(switch_dedup_key("vacuum"), "trigger"):
        assert time.monotonic() - deployed_at < 120, f"vacuum's switch never fired; events: {events}"
        flow_run, output = run_deployment(prefect_server, deployments["health-check"], work_pool, config, env)
        assert flow_run.state.is_completed(), output
        health_runs += 1
    fired_after = time.monotonic() - deployed_at
    # Keep health-check completing for one more whole window: its switch must stay quiet.
    quiet_until = time.monotonic() + 22
    while time.monotonic() < quiet_until:
        flow_run, output = run_deployment(prefect_server, deployments["health-check"], work_pool, config, env)
        assert flow_run.state.is_completed(), output
        health_runs += 1
    assert not pages(switch_dedup_key("health-check"), "trigger"), events

    [page] = pages(switch_dedup_key("vacuum"), "trigger")[:1]
    assert page["routing_key"] == ROUTING_KEY and "no Completed run in the last 20s" in page["payload"]["summary"]
    assert any("no Completed run" in message.get("text", "") for message in slack), slack

    flow_run, output = run_deployment(prefect_server, deployments["vacuum"], work_pool, config, env)
    assert flow_run.state.is_completed(), output
    wait_for(lambda: pages(switch_dedup_key("vacuum"), "resolve"), timeout=60,
             what=lambda: f"the vacuum page to be resolved; events: {events}")
    print(f"dead man's switch fired {fired_after:.1f} s after deploy (window 20 s); {health_runs} health-check runs")


def test_deploy_to_a_kubernetes_pool_sets_the_image_and_refuses_what_cannot_work(prefect_server, work_pool,
                                                                                httpserver, tmp_path):
    from prefect.client.schemas.actions import WorkPoolCreate

    config = health_and_certs_config(tmp_path / "maint.toml", httpserver.url_for("/healthz"), extra="""
[deploy.job_variables.cert-check]
memory_limit = "1Gi"
""")
    image = "registry.example.com/acme/maint:0.1.0"
    template = json.loads((Path(__file__).parent.parent / "deploy/kubernetes/base-job-template.json").read_text())
    with prefect_api(prefect_server) as client:
        client.create_work_pool(WorkPoolCreate(name="maint-k8s", type="kubernetes", base_job_template=template))

    # Refused, naming the option, and nothing registered: no such pool; an image for a process pool.
    missing = maint_process(prefect_server, "--config", str(config), "deploy", "--pool", "no-such-pool")
    assert missing.returncode == 3 and "--pool: no work pool named 'no-such-pool'" in missing.stderr
    imaged = maint_process(prefect_server, "--config", str(config), "deploy", "--pool", work_pool, "--image", image)
    assert imaged.returncode == 3 and "--image:" in imaged.stderr and "process" in imaged.stderr
    broken = tmp_path / "broken.toml"
    broken.write_text(config.read_text().replace('port = 9', 'port = "nine"'))
    invalid = maint_process(prefect_server, "--config", str(broken), "deploy", "--pool", work_pool)
    assert invalid.returncode == 3 and "certificates[0].port" in invalid.stderr
    no_image = maint_process(prefect_server, "--config", str(config), "deploy", "--pool", "maint-k8s")
    assert no_image.returncode == 3 and "--image: work pool 'maint-k8s' runs flows in containers" in no_image.stderr
    assert deployments_of(prefect_server) == {}

    deployed = maint_process(prefect_server, "--config", str(config), "deploy", "--pool", "maint-k8s",
                             "--image", image, "--worker-config", "/etc/maint/maint.toml")
    assert deployed.returncode == 0, deployed.stderr
    deployments = deployments_of(prefect_server)
    for deployment in deployments.values():
        assert deployment.work_pool_name == "maint-k8s"
        assert "MAINT_CONFIG=/etc/maint/maint.toml" in deployment.description
    common = {"image": image, "env": {"MAINT_CONFIG": "/etc/maint/maint.toml"}}
    assert deployments["health-check"].job_variables == common
    assert deployments["cert-check"].job_variables == {**common, "memory_limit": "1Gi"}, "the duty's own overrides"


def test_what_is_paused_for_maintenance_stays_paused_through_a_redeploy(prefect_server, work_pool,
                                                                              httpserver, tmp_path):
    notify = f"""
[notify]
pagerduty_routing_key_env = "MAINT_TEST_PD_KEY"
pagerduty_events_url = "{httpserver.url_for('/pagerduty')}"
"""
    config = health_and_certs_config(tmp_path / "maint.toml", httpserver.url_for("/healthz"), extra=notify)
    env = {"MAINT_TEST_PD_KEY": ROUTING_KEY}
    deploy(prefect_server, config, work_pool, env=env)
    name = "maint cert-check: no completed run"
    certs = deployments_of(prefect_server)["cert-check"]
    with prefect_api(prefect_server) as client:
        [automation] = client.read_automations_by_name(name)
        client.pause_automation(automation.id)
        client.update_deployment_schedule(certs.id, certs.schedules[0].id, active=False)

    again = deploy(prefect_server, config, work_pool, env=env)

    assert f"automation {name!r}: unchanged (paused)" in again.stdout, again.stdout
    assert "automation 'maint health-check: no completed run': unchanged\n" in again.stdout
    assert "cert-check on " in again.stdout and "schedule paused (left so)" in again.stdout
    with prefect_api(prefect_server) as client:
        [automation] = client.read_automations_by_name(name)
    assert not automation.enabled
    assert not deployments_of(prefect_server)["cert-check"].schedules[0].active
    assert deployments_of(prefect_server)["health-check"].schedules[0].active

    # A new cron for the paused schedule: the same schedule, the new cron, still paused.
    moved = health_and_certs_config(tmp_path / "moved.toml", httpserver.url_for("/healthz"), extra=notify,
                                    crons={**CRONS, "cert-check": "30 9 * * 2"})
    result = deploy(prefect_server, moved, work_pool, env=env)
    assert "schedule now '30 9 * * 2' (Asia/Taipei)" in result.stdout, result.stdout
    [schedule] = deployments_of(prefect_server)["cert-check"].schedules
    assert (schedule.id, schedule.schedule.cron, schedule.active) == (certs.schedules[0].id, "30 9 * * 2", False)
