"""Notifications against real HTTP receivers: Slack webhook and the PagerDuty Events API v2."""

from __future__ import annotations

import json

import pytest
from werkzeug import Response

from maint.paging import dedup_key
from tests.conftest import run_cli, run_json, write_config

SLACK_ENV = "MAINT_TEST_SLACK_WEBHOOK_URL"
PD_ENV = "MAINT_TEST_PAGERDUTY_ROUTING_KEY"
ROUTING_KEY = "R0UT1NGKEY0123456789abcdef012345"


@pytest.fixture
def receivers(httpserver, monkeypatch):
    """Slack and PagerDuty on one local HTTP server; every request is recorded."""
    import logging

    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # the receiver's access log names the URL
    slack_path = "/services/T000/B000/s3cr3tw3bh00k"
    monkeypatch.setenv(SLACK_ENV, httpserver.url_for(slack_path))
    monkeypatch.setenv(PD_ENV, ROUTING_KEY)
    httpserver.expect_request(slack_path, method="POST").respond_with_data("ok")
    httpserver.expect_request("/v2/enqueue", method="POST").respond_with_json(
        {"status": "success", "message": "Event processed"}, status=202)
    notify = (f'slack_webhook_url_env = "{SLACK_ENV}"\npagerduty_routing_key_env = "{PD_ENV}"\n'
              f'pagerduty_events_url = "{httpserver.url_for("/v2/enqueue")}"')
    return httpserver, slack_path, notify


def _bodies(httpserver, path: str) -> list[dict]:
    return [json.loads(request.data) for request, _ in httpserver.log if request.path == path]


def _unique_store(tmp_path):
    store = tmp_path / "store"
    store.mkdir(exist_ok=True)
    return f"file://{store}/"


def test_critical_pages_once_per_key_then_resolves_when_ok(pg, db_password, prefect_harness, tmp_path, capsys,
                                                           receivers):
    from maint.tasks.postgres.server import free_port

    httpserver, slack_path, notify = receivers
    dead_port = free_port()
    broken = write_config(tmp_path / "broken.toml", pg, _unique_store(tmp_path), port=dead_port, notify=notify,
                          backup_extra="connect_attempts = 1")

    code, report = run_json(capsys, broken, "backup")

    assert code == 2
    expected_key = dedup_key("backup", "backup", f"127.0.0.1:{dead_port}/shop")
    [trigger] = _bodies(httpserver, "/v2/enqueue")
    assert trigger["event_action"] == "trigger" and trigger["routing_key"] == ROUTING_KEY
    assert trigger["dedup_key"] == expected_key
    assert trigger["payload"]["severity"] == "critical"
    assert trigger["payload"]["group"] == "backup" and trigger["payload"]["class"] == "backup"
    assert f"127.0.0.1:{dead_port}/shop" in trigger["payload"]["summary"]
    assert trigger["payload"]["custom_details"]["duty"] == "backup"
    [slack] = _bodies(httpserver, slack_path)
    assert "maint backup: CRITICAL" in slack["text"] and f"127.0.0.1:{dead_port}/shop" in slack["text"]
    for request, _ in httpserver.log:
        assert pg.password not in request.get_data(as_text=True)

    # The same database, now reachable under the same name: the page resolves itself.
    httpserver.clear_log()
    fixed = write_config(tmp_path / "fixed.toml", pg, _unique_store(tmp_path), port=dead_port, notify=notify)
    with _forward(dead_port, pg.port):
        code, report = run_json(capsys, fixed, "backup")
    assert code == 0, report
    events = _bodies(httpserver, "/v2/enqueue")
    assert [(e["event_action"], e["dedup_key"]) for e in events] == [("resolve", expected_key)]
    assert _bodies(httpserver, slack_path) == [], "an ok run does not post to Slack"

    # Resolved is remembered: a further ok run sends nothing.
    httpserver.clear_log()
    with _forward(dead_port, pg.port):
        assert run_json(capsys, fixed, "backup")[0] == 0
    assert _bodies(httpserver, "/v2/enqueue") == []


class _forward:
    """A TCP forwarder from `port` to PostgreSQL: the 'down' database comes back on its own port."""

    def __init__(self, listen_port: int, target_port: int, *, drop_first: int = 0):
        import socket
        import threading

        self.drop_first = drop_first  # connections closed at once, as by a server still starting
        self.accepted = 0
        self.listener = socket.create_server(("127.0.0.1", listen_port))
        self.target_port = target_port
        self.threads: list[threading.Thread] = []
        self.closing = False
        self.thread = threading.Thread(target=self._accept, daemon=True)

    def _accept(self) -> None:
        import socket
        import threading

        while not self.closing:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            self.accepted += 1
            if self.accepted <= self.drop_first:
                client.close()
                continue
            upstream = socket.create_connection(("127.0.0.1", self.target_port))
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(source, sink) -> None:
        try:
            while data := source.recv(65536):
                sink.sendall(data)
        except OSError:
            pass
        finally:
            for s in (source, sink):
                try:
                    s.shutdown(2)
                except OSError:
                    pass

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        import socket

        self.closing = True
        try:
            self.listener.shutdown(socket.SHUT_RDWR)  # wakes the accept() blocked in the thread
        except OSError:
            pass
        self.listener.close()
        self.thread.join(timeout=5)


def test_warning_goes_to_slack_but_does_not_page(prefect_harness, tmp_path, capsys, receivers):
    """page_on = ["critical"]: a warning-only report posts to Slack and sends no trigger."""
    from maint.config import NotifyConfig
    from maint.report import Finding, Report, Severity
    from maint.tasks.notify import notify_report

    httpserver, slack_path, notify = receivers
    config = NotifyConfig(slack_webhook_url_env=SLACK_ENV, pagerduty_routing_key_env=PD_ENV,
                          pagerduty_events_url=httpserver.url_for("/v2/enqueue"))
    report = Report("health-check", started_at=__import__("datetime").datetime.now())
    report.add(Finding("connections", "db:5432/app", Severity.WARNING, "81% of usable connections in use",
                       "look for connection leaks"))
    notify_report(report, config, "http://prefect.example/flow-runs/flow-run/123")
    [slack] = _bodies(httpserver, slack_path)
    assert "[warning] connections `db:5432/app`: 81% of usable connections in use" in slack["text"]
    assert "http://prefect.example/flow-runs/flow-run/123" in slack["text"]
    assert _bodies(httpserver, "/v2/enqueue") == []


def test_undeliverable_notification_fails_the_run_loudly(pg, db_password, prefect_harness, tmp_path, capsys, caplog,
                                                         httpserver, monkeypatch):
    from maint.tasks.postgres.server import free_port

    import logging

    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # the receiver's access log names the URL
    slack_path = "/services/T000/B000/unreachable"
    monkeypatch.setenv(SLACK_ENV, httpserver.url_for(slack_path))
    httpserver.expect_request(slack_path).respond_with_response(Response("no", status=500))
    config = write_config(tmp_path / "maint.toml", pg, _unique_store(tmp_path), port=free_port(),
                          notify=f'slack_webhook_url_env = "{SLACK_ENV}"', backup_extra="connect_attempts = 1")

    caplog.set_level(logging.DEBUG)
    code, out, err = run_cli(capsys, "--config", str(config), "run", "backup")

    assert code == 3, "a report nobody received is not a completed duty"
    assert f"Slack webhook (${SLACK_ENV})" in err and "HTTP 500" in err
    assert slack_path not in err + out + caplog.text, "the webhook URL is a secret"
    # Four tries for the report, then four more from the on_failure hook reporting the failed run.
    assert len([r for r, _ in httpserver.log if r.path == slack_path]) == 8, "retried, then gave up"


def test_failed_flow_run_pages_through_the_hook(pg, db_password, prefect_harness, tmp_path, receivers):
    """A run that raises before it can report (here: the config lost its [backup] section after
    the deployment was made) pages on its own, and a later good run resolves that page."""
    from maint.flows.backup import backup

    httpserver, slack_path, notify = receivers
    config = tmp_path / "maint.toml"
    config.write_text(f"[notify]\n{notify}\n")

    state = backup(config_path=str(config), return_state=True)

    assert state.is_failed()
    [trigger] = _bodies(httpserver, "/v2/enqueue")
    assert trigger["event_action"] == "trigger"
    assert trigger["dedup_key"] == dedup_key("backup", "flow-run", "backup")
    assert "[backup]" in trigger["payload"]["summary"]
    [slack] = _bodies(httpserver, slack_path)
    assert "RUN FAILED" in slack["text"]

    httpserver.clear_log()
    good = write_config(tmp_path / "good.toml", pg, _unique_store(tmp_path), notify=notify)
    assert backup(config_path=str(good), return_state=True).is_completed()
    events = _bodies(httpserver, "/v2/enqueue")
    assert ("resolve", dedup_key("backup", "flow-run", "backup")) in [(e["event_action"], e["dedup_key"]) for e in events]


# --- delivery failures: paging never depends on Slack, and what was delivered is remembered -------

def _report(duty: str, subjects: list[str]):
    from datetime import datetime, timezone

    from maint.report import Finding, Report, Severity

    report = Report(duty=duty, started_at=datetime.now(timezone.utc))
    for subject in subjects:
        report.add(Finding("pods", subject, Severity.CRITICAL, "CrashLoopBackOff", "kubectl logs --previous"))
    return report


def _notify_config(httpserver, slack_path: str | None = None):
    from maint.config import NotifyConfig

    return NotifyConfig(slack_webhook_url_env=SLACK_ENV if slack_path else None, pagerduty_routing_key_env=PD_ENV,
                        pagerduty_events_url=httpserver.url_for("/v2/enqueue"), timeout="2s")


@pytest.fixture
def revoked_slack(httpserver, monkeypatch):
    """Slack answering 403 as for a revoked webhook; PagerDuty accepting every event."""
    slack_path = "/services/T000/B000/revoked"
    monkeypatch.setenv(SLACK_ENV, httpserver.url_for(slack_path))
    monkeypatch.setenv(PD_ENV, ROUTING_KEY)
    httpserver.expect_request(slack_path, method="POST").respond_with_data("invalid_token", status=403)
    httpserver.expect_request("/v2/enqueue", method="POST").respond_with_json({"status": "success"}, status=202)
    return _notify_config(httpserver, slack_path)


def test_a_revoked_slack_webhook_does_not_keep_on_call_from_being_paged(prefect_harness, httpserver, revoked_slack):
    from maint.errors import NotificationError
    from maint.tasks.notify import notify_report
    from maint.tasks.state import load_open_pages

    with pytest.raises(NotificationError, match=f"Slack webhook \\(\\${SLACK_ENV}\\).*HTTP 403"):
        notify_report(_report("slack-revoked", ["shop/web-1"]), revoked_slack, None)

    [trigger] = _bodies(httpserver, "/v2/enqueue")
    assert trigger["event_action"] == "trigger"
    assert load_open_pages("slack-revoked") == [dedup_key("slack-revoked", "pods", "shop/web-1")]


def test_pages_delivered_before_pagerduty_refused_one_are_remembered(prefect_harness, httpserver, monkeypatch):
    from maint.errors import NotificationError
    from maint.tasks.notify import notify_report
    from maint.tasks.state import load_open_pages

    monkeypatch.setenv(PD_ENV, ROUTING_KEY)
    accepted = []

    def pagerduty(request):
        if len(accepted) == 2:
            return Response('{"status": "invalid event"}', status=400, content_type="application/json")
        accepted.append(json.loads(request.data)["dedup_key"])
        return Response('{"status": "success"}', status=202, content_type="application/json")

    httpserver.expect_request("/v2/enqueue", method="POST").respond_with_handler(pagerduty)
    subjects = ["shop/web-1", "shop/web-2", "shop/web-3"]

    with pytest.raises(NotificationError, match="HTTP 400"):
        notify_report(_report("pd-refused", subjects), _notify_config(httpserver), None)

    assert len(accepted) == 2
    assert load_open_pages("pd-refused") == sorted(accepted), "delivered pages will be resolved by a later run"


def test_a_failed_run_pages_even_when_slack_is_revoked(prefect_harness, httpserver, revoked_slack):
    from maint.errors import NotificationError
    from maint.tasks.notify import notify_run_failure
    from maint.tasks.state import load_open_pages

    with pytest.raises(NotificationError, match="HTTP 403"):
        notify_run_failure("crashed-duty", revoked_slack, "flow run crashed", None)

    [trigger] = _bodies(httpserver, "/v2/enqueue")
    assert trigger["event_action"] == "trigger" and "flow run crashed" in trigger["payload"]["summary"]
    assert load_open_pages("crashed-duty") == [dedup_key("crashed-duty", "flow-run", "crashed-duty")]
