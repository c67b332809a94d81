"""Alertmanager's firing alerts: the pure decision table-driven with a fixed `now`, and
`maint.tasks.alertmanager.list_alerts` against a real `prometheus-alertmanager` the test starts,
fed alerts and silences through its v2 API (the way Prometheus and amtool feed it)."""

from __future__ import annotations

import pickle
import shutil
import socket
import ssl
import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
import trustme

from maint.alerts import ALERT_CHECK, alertmanager_unreachable, assess_alerts
from maint.config import AlertmanagerConfig
from maint.errors import AlertmanagerError
from maint.paging import dedup_key, plan_pages
from maint.report import Finding, Severity
from maint.tasks.alertmanager import list_alerts
from maint.tasks.environment import free_port
from tests.conftest import system_fixture, wait_for
from tests.test_notify import receivers  # noqa: F401  (a fixture)

NOW = datetime(2025, 3, 14, 9, 30, tzinfo=UTC)
AM = AlertmanagerConfig(url="http://am.example:9093")
SUBJECT = "alertmanager am.example:9093"


def alert(name: str, severity: str | None = "critical", *, state: str = "active", silenced=(), inhibited=(),
          muted=(), since: timedelta = timedelta(hours=2), annotations: dict | None = None, generator: str = "",
          **labels: str) -> dict:
    """One GettableAlert as `GET /api/v2/alerts` returns it."""
    labels = {"alertname": name, **labels, **({"severity": severity} if severity is not None else {})}
    return {"labels": labels, "annotations": annotations or {}, "fingerprint": f"fp-{name}",
            "startsAt": (NOW - since).isoformat().replace("+00:00", "Z"),
            "endsAt": (NOW + timedelta(minutes=4)).isoformat().replace("+00:00", "Z"),
            "updatedAt": NOW.isoformat().replace("+00:00", "Z"), "generatorURL": generator,
            "receivers": [{"name": "null"}],
            "status": {"state": state, "silencedBy": list(silenced), "inhibitedBy": list(inhibited),
                       **({"mutedBy": list(muted)} if muted else {})}}


def problems(findings: list[Finding]) -> list[Finding]:
    return [f for f in findings if f.severity is not Severity.OK]


def summary(findings: list[Finding]) -> Finding:
    assert findings[-1].check == "alertmanager" and findings[-1].subject == SUBJECT, findings
    return findings[-1]


# --- decisions -----------------------------------------------------------------------------------

PAGER = AlertmanagerConfig(url="http://am.example:9093", severity_label="priority", critical_values=["P1"],
                           warning_values=["P2"], ignore_values=["P5"])


@pytest.mark.parametrize("config, data, severity, words, counted", [
    (AM, alert("NodeDown", "critical"), Severity.CRITICAL, "(severity critical)", "1 critical and 0 warning"),
    (AM, alert("NodeDown", "page"), Severity.CRITICAL, "(severity page)", "1 critical"),
    (AM, alert("NodeDown", "CRITICAL"), Severity.CRITICAL, "(severity CRITICAL)", "1 critical"),
    (AM, alert("DiskFull", "warning"), Severity.WARNING, "(severity warning)", "0 critical and 1 warning"),
    # Never dropped for want of a label: an alert nobody graded is still someone's problem.
    (AM, alert("DiskFull", None), Severity.WARNING, "(no severity label, taken as a warning)", "1 warning"),
    (AM, alert("DiskFull", "high"), Severity.WARNING, "(severity high, taken as a warning)", "1 warning"),
    (AM, alert("Watchdog", "none"), None, "", "1 ignored by severity (Watchdog)"),
    (AM, alert("CertExpiring", "info"), None, "", "1 ignored by severity (CertExpiring)"),
    (AM, alert("NodeDown", "critical", state="suppressed", silenced=["s1"]), None, "",
     "1 silenced and 0 inhibited (never paged)"),
    (AM, alert("DiskFull", "warning", state="suppressed", inhibited=["fp-NodeDown"]), None, "",
     "0 silenced and 1 inhibited (never paged)"),
    (AM, alert("NightlyBatch", "critical", state="suppressed"), None, "",
     "0 silenced, 0 inhibited and 1 muted (never paged)"),
    (AM, alert("NightlyBatch", "critical", state="suppressed", muted=["weekends"]), None, "", "1 muted"),
    # Silenced wins over the severity: an acknowledged critical never pages.
    (AM, alert("NodeDown", "critical", state="suppressed", silenced=["s1"], inhibited=["x"]), None, "", "1 silenced"),
    # Not yet through Alertmanager's pipeline: reported, since hiding it could hide an outage.
    (AM, alert("NodeDown", "critical", state="unprocessed"), Severity.CRITICAL, "has not processed it yet",
     "1 critical"),
    (PAGER, alert("Queue", None, priority="P1"), Severity.CRITICAL, "(priority P1)", "1 critical"),
    (PAGER, alert("Queue", None, priority="P2"), Severity.WARNING, "(priority P2)", "1 warning"),
    (PAGER, alert("Queue", None, priority="P5"), None, "", "1 ignored by priority (Queue)"),
    (PAGER, alert("Queue", "critical"), Severity.WARNING, "(no priority label, taken as a warning)", "1 warning"),
])
def test_severity_from_the_label_and_what_is_only_counted(config, data, severity, words, counted):
    findings = assess_alerts(config, [data], NOW)
    assert [f.severity for f in problems(findings)] == ([severity] if severity else [])
    if severity:
        assert findings[0].check == ALERT_CHECK and words in findings[0].message
    assert counted in summary(findings).message and summary(findings).severity is Severity.OK


def test_the_message_names_the_alert_its_labels_summary_and_how_long_it_fired():
    data = alert("NodeDown", job="node", instance="db1:9100", since=timedelta(hours=26, minutes=5),
                 annotations={"summary": "Node db1\n  is down", "description": "long text"})
    finding = assess_alerts(AM, [data], NOW)[0]
    assert finding.subject == f'{SUBJECT} NodeDown{{instance="db1:9100",job="node"}}'
    assert finding.message == ('NodeDown{instance="db1:9100",job="node"} firing for 1d2h (severity critical): '
                               "Node db1 is down")


@pytest.mark.parametrize("data, words", [
    (alert("X", annotations={"description": "the queue is stuck"}), "(severity critical): the queue is stuck"),
    (alert("X"), "X firing for 2h (severity critical)"),
    (alert("X", since=timedelta(seconds=-30)), "X firing for 0ms"),  # its clock ahead of ours
    ({**alert("X"), "startsAt": "not a time"}, "X firing (start time unknown)"),
    (alert("X", team='a "quoted"\\name'), r'X{team="a \"quoted\"\\name"}'),  # PromQL's escaping
])
def test_message_shapes(data, words):
    assert words in assess_alerts(AM, [data], NOW)[0].message


RUNBOOK = "https://runbooks.example/NodeDown"
GRAPH = "http://prometheus:9090/graph?g0.expr=up%3D%3D0"


@pytest.mark.parametrize("config, data, words", [
    (AM, alert("NodeDown", annotations={"runbook_url": RUNBOOK}, generator=GRAPH),
     f"follow the runbook: {RUNBOOK}; the rule's graph in Prometheus: {GRAPH}"),
    (AM, alert("NodeDown", generator=GRAPH), f"the rule's graph in Prometheus: {GRAPH}"),
    (AM, alert("NodeDown", instance="db1"),
     "see the alert in Alertmanager: http://am.example:9093/#/alerts?filter=%7Balertname%3D%22NodeDown%22%2C"
     "instance%3D%22db1%22%7D"),
    (AlertmanagerConfig(url="https://maint:s3cret@am.example/alertmanager/"), alert("NodeDown"),
     "see the alert in Alertmanager: https://am.example/alertmanager/#/alerts?filter="),
])
def test_the_hint_links_the_runbook_and_the_graph_else_alertmanager(config, data, words):
    finding = assess_alerts(config, [data], NOW)[0]
    assert words in finding.hint and "a silence in Alertmanager stops this page" in finding.hint
    assert "s3cret" not in finding.hint + finding.subject


def test_a_problem_firing_at_two_severities_is_one_finding_at_the_worse():
    # Rule pairs (DiskFull at 80% warning, at 90% critical) fire one problem twice: one subject,
    # one page, or the warning would resolve the critical's page in the same run.
    findings = assess_alerts(AM, [alert("DiskFull", "warning", instance="db1"),
                                  alert("DiskFull", "critical", instance="db1"),
                                  alert("DiskFull", "warning", instance="db2")], NOW)
    assert [(f.severity, f.subject) for f in problems(findings)] == [
        (Severity.CRITICAL, f'{SUBJECT} DiskFull{{instance="db1"}}'),
        (Severity.WARNING, f'{SUBJECT} DiskFull{{instance="db2"}}')]
    assert findings[0].message.endswith("; also firing as severity warning")
    assert summary(findings).message.startswith("3 alerts: 1 critical and 2 warning firing")


def test_summary_counts_everything_and_names_the_matchers():
    config = AlertmanagerConfig(url="http://am.example:9093", matchers=['team="sre"'])
    assert summary(assess_alerts(config, [], NOW)).message == 'no alerts matching team="sre"'
    findings = assess_alerts(config, [
        alert("A", "critical"), alert("B", "warning"), alert("W1", "info"), alert("W2", "none"),
        alert("S", state="suppressed", silenced=["s"]), alert("I", state="suppressed", inhibited=["fp-A"])], NOW)
    assert summary(findings).message == ('6 alerts matching team="sre": 1 critical and 1 warning firing; '
                                         "2 ignored by severity (W1, W2); 1 silenced and 1 inhibited (never paged)")


def test_unreachable_is_critical_under_the_summary_subject():
    with_hint = alertmanager_unreachable(AM, AlertmanagerError("Alertmanager at x answered 404", "check the url"))
    assert (with_hint.check, with_hint.subject, with_hint.severity) == ("alertmanager", SUBJECT, Severity.CRITICAL)
    assert with_hint.message == "Alertmanager at x answered 404" and with_hint.hint.startswith("check the url;")
    plain = alertmanager_unreachable(AM, AlertmanagerError("refused"))
    assert plain.hint.startswith("is Alertmanager up at http://am.example:9093 and reachable from here?")
    # A task's exception crosses Prefect pickled: the hint must survive the trip.
    assert pickle.loads(pickle.dumps(AlertmanagerError("m", "check the url"))).hint == "check the url"


def _keys(findings: list[Finding]) -> set[str]:
    return {dedup_key("health-check", f.check, f.subject) for f in findings}


def test_pages_resolve_when_the_alert_stops_firing_or_is_silenced_and_not_while_unseen():
    """Paging invariant over runs: an alert's page opens once, is resolved by the first run that
    reads Alertmanager without it firing, and survives a run where Alertmanager is unreachable."""
    down, disk = alert("NodeDown", instance="db1"), alert("DiskFull", instance="db1")
    open_keys: list[str] = []

    def run(findings, exhaustive=True):
        nonlocal open_keys
        plan = plan_pages("health-check", findings, open_keys, ["critical"],
                          frozenset({ALERT_CHECK}) if exhaustive else frozenset())
        open_keys = plan.still_open
        return plan

    first = assess_alerts(AM, [down, disk], NOW)
    assert len(run(first).triggers) == 2
    # Alertmanager down: the alerts are unseen, so the flow does not mark ALERT_CHECK exhaustive.
    unreachable = alertmanager_unreachable(AM, AlertmanagerError("refused"))
    assert run([unreachable], exhaustive=False).resolves == [] and len(open_keys) == 3
    # Back, NodeDown silenced, DiskFull gone: both pages and the unreachable page resolve.
    silenced = {**down, "status": {"state": "suppressed", "silencedBy": ["s"], "inhibitedBy": []}}
    plan = run(assess_alerts(AM, [silenced], NOW))
    assert {key for key, _ in plan.resolves} == _keys(first[:2]) | _keys([unreachable]) and open_keys == []


# --- systems: a real Alertmanager ----------------------------------------------------------------

_CONFIG = """
route:
  receiver: "null"
  group_wait: 1h  # nothing is sent anywhere: the null receiver has no integrations
receivers:
  - name: "null"
inhibit_rules:
  - source_matchers: ['severity="critical"', 'alertname="NodeDown"']
    target_matchers: ['severity="warning"']
    equal: ['instance']
"""


class AlertmanagerServer:
    """`prometheus-alertmanager` on a free loopback port, no clustering, its state in `directory`."""

    def __init__(self, directory: Path, ca: trustme.CA | None = None):
        self.directory, self.port = directory, free_port()
        (directory / "alertmanager.yml").write_text(_CONFIG)
        scheme = "https" if ca else "http"
        self.url = f"{scheme}://127.0.0.1:{self.port}"
        self.argv = [shutil.which("prometheus-alertmanager") or "prometheus-alertmanager",
                     f"--config.file={directory / 'alertmanager.yml'}", f"--storage.path={directory / 'data'}",
                     f"--web.listen-address=127.0.0.1:{self.port}", "--cluster.listen-address="]
        self.verify: ssl.SSLContext | bool = True  # the client feeding it: the test's CA when TLS
        if ca:
            cert = ca.issue_cert("127.0.0.1")
            cert.private_key_and_cert_chain_pem.write_to_path(directory / "server.pem")
            (directory / "web.yml").write_text(f"tls_server_config:\n  cert_file: {directory / 'server.pem'}\n"
                                               f"  key_file: {directory / 'server.pem'}\n")
            self.argv.append(f"--web.config.file={directory / 'web.yml'}")
            self.verify = ssl.create_default_context()
            ca.configure_trust(self.verify)
        self.client = httpx.Client(base_url=self.url, verify=self.verify, timeout=10)

    def __enter__(self) -> "AlertmanagerServer":
        self.log = open(self.directory / "alertmanager.log", "wb")
        self.process = subprocess.Popen(self.argv, stdout=self.log, stderr=subprocess.STDOUT)
        wait_for(self._ready, timeout=30, what=lambda: f"Alertmanager ready at {self.url}:\n{self._log_tail()}")
        return self

    def __exit__(self, *exc) -> None:
        self.client.close()
        self.process.terminate()
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.log.close()

    def _ready(self) -> bool:
        if self.process.poll() is not None:
            pytest.fail(f"prometheus-alertmanager exited {self.process.returncode}:\n{self._log_tail()}")
        try:
            return self.client.get("/-/ready").status_code == 200
        except httpx.TransportError:
            return False

    def _log_tail(self) -> str:
        return (self.directory / "alertmanager.log").read_text(errors="replace")[-2000:]

    def config(self, **kw) -> AlertmanagerConfig:
        return AlertmanagerConfig(url=self.url, **kw)

    def fire(self, *alerts: dict) -> None:
        """POST alerts as Prometheus does: started two hours ago, ending unless re-sent in an hour."""
        now = datetime.now(UTC)
        body = [{"startsAt": _rfc3339(now - timedelta(hours=2)), "endsAt": _rfc3339(now + timedelta(hours=1)),
                 **a} for a in alerts]
        self.client.post("/api/v2/alerts", json=body).raise_for_status()

    def silence(self, comment: str, **equal: str) -> str:
        now = datetime.now(UTC)
        response = self.client.post("/api/v2/silences", json={
            "matchers": [{"name": k, "value": v, "isRegex": False, "isEqual": True} for k, v in equal.items()],
            "startsAt": _rfc3339(now - timedelta(minutes=1)), "endsAt": _rfc3339(now + timedelta(hours=1)),
            "createdBy": "maint tests", "comment": comment})
        response.raise_for_status()
        return response.json()["silenceID"]

    def settled(self, expected: dict[str, str], **config) -> list[dict]:
        """The alerts, once each alertname is in the `expected` state ("active", "silenced" or
        "inhibited"): Alertmanager processes new alerts and inhibitions asynchronously."""
        seen: list[dict] = []

        def states():
            seen[:] = list_alerts(self.config(**config))
            return {a["labels"]["alertname"]: _state(a) for a in seen} == expected and seen
        return wait_for(states, timeout=20, what=lambda: f"alert states {expected}, saw "
                        f"{ {a['labels']['alertname']: _state(a) for a in seen} }")


def _state(data: dict) -> str:
    status = data["status"]
    if status["silencedBy"]:
        return "silenced"
    if status["inhibitedBy"]:
        return "inhibited"
    return status["state"]


def _rfc3339(moment: datetime) -> str:
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


@system_fixture
def alertmanager(tmp_path):
    """A real Alertmanager of its own for each test: no alert of one test can reach another."""
    with AlertmanagerServer(tmp_path) as server:
        yield server


def _assess(server: AlertmanagerServer, alerts: list[dict], **config) -> list[Finding]:
    return assess_alerts(server.config(**config), alerts, datetime.now(UTC))


def summary_of(findings: list[Finding], server: AlertmanagerServer) -> str:
    assert (findings[-1].check, findings[-1].subject) == ("alertmanager", f"alertmanager 127.0.0.1:{server.port}")
    return findings[-1].message


def test_no_alerts_is_ok(alertmanager):
    findings = _assess(alertmanager, list_alerts(alertmanager.config()))
    assert [(f.check, f.subject, f.severity, f.message) for f in findings] == [
        ("alertmanager", f"alertmanager 127.0.0.1:{alertmanager.port}", Severity.OK, "no alerts")]


def test_a_critical_alert_is_a_critical_finding_with_its_labels_summary_duration_and_links(alertmanager):
    alertmanager.fire({"labels": {"alertname": "NodeDown", "severity": "critical", "instance": "db1:9100",
                                  "job": "node"},
                       "annotations": {"summary": "db1 is down", "runbook_url": RUNBOOK}, "generatorURL": GRAPH})
    findings = _assess(alertmanager, alertmanager.settled({"NodeDown": "active"}))
    assert [f.severity for f in findings] == [Severity.CRITICAL, Severity.OK]
    assert findings[0].subject == (f"alertmanager 127.0.0.1:{alertmanager.port} "
                                   'NodeDown{instance="db1:9100",job="node"}')
    assert findings[0].message.startswith('NodeDown{instance="db1:9100",job="node"} firing for 2h')
    assert findings[0].message.endswith("(severity critical): db1 is down")
    assert f"follow the runbook: {RUNBOOK}; the rule's graph in Prometheus: {GRAPH}" in findings[0].hint
    assert findings[1].message == "1 alert: 1 critical and 0 warning firing; 0 silenced and 0 inhibited (never paged)"


def test_a_warning_alert_is_a_warning_linking_alertmanager_without_a_generator(alertmanager):
    alertmanager.fire({"labels": {"alertname": "DiskFilling", "severity": "warning", "mountpoint": "/var"},
                       "annotations": {"description": "/var fills within 4h"}})
    findings = _assess(alertmanager, alertmanager.settled({"DiskFilling": "active"}))
    assert [f.severity for f in findings] == [Severity.WARNING, Severity.OK]
    assert findings[0].message.endswith("(severity warning): /var fills within 4h")
    assert f"see the alert in Alertmanager: {alertmanager.url}/#/alerts?filter=" in findings[0].hint


def test_a_silenced_alert_is_counted_never_a_problem(alertmanager):
    alertmanager.fire({"labels": {"alertname": "NodeDown", "severity": "critical", "instance": "db2:9100"}})
    alertmanager.silence("db2 is being replaced", alertname="NodeDown", instance="db2:9100")
    findings = _assess(alertmanager, alertmanager.settled({"NodeDown": "silenced"}))
    assert problems(findings) == []
    assert summary_of(findings, alertmanager).endswith("1 silenced and 0 inhibited (never paged)")


def test_an_inhibited_alert_is_counted_never_a_problem(alertmanager):
    # NodeDown (critical) on db1 inhibits db1's warnings, by the config's inhibit rule.
    alertmanager.fire({"labels": {"alertname": "NodeDown", "severity": "critical", "instance": "db1:9100"}},
                      {"labels": {"alertname": "HighLoad", "severity": "warning", "instance": "db1:9100"}},
                      {"labels": {"alertname": "HighLatency", "severity": "warning", "instance": "db3:9100"}})
    alerts = alertmanager.settled({"NodeDown": "active", "HighLoad": "inhibited", "HighLatency": "active"})
    findings = _assess(alertmanager, alerts)
    assert [(f.severity, f.message.split("{")[0]) for f in problems(findings)] == [
        (Severity.CRITICAL, "NodeDown"), (Severity.WARNING, "HighLatency")]
    assert summary_of(findings, alertmanager).endswith("1 critical and 1 warning firing; 0 silenced and 1 inhibited "
                                                       "(never paged)")


def test_matchers_are_alertmanagers_filter(alertmanager):
    alertmanager.fire({"labels": {"alertname": "QueueStuck", "severity": "critical", "team": "sre"}},
                      {"labels": {"alertname": "CheckoutSlow", "severity": "critical", "team": "web"}},
                      {"labels": {"alertname": "BackupLate", "severity": "warning", "team": "sre-db"}})
    alerts = alertmanager.settled({"QueueStuck": "active"}, matchers=['team="sre"'])
    findings = _assess(alertmanager, alerts, matchers=['team="sre"'])
    assert [f.message.split(" ")[0] for f in problems(findings)] == ['QueueStuck{team="sre"}']
    assert summary_of(findings, alertmanager).startswith('1 alert matching team="sre":')
    regex = alertmanager.settled({"QueueStuck": "active", "BackupLate": "active"}, matchers=['team=~"sre.*"'])
    assert len(regex) == 2


def test_an_info_alert_is_ignored_and_counted(alertmanager):
    alertmanager.fire({"labels": {"alertname": "Watchdog", "severity": "none"}},
                      {"labels": {"alertname": "CertRenewed", "severity": "info"}})
    findings = _assess(alertmanager, alertmanager.settled({"Watchdog": "active", "CertRenewed": "active"}))
    assert problems(findings) == []
    assert "2 ignored by severity (CertRenewed, Watchdog)" in summary_of(findings, alertmanager)


def test_a_bad_matcher_is_refused_naming_it(alertmanager):
    config = alertmanager.config(matchers=["team sre"])
    with pytest.raises(AlertmanagerError, match=r"refused the query \(400 Bad Request\): .*bad matcher") as caught:
        list_alerts(config)
    assert "fix the matchers ['team sre']" in caught.value.hint


@system_fixture
def closed_port():
    """A loopback port nothing listens on: connecting to it is refused by the real network stack."""
    return free_port()


def test_unreachable_is_critical_naming_the_url_without_credentials(closed_port):
    port = closed_port
    config = AlertmanagerConfig(url=f"http://maint:s3cret@127.0.0.1:{port}", timeout=timedelta(seconds=5))
    with pytest.raises(AlertmanagerError) as caught:
        list_alerts(config)
    finding = alertmanager_unreachable(config, caught.value)
    assert finding.severity is Severity.CRITICAL and finding.subject == f"alertmanager 127.0.0.1:{port}"
    assert finding.message.startswith(f"Alertmanager at http://127.0.0.1:{port} cannot be reached: ")
    assert "refused" in finding.message.lower()
    assert "s3cret" not in finding.message + finding.hint


@pytest.mark.parametrize("status, body, words", [
    (404, "404 page not found", r"answered 404 Not Found: is this Alertmanager older than 0\.16 \(no v2 API\), "
                                r"or the wrong URL\?"),
    (200, "<html>Grafana</html>", "answered 200 with something that is not JSON: '<html>Grafana</html>'"),
    (200, '{"status": "success"}', "answered JSON that is not a list of alerts"),
    (503, "starting", "answered 503 Service Unavailable: 'starting'"),
    (302, "", "answered 302 Found, a redirect to https://sso.example/login"),
])
def test_not_alertmanager_at_the_url(httpserver, status, body, words):
    headers = {"Location": "https://sso.example/login?next=/api"} if status == 302 else None
    httpserver.expect_request("/api/v2/alerts").respond_with_data(body, status=status, headers=headers,
                                                                  content_type="text/plain")
    with pytest.raises(AlertmanagerError, match=f"^Alertmanager at {httpserver.url_for('')[:-1]} {words}"):
        list_alerts(AlertmanagerConfig(url=httpserver.url_for("/")))


def test_the_query_asks_for_every_state_and_each_matcher(httpserver):
    httpserver.expect_request("/prefix/api/v2/alerts", query_string=(
        "active=true&silenced=true&inhibited=true&unprocessed=true&filter=team%3D%22sre%22"
        "&filter=severity%3D~%22critical%7Cpage%22")).respond_with_json([])
    url = httpserver.url_for("/prefix/")
    assert list_alerts(AlertmanagerConfig(url=url, matchers=['team="sre"', 'severity=~"critical|page"'])) == []


@system_fixture
def silent_server():
    """A socket that accepts connections (the kernel's backlog) and never answers."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(8)
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"


def test_no_answer_within_the_timeout(silent_server):
    config = AlertmanagerConfig(url=silent_server, timeout=timedelta(milliseconds=300))
    with pytest.raises(AlertmanagerError, match=rf"^Alertmanager at {silent_server} did not answer within 0\.3s"):
        list_alerts(config)


@system_fixture
def tls_alertmanager(tmp_path):
    ca = trustme.CA()
    ca.cert_pem.write_to_path(tmp_path / "ca.pem")
    with AlertmanagerServer(tmp_path, ca=ca) as server:
        server.ca_file = str(tmp_path / "ca.pem")
        yield server


def test_tls_trusts_the_ca_file_and_names_a_certificate_it_cannot_verify(tls_alertmanager):
    assert list_alerts(tls_alertmanager.config(ca_file=tls_alertmanager.ca_file)) == []
    with pytest.raises(AlertmanagerError, match=r": TLS error: .*(self.signed|unable to get local issuer)") as caught:
        list_alerts(tls_alertmanager.config())  # the system store does not hold the test's CA
    assert "ca_file" in caught.value.hint
    with pytest.raises(AlertmanagerError, match="cannot load ca_file"):
        list_alerts(tls_alertmanager.config(ca_file=str(tls_alertmanager.directory / "missing.pem")))


# --- through the health-check flow, as `maint run health-check` runs it --------------------------

def test_a_firing_alert_pages_once_and_resolves_when_it_stops_firing(prefect_harness, alertmanager, tmp_path, capsys,
                                                                    receivers):
    from tests.conftest import run_json
    from tests.test_notify import _bodies

    httpserver, _slack, notify = receivers
    config = tmp_path / "maint.toml"
    config.write_text(f"""
[notify]
page_on = ["critical"]
{notify}

[health_check]

[[health_check.alertmanager]]
url = "{alertmanager.url}"
""")
    node_down = {"labels": {"alertname": "NodeDown", "severity": "critical", "instance": "db1:9100"},
                 "annotations": {"summary": "db1 is down"}, "generatorURL": "http://prometheus:9090/graph?g0.expr=up"}
    alertmanager.fire(node_down, {"labels": {"alertname": "DiskFilling", "severity": "critical", "instance": "db2"}})
    alertmanager.silence("disk being replaced", alertname="DiskFilling")
    alertmanager.settled({"NodeDown": "active", "DiskFilling": "silenced"})

    code, report = run_json(capsys, config, "health-check")
    problems = [f for f in report["findings"] if f["severity"] != "ok"]
    assert code == 2 and [f["subject"] for f in problems] == [
        f'alertmanager 127.0.0.1:{alertmanager.port} NodeDown{{instance="db1:9100"}}'], problems
    assert "db1 is down" in problems[0]["message"] and "http://prometheus:9090/graph" in problems[0]["hint"]
    [trigger] = [e for e in _bodies(httpserver, "/v2/enqueue") if e["event_action"] == "trigger"]

    httpserver.clear_log()
    resolved = datetime.now(UTC) - timedelta(seconds=1)
    alertmanager.client.post("/api/v2/alerts", json=[{**node_down, "endsAt": _rfc3339(resolved)}]).raise_for_status()
    alertmanager.settled({"DiskFilling": "silenced"})
    code, report = run_json(capsys, config, "health-check")
    assert code == 0, [f for f in report["findings"] if f["severity"] != "ok"]
    assert [(e["event_action"], e["dedup_key"]) for e in _bodies(httpserver, "/v2/enqueue")] == [
        ("resolve", trigger["dedup_key"])]
