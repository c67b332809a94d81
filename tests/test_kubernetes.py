"""Kubernetes pods: kubectl's STATUS column from real pod JSON shapes, the pure decision with a
fixed `now`, and `maint.tasks.kubernetes.list_pods` with the real client against a local API server."""

from __future__ import annotations

import copy
import socket
import ssl
import time
from datetime import timedelta

import pytest

from maint.errors import KubernetesError
from maint.pods import PodInfo, assess_pods, kubectl_status, pod_info_from_json
from maint.report import Severity
from tests.k8s_server import (NOW, ago, container, pod, pods_in_every_state, running, terminated, unscheduled,
                              waiting, write_kubeconfig)

STATES = pods_in_every_state("shop")
UP = ago(hours=3)


def _extra_shapes() -> dict[str, dict]:
    """Shapes beyond the everyday states: kubectl's rarer branches."""
    job = ("Job", "nightly-report-28977120")
    return {
        "exit-code-no-reason": pod("batch-a", phase="Failed", owner=None, restart_policy="Never", containers=[
            container("main", terminated(None, 137, ago(hours=1), ago(minutes=59)), ready=False)]),
        "signal-no-reason": pod("batch-b", phase="Failed", owner=None, restart_policy="Never", containers=[
            container("main", terminated(None, 137, ago(hours=1), ago(minutes=59), signal=9), ready=False)]),
        "init-error": pod("shop-init-err", phase="Failed", restart_policy="Never", init_containers=[
            container("migrate", terminated("Error", 1, ago(minutes=9), ago(minutes=8)), ready=False)],
            containers=[container("shop", waiting("PodInitializing"), ready=False)]),
        "init-exit-code": pod("shop-init-code", phase="Pending", init_containers=[
            container("migrate", terminated(None, 3, ago(minutes=9), ago(minutes=8)), ready=False)],
            containers=[container("shop", waiting("PodInitializing"), ready=False)]),
        "init-signal": pod("shop-init-sig", phase="Pending", init_containers=[
            container("migrate", terminated(None, 143, ago(minutes=9), ago(minutes=8), signal=15), ready=False)],
            containers=[container("shop", waiting("PodInitializing"), ready=False)]),
        "init-1-of-2": pod("shop-init-1", phase="Pending", created=ago(minutes=1), init_containers=[
            container("wait-for-db", terminated("Completed", 0, ago(seconds=55), ago(seconds=40)), ready=False),
            container("migrate", running(ago(seconds=39)), ready=False)],
            containers=[container("shop", waiting("PodInitializing"), ready=False)]),
        "container-creating": pod("web-new", phase="Pending", created=ago(seconds=30), containers=[
            container("web", waiting("ContainerCreating"), ready=False)]),
        "sidecar-running": pod("mesh-app", phase="Running", sidecars=("proxy",), init_containers=[
            container("proxy", running(UP), ready=True, image="docker.io/envoyproxy/envoy:v1.33.0")],
            containers=[container("app", running(UP), ready=True)]),
        "sidecar-not-started": pod("mesh-app-new", phase="Pending", created=ago(seconds=10), sidecars=("proxy",),
                                   init_containers=[container("proxy", waiting("PodInitializing"), ready=False)],
                                   containers=[container("app", waiting("PodInitializing"), ready=False)]),
        "completed-container-ready-pod": pod("etl-ready", phase="Running", ready=True, containers=[
            container("etl", running(UP), ready=True),
            container("fetch", terminated("Completed", 0, UP, ago(hours=1)), ready=False)]),
        "node-lost": pod("web-lost", phase="Running", reason="NodeLost", deleted=ago(minutes=40),
                         message="Node worker-3 which was running pod web-lost is unresponsive",
                         node="worker-3", containers=[container("web", running(UP), ready=True)]),
        "terminating-crash-loop": pod("worker-going", phase="Running", deleted=NOW + timedelta(seconds=20), containers=[
            container("worker", waiting("CrashLoopBackOff"), ready=False, restarts=4,
                      last_state=terminated("Error", 1, ago(minutes=3), ago(minutes=2)))]),
        "succeeded-being-deleted": pod("job-done-deleted", phase="Succeeded", owner=job, deleted=ago(minutes=1),
                                       restart_policy="OnFailure", containers=[
                                           container("report", terminated("Completed", 0, ago(hours=8), ago(hours=7)),
                                                     ready=False)]),
        "scheduling-gated": pod("gated-0", phase="Pending", node=None, scheduled=False, created=ago(hours=1),
                                containers=[unscheduled("app")], conditions=[{
                                    "type": "PodScheduled", "status": "False", "lastProbeTime": None,
                                    "lastTransitionTime": "2025-03-14T08:30:00Z", "reason": "SchedulingGated",
                                    "message": "Scheduling is blocked due to non-empty scheduling gates"}]),
        "evicted": pod("web-evicted", phase="Failed", reason="Evicted", message="The node was low on resource: "
                       "memory. Threshold quantity: 100Mi, available: 85Mi.", containers=[]),
        "oom-killed": pod("batch-oom", phase="Failed", owner=None, restart_policy="Never", containers=[
            container("main", terminated("OOMKilled", 137, ago(hours=1), ago(minutes=59)), ready=False)]),
        "job-failed": pod("nightly-report-28977120-a1b2c", phase="Failed", owner=job, created=ago(hours=9),
                          restart_policy="Never", containers=[container("report", terminated(
                              "Error", 1, ago(hours=9), ago(hours=8, minutes=59)), ready=False)]),
        "stuck-terminating": pod("web-stuck", phase="Running", deleted=ago(minutes=20),
                                 containers=[container("web", running(UP), ready=True)]),
    }


EXTRA = _extra_shapes()
for _body in EXTRA.values():
    _body["metadata"]["namespace"] = "shop"

# (shape, kubectl STATUS, READY, RESTARTS) as `kubectl get pods` prints them.
KUBECTL = [
    ("running-ready", "Running", "1/1", 0),
    ("running-not-ready", "Running", "0/1", 0),
    ("crash-loop", "CrashLoopBackOff", "0/1", 7),
    ("image-pull-backoff", "ImagePullBackOff", "0/1", 0),
    ("err-image-pull", "ErrImagePull", "0/1", 0),
    ("create-container-config-error", "CreateContainerConfigError", "0/1", 0),
    ("error", "Error", "0/1", 0),
    ("completed", "Completed", "0/1", 0),
    ("job-completed", "Completed", "0/1", 0),
    ("pending-20m", "Pending", "0/1", 0),
    ("pending-2m", "Pending", "0/1", 0),
    ("init-0-of-2", "Init:0/2", "0/1", 0),
    ("init-crash-loop", "Init:CrashLoopBackOff", "0/1", 6),
    ("terminating", "Terminating", "1/1", 0),
    ("restarts-over-max", "Running", "1/1", 9),
    ("not-ready-completed-container", "NotReady", "1/2", 0),
    ("exit-code-no-reason", "ExitCode:137", "0/1", 0),
    ("signal-no-reason", "Signal:9", "0/1", 0),
    ("init-error", "Init:Error", "0/1", 0),
    ("init-exit-code", "Init:ExitCode:3", "0/1", 0),
    ("init-signal", "Init:Signal:15", "0/1", 0),
    ("init-1-of-2", "Init:1/2", "0/1", 0),
    ("container-creating", "ContainerCreating", "0/1", 0),
    ("sidecar-running", "Running", "2/2", 0),
    ("sidecar-not-started", "Init:0/1", "0/2", 0),
    ("completed-container-ready-pod", "Running", "1/2", 0),
    ("node-lost", "Unknown", "1/1", 0),
    ("terminating-crash-loop", "Terminating", "0/1", 4),
    ("succeeded-being-deleted", "Completed", "0/1", 0),
    ("scheduling-gated", "SchedulingGated", "0/1", 0),
    ("evicted", "Evicted", "0/0", 0),
    ("oom-killed", "OOMKilled", "0/1", 0),
]


def shape(name: str) -> dict:
    return copy.deepcopy(STATES.get(name) or EXTRA[name])


def info(name: str) -> PodInfo:
    return pod_info_from_json(shape(name))


@pytest.mark.parametrize(("name", "status", "ready", "restarts"), KUBECTL, ids=[row[0] for row in KUBECTL])
def test_kubectl_status_ready_and_restarts(name, status, ready, restarts):
    assert kubectl_status(shape(name)) == status
    pod_info = info(name)
    assert (pod_info.display_status, pod_info.ready, pod_info.restarts) == (status, ready, restarts)


def test_pod_info_carries_what_the_message_needs():
    crash = info("crash-loop")
    assert crash.namespace == "shop" and crash.name == "worker-6c8f7d9b5-p9z4m"
    assert crash.phase == "Running" and crash.node == "worker-1"
    assert crash.created_at == ago(hours=3) and crash.created_at.tzinfo is not None
    assert crash.owner_kinds == ("ReplicaSet",) and crash.job_name is None
    assert crash.container == "worker"
    assert crash.last_restart_reason == "Error, exit code 1" and crash.last_restart_at == ago(minutes=2)
    assert crash.not_ready_since == ago(hours=2) and not crash.deletion_requested

    job = info("job-completed")
    assert job.owner_kinds == ("Job",) and job.job_name == "nightly-report-28977120"
    assert info("pending-20m").node is None
    assert info("terminating").deletion_requested and info("terminating").deletion_requested_at == NOW + timedelta(seconds=25)
    assert info("restarts-over-max").last_restart_reason == "OOMKilled, exit code 137"


def test_pod_json_that_is_not_a_pod_is_refused():
    with pytest.raises(KeyError):
        pod_info_from_json({"metadata": {"name": "x"}})


# --- the decision --------------------------------------------------------------------------------

# (shape, flagged severity or None) with now=NOW, max_restarts=5, the default graces.
DECISIONS = [
    ("running-ready", None),
    ("running-not-ready", Severity.WARNING),  # not ready for 30m
    ("running-not-ready-just-started", None),  # not ready for 35s: a fresh pod of a rollout
    ("crash-loop", Severity.CRITICAL),
    ("image-pull-backoff", Severity.CRITICAL),
    ("err-image-pull", Severity.CRITICAL),
    ("create-container-config-error", Severity.CRITICAL),
    ("error", Severity.CRITICAL),
    ("completed", None),
    ("job-completed", None),
    ("pending-20m", Severity.WARNING),
    ("pending-2m", None),
    ("init-0-of-2", None),  # initialising for a minute
    ("init-crash-loop", Severity.CRITICAL),
    ("terminating", None),  # deletion just requested
    ("restarts-over-max", Severity.WARNING),
    ("not-ready-completed-container", Severity.WARNING),
    ("exit-code-no-reason", Severity.CRITICAL),
    ("signal-no-reason", Severity.CRITICAL),
    ("init-error", Severity.CRITICAL),
    ("init-exit-code", Severity.CRITICAL),
    ("container-creating", None),
    ("sidecar-running", None),
    ("completed-container-ready-pod", Severity.WARNING),  # Running, 1/2 ready: the finished container
    ("node-lost", Severity.WARNING),
    ("terminating-crash-loop", None),  # going away: its replacement is what counts
    ("succeeded-being-deleted", None),
    ("scheduling-gated", Severity.WARNING),  # Pending for an hour
    ("evicted", None),  # its controller replaced it
    ("oom-killed", Severity.CRITICAL),
    ("job-failed", Severity.CRITICAL),  # no later attempt succeeded
    ("stuck-terminating", Severity.WARNING),  # deletion requested 20m ago
]


@pytest.mark.parametrize(("name", "severity"), DECISIONS, ids=[row[0] for row in DECISIONS])
def test_assess_pods_flags_each_rule(name, severity):
    pod_info = info(name)
    findings = assess_pods([pod_info], NOW, max_restarts=5)
    flagged = [f for f in findings if f.subject == f"shop/{pod_info.name}"]
    summary = [f for f in findings if f.subject == "namespace shop"]
    assert [f.severity for f in flagged] == ([severity] if severity else [])
    assert len(summary) == 1 and summary[0].severity is Severity.OK
    assert summary[0].message == f"1 pods, {len(flagged)} flagged"


@pytest.mark.parametrize(("now", "flagged"), [(NOW - timedelta(minutes=5, seconds=1), False),  # 14m59s old
                                              (NOW - timedelta(minutes=4, seconds=59), True)])  # 15m01s old
def test_pending_grace_boundary(now, flagged):
    findings = assess_pods([info("pending-20m")], now, max_restarts=5)
    assert any(f.severity is Severity.WARNING for f in findings) is flagged


@pytest.mark.parametrize(("max_restarts", "flagged"), [(8, True), (9, False), (10, False)])
def test_restarts_above_max_restarts(max_restarts, flagged):
    findings = assess_pods([info("restarts-over-max")], NOW, max_restarts=max_restarts)
    assert any(f.severity is Severity.WARNING for f in findings) is flagged


def test_grace_periods_are_parameters_and_now_is_the_only_clock():
    pending = info("pending-2m")
    assert assess_pods([pending], NOW, 5)[0].subject == "namespace shop"
    later = assess_pods([pending], NOW + timedelta(minutes=20), 5)
    assert later[0].subject == "shop/search-1" and later[0].severity is Severity.WARNING
    assert assess_pods([pending], NOW, 5, pending_grace=timedelta(minutes=1))[0].severity is Severity.WARNING
    fresh = info("running-not-ready-just-started")
    assert assess_pods([fresh], NOW, 5, not_ready_grace=timedelta(seconds=10))[0].severity is Severity.WARNING


def test_failed_job_attempt_is_not_flagged_once_a_later_attempt_completed():
    failed, completed = info("job-failed"), info("job-completed")  # same Job; the success came later
    findings = assess_pods([failed, completed], NOW, 5)
    assert [f.subject for f in findings] == ["namespace shop"]
    assert findings[0].message == "2 pods, 0 flagged"
    # Alone, the failed attempt is critical and says where to look.
    alone = assess_pods([failed], NOW, 5)[0]
    assert alone.severity is Severity.CRITICAL
    assert "kubectl -n shop describe job nightly-report-28977120" in alone.hint


def test_a_finding_says_what_was_seen_and_what_to_do():
    crash = assess_pods([info("crash-loop")], NOW, 5)[0]
    assert crash.check == "pods" and crash.subject == "shop/worker-6c8f7d9b5-p9z4m"
    assert crash.message == ("CrashLoopBackOff in container worker; 7 restarts, more than max_restarts 5 — "
                             "status CrashLoopBackOff, ready 0/1, restarts 7 (last 2m ago: Error, exit code 1), "
                             "age 3h, node worker-1")
    assert crash.hint == ("kubectl -n shop logs worker-6c8f7d9b5-p9z4m -c worker --previous; "
                          "kubectl -n shop describe pod worker-6c8f7d9b5-p9z4m")

    pending = assess_pods([info("pending-20m")], NOW, 5)[0]
    assert pending.message == ("Pending for 20m (more than 15m) — status Pending, ready 0/1, restarts 0, "
                               "age 20m, node none (not scheduled)")
    assert pending.hint.startswith("kubectl -n shop describe pod search-0: read its Events (FailedScheduling")

    image = assess_pods([info("image-pull-backoff")], NOW, 5)[0]
    assert "does the image name and tag exist" in image.hint
    config = assess_pods([info("create-container-config-error")], NOW, 5)[0]
    assert "ConfigMap or Secret" in config.hint
    restarts = assess_pods([info("restarts-over-max")], NOW, 5)[0]
    assert "restarts 9 (last 50m ago: OOMKilled, exit code 137)" in restarts.message
    assert restarts.hint == "kubectl -n shop logs cache-0 --previous: why does it restart?"
    error = assess_pods([info("error")], NOW, 5)[0]
    assert error.hint.startswith("kubectl -n shop logs migrate-schema -c migrate; ")  # not restarted: no --previous


def test_one_summary_per_namespace_including_configured_empty_ones():
    pods = [info(name) for name in STATES]
    other = pod_info_from_json(pod("web-1", namespace="payments", phase="Running",
                                   containers=[container("web", running(UP), ready=True)]))
    findings = assess_pods(pods + [other], NOW, 5, namespaces=["shop", "payments", "quiet"])
    summaries = {f.subject: f.message for f in findings if f.subject.startswith("namespace ")}
    assert summaries == {"namespace shop": f"{len(STATES)} pods, 10 flagged",
                         "namespace payments": "1 pods, 0 flagged", "namespace quiet": "0 pods, 0 flagged"}
    assert all(f.severity is Severity.OK for f in findings if f.subject.startswith("namespace "))
    flagged = [f.subject for f in findings if not f.subject.startswith("namespace ")]
    assert flagged == sorted(flagged) and len(flagged) == 10
    assert findings[-3:] == [f for f in findings if f.subject.startswith("namespace ")]  # problems first


# --- listing with the real client ----------------------------------------------------------------

TOKEN = "kube-token-9f8e7d6c5b4a"


@pytest.fixture
def kube_env(monkeypatch, tmp_path):
    """No ambient configuration: HOME is empty, not in a cluster."""
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.delenv("KUBECONFIG", raising=False)
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    monkeypatch.delenv("KUBERNETES_SERVICE_PORT", raising=False)
    return tmp_path


@pytest.fixture
def cluster(kube_env, monkeypatch, kube_api):
    payments = [pod(f"payments-api-6d5c4b3a2-{i}", namespace="payments", phase="Running",
                    containers=[container("api", running(UP), ready=True)]) for i in range(3)]
    with kube_api({"shop": list(STATES.values()), "payments": payments, "empty": []}, token=TOKEN) as server:
        monkeypatch.setenv("KUBECONFIG", str(write_kubeconfig(kube_env / "kubeconfig", {"prod": (server.url, TOKEN)})))
        yield server


def test_list_pods_in_several_namespaces_with_the_token(cluster):
    from maint.tasks.kubernetes import list_pods

    pods = list_pods(["shop", "payments", "empty"])
    assert [p.namespace for p in pods] == ["shop"] * len(STATES) + ["payments"] * 3
    by_name = {p.name: p for p in pods}
    for body in STATES.values():
        assert by_name[body["metadata"]["name"]] == pod_info_from_json(body)
    listed = cluster.pod_list_requests()
    assert {r.path for r in listed} == {"/api/v1/namespaces/shop/pods", "/api/v1/namespaces/payments/pods",
                                        "/api/v1/namespaces/empty/pods"}
    assert all(r.authorization == f"Bearer {TOKEN}" for r in cluster.requests)
    assert all(r.query.get("limit") == "500" for r in listed)
    # The empty list was checked against the namespace itself, and only that one.
    assert [r.path for r in cluster.requests if not r.path.endswith("/pods")] == ["/api/v1/namespaces/empty"]
    findings = assess_pods(pods, NOW, 5, namespaces=["shop", "payments", "empty"])
    assert sum(f.severity is Severity.CRITICAL for f in findings) == 6


def test_a_thousand_pods_are_listed_quickly_in_pages(kube_api, kube_env, monkeypatch):
    from maint.tasks.kubernetes import list_pods

    template = STATES["crash-loop"]
    many = []
    for i in range(1000):
        body = copy.deepcopy(template)
        body["metadata"]["name"] = f"worker-6c8f7d9b5-{i:05d}"
        body["metadata"]["namespace"] = "big"
        many.append(body)
    with kube_api({"big": many[:700], "small": many[700:]}, token=TOKEN) as server:
        monkeypatch.setenv("KUBECONFIG", str(write_kubeconfig(kube_env / "kubeconfig", {"prod": (server.url, TOKEN)})))
        started = time.perf_counter()
        pods = list_pods(["big", "small"])
        elapsed = time.perf_counter() - started
    assert len(pods) == 1000 and len({p.name for p in pods}) == 1000
    assert all(p.display_status == "CrashLoopBackOff" and p.restarts == 7 for p in pods)
    pages = [r.query.get("continue") for r in server.pod_list_requests()]
    assert sorted(pages, key=str) == sorted([None, "500", None], key=str)  # big: 2 pages, small: 1
    assert elapsed < 3.0, f"listing 1,000 pods took {elapsed:.2f}s"


def test_context_picks_the_cluster(kube_api, kube_env, monkeypatch):
    from maint.tasks.kubernetes import list_pods, load_configuration

    prod_pod = pod("web-prod", namespace="shop", phase="Running", containers=[container("web", running(UP), ready=True)])
    staging_pod = pod("web-staging", namespace="shop", phase="Running",
                      containers=[container("web", running(UP), ready=True)])
    with kube_api({"shop": [prod_pod]}, token="prod-token-1") as prod, \
            kube_api({"shop": [staging_pod]}, token="staging-token-2") as staging:
        path = write_kubeconfig(kube_env / "kubeconfig", {"prod": (prod.url, "prod-token-1"),
                                                          "staging": (staging.url, "staging-token-2")}, current="prod")
        monkeypatch.setenv("KUBECONFIG", str(path))
        assert [p.name for p in list_pods(["shop"])] == ["web-prod"]
        assert [p.name for p in list_pods(["shop"], context="staging")] == ["web-staging"]
        assert load_configuration("staging").host == staging.url and load_configuration(None).host == prod.url


def test_kubeconfig_is_read_at_call_time_and_the_client_default_is_untouched(kube_api, kube_env, monkeypatch):
    from kubernetes import client

    from maint.tasks.kubernetes import list_pods

    before = client.Configuration._default
    with kube_api({"shop": [STATES["running-ready"]]}) as first, kube_api({"shop": []}) as second:
        monkeypatch.setenv("KUBECONFIG", str(write_kubeconfig(kube_env / "one", {"a": (first.url, "t1")})))
        assert len(list_pods(["shop"])) == 1
        monkeypatch.setenv("KUBECONFIG", str(write_kubeconfig(kube_env / "two", {"b": (second.url, "t2")})))
        assert list_pods(["shop"]) == []
    assert client.Configuration._default is before


def test_home_kube_config_is_used_without_kubeconfig(kube_api, kube_env):
    from maint.tasks.kubernetes import list_pods

    with kube_api({"shop": [STATES["running-ready"]]}, token=TOKEN) as server:
        (kube_env / ".kube").mkdir()
        write_kubeconfig(kube_env / ".kube" / "config", {"home": (server.url, TOKEN)})
        assert [p.name for p in list_pods(["shop"])] == ["web-7d4b9c6f5d-x2x7q"]


def test_in_cluster_service_account(kube_api, kube_env, monkeypatch):
    import trustme
    from kubernetes.config import incluster_config

    from maint.tasks.kubernetes import list_pods

    ca = trustme.CA()
    tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(tls)
    account = kube_env / "serviceaccount"
    account.mkdir()
    (account / "token").write_text("in-cluster-token-abc")
    ca.cert_pem.write_to_path(str(account / "ca.crt"))
    monkeypatch.setattr(incluster_config, "SERVICE_TOKEN_FILENAME", str(account / "token"))
    monkeypatch.setattr(incluster_config, "SERVICE_CERT_FILENAME", str(account / "ca.crt"))
    with kube_api({"shop": [STATES["running-ready"]]}, token="in-cluster-token-abc", tls=tls) as server:
        monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "127.0.0.1")
        monkeypatch.setenv("KUBERNETES_SERVICE_PORT", str(server.port))
        assert [p.name for p in list_pods(["shop"])] == ["web-7d4b9c6f5d-x2x7q"]
        assert server.requests[0].authorization.lower() == "bearer in-cluster-token-abc"


def test_unreachable_api_is_one_error_naming_the_server(kube_env, monkeypatch):
    from maint.tasks.kubernetes import list_pods

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    url = f"http://127.0.0.1:{port}"
    monkeypatch.setenv("KUBECONFIG", str(write_kubeconfig(kube_env / "kubeconfig", {"prod": (url, TOKEN)})))
    started = time.perf_counter()
    with pytest.raises(KubernetesError) as caught:
        list_pods(["shop", "payments"])
    assert time.perf_counter() - started < 5
    message = str(caught.value)
    assert message == f"cannot reach the Kubernetes API at {url} (namespace 'shop'): connection refused"
    assert TOKEN not in message


def test_wrong_token_is_refused_without_printing_it(kube_api, kube_env, monkeypatch):
    from maint.tasks.kubernetes import list_pods

    wrong = "wrong-token-0123456789"
    with kube_api({"shop": []}, token=TOKEN) as server:
        monkeypatch.setenv("KUBECONFIG", str(write_kubeconfig(kube_env / "kubeconfig", {"prod": (server.url, wrong)})))
        with pytest.raises(KubernetesError) as caught:
            list_pods(["shop"])
    message = str(caught.value)
    assert message.startswith(f"the Kubernetes API at {server.url} (namespace 'shop') refused our credentials "
                              "(401 Unauthorized)")
    assert wrong not in message and TOKEN not in message
    assert server.requests[0].authorization == f"Bearer {wrong}"


def test_rbac_forbidden_names_the_namespace(cluster):
    from maint.tasks.kubernetes import list_pods

    cluster.fail["payments"] = 403
    with pytest.raises(KubernetesError) as caught:
        list_pods(["shop", "payments"])
    message = str(caught.value)
    assert f"{cluster.url} (namespace 'payments')" in message and "403 Forbidden" in message
    assert 'cannot list resource "pods"' in message


def test_server_error_is_an_error(cluster):
    from maint.tasks.kubernetes import list_pods

    cluster.fail["shop"] = 500
    with pytest.raises(KubernetesError, match=r"answered 500 .*etcdserver: request timed out"):
        list_pods(["shop"])


def test_unknown_namespace_is_an_error_naming_it(cluster):
    from maint.tasks.kubernetes import list_pods

    with pytest.raises(KubernetesError) as caught:
        list_pods(["shop", "shpo"])
    assert str(caught.value) == (f"namespace 'shpo' does not exist on {cluster.url}: "
                                 "check [health_check.kubernetes].namespaces and the context")


def test_empty_namespace_is_trusted_when_namespaces_cannot_be_read(kube_api, kube_env, monkeypatch):
    from maint.tasks.kubernetes import list_pods

    with kube_api({"shop": []}, token=TOKEN, forbid_namespace_read=True) as server:
        monkeypatch.setenv("KUBECONFIG", str(write_kubeconfig(kube_env / "kubeconfig", {"prod": (server.url, TOKEN)})))
        assert list_pods(["shop", "maybe-a-typo"]) == []


def test_slow_api_times_out(kube_api, kube_env, monkeypatch):
    from maint.tasks.kubernetes import list_pods

    with kube_api({"shop": []}, delay=3.0) as server:
        monkeypatch.setenv("KUBECONFIG", str(write_kubeconfig(kube_env / "kubeconfig", {"prod": (server.url, TOKEN)})))
        started = time.perf_counter()
        with pytest.raises(KubernetesError) as caught:
            list_pods(["shop"], timeout_seconds=0.5)
        elapsed = time.perf_counter() - started
    assert str(caught.value) == f"cannot reach the Kubernetes API at {server.url} (namespace 'shop'): no answer within 0.5s"
    assert elapsed < 2.5
    assert len(server.requests) == 1  # a request that was sent is not retried


def test_no_configuration_anywhere(kube_env):
    from maint.tasks.kubernetes import list_pods

    with pytest.raises(KubernetesError) as caught:
        list_pods(["shop"])
    assert str(caught.value) == (f"no Kubernetes configuration: ~/.kube/config ({kube_env}/.kube/config) does not "
                                 "exist and this is not a pod in a cluster (KUBERNETES_SERVICE_HOST is unset)")


def test_kubeconfig_named_but_missing(kube_env, monkeypatch):
    from maint.tasks.kubernetes import list_pods

    monkeypatch.setenv("KUBECONFIG", str(kube_env / "nope.yaml"))
    with pytest.raises(KubernetesError, match=r"\$KUBECONFIG \(.*nope.yaml\) does not exist"):
        list_pods(["shop"])


def test_unknown_context_is_an_error_naming_it(cluster):
    from maint.tasks.kubernetes import list_pods

    with pytest.raises(KubernetesError) as caught:
        list_pods(["shop"], context="produciton")
    assert "context 'produciton'" in str(caught.value)
    assert TOKEN not in str(caught.value)
