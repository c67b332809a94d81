"""Kubernetes nodes: the pure decision over Node and NodeMetrics JSON with a fixed `now`, every rule
failing for its reason and resolved by the next healthy run; Kubernetes quantities; and
`list_nodes` with the real kubernetes client against the local API server (tests/k8s_server.py)."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import timedelta
from decimal import Decimal

import pytest

from maint.config import KubernetesConfig
from maint.errors import KubernetesError
from maint.nodes import (NODE_CHECK, NODE_USAGE_CHECK, assess_nodes, exhaustive_checks, node_info_from_json,
                         node_usage_from_json, parse_go_duration, parse_quantity)
from maint.paging import plan_pages
from maint.report import Finding, Severity
from tests.k8s_server import NOW, Role, ago, node, node_metrics, write_kubeconfig
from tests.test_velero import assert_expected as assert_expected_findings
from tests.test_velero import by_key
from tests.test_notify import receivers  # noqa: F401  (a fixture)

OK, WARNING, CRITICAL = Severity.OK, Severity.WARNING, Severity.CRITICAL
CONFIG = KubernetesConfig(node_cpu_warning=0.90, node_memory_warning=0.85)
PAGE_ON = ["warning", "critical"]


# --- quantities ----------------------------------------------------------------------------------

@pytest.mark.parametrize(("text", "value"), [
    ("3950m", Decimal("3.95")), ("4", Decimal(4)), ("1.5", Decimal("1.5")), ("16Gi", Decimal(16 * 2**30)),
    ("15998084Ki", Decimal(15998084 * 1024)), ("152774129n", Decimal("0.152774129")), ("250u", Decimal("0.00025")),
    ("2k", Decimal(2000)), ("128M", Decimal(128_000_000)), ("1e3", Decimal(1000)), ("5E-1", Decimal("0.5")),
    (".5Gi", Decimal(2**29)), ("0", Decimal(0)), (8, Decimal(8)),
])
def test_quantities_are_exact(text, value):
    assert parse_quantity(text) == value


@pytest.mark.parametrize("text", ["", "Gi", "1.2.3", "16 Gi", " 4", "4cores", "1Kb", True, None, 1.5, "16gi"])
def test_what_is_not_a_quantity_is_refused(text):
    with pytest.raises(ValueError):
        parse_quantity(text)


@pytest.mark.parametrize(("text", "seconds"), [("20.039s", 20.039), ("1m0s", 60), ("10s", 10), ("500ms", 0.5),
                                               ("1h2m3s", 3723), ("0s", 0)])
def test_metrics_windows_are_go_durations(text, seconds):
    assert parse_go_duration(text) == timedelta(seconds=seconds)


def test_node_and_metrics_json_are_read_with_the_api_field_names():
    info = node_info_from_json(node("cp-1", roles=("control-plane",), cpu="3920m", memory="15242924Ki",
                                    unschedulable=True, cordoned_since=ago(hours=2), kubelet_version="v1.30.9"))
    assert (info.name, info.roles, info.kubelet_version, info.kubectl_status) == (
        "cp-1", ("control-plane",), "v1.30.9", "Ready,SchedulingDisabled")
    assert (info.allocatable_cpu, info.allocatable_memory) == (Decimal("3.92"), Decimal(15242924 * 1024))
    assert (info.unschedulable, info.cordoned_since, info.created_at) == (True, ago(hours=2), ago(days=41))
    assert info.condition("Ready").reason == "KubeletReady" and info.condition("MemoryPressure").status == "False"
    usage = node_usage_from_json(node_metrics("cp-1", cpu="152774129n", memory="1876280Ki"))
    assert (usage.cpu, usage.memory, usage.measured_at, usage.window) == (
        Decimal("0.152774129"), Decimal(1876280 * 1024), ago(seconds=14), timedelta(seconds=20.039))


@pytest.mark.parametrize(("ready", "status"), [(True, "Ready"), (False, "NotReady"), ("Unknown", "NotReady"),
                                               (None, "Unknown")])
def test_kubectl_status_column(ready, status):
    assert node_info_from_json(node("n", ready=ready)).kubectl_status == status


@pytest.mark.parametrize("broken", [{"metadata": {}}, {"metadata": {"name": "n"}, "status": {"allocatable": {"cpu": "x"}}},
                                    {"metadata": {"name": "n"}, "status": {"conditions": [
                                        {"type": "Ready", "status": "True", "lastTransitionTime": "yesterday"}]}}])
def test_json_that_is_not_a_node_is_refused(broken):
    with pytest.raises((KeyError, ValueError)):
        node_info_from_json(broken)


# --- the decision, rule by rule ------------------------------------------------------------------

def healthy_nodes() -> list[dict]:
    return [node("cp-1", roles=("control-plane",)), node("worker-1"), node("worker-2")]


def healthy_metrics() -> list[dict]:
    return [node_metrics("cp-1", cpu="412345678n", memory="2Gi"), node_metrics("worker-1"),
            node_metrics("worker-2", cpu="2100m", memory="9Gi")]


@dataclass
class Case:
    """A state of the cluster's nodes, what the decision must say about it; the next run sees
    the healthy state, which must resolve every page this one opened."""

    id: str
    expected: list[tuple[str, str, Severity, str]]  # (check, subject, severity, text in the message)
    nodes: list[dict] = field(default_factory=healthy_nodes)
    metrics: list[dict] | None = field(default_factory=healthy_metrics)
    hint: str = ""  # text in the hint of the first expected finding

    def findings(self) -> list[Finding]:
        return assess_nodes(CONFIG, self.nodes, self.metrics, NOW)


def replace(nodes: list[dict], *changed: dict) -> list[dict]:
    names = {c["metadata"]["name"]: c for c in changed}
    return [names.pop(n["metadata"]["name"], n) for n in nodes] + list(names.values())


CASES = [
    Case("healthy", [(NODE_CHECK, "nodes", OK, "3 nodes, 3 Ready, 0 flagged"),
                     (NODE_USAGE_CHECK, "nodes", OK, "3 of 3 nodes measured, 0 flagged; busiest: worker-2 CPU 2.1 "
                                                     "of 4 cores (52%), worker-2 memory 9.0 GiB of 16.0 GiB (56%)")]),
    Case("not-ready", [(NODE_CHECK, "node worker-1", CRITICAL,
                        "NotReady for 2h15m (KubeletNotReady: container runtime network not ready: NetworkReady=false "
                        "reason:NetworkPluginNotReady message:Network plugin returns error: cni plugin not initialized) "
                        "— status NotReady, roles <none>, age 41d, version v1.31.4"),
                       (NODE_CHECK, "nodes", OK, "3 nodes, 2 Ready, 1 flagged")],
         nodes=replace(healthy_nodes(), node("worker-1", ready=False, since=ago(hours=2, minutes=15))),
         hint="kubectl describe node worker-1; read its Conditions and Events"),
    Case("kubelet-stopped-posting", [(NODE_CHECK, "node worker-2", CRITICAL,
                                      "Ready Unknown for 7m30s (NodeStatusUnknown: Kubelet stopped posting node status.)")],
         nodes=replace(healthy_nodes(), node("worker-2", ready="Unknown", since=ago(minutes=7, seconds=30))),
         metrics=[m for m in healthy_metrics() if m["metadata"]["name"] != "worker-2"],
         hint="is the machine up, and can its kubelet reach the API server"),
    Case("no-ready-condition", [(NODE_CHECK, "node worker-3", CRITICAL, "no Ready condition: its kubelet never reported "
                                 "— status Unknown")],
         nodes=healthy_nodes() + [node("worker-3", ready=None, created=ago(minutes=3))],
         hint="systemctl status kubelet"),
    Case("memory-and-disk-pressure", [(NODE_CHECK, "node worker-1", WARNING,
                                       "MemoryPressure for 12m (KubeletHasInsufficientMemory: kubelet has insufficient "
                                       "memory available); DiskPressure for 12m (KubeletHasDiskPressure: kubelet has "
                                       "disk pressure) — status Ready")],
         nodes=replace(healthy_nodes(), node("worker-1", pressure=("MemoryPressure", "DiskPressure"))),
         hint="kubectl describe node worker-1; kubectl top pods -A --sort-by=memory"),
    Case("pid-pressure", [(NODE_CHECK, "node worker-2", WARNING, "PIDPressure for 3m (KubeletHasInsufficientPID")],
         nodes=replace(healthy_nodes(), node("worker-2", pressure=("PIDPressure",), pressure_since=ago(minutes=3))),
         hint="pids limit"),
    Case("network-unavailable", [(NODE_CHECK, "node worker-1", CRITICAL, "NetworkUnavailable for 20m (NoRouteCreated: "
                                  "Node created without a route)")],
         nodes=replace(healthy_nodes(), node("worker-1", network_unavailable=True, since=ago(minutes=20))),
         hint="--field-selector spec.nodeName=worker-1"),
    Case("network-available-is-fine", [(NODE_CHECK, "nodes", OK, "3 nodes, 3 Ready, 0 flagged")],
         nodes=replace(healthy_nodes(), node("worker-1", network_unavailable=False))),
    Case("cordoned-for-maintenance", [(NODE_CHECK, "node worker-2", OK, "cordoned for 1h (maintenance in progress?) — "
                                       "status Ready,SchedulingDisabled"),
                                      (NODE_CHECK, "nodes", OK, "3 nodes, 3 Ready, 0 flagged; cordoned: worker-2")],
         nodes=replace(healthy_nodes(), node("worker-2", unschedulable=True)), hint="kubectl uncordon worker-2"),
    Case("cordoned-and-forgotten", [(NODE_CHECK, "node worker-2", WARNING, "cordoned for 3d4h, more than 1d: a "
                                     "forgotten maintenance?")],
         nodes=replace(healthy_nodes(), node("worker-2", unschedulable=True, cordoned_since=ago(days=3, hours=4))),
         hint="kubectl uncordon worker-2 once its maintenance is over"),
    Case("cordoned-since-unknown", [(NODE_CHECK, "node worker-2", OK, "cordoned since when is not known")],
         nodes=replace(healthy_nodes(), node("worker-2", unschedulable=True, cordoned_since=None))),
    Case("drained-and-not-ready", [(NODE_CHECK, "node worker-1", CRITICAL, "NotReady for 40m (KubeletNotReady: "
                                    "PLEG is not healthy); cordoned for 3h (maintenance in progress?)")],
         nodes=replace(healthy_nodes(), node("worker-1", ready=False, since=ago(minutes=40), message="PLEG is not healthy",
                                             unschedulable=True, cordoned_since=ago(hours=3))),
         hint="kubectl describe node worker-1; read its Conditions and Events, then on the node journalctl -u kubelet "
              "(container runtime, network plugin, certificates); kubectl uncordon worker-1"),
    Case("cpu-high", [(NODE_USAGE_CHECK, "node worker-1", WARNING, "CPU at 93% of allocatable (warning at 90%) — CPU "
                       "3.71 of 3.92 cores (95%)"[:40]),
                      (NODE_USAGE_CHECK, "nodes", OK, "3 of 3 nodes measured, 1 flagged")],
         metrics=replace(healthy_metrics(), node_metrics("worker-1", cpu="3712345678n")),
         hint="kubectl describe node worker-1 (Allocated resources, Non-terminated Pods); kubectl top pods -A "
              "--sort-by=cpu"),
    Case("memory-high", [(NODE_USAGE_CHECK, "node worker-2", WARNING, "memory at 91% of allocatable (warning at 85%) — "
                          "CPU 2.1 of 4 cores (52%), memory 14.5 GiB of 16.0 GiB (91%)")],
         metrics=replace(healthy_metrics(), node_metrics("worker-2", cpu="2100m", memory="15204352Ki")),
         hint="kubectl top pods -A --sort-by=memory"),
    # Exact arithmetic: 13.6Gi of 16Gi is 0.85 to the byte, at the share (binary floats would miss it).
    Case("memory-exactly-at-the-share", [(NODE_USAGE_CHECK, "node worker-2", WARNING, "memory at 85%")],
         metrics=replace(healthy_metrics(), node_metrics("worker-2", memory="13.6Gi"))),
    Case("memory-just-below-the-share", [(NODE_USAGE_CHECK, "nodes", OK, "0 flagged")],
         metrics=replace(healthy_metrics(), node_metrics("worker-2", memory="14602888806"))),
    Case("metrics-server-absent", [(NODE_USAGE_CHECK, "nodes", OK, "usage not known: metrics.k8s.io did not answer")],
         metrics=None, hint="install metrics-server (kubectl apply -f https://github.com/kubernetes-sigs/metrics-server/"
                            "releases/latest/download/components.yaml)"),
    Case("a-node-not-scraped-yet", [(NODE_USAGE_CHECK, "nodes", OK, "2 of 3 nodes measured, 0 flagged; busiest: "
                                     "worker-2 CPU 2.1 of 4 cores (52%), worker-2 memory 9.0 GiB of 16.0 GiB (56%); no "
                                     "metrics for worker-1 (not scraped yet, or its kubelet is down)")],
         metrics=[m for m in healthy_metrics() if m["metadata"]["name"] != "worker-1"]),
    Case("no-nodes-at-all", [(NODE_CHECK, "nodes", WARNING, "the API lists no node"),
                             (NODE_USAGE_CHECK, "nodes", OK, "0 of 0 nodes measured")], nodes=[], metrics=[],
         hint="kubectl get nodes: is [health_check.kubernetes].context the right cluster?"),
]
BY_ID = {case.id: case for case in CASES}


def assert_expected(case: Case, findings: list[Finding]) -> None:
    """Velero's check of a case (each expected finding, nothing else wrong), then the hint."""
    assert_expected_findings(case, findings)
    if case.hint:
        first = by_key(findings)[case.expected[0][:2]]
        assert case.hint in first.hint, first


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_each_rule(case):
    assert_expected(case, case.findings())


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_every_page_is_resolved_by_the_next_healthy_run(case):
    """Paging's invariant: one finding per subject and check, and the next healthy run (both
    checks exhaustive, as the flow marks them) resolves every page this run opened."""
    findings = case.findings()
    assert len(by_key(findings)) == len(findings), "a check reported one subject twice"
    assert {f.check for f in findings} == {NODE_CHECK, NODE_USAGE_CHECK}
    opened = plan_pages("health-check", findings, [], PAGE_ON, frozenset(exhaustive_checks(case.metrics)))
    healthy = BY_ID["healthy"]
    after = plan_pages("health-check", healthy.findings(), [key for key, _ in opened.triggers], PAGE_ON,
                       frozenset(exhaustive_checks(healthy.metrics)))
    assert after.still_open == [] and len(after.resolves) == len(opened.triggers)


def test_a_usage_page_stays_open_while_metrics_server_does_not_answer():
    """Usage unseen is not usage fine: without metrics, node-usage is not exhaustive, so its page
    waits for a run that measured; the node conditions' pages still resolve."""
    busy = Case("busy", [], nodes=replace(healthy_nodes(), node("worker-1", ready=False)),
                metrics=replace(healthy_metrics(), node_metrics("worker-2", memory="15Gi")))
    opened = plan_pages("health-check", busy.findings(), [], PAGE_ON, frozenset(exhaustive_checks(busy.metrics)))
    assert len(opened.triggers) == 2
    blind = Case("blind", [], metrics=None)
    assert exhaustive_checks(None) == {NODE_CHECK}
    after = plan_pages("health-check", blind.findings(), [key for key, _ in opened.triggers], PAGE_ON,
                       frozenset(exhaustive_checks(None)))
    [(usage_key, _)] = [(k, f) for k, f in opened.triggers if f.check == NODE_USAGE_CHECK]
    assert after.still_open == [usage_key] and len(after.resolves) == 1


def test_every_problem_names_its_node_and_the_next_step():
    for case in CASES:
        for finding in case.findings():
            assert finding.subject == "nodes" or finding.subject.startswith("node "), finding
            if finding.severity is not OK or finding.subject != "nodes":
                assert finding.hint.startswith("kubectl "), finding
                assert finding.subject.removeprefix("node ") in finding.hint or finding.subject == "nodes", finding


def test_thresholds_and_the_cordon_grace_are_parameters_and_now_is_the_only_clock():
    cordoned = replace(healthy_nodes(), node("worker-2", unschedulable=True, cordoned_since=ago(hours=23)))
    assert by_key(assess_nodes(CONFIG, cordoned, None, NOW))[(NODE_CHECK, "node worker-2")].severity is OK
    assert by_key(assess_nodes(CONFIG, cordoned, None, NOW + timedelta(hours=1)))[
        (NODE_CHECK, "node worker-2")].severity is WARNING
    assert by_key(assess_nodes(CONFIG, cordoned, None, NOW, cordon_grace=timedelta(hours=8)))[
        (NODE_CHECK, "node worker-2")].severity is WARNING
    down = replace(healthy_nodes(), node("worker-1", ready=False, since=ago(minutes=5)))
    assert "NotReady for 1h5m" in by_key(assess_nodes(CONFIG, down, None, NOW + timedelta(hours=1)))[
        (NODE_CHECK, "node worker-1")].message
    strict = KubernetesConfig(node_cpu_warning=0.5, node_memory_warning=0.99)
    flagged = by_key(assess_nodes(strict, healthy_nodes(), healthy_metrics(), NOW))
    assert flagged[(NODE_USAGE_CHECK, "node worker-2")].message.startswith("CPU at 52% of allocatable (warning at 50%)")
    assert (NODE_USAGE_CHECK, "node worker-1") not in flagged  # 1.5 of 4 cores


def test_why_metrics_are_missing_is_in_the_note():
    [note] = [f for f in assess_nodes(CONFIG, healthy_nodes(), None, NOW, metrics_unavailable="metrics.k8s.io is not "
              "served (404): metrics-server is not installed") if f.check == NODE_USAGE_CHECK]
    assert note.message == ("usage not known: metrics.k8s.io did not answer: metrics.k8s.io is not served (404): "
                            "metrics-server is not installed")
    assert note.severity is OK


# --- with the real client against the API stand-in -----------------------------------------------

TOKEN = "node-check-token-8c1d"
NODE_READER = Role("system:serviceaccount:maint:maint-flow-runs", {}, cluster_rules={
    "nodes": frozenset({"list"}), "nodes.metrics.k8s.io": frozenset({"list"})})


@pytest.fixture
def kubeconfig(monkeypatch, tmp_path):
    """Points $KUBECONFIG at a server (call it with the URL and token); no ambient configuration."""
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)

    def point_at(url: str, token: str = TOKEN) -> None:
        monkeypatch.setenv("KUBECONFIG", str(write_kubeconfig(tmp_path / "kubeconfig", {"prod": (url, token)})))
    return point_at


SYSTEM_CASES = ["healthy", "not-ready", "kubelet-stopped-posting", "memory-and-disk-pressure", "cordoned-for-maintenance",
                "cordoned-and-forgotten", "cpu-high", "memory-high", "metrics-server-absent"]


@pytest.mark.parametrize("case_id", SYSTEM_CASES)
def test_listed_through_the_client_and_assessed(kube_api, kubeconfig, case_id):
    from maint.tasks.kubernetes import list_nodes

    case = BY_ID[case_id]
    with kube_api({}, token=TOKEN, nodes=case.nodes, metrics=case.metrics) as server:
        kubeconfig(server.url)
        listed = list_nodes()
    assert (listed.nodes, listed.metrics) == (case.nodes, case.metrics)
    assert listed.metrics_unavailable == ("" if case.metrics is not None else
                                          "metrics.k8s.io is not served (404): metrics-server is not installed")
    assert_expected(case, assess_nodes(CONFIG, listed.nodes, listed.metrics, NOW,
                                       metrics_unavailable=listed.metrics_unavailable))
    [nodes_request] = server.requests_to("GET", "/api/v1/nodes")
    [metrics_request] = server.requests_to("GET", "/apis/metrics.k8s.io/v1beta1/nodes")
    assert nodes_request.query.get("limit") == "500"
    assert all(r.authorization == f"Bearer {TOKEN}" and r.user_agent == "maint/health-check"
               for r in (nodes_request, metrics_request))
    assert len(server.requests) == 2  # no discovery, no per-node reads


def test_the_default_server_has_one_healthy_node_and_no_metrics_server(kube_api, kubeconfig):
    """What the flows' tests get without saying anything about nodes: nothing to flag."""
    from maint.tasks.kubernetes import list_nodes

    with kube_api({"shop": []}, token=TOKEN) as server:
        kubeconfig(server.url)
        listed = list_nodes()
    assert [n["metadata"]["name"] for n in listed.nodes] == ["worker-1"] and listed.metrics is None
    findings = assess_nodes(KubernetesConfig(), listed.nodes, listed.metrics, NOW, metrics_unavailable=listed.metrics_unavailable)
    assert all(f.severity is OK for f in findings) and [f.subject for f in findings] == ["nodes", "nodes"]


def test_a_cluster_role_with_the_node_rules_is_enough(kube_api, kubeconfig):
    from maint.tasks.kubernetes import list_nodes

    with kube_api({}, token=TOKEN, roles={"reader-token": NODE_READER}, nodes=healthy_nodes(),
                  metrics=healthy_metrics()) as server:
        kubeconfig(server.url, "reader-token")
        listed = list_nodes()
    assert len(listed.nodes) == 3 and len(listed.metrics) == 3
    assert all(code == 200 for _, code in server.answers)


def test_forbidden_nodes_name_the_cluster_role_rule(kube_api, kubeconfig):
    from maint.tasks.kubernetes import list_nodes

    pods_only = Role("system:serviceaccount:maint:maint-flow-runs", {"pods": frozenset({"list"})})
    with kube_api({}, token=TOKEN, roles={"pods-token": pods_only}, metrics=healthy_metrics()) as server:
        kubeconfig(server.url, "pods-token")
        with pytest.raises(KubernetesError) as caught:
            list_nodes()
    assert str(caught.value) == (
        f"the Kubernetes API at {server.url} forbids listing nodes (403 Forbidden): nodes is forbidden: User "
        '"system:serviceaccount:maint:maint-flow-runs" cannot list resource "nodes" in API group "" at the cluster '
        'scope; grant a ClusterRole rule, bound by a ClusterRoleBinding: apiGroups [""], resources [nodes], verbs '
        "[list] (deploy/kubernetes/rbac.yaml: maint-health-check-nodes), or set [health_check.kubernetes].nodes = false")
    assert "pods-token" not in str(caught.value)


def test_forbidden_metrics_are_a_note_naming_the_rule(kube_api, kubeconfig):
    from maint.tasks.kubernetes import list_nodes

    nodes_only = Role("system:serviceaccount:maint:maint-flow-runs", {}, cluster_rules={"nodes": frozenset({"list"})})
    with kube_api({}, token=TOKEN, roles={"nodes-token": nodes_only}, nodes=healthy_nodes(),
                  metrics=healthy_metrics()) as server:
        kubeconfig(server.url, "nodes-token")
        listed = list_nodes()
    assert len(listed.nodes) == 3 and listed.metrics is None
    assert listed.metrics_unavailable == (
        'forbidden (403): nodes.metrics.k8s.io is forbidden: User "system:serviceaccount:maint:maint-flow-runs" cannot '
        'list resource "nodes" in API group "metrics.k8s.io" at the cluster scope; grant a ClusterRole rule: apiGroups '
        "[metrics.k8s.io], resources [nodes], verbs [list] (deploy/kubernetes/rbac.yaml: maint-health-check-nodes)")
    findings = assess_nodes(CONFIG, listed.nodes, listed.metrics, NOW, metrics_unavailable=listed.metrics_unavailable)
    assert all(f.severity is OK for f in findings)
    assert "verbs [list]" in by_key(findings)[(NODE_USAGE_CHECK, "nodes")].message


def test_metrics_server_that_does_not_answer_is_a_note(kube_api, kubeconfig):
    from maint.tasks.kubernetes import list_nodes

    with kube_api({}, token=TOKEN, nodes=healthy_nodes(), metrics_unavailable=True) as server:
        kubeconfig(server.url)
        listed = list_nodes()
        groups = [g["name"] for g in server.answer("/apis", {}, f"Bearer {TOKEN}")[1]["groups"]]
    assert "metrics.k8s.io" in groups  # registered, as its APIService is
    assert listed.metrics is None and listed.metrics_unavailable == (
        "metrics.k8s.io is registered but does not answer (503: the server is currently unable to handle the "
        "request): metrics-server is down or not ready")
    assert all(f.severity is OK for f in assess_nodes(CONFIG, listed.nodes, listed.metrics, NOW))


def test_thousands_of_nodes_are_listed_in_pages(kube_api, kubeconfig):
    from maint.tasks.kubernetes import list_nodes

    many = [node(f"pool-a-{i:05d}", ready=i != 1111, since=ago(hours=1)) for i in range(1200)]
    with kube_api({}, token=TOKEN, nodes=many) as server:
        kubeconfig(server.url)
        started = time.perf_counter()
        listed = list_nodes()
        elapsed = time.perf_counter() - started
    assert [n["metadata"]["name"] for n in listed.nodes] == [n["metadata"]["name"] for n in many]
    assert [r.query.get("continue") for r in server.requests_to("GET", "/api/v1/nodes")] == [None, "500", "1000"]
    flagged = [f for f in assess_nodes(CONFIG, listed.nodes, listed.metrics, NOW) if f.severity is not OK]
    assert [f.subject for f in flagged] == ["node pool-a-01111"]
    assert elapsed < 5.0, f"listing 1,200 nodes took {elapsed:.2f}s"


def test_an_answer_that_is_not_a_node_list_is_an_error(kube_api, kubeconfig):
    from maint.tasks.kubernetes import list_nodes

    broken = node("worker-1")
    broken["status"]["allocatable"]["memory"] = "lots"
    with kube_api({}, token=TOKEN, nodes=[broken]) as server:
        kubeconfig(server.url)
        with pytest.raises(KubernetesError, match=r"listing nodes: the answer is not a Kubernetes NodeList \(ValueError: "
                                                  r"not a Kubernetes quantity: 'lots'\)"):
            list_nodes()


def test_metrics_that_do_not_parse_are_a_note_not_an_error(kube_api, kubeconfig):
    from maint.tasks.kubernetes import list_nodes

    broken = node_metrics("worker-1", cpu="a lot")
    with kube_api({}, token=TOKEN, metrics=[broken]) as server:
        kubeconfig(server.url)
        listed = list_nodes()
    assert listed.metrics is None and listed.metrics_unavailable == (
        "the answer is not a NodeMetricsList (ValueError: not a Kubernetes quantity: 'a lot')")


def test_the_server_serves_nodes_as_the_api_does(kube_api):
    """The stand-in's own behaviour where the client relies on it: cluster-scoped nodes (a
    namespaced path is a 404), get by name, the metrics group only where metrics-server is."""
    auth = f"Bearer {TOKEN}"
    with kube_api({}, token=TOKEN, metrics=[node_metrics("worker-1")]) as served, kube_api({}, token=TOKEN) as bare:
        assert served.answer("/api/v1/nodes/worker-1", {}, auth)[1]["metadata"]["name"] == "worker-1"
        assert served.answer("/api/v1/nodes/nope", {}, auth)[0] == 404
        assert served.answer("/api/v1/namespaces/default/nodes", {}, auth)[0] == 404
        assert served.answer("/apis/metrics.k8s.io/v1beta1/nodes/worker-1", {}, auth)[1]["usage"]["cpu"] == "1500m"
        assert {r["name"] for r in served.answer("/apis/metrics.k8s.io/v1beta1", {}, auth)[1]["resources"]} == {
            "nodes", "pods"}
        assert "metrics.k8s.io" in [g["name"] for g in served.answer("/apis", {}, auth)[1]["groups"]]
        assert "metrics.k8s.io" not in [g["name"] for g in bare.answer("/apis", {}, auth)[1]["groups"]]
        assert bare.answer("/apis/metrics.k8s.io/v1beta1/nodes", {}, auth)[0] == 404
        assert "nodes" in {r["name"] for r in bare.answer("/api/v1", {}, auth)[1]["resources"]}


# --- through the health-check flow, as `maint run health-check` runs it --------------------------

def test_a_node_not_ready_pages_once_and_resolves_when_it_is_ready_again(prefect_harness, kube_api, tmp_path, capsys,
                                                                        monkeypatch, receivers):
    from datetime import UTC, datetime

    from tests.conftest import run_json
    from tests.test_health import _kube_config
    from tests.test_notify import _bodies

    httpserver, _slack, notify = receivers
    now = datetime.now(UTC)
    config = tmp_path / "maint.toml"
    config.write_text(_kube_config(tmp_path, notify))  # health-check over namespace shop, paging on critical

    def run(*nodes: dict) -> tuple[int, dict]:
        with kube_api({"shop": []}, token="t0ken", nodes=list(nodes)) as api:
            monkeypatch.setenv("KUBECONFIG", str(write_kubeconfig(tmp_path / "kubeconfig", {"prod": (api.url, "t0ken")})))
            return run_json(capsys, config, "health-check")

    code, report = run(node("worker-1", since=now - timedelta(days=3)),
                       node("worker-2", ready=False, reason="KubeletNotReady", message="PLEG is not healthy",
                            since=now - timedelta(minutes=40)))
    down = {(f["check"], f["subject"]): f for f in report["findings"]}[("nodes", "node worker-2")]
    assert code == 2 and down["severity"] == "critical" and "KubeletNotReady" in down["message"], down
    assert "kubectl describe node worker-2" in down["hint"]
    [trigger] = [e for e in _bodies(httpserver, "/v2/enqueue") if e["event_action"] == "trigger"]

    httpserver.clear_log()
    code, report = run(node("worker-1", since=now - timedelta(days=3)), node("worker-2", since=now - timedelta(minutes=1)))
    assert code == 0, [f for f in report["findings"] if f["severity"] != "ok"]
    assert [(e["event_action"], e["dedup_key"]) for e in _bodies(httpserver, "/v2/enqueue")] == [
        ("resolve", trigger["dedup_key"])]
