"""The Prefect UI in a real browser: Debian's headless Chromium, driven by Playwright, against the
session's `prefect server start` holding maint's deployments and one cert-check run of each
outcome. Everything is asserted from the rendered page. The screenshots go to the test's
temporary directory, or with MAINT_SCREENSHOTS=docs to docs/ (README.md, "In the Prefect UI"):
`MAINT_SCREENSHOTS=docs make test PYTEST_ARGS=tests/test_ui.py` renews them."""

from __future__ import annotations

import datetime as dt
import os
import re
from pathlib import Path

import pytest
import trustme

from maint.tasks.postgres.server import free_port
from tests.conftest import forget_maint, maint_process, prefect_api, run_worker_once, wait_for
from tests.test_certs import TlsServer, _server_context

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]
VIEWPORT = {"width": 1920, "height": 1080}  # narrower, the UI folds schedules and the report's columns away
DOCS = Path(__file__).resolve().parent.parent / "docs"
UI_TIMEOUT = 30_000  # ms: each wait on the rendered page (the UI loads its data after the page)
POOL = "maint-ui"
TIMEZONE = "Asia/Taipei"
# Each deployed duty: its cron, and the words the UI's deployment list shows for it (the cron
# itself is not on the page). Daily and weekly: a scheduled run falls due during the test almost never.
SCHEDULES = {
    "backup-verification": ("30 7 * * *", "At 07:30 AM every day"),
    "cert-check": ("0 6 * * 1", "At 06:00 AM, only on Monday"),
    "health-check": ("0 8 * * *", "At 08:00 AM every day"),
}
CONFIG_PATH_HELP = ("The maint configuration file; empty means $MAINT_CONFIG on the machine that runs the flow, "
                    "else ./maint.toml there.")
STORE_HELP = "Verify only this [[backup_stores]] entry (by name); empty means every store."
NOW = dt.datetime.now(dt.timezone.utc)


def _certificate(port: int, ca_file: Path) -> str:
    return (f'[[certificates]]\nhost = "localhost"\nport = {port}\nca_file = "{ca_file}"\n'
            "warning_days = 28\ncritical_days = 14\n\n")


def _deploy_config(path: Path, store: Path, ca_file: Path) -> Path:
    """What `maint deploy` reads: three duties, each with a cron. The runs read files of their own."""
    path.write_text(
        f'timezone = "{TIMEZONE}"\n\n[dead_mans_switch]\nenabled = false\n\n'
        '[[databases]]\nname = "prod"\nhost = "127.0.0.1"\ndbname = "shop"\nuser = "maint"\n\n'
        f'[[backup_stores]]\nname = "prod-dumps"\nurl = "file://{store}/"\ndatabase = "prod"\n\n'
        '[health_check]\n\n[[health_check.endpoints]]\nurl = "https://shop.example.com/health"\n\n'
        + _certificate(443, ca_file)
        + "[schedules]\n" + "".join(f'{duty} = "{cron}"\n' for duty, (cron, _) in SCHEDULES.items()))
    return path


def _screenshot(page, folder: Path, name: str) -> None:
    """The whole page, animations finished (the UI fades pages and tooltips in)."""
    page.screenshot(path=str(folder / name), full_page=True, animations="disabled")


def _finish_runs(server, ids: dict) -> dict[str, object]:
    """Real workers run the flow runs `ids` (by outcome); returns them finished, by outcome."""
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    worker_output = []

    def finished():
        with prefect_api(server) as client:
            runs = client.read_flow_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=list(ids.values()))))
        if all(run.state and run.state.is_final() for run in runs):
            return {outcome: next(run for run in runs if run.id == ids[outcome]) for outcome in ids}
        # --run-once takes what is due when it polls; a run it did not see waits for the next one
        worker = run_worker_once(server, POOL)
        worker_output.append(worker.stdout[-2000:] + worker.stderr[-2000:])
        return None

    return wait_for(finished, timeout=400, interval=0.5,
                    what=lambda: "the cert-check runs to finish; the worker said:\n" + "\n".join(worker_output))


def test_the_ui_shows_the_deployments_the_custom_run_form_and_a_report(prefect_server, tmp_path):
    from playwright.sync_api import expect, sync_playwright
    from prefect.client.schemas.actions import WorkPoolCreate
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterDeploymentId

    if not CHROMIUM.exists():
        pytest.fail(f"{CHROMIUM} is missing: `apt-get install chromium` (.ci/run does)", pytrace=False)
    ca = trustme.CA()
    ca_file = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    servers = {  # leaf certificates: a year left, 20 days (warning at 28), 7 days (critical at 14)
        name: TlsServer(_server_context(ca.issue_cert("localhost", common_name=name, not_after=NOW + left)))
        for name, left in (("www", dt.timedelta(days=365)), ("api", dt.timedelta(days=20)),
                           ("payments", dt.timedelta(days=7)))}
    refused = free_port()  # nothing listens there: critical
    targets = {"ok": [servers["www"].port], "warning": [servers["www"].port, servers["api"].port],
               "critical": [servers["www"].port, servers["payments"].port, refused]}
    for server in servers.values():
        server.__enter__()
    ids = {}
    try:
        (tmp_path / "store").mkdir()
        deploy_config = _deploy_config(tmp_path / "maint.toml", tmp_path / "store", ca_file)
        with prefect_api(prefect_server) as client:
            client.create_work_pool(WorkPoolCreate(name=POOL, type="process"))
        deployed = maint_process(prefect_server, "--config", str(deploy_config), "deploy", "--pool", POOL)
        assert deployed.returncode == 0, deployed.stdout + deployed.stderr
        with prefect_api(prefect_server) as client:
            deployments = {d.name: d for d in client.read_deployments()}
        assert set(deployments) == set(SCHEDULES), deployments
        configs = {}
        for outcome, ports in targets.items():
            configs[outcome] = tmp_path / f"certs-{outcome}.toml"
            configs[outcome].write_text("".join(_certificate(port, ca_file) for port in ports))
        with prefect_api(prefect_server) as client:  # each run reads its file: its config_path parameter
            for outcome, config in configs.items():
                ids[outcome] = client.create_flow_run_from_deployment(
                    deployments["cert-check"].id, parameters={"config_path": str(config)},
                    name=f"cert-check-{outcome}").id
        runs = _finish_runs(prefect_server, ids)
        outcomes = {outcome: (run.state.name, run.state.message) for outcome, run in runs.items()}
        assert outcomes["ok"] == ("Completed", None) and outcomes["warning"] == ("Completed", None), outcomes
        assert outcomes["critical"][0] == "Failed", outcomes
        # Every finished run by deployment: ours, and a scheduled one a worker took if its time
        # came while this test ran (each cron fires once a day or a week, so almost never).
        finished = {duty: {"COMPLETED": 0, "FAILED": 0} for duty in SCHEDULES}
        by_id = {deployment.id: duty for duty, deployment in deployments.items()}
        with prefect_api(prefect_server) as client:
            for run in client.read_flow_runs(flow_run_filter=FlowRunFilter(
                    deployment_id=FlowRunFilterDeploymentId(any_=list(by_id)))):
                if run.state and run.state.type.value in finished[by_id[run.deployment_id]]:
                    finished[by_id[run.deployment_id]][run.state.type.value] += 1

        # A test run must not rewrite the checkout's images unless asked to.
        shots = DOCS if os.environ.get("MAINT_SCREENSHOTS") == "docs" else tmp_path
        shots.mkdir(exist_ok=True)
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
            try:
                page = browser.new_page(viewport=VIEWPORT)
                page.set_default_timeout(UI_TIMEOUT)
                ui = prefect_server.ui_url

                # 1. Every deployment, each with its schedule.
                page.goto(f"{ui}/deployments")
                expect(page.get_by_text(f"{len(SCHEDULES)} Deployments", exact=True)).to_be_visible(timeout=UI_TIMEOUT)
                for duty, (_, words) in SCHEDULES.items():
                    row = page.locator("tbody tr").filter(has=page.get_by_role("link", name=duty, exact=True))
                    expect(row).to_have_count(1, timeout=UI_TIMEOUT)
                    schedule = row.locator(".deployment-schedule-tags__tag")
                    expect(schedule).to_have_text(words, timeout=UI_TIMEOUT)
                    expect(schedule).to_be_visible(timeout=UI_TIMEOUT)  # not folded into a "+1"
                    schedule.hover()  # its tooltip: the schedule in full, with its timezone
                    in_full = re.compile(rf"^\s*{re.escape(f'{words} ({TIMEZONE})')}\s*$")
                    expect(page.get_by_role("tooltip").filter(has_text=in_full)).to_be_visible(timeout=UI_TIMEOUT)
                    page.mouse.move(0, 0)
                    expect(page.get_by_role("tooltip")).to_have_count(0, timeout=UI_TIMEOUT)
                    # Activity: a bar per finished run, coloured by its state (cert-check: ours, 2 and 1).
                    for state, count in finished[duty].items():
                        bars = row.locator(f".flow-runs-bar-chart__bar-flow-run.bg-state-{state.lower()}-500")
                        expect(bars).to_have_count(count, timeout=UI_TIMEOUT)
                _screenshot(page, shots, "ui-deployments.png")

                # 2. The Custom run form, reached as an operator does: the deployment, Run, Custom run.
                verification = deployments["backup-verification"].id
                page.get_by_role("link", name="backup-verification", exact=True).first.click()
                expect(page).to_have_url(re.compile(rf"/deployments/deployment/{verification}$"), timeout=UI_TIMEOUT)
                page.get_by_role("button", name="Run", exact=True).click()
                page.get_by_text("Custom run", exact=True).click()
                expect(page).to_have_url(re.compile(rf"/deployments/deployment/{verification}/run(\?|$)"),
                                         timeout=UI_TIMEOUT)
                for parameter, help_text in (("config_path", CONFIG_PATH_HELP), ("store", STORE_HELP)):
                    expect(page.get_by_text(f"{parameter} (Optional)", exact=True)).to_be_visible(timeout=UI_TIMEOUT)
                    expect(page.get_by_text(help_text, exact=True)).to_be_visible(timeout=UI_TIMEOUT)
                _screenshot(page, shots, "ui-custom-run.png")

                # 3. The critical run's report artifact: from the run's page, its Artifacts tab.
                critical = runs["critical"]
                page.goto(f"{ui}/runs/flow-run/{critical.id}")
                expect(page.get_by_text("cert-check-critical", exact=True).first).to_be_visible(timeout=UI_TIMEOUT)
                expect(page.get_by_text("Failed", exact=True).first).to_be_visible(timeout=UI_TIMEOUT)
                page.get_by_role("tablist").get_by_text("Artifacts", exact=True).click()
                page.get_by_role("tabpanel", name="Artifacts").get_by_role(
                    "link", name=re.compile(r"^markdown cert-check-report ")).click()
                expect(page).to_have_url(re.compile(r"/artifacts/artifact/[0-9a-f-]{36}$"), timeout=UI_TIMEOUT)
                expect(page.get_by_role("heading", name=re.compile(r"cert-check: critical$"))).to_be_visible(
                    timeout=UI_TIMEOUT)
                findings = page.locator("tbody tr")
                expect(findings).to_have_count(5, timeout=UI_TIMEOUT)  # worst first
                expected = [
                    ("critical", "expiry", servers["payments"].port,
                     r"leaf CN=payments expires in 7 days \(\S+\); critical at 14", "renew it now"),
                    ("critical", "tls", refused, rf"cannot connect to localhost:{refused}: .*Connect call failed.*",
                     r"is the service up.*"),
                ]
                for row, (severity, check, port, message, hint) in zip(findings.all(), expected):
                    expect(row.locator("td")).to_have_text(
                        [re.compile(rf"{severity}$"), check, f"https://localhost:{port}", re.compile(rf"^{message}$"),
                         re.compile(rf"^{hint}$")], timeout=UI_TIMEOUT)
                ok = findings.filter(has_text=f"chain verified for localhost:{servers['www'].port}; certificate CN=www")
                expect(ok).to_have_count(1, timeout=UI_TIMEOUT)
                _screenshot(page, shots, "ui-report-artifact.png")
                # The report's own link (what a Slack message or a page carries) opens the run.
                link = page.get_by_role("link", name=f"{ui}/flow-runs/flow-run/{critical.id}", exact=True)
                page.goto(link.get_attribute("href"))  # it opens a new tab when clicked
                expect(page).to_have_url(re.compile(rf"/runs/flow-run/{critical.id}"), timeout=UI_TIMEOUT)
                expect(page.get_by_text("cert-check-critical", exact=True).first).to_be_visible(timeout=UI_TIMEOUT)
            finally:
                browser.close()
    finally:
        for server in servers.values():
            server.__exit__()
        with prefect_api(prefect_server) as client:
            for run_id in ids.values():
                client.delete_flow_run(run_id)
        forget_maint(prefect_server)
