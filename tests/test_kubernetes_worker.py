"""The real prefect-kubernetes worker end to end without a cluster (issue 14).

`prefect worker start --type kubernetes` runs against tests/k8s_server.py, a local server
speaking the Kubernetes API for what the worker and its observer call. The pool is maint's own
(deploy/kubernetes/base-job-template.json) and the deployments are registered by `maint deploy
--image`. The test checks the Job the worker sent field by field, then plays the cluster: the
Job controller's pod, and the kubelet running the container's command as a local process with
the manifest's environment. What a pod gets from its cluster and a local process cannot, the
test substitutes and says so:

- the ConfigMap mount: the ConfigMap's keys (read back from the API) are written to a temporary
  directory, and a value in the environment starting with the mount path (MAINT_CONFIG) points
  there instead of /etc/maint;
- the Secret: `envFrom`/`valueFrom` are resolved from the Secret object the test created through
  the API, base64-decoded, as the kubelet does (`env` wins over `envFrom`);
- the service account: KUBECONFIG (the fake cluster, its token) stands in for the mounted
  token, so the duty's own pod listing reaches the same API;
- the image: PATH starts with this venv's bin (the image's /opt/maint/bin, where `prefect`
  is), HOME is a temporary directory, the process runs in its own.

The worker runs with its observer on (prefect-kubernetes' default): kopf watches Jobs and pods
through the same server, replicates pod events to Prefect, and marks a flow run Crashed when its
Job fails. That is what makes a Job killed mid-run (OOMKilled) page on-call: the server's "run
stuck or crashed" automation fires on the Crashed event, with no help from the dead process.

RBAC is played too, with one token per identity: the worker has the prefect-worker chart's
namespaced Role, the flow-run pods deploy/kubernetes/rbac.yaml's (list pods, read the
namespace), the test an operator's. So the observer must be told its namespace
(PREFECT_INTEGRATIONS_KUBERNETES_OBSERVER_NAMESPACES): left cluster-wide, it is refused.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import pytest

from tests.conftest import forget_maint, interrupt, maint_process, prefect_api, wait_for
from tests.k8s_server import Role, pods_in_every_state, write_kubeconfig

TEMPLATE = Path(__file__).parent.parent / "deploy" / "kubernetes" / "base-job-template.json"
IMAGE = "registry.example.com/maint:test"
NAMESPACE = "maint"
ADMIN_TOKEN = "cluster-admin-token-0c41e7"  # the test's own calls, as an operator's kubectl
WORKER_TOKEN = "prefect-worker-token-5d2a90"
FLOW_RUN_TOKEN = "maint-flow-runs-token-7f3e9a"
# The worker's service account: the prefect-worker chart's Role in namespace maint
# (prefect-helm, charts/prefect-worker/templates/role.yaml). No events, nothing cluster-wide.
WORKER_ROLE = Role("system:serviceaccount:maint:prefect-worker", {
    "pods": frozenset({"get", "watch", "list"}), "pods/log": frozenset({"get", "watch", "list"}),
    "pods/status": frozenset({"get", "watch", "list"}),
    "jobs": frozenset({"get", "list", "watch", "create", "update", "patch", "delete"})})
# The flow-run pods' service account, maint-flow-runs (deploy/kubernetes/rbac.yaml): list pods,
# read the namespace; cluster-wide, list nodes and metrics-server's node usage.
FLOW_RUNS_ROLE = Role("system:serviceaccount:maint:maint-flow-runs", {
    "pods": frozenset({"list"}), "namespaces": frozenset({"get"})},
    cluster_rules={"nodes": frozenset({"list"}), "nodes.metrics.k8s.io": frozenset({"list"})})
ROUTING_KEY = "routing-key-from-the-kubernetes-secret"
SLACK_PATH = "/services/T000/B000/slack-path-from-the-kubernetes-secret"
VENV_BIN = Path(sys.executable).parent


# --- the cluster, the pool, the worker ---------------------------------------------------------

@pytest.fixture
def cluster(kube_api, tmp_path):
    """The fake cluster: namespace `maint` with one pod restarting too often (a warning for the
    health check to find); a kubeconfig for each of the operator, the worker and the flow-run
    pods' service account."""
    cache = pods_in_every_state(NAMESPACE)["restarts-over-max"]
    with kube_api({NAMESPACE: [cache]}, token=ADMIN_TOKEN,
                  roles={WORKER_TOKEN: WORKER_ROLE, FLOW_RUN_TOKEN: FLOW_RUNS_ROLE}) as api:
        for who, token in (("admin", ADMIN_TOKEN), ("worker", WORKER_TOKEN), ("flow_run", FLOW_RUN_TOKEN)):
            setattr(api, f"{who}_kubeconfig", write_kubeconfig(tmp_path / f"{who}.kubeconfig", {who: (api.url, token)}))
        yield api


def requests_with(api, token: str) -> list:
    return [r for r in api.requests if r.authorization == f"Bearer {token}"]


def answers_to(api, token: str) -> list[tuple[str, str, int]]:
    return [(r.method, r.path, code) for r, code in api.answers if r.authorization == f"Bearer {token}"]


@pytest.fixture
def k8s_pool(prefect_server):
    from prefect.client.schemas.actions import WorkPoolCreate

    name = f"maint-k8s-{uuid.uuid4().hex[:8]}"
    with prefect_api(prefect_server) as client:
        client.create_work_pool(WorkPoolCreate(name=name, type="kubernetes",
                                               base_job_template=json.loads(TEMPLATE.read_text())))
    yield name
    forget_maint(prefect_server)


def kube_client(api):
    """The official client on the kubeconfig, as kubectl or a deploy pipeline would use it."""
    from kubernetes import client, config

    return client.CoreV1Api(config.new_client_from_config(config_file=str(api.admin_kubeconfig)))


def create_secret_and_config_map(api, config_text: str, secrets: dict[str, str]) -> None:
    """What an operator applies once per cluster: the Secret the Jobs' envFrom names, and the
    ConfigMap with maint.toml."""
    from kubernetes import client

    core = kube_client(api)
    core.create_namespaced_secret(NAMESPACE, client.V1Secret(
        metadata=client.V1ObjectMeta(name="maint-secrets"), string_data=secrets))
    core.create_namespaced_config_map(NAMESPACE, client.V1ConfigMap(
        metadata=client.V1ObjectMeta(name="maint-config"), data={"maint.toml": config_text}))


class Worker:
    """`prefect worker start --pool POOL --type kubernetes` in the background, its output kept."""

    def __init__(self, server, pool: str, kubeconfig: Path, extra_env: dict[str, str | None] | None = None):
        self.lines: list[str] = []
        env = server.client_env({**os.environ, "KUBECONFIG": str(kubeconfig)})  # (drops PREFECT_*)
        # The observer watches the Jobs' namespace only: it is cluster-wide by default, which the
        # chart's namespaced Role refuses.
        env.update(PREFECT_WORKER_QUERY_SECONDS="2", PREFECT_INTEGRATIONS_KUBERNETES_OBSERVER_NAMESPACES=NAMESPACE)
        env.update(extra_env or {})
        env = {k: v for k, v in env.items() if v is not None}
        self.started = time.monotonic()
        self.process = subprocess.Popen(
            [str(VENV_BIN / "prefect"), "worker", "start", "--pool", pool, "--type", "kubernetes",
             "--name", f"k8s-worker-{pool}"],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
        threading.Thread(target=lambda: self.lines.extend(iter(self.process.stdout.readline, "")), daemon=True).start()

    def output(self) -> str:
        return "".join(self.lines)

    def stop(self, grace: float = 30) -> None:
        interrupt(self.process, grace)


@contextlib.contextmanager
def kubernetes_worker(server, pool: str, kubeconfig: Path, extra_env: dict[str, str | None] | None = None,
                      grace: float = 30):
    worker = Worker(server, pool, kubeconfig, extra_env)
    try:
        yield worker
    finally:
        worker.stop(grace)


def deploy(server, config: Path, pool: str, env: dict[str, str]) -> None:
    result = maint_process(server, "--config", str(config), "deploy", "--pool", pool, "--image", IMAGE, env=env)
    assert result.returncode == 0, result.stdout + result.stderr


def start_run(server, duty: str):
    with prefect_api(server) as client:
        [deployment] = [d for d in client.read_deployments() if d.name == duty]
        return client.create_flow_run_from_deployment(deployment.id)


def state_of(server, flow_run_id):
    with prefect_api(server) as client:
        return client.read_flow_run(flow_run_id).state


def the_created_job(api, worker: Worker, flow_run) -> tuple[dict, dict, float]:
    """The Job the worker created (as it sent it, and as the server stored it), and how long
    after the worker started it arrived."""
    [post] = wait_for(lambda: api.requests_to("POST", f"/apis/batch/v1/namespaces/{NAMESPACE}/jobs"), timeout=120,
                      what=lambda: f"the worker to create the Job; worker output:\n{worker.output()}")
    [stored] = wait_for(lambda: api.stored("jobs", NAMESPACE), timeout=10, what="the Job in the server")
    assert stored["metadata"]["labels"]["prefect.io/flow-run-id"] == str(flow_run.id)
    return post.body, stored, post.at - worker.started


# --- the kubelet: the Job's container as a local process ----------------------------------------

class LocalPod:
    """The Job's pod, its container's command running here (see the module's docstring for what
    is substituted). `start()` schedules the pod and starts the process; `finish()` reports its
    exit to the server as the kubelet would (137 after a SIGKILL: OOMKilled when `oom_killed`)."""

    def __init__(self, api, job: dict, workdir: Path):
        self.api, self.job, self.workdir = api, job, workdir
        self.container = job["spec"]["template"]["spec"]["containers"][0]
        self.substitutions: list[str] = []
        self.process: subprocess.Popen | None = None

    def environment(self) -> dict[str, str]:
        core = kube_client(self.api)
        env: dict[str, str] = {}
        for source in self.container.get("envFrom", []):
            if "secretRef" in source:
                secret = core.read_namespaced_secret(source["secretRef"]["name"], NAMESPACE)
                env.update({k: base64.b64decode(v).decode() for k, v in (secret.data or {}).items()})
            else:
                env.update(core.read_namespaced_config_map(source["configMapRef"]["name"], NAMESPACE).data or {})
        for entry in self.container.get("env", []):
            if "valueFrom" in entry:
                ref = entry["valueFrom"]
                if "secretKeyRef" in ref:
                    secret = core.read_namespaced_secret(ref["secretKeyRef"]["name"], NAMESPACE)
                    env[entry["name"]] = base64.b64decode(secret.data[ref["secretKeyRef"]["key"]]).decode()
                else:
                    raise NotImplementedError(f"valueFrom {ref} is not played here")
            else:
                env[entry["name"]] = entry.get("value") or ""
        # The volumes: each ConfigMap mount becomes a directory here.
        volumes = {v["name"]: v for v in self.job["spec"]["template"]["spec"].get("volumes", [])}
        for mount in self.container.get("volumeMounts", []):
            config_map = volumes[mount["name"]]["configMap"]["name"]
            directory = self.workdir / ("mount-" + mount["name"])
            directory.mkdir()
            for key, value in (core.read_namespaced_config_map(config_map, NAMESPACE).data or {}).items():
                (directory / key).write_text(value)
            for name, value in list(env.items()):
                if value == mount["mountPath"] or value.startswith(mount["mountPath"] + "/"):
                    env[name] = str(directory) + value[len(mount["mountPath"]):]
                    self.substitutions.append(f"{name}={value} -> {env[name]} (ConfigMap {config_map})")
        home = self.workdir / "home"
        home.mkdir()
        # The image's ENV (deploy/image/Dockerfile: its venv first on PATH, PYTHONUNBUFFERED).
        env.update(PATH=f"{VENV_BIN}{os.pathsep}/usr/local/bin{os.pathsep}/usr/bin{os.pathsep}/bin",
                   PYTHONUNBUFFERED="1", HOME=str(home), KUBECONFIG=str(self.api.flow_run_kubeconfig))
        self.substitutions += [f"PATH: {VENV_BIN} first (the image's /opt/maint/bin)", "HOME: a temporary directory",
                               "KUBECONFIG: the fake cluster (for the service account's token)"]
        return env

    def command(self) -> list[str]:
        # No `command`, and maint's image has no ENTRYPOINT: `args` run as they are, found on PATH.
        return [*self.container.get("command", []), *self.container["args"]]

    def start(self) -> None:
        namespace, name = NAMESPACE, self.job["metadata"]["name"]
        self.pod = self.api.schedule_pod(namespace, name)
        env = self.environment()
        self.log_path = self.workdir / "container.log"
        self.log = open(self.log_path, "w")
        self.started = time.monotonic()
        self.process = subprocess.Popen(self.command(), env=env, cwd=self.workdir, stdout=self.log,
                                        stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        self.api.pod_started(namespace, self.pod["metadata"]["name"])

    def finish(self, timeout: float = 180, oom_killed: bool = False) -> int:
        try:
            code = self.process.wait(timeout)
        finally:
            self.log.close()
        self.finished = time.monotonic()
        exit_code = 128 - code if code < 0 else code  # as a container runtime reports a signal
        self.api.pod_finished(NAMESPACE, self.pod["metadata"]["name"], exit_code,
                              reason="OOMKilled" if oom_killed else None, log=self.log_path.read_text())
        return exit_code

    def output(self) -> str:
        return self.log_path.read_text() if hasattr(self, "log_path") else ""

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()


@contextlib.contextmanager
def local_pod(api, job: dict, workdir: Path):
    pod = LocalPod(api, job, workdir)
    try:
        yield pod
    finally:
        pod.kill()


def artifacts_by_key(server, flow_run_id) -> dict:
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    with prefect_api(server) as client:
        artifacts = client.read_artifacts(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id])))
    return {a.key: a for a in artifacts}


def pod_events_of(server, flow_run_id) -> list[str]:
    """The `prefect.kubernetes.pod.*` events the observer replicated for this flow run's pod."""
    from prefect.events.filters import EventFilter, EventNameFilter, EventRelatedFilter

    with prefect_api(server) as client:
        response = client.request("POST", "/events/filter", json={"filter": EventFilter(
            event=EventNameFilter(prefix=["prefect.kubernetes.pod."]),
            related=EventRelatedFilter(id=[f"prefect.flow-run.{flow_run_id}"]),
        ).model_dump(mode="json", exclude_unset=True), "limit": 50})
    return sorted(e["event"] for e in response.json()["events"])


# --- the tests ---------------------------------------------------------------------------------

def test_maints_template_passes_the_workers_own_check():
    """The template, rendered with its defaults, through the worker's job configuration (what
    `from_template_and_values` does for every flow run, before any Job is sent). It refuses a
    first container not named `prefect-job`: every run then crashes without a Job."""
    from prefect.utilities.templating import apply_values
    from prefect_kubernetes.worker import KubernetesWorkerJobConfiguration

    template = json.loads(TEMPLATE.read_text())
    defaults = {k: v["default"] for k, v in template["variables"]["properties"].items() if "default" in v}
    KubernetesWorkerJobConfiguration(**apply_values(template["job_configuration"], defaults))


def health_config(path: Path, endpoint: str, httpserver, extra: str = "") -> Path:
    path.write_text(f"""
timezone = "UTC"

[notify]
slack_webhook_url_env = "MAINT_SLACK_WEBHOOK"
pagerduty_routing_key_env = "MAINT_PD_ROUTING_KEY"
pagerduty_events_url = "{httpserver.url_for('/pagerduty')}"
page_on = ["critical"]

[health_check]

[[health_check.endpoints]]
url = "{endpoint}"
expect_status = 200

[health_check.kubernetes]
namespaces = ["{NAMESPACE}"]
max_restarts = 5

[schedules]
health-check = "0 8 * * *"

[deploy.job_variables.health-check]
memory_limit = "1Gi"
cpu_request = "100m"
{extra}
""")
    return path


SECRETS = {"MAINT_PD_ROUTING_KEY": ROUTING_KEY}


def test_the_worker_creates_maints_job_and_its_command_completes_the_run(prefect_server, k8s_pool, cluster,
                                                                         httpserver, tmp_path):
    from werkzeug import Response

    slack: list[dict] = []
    pages: list[dict] = []
    httpserver.expect_request("/healthz").respond_with_data("ok")
    httpserver.expect_request(SLACK_PATH, method="POST").respond_with_handler(
        lambda request: (slack.append(request.get_json()), Response("ok", 200))[1])
    httpserver.expect_request("/pagerduty", method="POST").respond_with_handler(
        lambda request: (pages.append(request.get_json()), Response("{}", 202))[1])
    config = health_config(tmp_path / "maint.toml", httpserver.url_for("/healthz"), httpserver)
    secrets = {**SECRETS, "MAINT_SLACK_WEBHOOK": httpserver.url_for(SLACK_PATH)}
    create_secret_and_config_map(cluster, config.read_text(), secrets)
    deploy(prefect_server, config, k8s_pool, env=secrets)
    flow_run = start_run(prefect_server, "health-check")

    with kubernetes_worker(prefect_server, k8s_pool, cluster.worker_kubeconfig) as worker:
        sent, stored, to_job = the_created_job(cluster, worker, flow_run)

        # --- the manifest, as the worker sent it -----------------------------------------------
        assert (sent["apiVersion"], sent["kind"]) == ("batch/v1", "Job")
        metadata = sent["metadata"]
        assert metadata["namespace"] == NAMESPACE and "name" not in metadata
        assert metadata["generateName"] == f"{flow_run.name}-", metadata
        labels = metadata["labels"]
        assert labels["prefect.io/flow-run-id"] == str(flow_run.id)
        assert labels["prefect.io/flow-run-name"] == flow_run.name
        assert labels["prefect.io/deployment-name"] == "health-check"
        assert labels["prefect.io/work-pool-name"] == k8s_pool
        assert labels["app.kubernetes.io/managed-by"] == "prefect"
        spec = sent["spec"]
        assert (spec["backoffLimit"], spec["ttlSecondsAfterFinished"], spec["completions"], spec["parallelism"]) == \
            (0, 86400, 1, 1)
        template = spec["template"]
        assert template["metadata"]["labels"]["prefect.io/flow-run-id"] == str(flow_run.id), "pods are found by it"
        pod_spec = template["spec"]
        assert pod_spec["restartPolicy"] == "Never"
        assert pod_spec["serviceAccountName"] == "maint-flow-runs"
        assert pod_spec["volumes"] == [{"name": "maint-config", "configMap": {"name": "maint-config"}}]
        [container] = pod_spec["containers"]
        assert container["name"] == "prefect-job", "the name prefect-kubernetes requires (its own check)"
        assert container["image"] == IMAGE and container["imagePullPolicy"] == "IfNotPresent"
        assert container["args"] == ["prefect", "flow-run", "execute"] and "command" not in container
        assert container["envFrom"] == [{"secretRef": {"name": "maint-secrets"}}]
        assert container["volumeMounts"] == [{"name": "maint-config", "mountPath": "/etc/maint", "readOnly": True}]
        assert container["resources"] == {"limits": {"cpu": "2", "memory": "1Gi"},  # the duty's override
                                          "requests": {"cpu": "100m", "memory": "512Mi"}}
        assert container["securityContext"] == {"runAsNonRoot": True, "allowPrivilegeEscalation": False,
                                                "capabilities": {"drop": ["ALL"]}}
        env = {e["name"]: e for e in container["env"]}
        assert env["MAINT_CONFIG"] == {"name": "MAINT_CONFIG", "value": "/etc/maint/maint.toml"}
        assert env["PREFECT__FLOW_RUN_ID"]["value"] == str(flow_run.id)
        assert env["PREFECT_API_URL"]["value"] == prefect_server.api_url
        assert env["PREFECT_FLOW_RUN_EXECUTE_SIGTERM_BEHAVIOR"]["value"] == "reschedule", "backoffLimit 0"
        assert "PREFECT_API_KEY" not in env and "PREFECT_API_AUTH_STRING" not in env
        assert not [e for e in container["env"] if "valueFrom" in e], "the secrets come whole by envFrom"
        manifest = json.dumps(sent)
        for secret in (ROUTING_KEY, SLACK_PATH, WORKER_TOKEN, FLOW_RUN_TOKEN):
            assert secret not in manifest, "no secret value in the Job"
        assert not cluster.warnings, f"unknown fields: {cluster.warnings}"
        # What the API server added: the selector and the pod labels that tie the pods to the Job.
        job_name = stored["metadata"]["name"]
        assert stored["spec"]["template"]["metadata"]["labels"]["batch.kubernetes.io/job-name"] == job_name

        # --- the Job's pod: its command as a local process -------------------------------------
        with local_pod(cluster, stored, tmp_path) as pod:
            pod.start()
            exit_code = pod.finish()
            command_to_exit = pod.finished - pod.started
            assert exit_code == 0, pod.output()
            state = wait_for(lambda: (s := state_of(prefect_server, flow_run.id)).is_final() and s, timeout=30,
                             what="the run's final state")
            command_to_completed = time.monotonic() - pod.started
        assert state.is_completed(), f"{state}\n{pod.output()}"
        observed = wait_for(lambda: (e := pod_events_of(prefect_server, flow_run.id)) and
                            "prefect.kubernetes.pod.succeeded" in e and e, timeout=30,
                            what=lambda: f"the observer's pod events; worker:\n{worker.output()}")

    artifacts = artifacts_by_key(prefect_server, flow_run.id)
    assert {"health-check-report", "health-check-findings"} <= set(artifacts)
    report = artifacts["health-check-report"].data
    assert httpserver.url_for("/healthz") in report
    assert "cache-0" in report, "the duty listed the cluster's pods with the service account's stand-in"
    assert pod.pod["metadata"]["name"] not in report, "its own Running pod is fine"
    # The Secret reached the process: Slack heard of the warning on the webhook URL only it holds.
    assert any("cache-0" in message.get("text", "") for message in slack), slack
    assert not [p for p in pages if p.get("event_action") == "trigger"], pages

    worker_calls = answers_to(cluster, WORKER_TOKEN)
    assert sorted({(m, p) for m, p, _ in worker_calls}) == [
        ("GET", "/api"), ("GET", "/api/v1"), ("GET", f"/api/v1/namespaces/{NAMESPACE}/pods"), ("GET", "/apis"),
        ("GET", "/apis/batch/v1"), ("GET", f"/apis/batch/v1/namespaces/{NAMESPACE}/jobs"),
        ("POST", f"/apis/batch/v1/namespaces/{NAMESPACE}/jobs")], worker_calls
    assert all(code < 300 for _, _, code in worker_calls), worker_calls
    watches = {r.path for r in requests_with(cluster, WORKER_TOKEN) if r.query.get("watch") == "true"}
    assert watches == {f"/api/v1/namespaces/{NAMESPACE}/pods", f"/apis/batch/v1/namespaces/{NAMESPACE}/jobs"}
    # Pods and nodes are listed concurrently; this cluster has no metrics-server (404: a note, not a failure).
    assert sorted(answers_to(cluster, FLOW_RUN_TOKEN)) == [
        ("GET", f"/api/v1/namespaces/{NAMESPACE}/pods", 200), ("GET", "/api/v1/nodes", 200),
        ("GET", "/apis/metrics.k8s.io/v1beta1/nodes", 404)], answers_to(cluster, FLOW_RUN_TOKEN)
    print(f"\nworker start -> Job created: {to_job:.2f} s; Job command start -> exit: {command_to_exit:.2f} s, "
          f"-> run Completed: {command_to_completed:.2f} s")
    print("substituted:", *pod.substitutions, sep="\n  ")
    print("calls from the worker and its observer:", *(
        f"{r.method} {r.path}{' (watch)' if r.query.get('watch') else ''} {r.query.get('labelSelector', '')} -> {c}"
        for r, c in cluster.answers if r.authorization == f"Bearer {WORKER_TOKEN}"), sep="\n  ")
    print("observer's pod events:", observed)
    print("manifest:", json.dumps(sent))


class HangingEndpoint:
    """An HTTP endpoint that takes the request and never answers: the health check waits on it
    (its timeout is 10 s), so the run is certainly mid-flow when it is killed."""

    def __init__(self):
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.listener.getsockname()[1]}/healthz"
        self.requests: list[bytes] = []
        self.held: list[socket.socket] = []

    def _serve(self) -> None:
        while True:
            try:
                connection, _ = self.listener.accept()
            except OSError:
                return
            self.held.append(connection)
            self.requests.append(connection.recv(65536))

    def __enter__(self):
        threading.Thread(target=self._serve, daemon=True).start()
        return self

    def __exit__(self, *exc):
        self.listener.close()
        for connection in self.held:
            connection.close()


def test_a_job_killed_mid_run_is_marked_crashed_by_the_observer_and_pages_from_the_server(
        prefect_server, k8s_pool, cluster, httpserver, tmp_path):
    """The Job's container is SIGKILLed while the run is Running (as the OOM killer does at the
    memory limit): no hook of the run's own can page, and the worker (0.8 does not wait for its
    Jobs) does not either. The observer sees the Job fail, marks the run Crashed, and the
    server's "run stuck or crashed" automation pages on-call."""
    from werkzeug import Response

    from maint.paging import RUN_FAILED_CHECK, dedup_key

    events: list[dict] = []
    httpserver.expect_request("/pagerduty", method="POST").respond_with_handler(
        lambda request: (events.append(request.get_json()), Response("{}", 202))[1])
    httpserver.expect_request(SLACK_PATH, method="POST").respond_with_data("ok")
    key = dedup_key("health-check", RUN_FAILED_CHECK, "health-check")

    def pages():
        return [e for e in events if e.get("dedup_key") == key and e.get("event_action") == "trigger"]

    with HangingEndpoint() as endpoint:
        # stuck_after is 6h: only the Crashed state can make this page.
        config = health_config(tmp_path / "maint.toml", endpoint.url, httpserver,
                               extra='\n[dead_mans_switch]\nstuck_after = "6h"\n')
        secrets = {**SECRETS, "MAINT_SLACK_WEBHOOK": httpserver.url_for(SLACK_PATH)}
        create_secret_and_config_map(cluster, config.read_text(), secrets)
        deploy(prefect_server, config, k8s_pool, env=secrets)
        flow_run = start_run(prefect_server, "health-check")

        with kubernetes_worker(prefect_server, k8s_pool, cluster.worker_kubeconfig) as worker:
            _, job, to_job = the_created_job(cluster, worker, flow_run)
            with local_pod(cluster, job, tmp_path) as pod:
                pod.start()
                wait_for(lambda: state_of(prefect_server, flow_run.id).is_running(), timeout=60,
                         what=lambda: f"the run to be Running; container:\n{pod.output()}")
                wait_for(lambda: endpoint.requests, timeout=60, what="the health check's request")
                killed_at = time.monotonic()
                pod.process.send_signal(signal.SIGKILL)  # the OOM killer
                pod.process.wait(30)
                assert state_of(prefect_server, flow_run.id).is_running(), "the dead process left it Running"
                exit_code = pod.finish(oom_killed=True)  # the kubelet reports it: the Job fails
            assert exit_code == 137
            state = wait_for(lambda: (s := state_of(prefect_server, flow_run.id)).is_final() and s, timeout=90,
                             what=lambda: f"the observer to end the run; worker:\n{worker.output()}")
            crashed_after = time.monotonic() - killed_at
            [page] = wait_for(pages, timeout=60, what=lambda: f"the page; events: {events}")[:1]
            paged_after = time.monotonic() - killed_at

    assert state.is_crashed(), state
    assert state.message == "No active or succeeded pods found for any job", state.message
    assert page["payload"]["source"] == "maint (Prefect automation)", "the server paged, not the dead run"
    assert page["routing_key"] == ROUTING_KEY
    assert flow_run.name in page["payload"]["summary"]
    assert "a run crashed, or is still Running after 6h" in page["payload"]["summary"]
    assert all(e["payload"]["source"] == "maint (Prefect automation)" for e in pages()), pages()
    assert "health-check-report" not in artifacts_by_key(prefect_server, flow_run.id), "it never reported"
    failed = cluster.get("jobs", NAMESPACE, job["metadata"]["name"])["status"]
    assert failed["failed"] == 1 and failed["conditions"][-1]["reason"] == "BackoffLimitExceeded"
    # The observer looked for another Job of the run (a rescheduled one) before marking it Crashed.
    with prefect_api(prefect_server) as client:
        from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId

        logs = [log.message for log in client.read_logs(LogFilter(flow_run_id=LogFilterFlowRunId(any_=[flow_run.id])))]
    assert any("OOMKilled" in message for message in logs), "the observer's diagnosis is in the run's logs"
    looked = [r for r in requests_with(cluster, WORKER_TOKEN)
              if r.path == f"/apis/batch/v1/namespaces/{NAMESPACE}/jobs" and "watch" not in r.query
              and r.query.get("labelSelector") == f"prefect.io/flow-run-id={flow_run.id}"]
    assert looked, requests_with(cluster, WORKER_TOKEN)
    refused = [(m, p, c) for m, p, c in answers_to(cluster, WORKER_TOKEN) if c >= 300]
    print(f"\nworker start -> Job created: {to_job:.2f} s; SIGKILL -> Crashed: {crashed_after:.2f} s, "
          f"-> page: {paged_after:.2f} s")
    print("refused to the worker:", refused)
    print("observer's pod events:", pod_events_of(prefect_server, flow_run.id))


def test_the_observer_left_cluster_wide_is_refused_by_the_charts_namespaced_role(prefect_server, k8s_pool,
                                                                                 cluster):
    """prefect-kubernetes' observer watches Jobs and pods cluster-wide unless
    PREFECT_INTEGRATIONS_KUBERNETES_OBSERVER_NAMESPACES names namespaces; the prefect-worker
    chart's Role is namespaced, so a worker without it cannot observe anything: a Job that dies
    then leaves its run Running (only stuck_after pages). (Nor does the worker stop on SIGINT
    while kopf retries: it is killed after a short grace here, as Kubernetes would after 30 s.)"""
    with kubernetes_worker(prefect_server, k8s_pool, cluster.worker_kubeconfig,
                           {"PREFECT_INTEGRATIONS_KUBERNETES_OBSERVER_NAMESPACES": None}, grace=3) as worker:
        answers = wait_for(lambda: {p for m, p, c in answers_to(cluster, WORKER_TOKEN) if c == 403} >=
                           {"/api/v1/pods", "/apis/batch/v1/jobs"} and answers_to(cluster, WORKER_TOKEN),
                           timeout=60, what=lambda: f"the cluster-wide lists; worker:\n{worker.output()}")
        wait_for(lambda: "is forbidden" in worker.output(), timeout=30, what="the worker to log the refusal")
    assert not [p for m, p, c in answers if c == 200 and f"/namespaces/{NAMESPACE}/" in p], \
        "nothing namespaced was watched instead"
    assert 'cannot list resource "pods" in API group "" at the cluster scope' in worker.output()


def test_the_fake_api_refuses_what_a_real_one_would(kube_api):
    """The stand-in is only worth its passes if it fails where a cluster would: a wrong type is a
    400, a wrong value a 422 naming the field, an unknown field a Warning header, a missing
    namespace a 404, what it does not implement a 404 or 405 Status; a watch from a list's
    resourceVersion streams what came after. (Raw HTTP: the official client checks types itself.)"""
    import httpx

    def job(**changes) -> dict:
        body = {"apiVersion": "batch/v1", "kind": "Job", "metadata": {"generateName": "probe-", "labels": {"a": "b"}},
                "spec": {"backoffLimit": 0, "ttlSecondsAfterFinished": 60, "template": {"spec": {
                    "restartPolicy": "Never", "containers": [{
                        "name": "probe", "image": "busybox:1.36", "args": ["true"],
                        "resources": {"limits": {"memory": "1Gi"}, "requests": {"memory": "512Mi"}}}]}}}}
        for path, value in changes.items():
            *parents, last = path.split("__")
            target = body["spec"]
            for key in parents:
                target = target[int(key)] if key.isdigit() else target[key]
            target[last] = value
        return body

    jobs = f"/apis/batch/v1/namespaces/{NAMESPACE}/jobs"
    with kube_api({NAMESPACE: []}, token=ADMIN_TOKEN) as api, \
            httpx.Client(base_url=api.url, headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}) as http:
        listed = http.get(jobs).json()

        wrong_type = http.post(jobs, json=job(ttlSecondsAfterFinished="60"))
        assert wrong_type.status_code == 400 and wrong_type.json()["kind"] == "Status"
        assert "cannot unmarshal string into Go struct field JobSpec.spec.ttlSecondsAfterFinished" in \
            wrong_type.json()["message"]
        over = http.post(jobs, json=job(template__spec__containers__0__resources={
            "limits": {"memory": "1Gi"}, "requests": {"memory": "2Gi"}})).json()
        assert (over["code"], over["reason"]) == (422, "Invalid")
        assert [c["field"] for c in over["details"]["causes"]] == ["spec.template.spec.containers[0].resources.requests"]
        restart = http.post(jobs, json=job(template__spec__restartPolicy="Always")).json()
        assert restart["code"] == 422 and "spec.template.spec.restartPolicy: Unsupported value" in restart["message"]
        mount = http.post(jobs, json=job(template__spec__containers__0__volumeMounts=[
            {"name": "missing", "mountPath": "/etc/x"}])).json()
        assert mount["code"] == 422 and "volumeMounts[0].name: Not found" in mount["message"]
        elsewhere = http.post("/apis/batch/v1/namespaces/nowhere/jobs", json=job()).json()
        assert (elsewhere["code"], elsewhere["message"]) == (404, 'namespaces "nowhere" not found')
        assert api.stored("jobs") == [], "nothing refused was kept"

        created = http.post(jobs, json=job(template__spec__parallelism=1))
        assert created.status_code == 201
        assert created.headers["Warning"] == '299 - "unknown field \\"spec.template.spec.parallelism\\""'
        name = created.json()["metadata"]["name"]
        assert name.startswith("probe-") and len(name) == len("probe-") + 5
        assert created.json()["spec"]["template"]["metadata"]["labels"]["batch.kubernetes.io/job-name"] == name

        assert http.patch(f"{jobs}/{name}", json={"spec": {"suspend": True}}).status_code == 405
        assert http.put(f"{jobs}/{name}", json=created.json()).status_code == 405
        missing = http.get(f"/apis/apps/v1/namespaces/{NAMESPACE}/deployments")
        assert missing.status_code == 404 and missing.json()["kind"] == "Status"
        assert http.get(f"{jobs}/probe-none").json()["message"] == 'jobs.batch "probe-none" not found'
        assert http.get("/api/v1/pods", headers={"Authorization": "Bearer wrong"}).status_code == 401

        since = listed["metadata"]["resourceVersion"]
        with http.stream("GET", jobs, params={"watch": "true", "resourceVersion": since, "timeoutSeconds": "1"}) as w:
            seen = [(e["type"], e["object"]["metadata"]["name"]) for e in map(json.loads, w.iter_lines()) if e]
        assert seen == [("ADDED", name)]
        assert http.delete(f"{jobs}/{name}").status_code == 200
        assert api.stored("jobs") == []
