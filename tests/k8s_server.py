"""A local HTTP server speaking enough of the Kubernetes API for the real `kubernetes` client,
a kubeconfig pointing at it, and builders for pod JSON shaped like `kubectl get pod -o json`.

The server behaves like a real API server where it matters to maint: pods are listed in pages
(`limit` and `continue`), a namespace that does not exist lists as an empty PodList (as the real
API does) and reads as a 404 Status, a missing or wrong bearer token is a 401 Status.
"""

from __future__ import annotations

import json
import ssl
import threading
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlparse

# --- the server ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class SeenRequest:
    method: str
    path: str
    query: dict[str, str]
    authorization: str | None
    user_agent: str | None


def status_json(code: int, reason: str, message: str, details: dict | None = None) -> dict:
    body = {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
            "message": message, "reason": reason, "code": code}
    if details is not None:
        body["details"] = details
    return body


class KubeApiServer:
    """`pods` maps namespace -> pod JSON items (the namespaces that exist). `token`: the bearer
    token required (None: no authentication). `fail` maps namespace -> HTTP status to answer for
    its pod list instead (403 for RBAC, 500...). `delay` seconds before every answer.
    `forbid_namespace_read`: reading a Namespace object is 403, as for a namespaced Role.
    `tls`: an `ssl.SSLContext` to serve HTTPS with."""

    def __init__(self, pods: dict[str, list[dict]], *, token: str | None = None,
                 fail: dict[str, int] | None = None, delay: float = 0.0,
                 forbid_namespace_read: bool = False, tls: ssl.SSLContext | None = None):
        self.pods = pods
        self.token = token
        self.fail = dict(fail or {})
        self.delay = delay
        self.forbid_namespace_read = forbid_namespace_read
        self.requests: list[SeenRequest] = []
        self.lock = threading.Lock()
        api = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def do_GET(self):
                url = urlparse(self.path)
                query = {k: v[-1] for k, v in parse_qs(url.query).items()}
                with api.lock:
                    api.requests.append(SeenRequest("GET", url.path, query, self.headers.get("Authorization"),
                                                    self.headers.get("User-Agent")))
                if api.delay:
                    time.sleep(api.delay)
                code, body = api.answer(url.path, query, self.headers.get("Authorization"))
                payload = json.dumps(body).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

        class QuietServer(ThreadingHTTPServer):
            daemon_threads = True
            block_on_close = False  # a handler still sleeping on `delay` must not hold up the test

            def handle_error(self, request, client_address):
                pass  # clients giving up on a delayed answer are not news

        self.server = QuietServer(("127.0.0.1", 0), Handler)
        if tls is not None:
            self.server.socket = tls.wrap_socket(self.server.socket, server_side=True)
        scheme = "https" if tls is not None else "http"
        self.port = self.server.server_address[1]
        self.url = f"{scheme}://127.0.0.1:{self.port}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def answer(self, path: str, query: dict[str, str], authorization: str | None) -> tuple[int, dict]:
        scheme, _, presented = (authorization or "").partition(" ")
        if self.token is not None and (scheme.lower() != "bearer" or presented != self.token):
            return 401, status_json(401, "Unauthorized", "Unauthorized")
        parts = path.strip("/").split("/")
        if len(parts) == 5 and parts[:3] == ["api", "v1", "namespaces"] and parts[4] == "pods":
            return self.list_pods(parts[3], query)
        if len(parts) == 4 and parts[:3] == ["api", "v1", "namespaces"]:
            name = parts[3]
            if self.forbid_namespace_read:
                return 403, status_json(403, "Forbidden", f'namespaces "{name}" is forbidden: User '
                                        '"system:serviceaccount:ops:maint" cannot get resource "namespaces" in '
                                        f'API group "" in the namespace "{name}"',
                                        {"name": name, "kind": "namespaces"})
            if name not in self.pods:
                return 404, status_json(404, "NotFound", f'namespaces "{name}" not found',
                                        {"name": name, "kind": "namespaces"})
            return 200, {"kind": "Namespace", "apiVersion": "v1",
                         "metadata": {"name": name, "uid": str(uuid.uuid5(uuid.NAMESPACE_DNS, name)),
                                      "creationTimestamp": "2024-01-01T00:00:00Z"},
                         "spec": {"finalizers": ["kubernetes"]}, "status": {"phase": "Active"}}
        return 404, status_json(404, "NotFound", "the server could not find the requested resource", {})

    def list_pods(self, namespace: str, query: dict[str, str]) -> tuple[int, dict]:
        if namespace in self.fail:
            code = self.fail[namespace]
            if code == 403:
                return 403, status_json(403, "Forbidden", f'pods is forbidden: User "system:serviceaccount:ops:maint" '
                                        f'cannot list resource "pods" in API group "" in the namespace "{namespace}"',
                                        {"kind": "pods"})
            return code, status_json(code, "InternalError", "Internal error occurred: etcdserver: request timed out")
        items = self.pods.get(namespace, [])  # an unknown namespace lists as empty, like the real API
        start = int(query.get("continue") or 0)
        limit = int(query.get("limit") or 0) or len(items) or 1
        page = items[start:start + limit]
        metadata = {"resourceVersion": "4711"}
        if start + limit < len(items):
            metadata["continue"] = str(start + limit)
            metadata["remainingItemCount"] = len(items) - start - limit
        return 200, {"kind": "PodList", "apiVersion": "v1", "metadata": metadata, "items": page}

    def pod_list_requests(self) -> list[SeenRequest]:
        return [r for r in self.requests if r.path.endswith("/pods")]

    def __enter__(self) -> "KubeApiServer":
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()


def write_kubeconfig(path: Path, clusters: dict[str, tuple[str, str]], current: str | None = None) -> Path:
    """A kubeconfig with one context per entry of `clusters`: context name -> (server URL, token).
    JSON is YAML, so the file is written as JSON."""
    names = list(clusters)
    path.write_text(json.dumps({
        "apiVersion": "v1", "kind": "Config", "preferences": {},
        "clusters": [{"name": f"{n}-cluster", "cluster": {"server": url}} for n, (url, _) in clusters.items()],
        "users": [{"name": f"{n}-user", "user": {"token": token}} for n, (_, token) in clusters.items()],
        "contexts": [{"name": n, "context": {"cluster": f"{n}-cluster", "user": f"{n}-user", "namespace": "default"}}
                     for n in names],
        "current-context": current or names[0],
    }, indent=2))
    return path


# --- pod JSON ------------------------------------------------------------------------------------

NOW = datetime(2025, 3, 14, 9, 30, tzinfo=UTC)


def ts(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def ago(**delta) -> datetime:
    return NOW - timedelta(**delta)


def _cid() -> str:
    return "containerd://" + uuid.uuid4().hex + uuid.uuid4().hex


def running(started: datetime) -> dict:
    return {"running": {"startedAt": ts(started)}}


def waiting(reason: str, message: str = "") -> dict:
    body = {"reason": reason}
    if message:
        body["message"] = message
    return {"waiting": body}


def terminated(reason: str | None, exit_code: int, started: datetime, finished: datetime,
               signal: int | None = None) -> dict:
    body = {"containerID": _cid(), "exitCode": exit_code, "startedAt": ts(started), "finishedAt": ts(finished)}
    if reason:
        body["reason"] = reason
    if signal is not None:
        body["signal"] = signal
    return {"terminated": body}


def container(name: str, state: dict, *, ready: bool, restarts: int = 0, last_state: dict | None = None,
              image: str = "registry.example.com/shop/web:1.42.0") -> dict:
    """One entry of status.containerStatuses, as the kubelet reports it."""
    status = {"name": name, "image": image, "lastState": last_state or {}, "ready": ready,
              "restartCount": restarts, "started": "running" in state, "state": state}
    if "waiting" not in state or restarts:
        status["containerID"] = _cid()
        status["imageID"] = image.rsplit(":", 1)[0] + "@sha256:" + uuid.uuid5(uuid.NAMESPACE_URL, image).hex * 2
    return status


def unscheduled(name: str, image: str = "docker.io/opensearchproject/opensearch:2.19.1") -> dict:
    """A container of a pod no node took yet: only its spec appears (the kubelet reports no status)."""
    return {"name": name, "image": image, "state": {}, "ready": False}


def _condition(kind: str, ok: bool, since: datetime, reason: str | None = None, message: str | None = None) -> dict:
    body = {"type": kind, "status": "True" if ok else "False", "lastProbeTime": None,
            "lastTransitionTime": ts(since)}
    if reason:
        body["reason"] = reason
    if message:
        body["message"] = message
    return body


def pod(name: str, *, phase: str, containers: list[dict], namespace: str = "default",
        init_containers: list[dict] | None = None, sidecars: tuple[str, ...] = (),
        created: datetime | None = None, node: str | None = "worker-1",
        owner: tuple[str, str] | None = ("ReplicaSet", "web-7d4b9c6f5d"),
        ready: bool | None = None, ready_since: datetime | None = None, initialized: bool | None = None,
        scheduled: bool = True, deleted: datetime | None = None, reason: str | None = None,
        message: str | None = None, conditions: list[dict] | None = None,
        restart_policy: str = "Always") -> dict:
    """A pod as `kubectl get pod NAME -o json` prints it. `containers` and `init_containers` are
    status entries (see `container`); the spec is derived from them. The Ready/ContainersReady
    conditions follow the containers unless `ready` says otherwise."""
    created = created or ago(hours=3)
    init_containers = init_containers or []
    if ready is None:
        ready = bool(containers) and all(c["ready"] for c in containers) and phase == "Running"
    if initialized is None:
        initialized = all("terminated" in c["state"] and c["state"]["terminated"]["exitCode"] == 0
                          or (c["name"] in sidecars and c.get("started")) for c in init_containers)
    since = ready_since or created + timedelta(seconds=20)
    if conditions is None:
        conditions = []
        if scheduled:
            conditions += [_condition("PodReadyToStartContainers", phase != "Pending" or bool(containers), created),
                           _condition("Initialized", initialized, created + timedelta(seconds=2),
                                      None if initialized else "ContainersNotInitialized",
                                      None if initialized else "containers with incomplete status: "
                                      + str([c["name"] for c in init_containers if "terminated" not in c["state"]])),
                           _condition("Ready", ready, since, None if ready else "ContainersNotReady",
                                      None if ready else "containers with unready status: "
                                      + str([c["name"] for c in containers if not c["ready"]])),
                           _condition("ContainersReady", ready, since, None if ready else "ContainersNotReady")]
        conditions.append(_condition("PodScheduled", scheduled, created, None if scheduled else "Unschedulable",
                                     None if scheduled else "0/3 nodes are available: 3 Insufficient memory. "
                                     "preemption: 0/3 nodes are available: 3 No preemption victims found "
                                     "for incoming pod."))

    def spec_of(status: dict, sidecar: bool = False) -> dict:
        body = {"name": status["name"], "image": status["image"], "imagePullPolicy": "IfNotPresent",
                "resources": {"limits": {"memory": "256Mi"}, "requests": {"cpu": "100m", "memory": "128Mi"}},
                "terminationMessagePath": "/dev/termination-log", "terminationMessagePolicy": "File"}
        if sidecar:
            body["restartPolicy"] = "Always"
        return body

    metadata = {"name": name, "namespace": namespace, "uid": str(uuid.uuid5(uuid.NAMESPACE_URL, f"{namespace}/{name}")),
                "resourceVersion": "123456", "creationTimestamp": ts(created),
                "labels": {"app.kubernetes.io/name": name.rsplit("-", 2)[0]}}
    if owner is not None:
        metadata["ownerReferences"] = [{"apiVersion": "batch/v1" if owner[0] == "Job" else "apps/v1",
                                        "kind": owner[0], "name": owner[1], "uid": str(uuid.uuid4()),
                                        "controller": True, "blockOwnerDeletion": True}]
        metadata["generateName"] = owner[1] + "-"
    if deleted is not None:
        metadata["deletionTimestamp"] = ts(deleted)
        metadata["deletionGracePeriodSeconds"] = 30
    spec = {"containers": [spec_of(c) for c in containers], "restartPolicy": restart_policy,
            "terminationGracePeriodSeconds": 30, "dnsPolicy": "ClusterFirst", "schedulerName": "default-scheduler",
            "serviceAccountName": "default", "enableServiceLinks": True, "priority": 0,
            "preemptionPolicy": "PreemptLowerPriority",
            "tolerations": [{"key": "node.kubernetes.io/not-ready", "operator": "Exists",
                             "effect": "NoExecute", "tolerationSeconds": 300}]}
    if init_containers:
        spec["initContainers"] = [spec_of(c, c["name"] in sidecars) for c in init_containers]
    if node:
        spec["nodeName"] = node
    status: dict = {"phase": phase, "conditions": conditions, "qosClass": "Burstable"}
    if node:
        status |= {"hostIP": "10.0.1.17", "hostIPs": [{"ip": "10.0.1.17"}], "startTime": ts(created)}
    if node and phase in ("Running", "Succeeded", "Failed") or containers and node:
        status |= {"podIP": "10.244.3.29", "podIPs": [{"ip": "10.244.3.29"}]}
    if scheduled and node:
        status["containerStatuses"] = containers
        if init_containers:
            status["initContainerStatuses"] = init_containers
    if reason:
        status["reason"] = reason
    if message:
        status["message"] = message
    return {"apiVersion": "v1", "kind": "Pod", "metadata": metadata, "spec": spec, "status": status}


# --- one pod in every state the health check must tell apart ------------------------------------

def pods_in_every_state(namespace: str = "default") -> dict[str, dict]:
    """name -> pod JSON; the names say the state. Times are relative to `NOW`."""
    up = ago(hours=3)
    nginx = "docker.io/library/nginx:1.27.4"
    job = ("Job", "nightly-report-28977120")
    states = {
        "running-ready": pod("web-7d4b9c6f5d-x2x7q", phase="Running",
                             containers=[container("web", running(up), ready=True)]),
        "running-not-ready": pod("api-5f9d8c7b6-k8sd2", phase="Running", ready_since=ago(minutes=30),
                                 containers=[container("api", running(up), ready=False)]),
        "running-not-ready-just-started": pod("api-5f9d8c7b6-new01", phase="Running", created=ago(seconds=40),
                                              ready_since=ago(seconds=35),
                                              containers=[container("api", running(ago(seconds=35)), ready=False)]),
        "crash-loop": pod("worker-6c8f7d9b5-p9z4m", phase="Running", ready_since=ago(hours=2),
                          containers=[container("worker", waiting(
                              "CrashLoopBackOff", "back-off 5m0s restarting failed container=worker "
                              "pod=worker-6c8f7d9b5-p9z4m_default(0d1e...)"), ready=False, restarts=7,
                              last_state=terminated("Error", 1, ago(minutes=3), ago(minutes=2)))]),
        "image-pull-backoff": pod("web-84b7c9d5f-qq7lw", phase="Pending", created=ago(minutes=4),
                                  containers=[container("web", waiting(
                                      "ImagePullBackOff", 'Back-off pulling image "registry.example.com/shop/'
                                      'web:1.43.0"'), ready=False, image="registry.example.com/shop/web:1.43.0")]),
        "err-image-pull": pod("web-84b7c9d5f-zt5bn", phase="Pending", created=ago(minutes=1),
                              containers=[container("web", waiting(
                                  "ErrImagePull", "failed to pull and unpack image: not found"), ready=False,
                                  image="registry.example.com/shop/web:1.43.0")]),
        "create-container-config-error": pod("web-6b5c4d3e2-mm4vt", phase="Pending", created=ago(minutes=2),
                                             containers=[container("web", waiting(
                                                 "CreateContainerConfigError",
                                                 'secret "web-db-credentials" not found'), ready=False)]),
        "error": pod("migrate-schema", phase="Failed", owner=None, restart_policy="Never",
                     containers=[container("migrate", terminated("Error", 1, ago(hours=2, minutes=59),
                                                                 ago(hours=2, minutes=58)), ready=False)]),
        "completed": pod("db-seed", phase="Succeeded", owner=None, restart_policy="Never",
                         containers=[container("seed", terminated("Completed", 0, ago(hours=2, minutes=59),
                                                                  ago(hours=2, minutes=55)), ready=False)]),
        "job-completed": pod("nightly-report-28977120-4kq9d", phase="Succeeded", owner=job,
                             restart_policy="OnFailure",
                             containers=[container("report", terminated("Completed", 0, ago(hours=8),
                                                                        ago(hours=7, minutes=52)), ready=False)]),
        "pending-20m": pod("search-0", phase="Pending", created=ago(minutes=20), node=None, scheduled=False,
                           owner=("StatefulSet", "search"), containers=[unscheduled("opensearch")]),
        "pending-2m": pod("search-1", phase="Pending", created=ago(minutes=2), node=None, scheduled=False,
                          owner=("StatefulSet", "search"), containers=[unscheduled("opensearch")]),
        "init-0-of-2": pod("shop-7c9d8b6f4-ab12c", phase="Pending", created=ago(minutes=1),
                           init_containers=[container("wait-for-db", running(ago(seconds=50)), ready=False,
                                                      image="busybox:1.36"),
                                            container("migrate", waiting("PodInitializing"), ready=False)],
                           containers=[container("shop", waiting("PodInitializing"), ready=False)]),
        "init-crash-loop": pod("shop-7c9d8b6f4-cd34e", phase="Pending", created=ago(minutes=40),
                               init_containers=[container("wait-for-db", terminated(
                                   "Completed", 0, ago(minutes=40), ago(minutes=39)), ready=True,
                                   image="busybox:1.36"),
                                   container("migrate", waiting(
                                       "CrashLoopBackOff", "back-off 5m0s restarting failed container=migrate"),
                                       ready=False, restarts=6, last_state=terminated("Error", 2, ago(minutes=6),
                                                                                     ago(minutes=5)))],
                               containers=[container("shop", waiting("PodInitializing"), ready=False)]),
        "terminating": pod("web-7d4b9c6f5d-old99", phase="Running", deleted=NOW + timedelta(seconds=25),
                           containers=[container("web", running(up), ready=True)]),
        "restarts-over-max": pod("cache-0", phase="Running", owner=("StatefulSet", "cache"),
                                 containers=[container("redis", running(ago(minutes=50)), ready=True, restarts=9,
                                                       image="docker.io/library/redis:7.4",
                                                       last_state=terminated("OOMKilled", 137, ago(hours=1),
                                                                             ago(minutes=50)))]),
        # A sidecar-style second container that finished while the main one still runs.
        "not-ready-completed-container": pod("etl-5d6f7a8b9-qr56s", phase="Running", ready=False,
                                             ready_since=ago(hours=1),
                                             containers=[container("etl", running(up), ready=True),
                                                         container("fetch", terminated("Completed", 0, up,
                                                                                       ago(hours=1)),
                                                                   ready=False, image=nginx)]),
    }
    for body in states.values():
        body["metadata"]["namespace"] = namespace
    return states
