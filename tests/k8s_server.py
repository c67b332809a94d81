"""A local HTTP server speaking enough of the Kubernetes API for the real `kubernetes` client,
the prefect-kubernetes worker and its kopf-based observer, a kubeconfig pointing at it, and
builders for pod JSON shaped like `kubectl get pod -o json`.

The server behaves like a real API server where it matters to maint: pods are listed in pages
(`limit` and `continue`), a namespace that does not exist lists as an empty PodList (as the real
API does) and reads as a 404 Status, a missing or wrong bearer token is a 401 Status.

For the worker it also keeps objects: Jobs (create, get, list, watch, delete), Secrets and
ConfigMaps (create, get), Events (create, list), pods (list, get, watch, logs) and answers
discovery (`/api`, `/apis`, `/version`). A Job is validated as the API server would for what it
checks most often (types: a 400; values: a 422 Invalid with its causes; unknown fields: a
`Warning` header, as with `fieldValidation=Warn`), defaulted, and given a name from its
`generateName`. Lists and watches take `labelSelector` (equality and existence terms) and a
watch starts from `resourceVersion`, streams chunked JSON lines and sends bookmarks. There is no
controller and no kubelet: the test plays them (`schedule_pod`, `pod_started`, `pod_finished`),
which move the pod and the Job's status as theirs would and are seen by every watch. Anything
else is a 404 (unknown path) or 405 (known resource, verb not implemented) Status; every request
is recorded (`requests`, with its JSON body; `answers`, with the status given) so a test can
assert what a client called. `roles` play RBAC: a token bound to a namespaced Role gets the 403
a real cluster gives for anything else, cluster-scoped lists and watches included, unless the
Role's `cluster_rules` (a ClusterRole bound cluster-wide) grant it.

Nodes are cluster-scoped (`/api/v1/nodes`, listed in pages; one healthy node by default), and
metrics-server's aggregated API (`/apis/metrics.k8s.io/v1beta1/nodes`) is served only when the
test gives NodeMetrics (else a 404, as without metrics-server, or the aggregator's 503 for one
that does not answer). See `node` and `node_metrics` for their JSON.
"""

from __future__ import annotations

import base64
import copy
import json
import random
import re
import ssl
import threading
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal, InvalidOperation
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlparse

# --- the server ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class SeenRequest:
    method: str
    path: str
    query: dict[str, str]
    authorization: str | None
    user_agent: str | None
    body: Any = field(default=None, compare=False)
    at: float = field(default_factory=time.monotonic, compare=False)  # when it arrived (time.monotonic)


def status_json(code: int, reason: str, message: str, details: dict | None = None) -> dict:
    body = {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
            "message": message, "reason": reason, "code": code}
    if details is not None:
        body["details"] = details
    return body


@dataclass(frozen=True)
class Role:
    """What a token may do, as a Role bound in every namespace: `rules` maps a resource ("pods",
    "pods/log", "jobs", ...) to its verbs ("get", "list", "watch", "create", "delete"). At the
    cluster scope it may do only what `cluster_rules` (a ClusterRole bound by a
    ClusterRoleBinding) grants, keyed by resource and API group as RBAC names them ("nodes",
    "nodes.metrics.k8s.io"). `user` names it in a 403, as the API server does."""

    user: str
    rules: dict[str, frozenset[str]]
    cluster_rules: dict[str, frozenset[str]] = field(default_factory=dict)

    def check(self, resource: str, verb: str, namespace: str | None, name: str | None = None, *,
              group: str | None = None) -> None:
        if namespace is not None and verb in self.rules.get(resource, ()):
            return
        plural, _, sub = resource.partition("/")
        group = group_of(plural) if group is None else group
        what = f"{plural}.{group}" if group else plural
        if namespace is None and verb in self.cluster_rules.get(what + (f"/{sub}" if sub else ""), ()):
            return
        named = f' "{name}"' if name else ""
        where = f'in the namespace "{namespace}"' if namespace is not None else "at the cluster scope"
        raise ApiError(403, "Forbidden", f'{what}{named} is forbidden: User "{self.user}" cannot {verb} resource '
                       f'"{plural}"{f" subresource {sub!r}" if sub else ""} in API group "{group}" {where}',
                       {"kind": plural, **({"name": name} if name else {}), **({"group": group} if group else {})})


class ApiError(Exception):
    """An answer other than 2xx, raised from deep inside a handler."""

    def __init__(self, code: int, reason: str, message: str, details: dict | None = None):
        super().__init__(message)
        self.code, self.body = code, status_json(code, reason, message, details)


def now_ts() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def random_suffix(length: int = 5) -> str:
    """As the API server's generateName does: consonants and digits that spell no words."""
    return "".join(random.choice("bcdfghjklmnpqrstvwxz2456789") for _ in range(length))


# Resources this server keeps: plural -> (API prefix, kind, namespaced, verbs implemented).
RESOURCES = {
    "pods": ("/api/v1", "Pod", True, ("get", "list", "watch")),
    "secrets": ("/api/v1", "Secret", True, ("create", "get")),
    "configmaps": ("/api/v1", "ConfigMap", True, ("create", "get")),
    "events": ("/api/v1", "Event", True, ("create", "list")),
    "namespaces": ("/api/v1", "Namespace", False, ("get",)),
    "nodes": ("/api/v1", "Node", False, ("get", "list")),
    "jobs": ("/apis/batch/v1", "Job", True, ("create", "get", "list", "watch", "delete")),
    # Velero's CRDs: served only by a server given `custom_objects` (else a 404, as without Velero).
    "backups": ("/apis/velero.io/v1", "Backup", True, ("get", "list")),
    "backupstoragelocations": ("/apis/velero.io/v1", "BackupStorageLocation", True, ("get", "list")),
    "schedules": ("/apis/velero.io/v1", "Schedule", True, ("get", "list")),
}
SUBRESOURCES = {"pods/log": ("get",)}
API_VERSION = {"/api/v1": "v1", "/apis/batch/v1": "batch/v1", "/apis/velero.io/v1": "velero.io/v1"}
CUSTOM_PREFIXES = ("/apis/velero.io/v1",)  # API groups that exist only once their CRDs are installed
# metrics-server's aggregated API: registered (an APIService) only on a server given `metrics`.
METRICS_PREFIX = "/apis/metrics.k8s.io/v1beta1"
API_VERSION[METRICS_PREFIX] = "metrics.k8s.io/v1beta1"


def group_of(plural: str) -> str:
    """The API group of a resource ("" for the core group), as RBAC and Status details name it."""
    prefix = RESOURCES.get(plural, ("",))[0]
    return prefix.split("/")[2] if prefix.startswith("/apis/") else ""


_VERB_OF = {"POST": "create", "DELETE": "delete", "PUT": "update", "PATCH": "patch"}
WATCH_BOOKMARK_SECONDS = 30.0
WATCH_MAX_SECONDS = 600.0  # a real server closes a watch after a random 30-60 min; clients reconnect


class KubeApiServer:
    """`pods` maps namespace -> pod JSON items (the namespaces that exist). `token`: the bearer
    token required (None: no authentication). `fail` maps namespace -> HTTP status to answer for
    its pod list instead (403 for RBAC, 500...). `delay` seconds before every answer.
    `forbid_namespace_read`: reading a Namespace object is 403, as for a namespaced Role.
    `tls`: an `ssl.SSLContext` to serve HTTPS with. `roles`: more bearer tokens, each bound to a
    `Role` (what it may do inside a namespace; nothing at the cluster scope); `token` may do all.
    `custom_objects`: Velero's objects (see `velero_backup`, `velero_location`, `velero_schedule`),
    listed under /apis/velero.io/v1 with their namespaces made to exist; None (the default): the
    velero.io CRDs are not installed, so those paths are a 404 and discovery does not list them.
    `nodes`: the cluster's Node items (see `node`), listed in pages at /api/v1/nodes; None (the
    default) is one healthy Ready node, worker-1, the node `schedule_pod` binds pods to.
    `metrics`: NodeMetrics items (see `node_metrics`) served at /apis/metrics.k8s.io/v1beta1/nodes
    as metrics-server would; None (the default): metrics-server is not installed, so that group is
    a 404 and discovery does not list it. `metrics_unavailable`: the group is registered but its
    service does not answer: every path under it is the aggregator's 503."""

    def __init__(self, pods: dict[str, list[dict]], *, token: str | None = None,
                 fail: dict[str, int] | None = None, delay: float = 0.0,
                 forbid_namespace_read: bool = False, tls: ssl.SSLContext | None = None,
                 roles: dict[str, Role] | None = None, custom_objects: list[dict] | None = None,
                 nodes: list[dict] | None = None, metrics: list[dict] | None = None,
                 metrics_unavailable: bool = False):
        self.pods = pods
        self.nodes = [node("worker-1")] if nodes is None else list(nodes)
        self.metrics = metrics
        self.metrics_unavailable = metrics_unavailable
        self.metrics_prefixes = (METRICS_PREFIX,) if metrics is not None or metrics_unavailable else ()
        self.custom_prefixes = CUSTOM_PREFIXES if custom_objects is not None else ()
        self.token = token
        self.roles = dict(roles or {})
        self.fail = dict(fail or {})
        self.delay = delay
        self.forbid_namespace_read = forbid_namespace_read
        self.requests: list[SeenRequest] = []
        self.answers: list[tuple[SeenRequest, int]] = []  # each request with its status code, once answered
        self.lock = threading.Lock()
        # Objects created through the API (or by the test playing controller and kubelet):
        # (plural, namespace, name) -> object, and every change for the watches.
        self.objects: dict[tuple[str, str, str], dict] = {}
        self.revision = 4711
        self.changes: list[tuple[int, str, str, dict]] = []  # (resourceVersion, plural, type, object)
        self.changed = threading.Condition(self.lock)
        self.warnings: list[tuple[str, str]] = []  # (path, warning) sent in Warning headers
        self.pod_logs: dict[tuple[str, str], str] = {}
        self.closing = False
        plural_of = {(RESOURCES[p][0], RESOURCES[p][1]): p for p in RESOURCES}
        for obj in custom_objects or []:
            plural = plural_of[("/apis/" + obj["apiVersion"], obj["kind"])]
            self.add_namespace(obj["metadata"]["namespace"])
            self.objects[(plural, obj["metadata"]["namespace"], obj["metadata"]["name"])] = copy.deepcopy(obj)
        api = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def handle_any(self):
                url = urlparse(self.path)
                query = {k: v[-1] for k, v in parse_qs(url.query).items()}
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if length else b""
                try:
                    body = json.loads(raw) if raw else None
                except ValueError:
                    body = raw.decode(errors="replace")
                seen = SeenRequest(self.command, url.path, query, self.headers.get("Authorization"),
                                   self.headers.get("User-Agent"), body)
                with api.lock:
                    api.requests.append(seen)
                if api.delay:
                    time.sleep(api.delay)
                try:
                    code, answer, headers = api.answer_request(self.command, url.path, query,
                                                               self.headers.get("Authorization"), body)
                except ApiError as exc:
                    code, answer, headers = exc.code, exc.body, {}
                with api.lock:
                    api.answers.append((seen, 200 if code == "watch" else code))
                if code == "watch":
                    return api.stream_watch(self, **answer)
                if isinstance(answer, str):
                    payload, content_type = answer.encode(), "text/plain"
                else:
                    payload, content_type = json.dumps(answer).encode(), "application/json"
                self.send_response(code)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(payload)))
                for name, value in headers.items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(payload)

            do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = handle_any

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

    # --- what exists --------------------------------------------------------------------------

    def namespace_exists(self, name: str) -> bool:
        return name in self.pods

    def add_namespace(self, name: str) -> None:
        self.pods.setdefault(name, [])

    def stored(self, plural: str, namespace: str | None = None) -> list[dict]:
        """Copies of the objects kept of a kind (in one namespace, or all), in creation order."""
        with self.lock:
            return [copy.deepcopy(o) for (p, ns, _), o in self.objects.items()
                    if p == plural and namespace in (None, ns)]

    def get(self, plural: str, namespace: str, name: str) -> dict:
        with self.lock:
            return copy.deepcopy(self.objects[(plural, namespace, name)])

    def requests_to(self, method: str, pattern: str) -> list[SeenRequest]:
        """The requests of `method` whose path matches the regular expression `pattern` (whole)."""
        with self.lock:
            return [r for r in self.requests if r.method == method and re.fullmatch(pattern, r.path)]

    def _put(self, plural: str, obj: dict, change: str) -> dict:
        """Stores (or deletes) an object with a new resourceVersion and tells the watches. Lock held."""
        self.revision += 1
        obj["metadata"]["resourceVersion"] = str(self.revision)
        key = (plural, obj["metadata"].get("namespace", ""), obj["metadata"]["name"])
        if change == "DELETED":
            self.objects.pop(key, None)
        else:
            self.objects[key] = obj
        self.changes.append((self.revision, plural, change, copy.deepcopy(obj)))
        self.changed.notify_all()
        return copy.deepcopy(obj)

    # --- the API ------------------------------------------------------------------------------

    def answer(self, path: str, query: dict[str, str], authorization: str | None) -> tuple[int, dict]:
        """A GET, as before the server kept objects (the pod listing's tests call it so)."""
        try:
            code, body, _ = self.answer_request("GET", path, query, authorization, None)
        except ApiError as exc:
            return exc.code, exc.body
        return code, body

    def answer_request(self, method: str, path: str, query: dict[str, str], authorization: str | None,
                       body: Any) -> tuple[Any, Any, dict]:
        scheme, _, presented = (authorization or "").partition(" ")
        bearer = presented if scheme.lower() == "bearer" else None
        role = self.roles.get(bearer) if bearer is not None else None
        if (self.token is not None or self.roles) and role is None and bearer != self.token:
            return 401, status_json(401, "Unauthorized", "Unauthorized"), {}
        path = "/" + path.strip("/")
        if self.metrics_prefixes and (path == METRICS_PREFIX or path.startswith(METRICS_PREFIX + "/")):
            return self.answer_metrics(method, path[len(METRICS_PREFIX) + 1:], role)
        if path in ("/version", "/api", "/apis", "/api/v1", "/apis/batch/v1", *self.custom_prefixes):
            if method != "GET":
                raise self._not_allowed(method, path)
            return 200, self.discovery(path), {}
        for prefix in ("/api/v1", "/apis/batch/v1", *self.custom_prefixes):
            if path.startswith(prefix + "/"):
                rest = path[len(prefix) + 1:].split("/")
                break
        else:
            raise self._not_found()
        namespace = None
        if rest[0] == "namespaces" and len(rest) >= 3:
            namespace, rest = rest[1], rest[2:]
        plural, name, subresource = rest[0], (rest[1:2] or [None])[0], "/".join(rest[2:]) or None
        if plural == "namespaces" and namespace is None and name is not None and subresource is None:
            namespace, plural, name = name, "namespaces", None  # /api/v1/namespaces/NAME
            if prefix != "/api/v1":
                raise self._not_found()
            if method != "GET":
                raise self._not_allowed(method, path)
            if role is not None:
                role.check("namespaces", "get", namespace, name=namespace)
            return 200, self.read_namespace(namespace), {}
        if plural not in RESOURCES or RESOURCES[plural][0] != prefix or len(rest) > 3 \
                or (namespace is not None and not RESOURCES[plural][2]):
            raise self._not_found()
        verbs = RESOURCES[plural][3]
        if subresource is not None:
            allowed = SUBRESOURCES.get(f"{plural}/{subresource}")
            if allowed is None or name is None:
                raise self._not_found()
            if method != "GET":
                raise self._not_allowed(method, path)
            if role is not None:
                role.check(f"{plural}/{subresource}", "get", namespace, name=name)
            return 200, self.read_log(namespace, name), {}
        if method == "GET":
            verb = "get" if name else ("watch" if query.get("watch") in ("true", "1") else "list")
        else:
            verb = _VERB_OF.get(method, method.lower())
        if verb not in verbs or (verb == "create" and name) or (verb == "delete" and not name) \
                or (verb in ("create", "get", "delete") and namespace is None and RESOURCES[plural][2]):
            raise self._not_allowed(method, path)
        if role is not None:
            role.check(plural, verb, namespace, name=name)
        if plural == "nodes":
            return 200, self.answer_nodes(name, query), {}
        if verb == "list" and plural == "pods" and namespace is not None and not query.get("labelSelector"):
            return 200, self.list_pods(namespace, query), {}
        if verb in ("list", "watch"):
            selector = parse_selector(query.get("labelSelector", ""))
            if query.get("fieldSelector"):
                raise ApiError(400, "BadRequest", "fieldSelector is not implemented by this test server")
            if verb == "watch":
                return "watch", {"plural": plural, "namespace": namespace, "selector": selector,
                                 "since": query.get("resourceVersion"),
                                 "bookmarks": query.get("allowWatchBookmarks") == "true",
                                 "timeout": float(query.get("timeoutSeconds") or WATCH_MAX_SECONDS)}, {}
            return 200, self.list_objects(plural, namespace, selector, query), {}
        if verb == "get":
            with self.lock:
                obj = self.objects.get((plural, namespace, name))
            if obj is None:
                raise self._missing(plural, name)
            return 200, copy.deepcopy(obj), {}
        if verb == "delete":
            return 200, self.delete(plural, namespace, name, query, body), {}
        return self.create(plural, namespace, body)

    def discovery(self, path: str) -> dict:
        if path == "/version":
            return {"major": "1", "minor": "31", "gitVersion": "v1.31.4-maint-test", "platform": "linux/amd64"}
        if path == "/api":
            return {"kind": "APIVersions", "versions": ["v1"], "serverAddressByClientCIDRs": [
                {"clientCIDR": "0.0.0.0/0", "serverAddress": f"127.0.0.1:{self.port}"}]}
        if path == "/apis":
            groups = []
            for prefix in ("/apis/batch/v1", *self.custom_prefixes, *self.metrics_prefixes):
                version = {"groupVersion": API_VERSION[prefix], "version": API_VERSION[prefix].split("/")[1]}
                groups.append({"name": API_VERSION[prefix].split("/")[0], "versions": [version],
                               "preferredVersion": version})
            return {"kind": "APIGroupList", "apiVersion": "v1", "groups": groups}
        resources = []
        for plural, (prefix, kind, namespaced, verbs) in RESOURCES.items():
            if prefix == path:
                resources.append({"name": plural, "singularName": kind.lower(), "namespaced": namespaced,
                                  "kind": kind, "verbs": list(verbs)})
        for sub, verbs in SUBRESOURCES.items():
            if RESOURCES[sub.split("/")[0]][0] == path:
                resources.append({"name": sub, "singularName": "", "namespaced": True, "kind": "Pod",
                                  "verbs": list(verbs)})
        return {"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": API_VERSION[path],
                "resources": resources}

    def _not_found(self) -> ApiError:
        return ApiError(404, "NotFound", "the server could not find the requested resource", {})

    def _not_allowed(self, method: str, path: str) -> ApiError:
        return ApiError(405, "MethodNotAllowed", f"the server does not allow this method on the requested "
                        f"resource ({method} {path} is not implemented by this test server)", {})

    def _missing(self, plural: str, name: str) -> ApiError:
        group = group_of(plural)
        what = f"{plural}.{group}" if group else plural
        return ApiError(404, "NotFound", f'{what} "{name}" not found',
                        {"name": name, "kind": plural, **({"group": group} if group else {})})

    def read_namespace(self, name: str) -> dict:
        if self.forbid_namespace_read:
            raise ApiError(403, "Forbidden", f'namespaces "{name}" is forbidden: User '
                           '"system:serviceaccount:ops:maint" cannot get resource "namespaces" in '
                           f'API group "" in the namespace "{name}"', {"name": name, "kind": "namespaces"})
        if not self.namespace_exists(name):
            raise ApiError(404, "NotFound", f'namespaces "{name}" not found', {"name": name, "kind": "namespaces"})
        return {"kind": "Namespace", "apiVersion": "v1",
                "metadata": {"name": name, "uid": str(uuid.uuid5(uuid.NAMESPACE_DNS, name)),
                             "creationTimestamp": "2024-01-01T00:00:00Z"},
                "spec": {"finalizers": ["kubernetes"]}, "status": {"phase": "Active"}}

    def answer_nodes(self, name: str | None, query: dict[str, str]) -> dict:
        """GET /api/v1/nodes (in pages, with a labelSelector) or /api/v1/nodes/NAME."""
        with self.lock:
            nodes = copy.deepcopy(self.nodes)
        if name is not None:
            found = next((n for n in nodes if n["metadata"]["name"] == name), None)
            if found is None:
                raise self._missing("nodes", name)
            return found
        if query.get("fieldSelector"):
            raise ApiError(400, "BadRequest", "fieldSelector is not implemented by this test server")
        selector = parse_selector(query.get("labelSelector", ""))
        return self._page("NodeList", "v1", [n for n in nodes if selector(n["metadata"].get("labels") or {})], query)

    def answer_metrics(self, method: str, rest: str, role: Role | None) -> tuple[int, Any, dict]:
        """metrics-server's API (metrics.k8s.io/v1beta1) as the aggregator serves it: discovery,
        list and get of NodeMetrics; the aggregator's 503 when the service does not answer."""
        plural, _, name = rest.partition("/")
        if rest and (plural != "nodes" or "/" in name):
            raise self._not_found()
        if rest and method == "GET" and role is not None:  # the API server authorizes before it proxies
            role.check("nodes", "get" if name else "list", None, name=name or None, group="metrics.k8s.io")
        if self.metrics_unavailable:
            return 503, "service unavailable\n", {}
        if method != "GET":
            raise self._not_allowed(method, METRICS_PREFIX + "/" + rest)
        if not rest:
            return 200, {"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": API_VERSION[METRICS_PREFIX],
                         "resources": [{"name": plural, "singularName": "", "namespaced": plural == "pods",
                                        "kind": kind, "verbs": ["get", "list"]}
                                       for plural, kind in (("nodes", "NodeMetrics"), ("pods", "PodMetrics"))]}, {}
        with self.lock:
            items = copy.deepcopy(self.metrics or [])
        if name:
            found = next((m for m in items if m["metadata"]["name"] == name), None)
            if found is None:
                raise ApiError(404, "NotFound", f'nodemetrics.metrics.k8s.io "{name}" not found',
                               {"name": name, "group": "metrics.k8s.io", "kind": "nodes"})
            return 200, found, {}
        # metrics-server ignores `limit`: its list is in memory and small.
        return 200, {"kind": "NodeMetricsList", "apiVersion": API_VERSION[METRICS_PREFIX], "metadata": {},
                     "items": items}, {}

    def _page(self, kind: str, api_version: str, items: list[dict], query: dict[str, str],
              revision: int | None = None) -> dict:
        """One page of a list: `limit` items from the `continue` token on (the token is an offset)."""
        start = int(query.get("continue") or 0)
        limit = int(query.get("limit") or 0) or len(items) or 1
        metadata = {"resourceVersion": str(self.revision if revision is None else revision)}
        if start + limit < len(items):
            metadata["continue"] = str(start + limit)
            metadata["remainingItemCount"] = len(items) - start - limit
        return {"kind": kind, "apiVersion": api_version, "metadata": metadata, "items": items[start:start + limit]}

    def list_pods(self, namespace: str, query: dict[str, str]) -> dict:
        """The health check's listing: the given pods (and any the test made), in pages."""
        if namespace in self.fail:
            code = self.fail[namespace]
            if code == 403:
                raise ApiError(403, "Forbidden", f'pods is forbidden: User "system:serviceaccount:ops:maint" '
                               f'cannot list resource "pods" in API group "" in the namespace "{namespace}"',
                               {"kind": "pods"})
            raise ApiError(code, "InternalError", "Internal error occurred: etcdserver: request timed out")
        # An unknown namespace lists as empty, like the real API.
        items = list(self.pods.get(namespace, [])) + self.stored("pods", namespace)
        return self._page("PodList", "v1", items, query)

    def list_objects(self, plural: str, namespace: str | None, selector, query: dict[str, str]) -> dict:
        prefix, kind, _, _ = RESOURCES[plural]
        with self.lock:
            items = [copy.deepcopy(o) for (p, ns, _), o in self.objects.items()
                     if p == plural and namespace in (None, ns)]
            revision = self.revision
        if plural == "pods":
            items = [p for ns, pods in self.pods.items() if namespace in (None, ns) for p in pods] + items
        items = [o for o in items if selector(o["metadata"].get("labels") or {})]
        return self._page(f"{kind}List", API_VERSION[prefix], items, query, revision)

    def read_log(self, namespace: str, name: str) -> str:
        with self.lock:
            pod = self.objects.get(("pods", namespace, name))
            log = self.pod_logs.get((namespace, name))
        if pod is None:
            raise self._missing("pods", name)
        if log is None:
            raise ApiError(400, "BadRequest", f'container "{pod["spec"]["containers"][0]["name"]}" in pod '
                           f'"{name}" is waiting to start: ContainerCreating')
        return log

    def stream_watch(self, handler: BaseHTTPRequestHandler, *, plural: str, namespace: str | None, selector,
                     since: str | None, bookmarks: bool, timeout: float) -> None:
        """A watch: chunked JSON lines, one per change after `since` (with no `since`, every
        object as ADDED first), BOOKMARKs while quiet, until `timeout` or the server closes."""
        handler.send_response(200)
        handler.send_header("Content-Type", "application/json")
        handler.send_header("Transfer-Encoding", "chunked")
        handler.end_headers()

        def send(event: dict) -> None:
            data = json.dumps(event).encode() + b"\n"
            handler.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")

        def wanted(obj: dict) -> bool:
            return namespace in (None, obj["metadata"].get("namespace")) and selector(obj["metadata"].get("labels") or {})

        deadline = time.monotonic() + timeout
        try:
            with self.lock:
                if since in (None, "", "0"):
                    initial = [copy.deepcopy(o) for (p, _, _), o in self.objects.items() if p == plural and wanted(o)]
                    position = self.revision
                else:
                    initial, position = [], int(since)
            for obj in initial:
                send({"type": "ADDED", "object": obj})
            last_sent = time.monotonic()
            while True:
                with self.lock:
                    pending = [(rv, kind, obj) for rv, p, kind, obj in self.changes
                               if rv > position and p == plural and wanted(obj)]
                    position = self.revision
                    if not pending and not self.closing:
                        self.changed.wait(min(1.0, max(0.0, deadline - time.monotonic())))
                    closing = self.closing
                for _, kind, obj in pending:
                    send({"type": kind, "object": obj})
                    last_sent = time.monotonic()
                if closing or time.monotonic() >= deadline:
                    break
                if bookmarks and time.monotonic() - last_sent >= WATCH_BOOKMARK_SECONDS:
                    prefix, kind_name, _, _ = RESOURCES[plural]
                    send({"type": "BOOKMARK", "object": {"kind": kind_name, "apiVersion": API_VERSION[prefix],
                                                         "metadata": {"resourceVersion": str(position)}}})
                    last_sent = time.monotonic()
            handler.wfile.write(b"0\r\n\r\n")
        except (BrokenPipeError, ConnectionResetError, ssl.SSLError, OSError):
            handler.close_connection = True

    # --- create and delete --------------------------------------------------------------------

    def create(self, plural: str, namespace: str, body: Any) -> tuple[int, dict, dict]:
        prefix, kind, _, _ = RESOURCES[plural]
        if not isinstance(body, dict):
            raise ApiError(400, "BadRequest", f"the body of the request was in an unknown format: {body!r:.80}")
        if body.get("kind") not in (None, kind) or body.get("apiVersion") not in (None, API_VERSION[prefix]):
            raise ApiError(400, "BadRequest", f'{body.get("kind")} in version "{body.get("apiVersion")}" cannot '
                           f"be handled as a {kind}: the object kind or apiVersion does not match the URL")
        obj = copy.deepcopy(body)
        obj["kind"], obj["apiVersion"] = kind, API_VERSION[prefix]
        metadata = obj.setdefault("metadata", {})
        if metadata.get("namespace") not in (None, namespace):
            raise ApiError(400, "BadRequest", "the namespace of the provided object does not match the namespace "
                           "sent on the request")
        if not self.namespace_exists(namespace):
            raise ApiError(404, "NotFound", f'namespaces "{namespace}" not found', {"name": namespace, "kind": "namespaces"})
        warnings: list[str] = []
        if plural == "jobs":
            warnings = validate_job(obj)
        elif plural == "secrets":
            for key, value in (obj.pop("stringData", None) or {}).items():
                obj.setdefault("data", {})[key] = base64.b64encode(str(value).encode()).decode()
            for key, value in (obj.get("data") or {}).items():
                try:
                    base64.b64decode(value, validate=True)
                except (ValueError, TypeError):
                    raise ApiError(400, "BadRequest", f"Secret in version \"v1\" cannot be handled as a Secret: "
                                   f"illegal base64 data in data.{key}") from None
            obj.setdefault("type", "Opaque")
        name = metadata.get("name")
        with self.lock:
            if not name:
                if not metadata.get("generateName"):
                    raise ApiError(422, "Invalid", f"{kind} \"\" is invalid: metadata.name: Required value: name or "
                                   "generateName is required", {"kind": plural, "causes": [
                                       {"reason": "FieldValueRequired", "field": "metadata.name",
                                        "message": "Required value: name or generateName is required"}]})
                name = metadata["generateName"] + random_suffix()
            if (plural, namespace, name) in self.objects:
                raise ApiError(409, "AlreadyExists", f'{plural} "{name}" already exists', {"name": name, "kind": plural})
            if plural == "jobs" and len(name) > 63:
                raise invalid(kind, name, [("metadata.name", f"Invalid value: {name!r}: must be no more than "
                                            "63 characters")])
            uid = str(uuid.uuid4())
            metadata.update(name=name, namespace=namespace, uid=uid, creationTimestamp=now_ts())
            if plural == "jobs":
                metadata["generation"] = 1
                default_job(obj)
            stored = self._put(plural, obj, "ADDED")
        for warning in warnings:
            self.warnings.append((f"{RESOURCES[plural][0]}/namespaces/{namespace}/{plural}", warning))
        quoted = (w.replace("\\", "\\\\").replace('"', '\\"') for w in warnings)  # RFC 7234 warn-text
        headers = {"Warning": ", ".join(f'299 - "{w}"' for w in quoted)} if warnings else {}
        return 201, stored, headers

    def delete(self, plural: str, namespace: str, name: str, query: dict[str, str], body: Any) -> dict:
        with self.lock:
            obj = self.objects.get((plural, namespace, name))
            if obj is None:
                raise self._missing(plural, name)
            obj = copy.deepcopy(obj)
            obj["metadata"]["deletionTimestamp"] = now_ts()
            deleted = self._put(plural, obj, "DELETED")
            if plural == "jobs":  # the garbage collector takes the Job's pods with it
                for (p, ns, pod_name), pod in list(self.objects.items()):
                    owners = pod["metadata"].get("ownerReferences") or []
                    if p == "pods" and ns == namespace and any(o.get("uid") == obj["metadata"]["uid"] for o in owners):
                        gone = copy.deepcopy(pod)
                        gone["metadata"]["deletionTimestamp"] = now_ts()
                        self._put("pods", gone, "DELETED")
        return deleted

    # --- the test plays the Job controller and the kubelet ------------------------------------

    def schedule_pod(self, namespace: str, job_name: str, node: str = "worker-1") -> dict:
        """The Job controller creates the Job's pod and the scheduler binds it: Pending, its
        containers ContainerCreating; the Job counts it active."""
        with self.lock:
            job = self.objects[("jobs", namespace, job_name)]
            template = copy.deepcopy(job["spec"]["template"])
            name = f"{job_name}-{random_suffix()}"
            labels = template.get("metadata", {}).get("labels", {})
            metadata = {"name": name, "generateName": f"{job_name}-", "namespace": namespace,
                        "uid": str(uuid.uuid4()), "creationTimestamp": now_ts(), "labels": labels,
                        "annotations": template.get("metadata", {}).get("annotations", {}),
                        "ownerReferences": [{"apiVersion": "batch/v1", "kind": "Job", "name": job_name,
                                             "uid": job["metadata"]["uid"], "controller": True,
                                             "blockOwnerDeletion": True}],
                        "finalizers": ["batch.kubernetes.io/job-tracking"]}
            spec = template["spec"] | {"nodeName": node}
            statuses = [{"name": c["name"], "image": c["image"], "imageID": "", "ready": False, "restartCount": 0,
                         "started": False, "lastState": {}, "state": {"waiting": {"reason": "ContainerCreating"}}}
                        for c in spec["containers"]]
            now = now_ts()
            status = {"phase": "Pending", "qosClass": "Burstable", "startTime": now, "hostIP": "10.0.1.17",
                      "conditions": [_cond("PodScheduled", True, now), _cond("Initialized", True, now),
                                     _cond("Ready", False, now, "ContainersNotReady"),
                                     _cond("ContainersReady", False, now, "ContainersNotReady")],
                      "containerStatuses": statuses}
            pod = self._put("pods", {"apiVersion": "v1", "kind": "Pod", "metadata": metadata, "spec": spec,
                                     "status": status}, "ADDED")
            job = copy.deepcopy(job)
            job["status"] = {**job.get("status", {}), "startTime": now, "active": 1, "ready": 0,
                             "terminating": 0, "uncountedTerminatedPods": {}}
            self._put("jobs", job, "MODIFIED")
        return pod

    def pod_started(self, namespace: str, pod_name: str) -> dict:
        """The kubelet started the pod's containers: Running and Ready."""
        with self.lock:
            pod = copy.deepcopy(self.objects[("pods", namespace, pod_name)])
            now = now_ts()
            for status in pod["status"]["containerStatuses"]:
                status |= {"ready": True, "started": True, "state": {"running": {"startedAt": now}},
                           "containerID": "containerd://" + uuid.uuid4().hex * 2}
            pod["status"] |= {"phase": "Running", "podIP": "10.244.3.29", "podIPs": [{"ip": "10.244.3.29"}],
                              "conditions": [_cond(c["type"], True, now) for c in pod["status"]["conditions"]]}
            stored = self._put("pods", pod, "MODIFIED")
            job = copy.deepcopy(self.objects[("jobs", namespace, _job_of(pod))])
            job["status"]["ready"] = 1
            self._put("jobs", job, "MODIFIED")
        return stored

    def pod_finished(self, namespace: str, pod_name: str, exit_code: int, *, reason: str | None = None,
                     log: str = "") -> dict:
        """The container exited with `exit_code` (`reason`: Completed or Error by the code, or e.g.
        OOMKilled): the pod Succeeded or Failed, and the Job completes or, with backoffLimit 0,
        fails with BackoffLimitExceeded. Retries (a new pod) are not played: refused."""
        with self.lock:
            pod = copy.deepcopy(self.objects[("pods", namespace, pod_name)])
            job = copy.deepcopy(self.objects[("jobs", namespace, _job_of(pod))])
            if exit_code != 0 and job["spec"].get("backoffLimit", 6) > 0:
                raise NotImplementedError("a Job with retries left would get a new pod: not played here")
            now = now_ts()
            reason = reason or ("Completed" if exit_code == 0 else "Error")
            for status in pod["status"]["containerStatuses"]:
                started = status["state"].get("running", {}).get("startedAt", now)
                status |= {"ready": False, "started": False, "state": {"terminated": {
                    "exitCode": exit_code, "reason": reason, "startedAt": started, "finishedAt": now,
                    "containerID": status.get("containerID", "")}}}
            pod["status"]["phase"] = "Succeeded" if exit_code == 0 else "Failed"
            pod["status"]["conditions"] = [_cond(c["type"], c["type"] in ("PodScheduled", "Initialized"), now,
                                                 None if c["type"] in ("PodScheduled", "Initialized") else "PodCompleted")
                                           for c in pod["status"]["conditions"]]
            pod["metadata"]["finalizers"] = []
            self.pod_logs[(namespace, pod_name)] = log
            stored = self._put("pods", pod, "MODIFIED")
            status = job["status"] | {"active": 0, "ready": 0}
            if exit_code == 0:
                status |= {"succeeded": 1, "completionTime": now, "conditions": [
                    _cond("SuccessCriteriaMet", True, now, "CompletionsReached", "Reached expected number of succeeded pods"),
                    _cond("Complete", True, now, "CompletionsReached", "Reached expected number of succeeded pods")]}
            else:
                status |= {"failed": 1, "conditions": [
                    _cond("FailureTarget", True, now, "BackoffLimitExceeded", "Job has reached the specified backoff limit"),
                    _cond("Failed", True, now, "BackoffLimitExceeded", "Job has reached the specified backoff limit")]}
            job["status"] = status
            self._put("jobs", job, "MODIFIED")
        return stored

    def pod_list_requests(self) -> list[SeenRequest]:
        return [r for r in self.requests if r.path.endswith("/pods")]

    def __enter__(self) -> "KubeApiServer":
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        with self.lock:
            self.closing = True  # ends the watches
            self.changed.notify_all()
        self.server.shutdown()
        self.server.server_close()


def _cond(kind: str, ok: bool, when: str, reason: str | None = None, message: str | None = None) -> dict:
    body = {"type": kind, "status": "True" if ok else "False", "lastProbeTime": None, "lastTransitionTime": when}
    if reason:
        body["reason"] = reason
    if message:
        body["message"] = message
    return body


def _job_of(pod: dict) -> str:
    return next(o["name"] for o in pod["metadata"]["ownerReferences"] if o["kind"] == "Job")


def parse_selector(selector: str):
    """A label selector's equality and existence terms (`a`, `!a`, `a=b`, `a==b`, `a!=b`) as a
    predicate on labels; set-based terms are a 400 here."""
    terms = []
    for term in (t.strip() for t in selector.split(",")):
        if not term:
            continue
        if " in " in term or " notin " in term or "(" in term:
            raise ApiError(400, "BadRequest", f"set-based selector {term!r} is not implemented by this test server")
        if "!=" in term:
            key, value = (s.strip() for s in term.split("!=", 1))
            terms.append(lambda labels, k=key, v=value: labels.get(k) != v)
        elif "=" in term:
            key, value = (s.strip() for s in re.split("==?", term, maxsplit=1))
            terms.append(lambda labels, k=key, v=value: labels.get(k) == v)
        elif term.startswith("!"):
            terms.append(lambda labels, k=term[1:].strip(): k not in labels)
        else:
            terms.append(lambda labels, k=term: k in labels)
    return lambda labels: all(term(labels) for term in terms)


# --- what the API server checks and defaults in a Job ----------------------------------------

_FIELDS = {
    "job": {"apiVersion", "kind", "metadata", "spec", "status"},
    "metadata": {"name", "generateName", "namespace", "selfLink", "uid", "resourceVersion", "generation",
                 "creationTimestamp", "deletionTimestamp", "deletionGracePeriodSeconds", "labels", "annotations",
                 "ownerReferences", "finalizers", "managedFields"},
    "jobspec": {"parallelism", "completions", "activeDeadlineSeconds", "podFailurePolicy", "successPolicy",
                "backoffLimit", "backoffLimitPerIndex", "maxFailedIndexes", "selector", "manualSelector", "template",
                "ttlSecondsAfterFinished", "completionMode", "suspend", "podReplacementPolicy", "managedBy"},
    "template": {"metadata", "spec"},
    "podspec": {"volumes", "initContainers", "containers", "ephemeralContainers", "restartPolicy",
                "terminationGracePeriodSeconds", "activeDeadlineSeconds", "dnsPolicy", "nodeSelector",
                "serviceAccountName", "serviceAccount", "automountServiceAccountToken", "nodeName", "hostNetwork",
                "hostPID", "hostIPC", "shareProcessNamespace", "securityContext", "imagePullSecrets", "hostname",
                "subdomain", "affinity", "schedulerName", "tolerations", "hostAliases", "priorityClassName",
                "priority", "dnsConfig", "readinessGates", "runtimeClassName", "enableServiceLinks",
                "preemptionPolicy", "overhead", "topologySpreadConstraints", "setHostnameAsFQDN", "os", "hostUsers",
                "schedulingGates", "resourceClaims", "resources"},
    "container": {"name", "image", "command", "args", "workingDir", "ports", "envFrom", "env", "resources",
                  "resizePolicy", "restartPolicy", "volumeMounts", "volumeDevices", "livenessProbe", "readinessProbe",
                  "startupProbe", "lifecycle", "terminationMessagePath", "terminationMessagePolicy",
                  "imagePullPolicy", "securityContext", "stdin", "stdinOnce", "tty"},
}
_INT_FIELDS = {"jobspec": ("parallelism", "completions", "activeDeadlineSeconds", "backoffLimit",
                           "ttlSecondsAfterFinished"),
               "podspec": ("terminationGracePeriodSeconds", "activeDeadlineSeconds")}
_GO_TYPES = {"jobspec": "JobSpec.spec", "podspec": "PodSpec.spec.template.spec"}
_DNS_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")
_DNS_SUBDOMAIN = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")
_LABEL_NAME = re.compile(r"([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]")
_ENV_NAME = re.compile(r"[-._a-zA-Z][-._a-zA-Z0-9]*")
_QUANTITY = re.compile(r"([+-]?(?:\d+(?:\.\d*)?|\.\d+))(Ki|Mi|Gi|Ti|Pi|Ei|m|k|M|G|T|P|E|[eE][+-]?\d+)?")
_SCALE = {None: 1, "m": Decimal("0.001"), "k": 10**3, "M": 10**6, "G": 10**9, "T": 10**12, "P": 10**15,
          "E": 10**18, "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "Pi": 2**50, "Ei": 2**60}


def quantity(value: Any) -> Decimal | None:
    """A resource quantity's value ('250m', '2Gi', 3), or None when it is not one."""
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        return None
    match = _QUANTITY.fullmatch(str(value))
    if not match:
        return None
    try:
        number, suffix = Decimal(match[1]), match[2]
    except InvalidOperation:
        return None
    if suffix and suffix[0] in "eE":
        return number * Decimal(10) ** int(suffix[1:])
    return number * _SCALE[suffix]


def invalid(kind: str, name: str, problems: list[tuple[str, str]]) -> ApiError:
    causes = [{"reason": "FieldValueInvalid", "field": f, "message": m} for f, m in problems]
    listed = ", ".join(f"{f}: {m}" for f, m in problems)
    return ApiError(422, "Invalid", f'{kind}.batch "{name}" is invalid: [{listed}]',
                    {"name": name, "group": "batch", "kind": "jobs", "causes": causes})


def validate_job(job: dict) -> list[str]:
    """Raises ApiError (400 for a wrong JSON type, 422 for a wrong value) as the API server would;
    returns the warnings for unknown fields."""
    warnings: list[str] = []

    def known(obj: Any, fields: str, where: str) -> None:
        if isinstance(obj, dict):
            warnings.extend(f'unknown field "{where}{key}"' for key in obj if key not in _FIELDS[fields])

    def decode_error(what: str, go_type: str, got: Any) -> ApiError:
        kind = {str: "string", bool: "bool", int: "number", float: "number", list: "array", dict: "object",
                type(None): "null"}.get(type(got), type(got).__name__)
        return ApiError(400, "BadRequest", f'Job in version "v1" cannot be handled as a Job: json: cannot unmarshal '
                        f"{kind} into Go struct field {what} of type {go_type}")

    metadata, spec = job.get("metadata") or {}, job.get("spec")
    known(job, "job", "")
    known(metadata, "metadata", "metadata.")
    if not isinstance(spec, dict):
        raise decode_error("Job.spec", "v1.JobSpec", spec)
    known(spec, "jobspec", "spec.")
    for key in _INT_FIELDS["jobspec"]:
        if key in spec and spec[key] is not None and type(spec[key]) is not int:
            raise decode_error(f"{_GO_TYPES['jobspec']}.{key}", "int32" if key != "activeDeadlineSeconds" else "int64",
                               spec[key])
    template = spec.get("template") or {}
    known(template, "template", "spec.template.")
    pod_spec = template.get("spec") or {}
    known(pod_spec, "podspec", "spec.template.spec.")
    for key in _INT_FIELDS["podspec"]:
        if key in pod_spec and pod_spec[key] is not None and type(pod_spec[key]) is not int:
            raise decode_error(f"{_GO_TYPES['podspec']}.{key}", "int64", pod_spec[key])
    for where, labels in (("metadata", metadata), ("spec.template.metadata", template.get("metadata") or {})):
        for what in ("labels", "annotations"):
            values = labels.get(what)
            if values is None:
                continue
            if not isinstance(values, dict) or not all(isinstance(v, str) for v in values.values()):
                raise decode_error(f"ObjectMeta.{where}.{what}", "string", next(
                    (v for v in (values.values() if isinstance(values, dict) else [values]) if not isinstance(v, str)),
                    values))

    name = metadata.get("name") or (metadata.get("generateName") or "") + "xxxxx"
    problems: list[tuple[str, str]] = []

    def check_labels(where: str, labels: dict) -> None:
        for key, value in labels.items():
            prefix, _, short = key.rpartition("/")
            if not (_LABEL_NAME.fullmatch(short) and len(short) <= 63) or (prefix and not (
                    _DNS_SUBDOMAIN.fullmatch(prefix) and len(prefix) <= 253)):
                problems.append((f"{where}.labels", f"Invalid value: {key!r}: name part must consist of alphanumeric "
                                 "characters, '-', '_' or '.', and must start and end with an alphanumeric character"))
            if value and not (_LABEL_NAME.fullmatch(value) and len(value) <= 63):
                problems.append((f"{where}.labels", f"Invalid value: {value!r}: a valid label must be an empty string "
                                 "or consist of alphanumeric characters, '-', '_' or '.', and must start and end with "
                                 "an alphanumeric character, at most 63 characters"))

    check_labels("metadata", metadata.get("labels") or {})
    check_labels("spec.template.metadata", (template.get("metadata") or {}).get("labels") or {})
    for key in ("backoffLimit", "ttlSecondsAfterFinished", "completions", "parallelism"):
        if isinstance(spec.get(key), int) and spec[key] < 0:
            problems.append((f"spec.{key}", f"Invalid value: {spec[key]}: must be greater than or equal to 0"))
    if pod_spec.get("restartPolicy") not in ("Never", "OnFailure"):
        problems.append(("spec.template.spec.restartPolicy", f"Unsupported value: {pod_spec.get('restartPolicy')!r}: "
                         'supported values: "OnFailure", "Never"'))
    account = pod_spec.get("serviceAccountName")
    if account is not None and not (isinstance(account, str) and _DNS_SUBDOMAIN.fullmatch(account)):
        problems.append(("spec.template.spec.serviceAccountName", f"Invalid value: {account!r}: a lowercase RFC 1123 "
                         "subdomain must consist of lower case alphanumeric characters, '-' or '.'"))
    volumes = {v.get("name") for v in pod_spec.get("volumes") or []}
    for i, volume in enumerate(pod_spec.get("volumes") or []):
        source = volume.get("configMap") or volume.get("secret")
        if source is not None and not (source.get("name") or source.get("secretName")):
            problems.append((f"spec.template.spec.volumes[{i}].configMap.name", "Required value"))
    containers = pod_spec.get("containers")
    if not isinstance(containers, list) or not containers:
        problems.append(("spec.template.spec.containers", "Required value"))
        containers = []
    for i, container in enumerate(containers):
        at = f"spec.template.spec.containers[{i}]"
        known(container, "container", f"{at}.")
        if not isinstance(container.get("name"), str) or not _DNS_LABEL.fullmatch(container["name"]):
            problems.append((f"{at}.name", f"Invalid value: {container.get('name')!r}: a lowercase RFC 1123 label"))
        if not isinstance(container.get("image"), str) or not container["image"].strip():
            problems.append((f"{at}.image", "Required value"))
        for key in ("command", "args"):
            value = container.get(key)
            if value is not None and not (isinstance(value, list) and all(isinstance(a, str) for a in value)):
                raise decode_error(f"Container.{at}.{key}", "string", value)
        if container.get("imagePullPolicy") not in (None, "Always", "IfNotPresent", "Never"):
            problems.append((f"{at}.imagePullPolicy", f"Unsupported value: {container['imagePullPolicy']!r}"))
        for j, env in enumerate(container.get("env") or []):
            if not isinstance(env, dict) or not isinstance(env.get("name"), str) or not _ENV_NAME.fullmatch(env["name"]):
                problems.append((f"{at}.env[{j}].name", f"Invalid value: {env!r}: a valid environment variable name"))
                continue
            if env.get("value") is not None and not isinstance(env["value"], str):
                raise decode_error(f"EnvVar.{at}.env.value", "string", env["value"])
            if env.get("value") and env.get("valueFrom"):
                problems.append((f"{at}.env[{j}].valueFrom", "Invalid value: \"\": may not be specified when "
                                 "`value` is not empty"))
            ref = (env.get("valueFrom") or {})
            for source in ("secretKeyRef", "configMapKeyRef"):
                if source in ref and not (ref[source].get("name") and ref[source].get("key")):
                    problems.append((f"{at}.env[{j}].valueFrom.{source}", "Required value: name and key"))
        for j, source in enumerate(container.get("envFrom") or []):
            refs = [k for k in ("secretRef", "configMapRef") if k in source]
            if len(refs) != 1 or not isinstance(source[refs[0]].get("name"), str) or not source[refs[0]]["name"]:
                problems.append((f"{at}.envFrom[{j}]", "Invalid value: exactly one of secretRef or configMapRef, "
                                 "with a name"))
        resources = container.get("resources") or {}
        values: dict[tuple[str, str], Decimal] = {}
        for part in ("limits", "requests"):
            for resource, value in (resources.get(part) or {}).items():
                parsed = quantity(value)
                if parsed is None:
                    if not isinstance(value, (str, int, float)) or isinstance(value, bool):
                        raise ApiError(400, "BadRequest", f'Job in version "v1" cannot be handled as a Job: quantities '
                                       f"must match the regular expression '^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$' "
                                       f"({at}.resources.{part}.{resource}: {value!r})")
                    problems.append((f"{at}.resources.{part}.{resource}", f"Invalid value: {value!r}: must be a quantity"))
                else:
                    values[(part, resource)] = parsed
        for (part, resource), request in values.items():
            limit = values.get(("limits", resource))
            if part == "requests" and limit is not None and request > limit:
                problems.append((f"{at}.resources.requests", f"Invalid value: {resources['requests'][resource]!r}: "
                                 f"must be less than or equal to {resource} limit of {resources['limits'][resource]}"))
        for j, mount in enumerate(container.get("volumeMounts") or []):
            if mount.get("name") not in volumes:
                problems.append((f"{at}.volumeMounts[{j}].name", f"Not found: {mount.get('name')!r}"))
            if not str(mount.get("mountPath", "")).startswith("/"):
                problems.append((f"{at}.volumeMounts[{j}].mountPath", "Required value: an absolute path"))
    if problems:
        raise invalid("Job", name, problems)
    return warnings


def default_job(job: dict) -> None:
    """What the API server fills in on a new Job: its selector and the pod template's labels
    that tie pods to it, and the usual defaults."""
    uid, name = job["metadata"]["uid"], job["metadata"]["name"]
    spec = job["spec"]
    spec.setdefault("backoffLimit", 6)
    spec.setdefault("completions", 1)
    spec.setdefault("parallelism", 1)
    spec.setdefault("completionMode", "NonIndexed")
    spec.setdefault("suspend", False)
    spec.setdefault("podReplacementPolicy", "TerminatingOrFailed")
    spec["selector"] = {"matchLabels": {"batch.kubernetes.io/controller-uid": uid}}
    template = spec["template"]
    template.setdefault("metadata", {}).setdefault("labels", {}).update({
        "batch.kubernetes.io/controller-uid": uid, "batch.kubernetes.io/job-name": name,
        "controller-uid": uid, "job-name": name})
    pod_spec = template["spec"]
    for key, value in (("terminationGracePeriodSeconds", 30), ("dnsPolicy", "ClusterFirst"),
                       ("schedulerName", "default-scheduler"), ("securityContext", {})):
        pod_spec.setdefault(key, value)
    if "serviceAccountName" in pod_spec:
        pod_spec.setdefault("serviceAccount", pod_spec["serviceAccountName"])
    for container in pod_spec["containers"]:
        container.setdefault("terminationMessagePath", "/dev/termination-log")
        container.setdefault("terminationMessagePolicy", "File")
        container.setdefault("imagePullPolicy", "Always" if container["image"].endswith(":latest") or ":" not in
                             container["image"].rsplit("/", 1)[-1] else "IfNotPresent")
    job.setdefault("status", {})


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


# --- node JSON -----------------------------------------------------------------------------------

_PRESSURES = {  # condition -> (reason when False, message when False, reason when True, message when True, taint)
    "MemoryPressure": ("KubeletHasSufficientMemory", "kubelet has sufficient memory available",
                       "KubeletHasInsufficientMemory", "kubelet has insufficient memory available", "memory-pressure"),
    "DiskPressure": ("KubeletHasNoDiskPressure", "kubelet has no disk pressure",
                     "KubeletHasDiskPressure", "kubelet has disk pressure", "disk-pressure"),
    "PIDPressure": ("KubeletHasSufficientPID", "kubelet has sufficient PID available",
                    "KubeletHasInsufficientPID", "kubelet has insufficient PID available", "pid-pressure"),
}
NOT_READY_MESSAGE = ("container runtime network not ready: NetworkReady=false reason:NetworkPluginNotReady "
                     "message:Network plugin returns error: cni plugin not initialized")


def node(name: str, *, ready: bool | str | None = True, reason: str | None = None, message: str | None = None,
         since: datetime | None = None, pressure: tuple[str, ...] = (), pressure_since: datetime | None = None,
         network_unavailable: bool | None = None, unschedulable: bool = False,
         cordoned_since: datetime | None | bool = True, cpu: str = "4", memory: str = "16Gi",
         capacity: tuple[str, str] | None = None, roles: tuple[str, ...] = (), created: datetime | None = None,
         kubelet_version: str = "v1.31.4", taints: tuple[dict, ...] = ()) -> dict:
    """A node as `kubectl get node NAME -o json` prints it (kubeadm-style, containerd), its
    conditions and taints as the kubelet and the node lifecycle controller set them.

    `ready`: True, False (the kubelet says NotReady), "Unknown" (the kubelet stopped posting
    status: every condition Unknown, the unreachable taints), or None (no Ready condition at
    all, as before a kubelet first reports); `reason`/`message` override the Ready condition's,
    `since` is its lastTransitionTime. `pressure`: conditions among MemoryPressure, DiskPressure,
    PIDPressure that are True. `network_unavailable`: None leaves the condition out (kubeadm),
    else its status. `unschedulable`: cordoned, with the controller's taint added at
    `cordoned_since` (True: an hour before NOW; None: a taint without timeAdded). `cpu`/`memory`:
    allocatable; `capacity` (cpu, memory) defaults to the same."""
    created = created or ago(days=41)
    heartbeat = ts(ago(seconds=25))
    since = since or created + timedelta(minutes=1)
    conditions: list[dict] = []
    unknown = ready == "Unknown"

    def condition(kind: str, status: str, reason_: str, message_: str, when: datetime) -> dict:
        return {"type": kind, "status": status, "reason": reason_, "message": message_,
                "lastHeartbeatTime": heartbeat if not unknown else ts(since - timedelta(seconds=40)),
                "lastTransitionTime": ts(when)}

    if network_unavailable is not None:
        conditions.append(condition("NetworkUnavailable", "True" if network_unavailable else "False",
                                    "NoRouteCreated" if network_unavailable else "RouteCreated",
                                    "Node created without a route" if network_unavailable
                                    else "RouteController created a route", since if network_unavailable else created))
    for kind, (ok_reason, ok_message, bad_reason, bad_message, _) in _PRESSURES.items():
        if unknown:
            conditions.append(condition(kind, "Unknown", "NodeStatusUnknown", "Kubelet stopped posting node status.",
                                        since))
        elif kind in pressure:
            conditions.append(condition(kind, "True", bad_reason, bad_message, pressure_since or ago(minutes=12)))
        else:
            conditions.append(condition(kind, "False", ok_reason, ok_message, created))
    node_taints = [dict(t) for t in taints]
    if ready is True:
        conditions.append(condition("Ready", "True", reason or "KubeletReady",
                                    message or "kubelet is posting ready status", since))
    elif ready is False:
        conditions.append(condition("Ready", "False", reason or "KubeletNotReady", message or NOT_READY_MESSAGE, since))
        node_taints += [{"key": "node.kubernetes.io/not-ready", "effect": effect, "timeAdded": ts(since)}
                        for effect in ("NoSchedule", "NoExecute")]
    elif unknown:
        conditions.append(condition("Ready", "Unknown", reason or "NodeStatusUnknown",
                                    message or "Kubelet stopped posting node status.", since))
        node_taints += [{"key": "node.kubernetes.io/unreachable", "effect": effect, "timeAdded": ts(since)}
                        for effect in ("NoSchedule", "NoExecute")]
    elif ready is not None:
        raise ValueError(f"ready: True, False, 'Unknown' or None, not {ready!r}")
    for kind in pressure:
        node_taints.append({"key": f"node.kubernetes.io/{_PRESSURES[kind][4]}", "effect": "NoSchedule",
                            "timeAdded": ts(pressure_since or ago(minutes=12))})
    spec: dict[str, Any] = {"podCIDR": "10.244.3.0/24", "podCIDRs": ["10.244.3.0/24"],
                            "providerID": f"gce://acme-prod/europe-west1-b/{name}"}
    if unschedulable:
        spec["unschedulable"] = True
        taint = {"key": "node.kubernetes.io/unschedulable", "effect": "NoSchedule"}
        when = ago(hours=1) if cordoned_since is True else cordoned_since
        if isinstance(when, datetime):
            taint["timeAdded"] = ts(when)
        node_taints.append(taint)
    if node_taints:
        spec["taints"] = node_taints
    labels = {"beta.kubernetes.io/arch": "amd64", "beta.kubernetes.io/os": "linux", "kubernetes.io/arch": "amd64",
              "kubernetes.io/hostname": name, "kubernetes.io/os": "linux"}
    labels |= {f"node-role.kubernetes.io/{role}": "" for role in roles}
    capacity_cpu, capacity_memory = capacity or (cpu, memory)
    return {
        "apiVersion": "v1", "kind": "Node",
        "metadata": {"name": name, "uid": str(uuid.uuid5(uuid.NAMESPACE_URL, f"node/{name}")),
                     "resourceVersion": "998877", "creationTimestamp": ts(created), "labels": labels,
                     "annotations": {"kubeadm.alpha.kubernetes.io/cri-socket": "unix:///run/containerd/containerd.sock",
                                     "node.alpha.kubernetes.io/ttl": "0",
                                     "volumes.kubernetes.io/controller-managed-attach-detach": "true"}},
        "spec": spec,
        "status": {
            "addresses": [{"type": "InternalIP", "address": "10.0.1.17"}, {"type": "Hostname", "address": name}],
            "allocatable": {"cpu": cpu, "ephemeral-storage": "95491281146", "hugepages-1Gi": "0",
                            "hugepages-2Mi": "0", "memory": memory, "pods": "110"},
            "capacity": {"cpu": capacity_cpu, "ephemeral-storage": "103615404Ki", "hugepages-1Gi": "0",
                         "hugepages-2Mi": "0", "memory": capacity_memory, "pods": "110"},
            "conditions": conditions,
            "daemonEndpoints": {"kubeletEndpoint": {"Port": 10250}},
            "nodeInfo": {"architecture": "amd64", "bootID": str(uuid.uuid5(uuid.NAMESPACE_URL, f"boot/{name}")),
                         "containerRuntimeVersion": "containerd://1.7.24", "kernelVersion": "6.1.0-31-cloud-amd64",
                         "kubeProxyVersion": kubelet_version, "kubeletVersion": kubelet_version,
                         "machineID": uuid.uuid5(uuid.NAMESPACE_URL, f"machine/{name}").hex,
                         "operatingSystem": "linux", "osImage": "Debian GNU/Linux 12 (bookworm)",
                         "systemUUID": str(uuid.uuid5(uuid.NAMESPACE_URL, f"system/{name}"))},
        },
    }


def node_metrics(name: str, cpu: str = "1500m", memory: str = "6Gi", *, measured: datetime | None = None,
                 window: str = "20.039s") -> dict:
    """A NodeMetrics item as `kubectl get --raw /apis/metrics.k8s.io/v1beta1/nodes` shows it
    (metrics-server 0.7 writes cpu in nanocores, "152774129n", and memory in Ki)."""
    return {"kind": "NodeMetrics", "apiVersion": "metrics.k8s.io/v1beta1",
            "metadata": {"name": name, "creationTimestamp": ts(NOW),
                         "labels": {"kubernetes.io/hostname": name, "kubernetes.io/os": "linux"}},
            "timestamp": ts(measured or ago(seconds=14)), "window": window, "usage": {"cpu": cpu, "memory": memory}}


# --- Velero JSON ---------------------------------------------------------------------------------

def _velero_metadata(name: str, namespace: str, created: datetime, labels: dict[str, str]) -> dict:
    uid = str(uuid.uuid5(uuid.NAMESPACE_URL, f"velero/{namespace}/{name}"))
    return {"name": name, "namespace": namespace, "uid": uid,
            "resourceVersion": "884211", "generation": 3, "creationTimestamp": ts(created), "labels": labels}


def velero_backup(name: str, phase: str, *, started: datetime | None, completed: datetime | None,
                  schedule: str | None = None, errors: int = 0, warnings: int = 0, namespace: str = "velero",
                  storage_location: str = "default", created: datetime | None = None,
                  expiration: datetime | None = None, failure_reason: str | None = None,
                  validation_errors: tuple[str, ...] = (), volume_snapshots: tuple[int, int] | None = None,
                  csi_snapshots: tuple[int, int] | None = None,
                  item_operations: tuple[int, int, int] | None = None, hooks: tuple[int, int] | None = None,
                  items: int = 1843) -> dict:
    """A Backup as `kubectl -n velero get backup NAME -o json` prints it (Velero 1.15). Counts are
    (attempted, completed), item operations (attempted, completed, failed), hooks (attempted,
    failed); a zero count is left out, as Velero's `omitempty` does."""
    created = created or started or completed or ago(hours=1)
    labels = {"velero.io/storage-location": storage_location}
    if schedule:
        labels["velero.io/schedule-name"] = schedule
    status: dict[str, Any] = {"phase": phase, "version": 1, "formatVersion": "1.1.0"}
    if phase != "FailedValidation":
        status["expiration"] = ts(expiration or created + timedelta(days=30))
    if started is not None:
        status["startTimestamp"] = ts(started)
    if completed is not None:
        status["completionTimestamp"] = ts(completed)
        status["progress"] = {"itemsBackedUp": items, "totalItems": items}
    elif started is not None:
        status["progress"] = {"itemsBackedUp": items // 3, "totalItems": items}
    counts = {"errors": errors, "warnings": warnings}
    for keys, values in ((("volumeSnapshotsAttempted", "volumeSnapshotsCompleted"), volume_snapshots),
                         (("csiVolumeSnapshotsAttempted", "csiVolumeSnapshotsCompleted"), csi_snapshots),
                         (("backupItemOperationsAttempted", "backupItemOperationsCompleted",
                           "backupItemOperationsFailed"), item_operations)):
        counts.update(zip(keys, values or ()))
    status.update({k: v for k, v in counts.items() if v})
    if hooks is not None:
        status["hookStatus"] = {k: v for k, v in zip(("hooksAttempted", "hooksFailed"), hooks) if v}
    if failure_reason:
        status["failureReason"] = failure_reason
    if validation_errors:
        status["validationErrors"] = list(validation_errors)
    return {"apiVersion": "velero.io/v1", "kind": "Backup",
            "metadata": _velero_metadata(name, namespace, created, labels) | {
                "annotations": {"velero.io/source-cluster-k8s-gitversion": "v1.31.4",
                                "velero.io/source-cluster-k8s-major-version": "1",
                                "velero.io/source-cluster-k8s-minor-version": "31"}},
            "spec": {"csiSnapshotTimeout": "10m0s", "defaultVolumesToFsBackup": False, "hooks": {},
                     "includedNamespaces": ["*"], "itemOperationTimeout": "4h0m0s", "metadata": {},
                     "snapshotMoveData": False, "storageLocation": storage_location, "ttl": "720h0m0s",
                     "volumeSnapshotLocations": ["default"]},
            "status": status}


def velero_location(name: str = "default", phase: str | None = "Available", *, default: bool = True,
                    namespace: str = "velero", bucket: str = "acme-velero", prefix: str | None = None,
                    message: str | None = None, validated: datetime | None = None) -> dict:
    """A BackupStorageLocation as `kubectl -n velero get backupstoragelocation NAME -o json`
    prints it. `phase` None: not validated yet (no status)."""
    storage = {"bucket": bucket} | ({"prefix": prefix} if prefix else {})
    status: dict[str, Any] = {}
    if phase is not None:
        status = {"phase": phase, "lastValidationTime": ts(validated or ago(seconds=40)),
                  "lastSyncedTime": ts(validated or ago(seconds=40))}
        if message:
            status["message"] = message
    return {"apiVersion": "velero.io/v1", "kind": "BackupStorageLocation",
            "metadata": _velero_metadata(name, namespace, ago(days=90), {"component": "velero"}),
            "spec": {"provider": "velero.io/gcp", "objectStorage": storage, "default": default,
                     "accessMode": "ReadWrite", "credential": {"name": "cloud-credentials", "key": "cloud"}},
            "status": status}


def velero_schedule(name: str, *, cron: str = "0 1 * * *", paused: bool = False, phase: str = "Enabled",
                    last_backup: datetime | None = None, namespace: str = "velero", created: datetime | None = None,
                    validation_errors: tuple[str, ...] = ()) -> dict:
    """A Schedule as `kubectl -n velero get schedule NAME -o json` prints it."""
    status: dict[str, Any] = {"phase": phase}
    if last_backup is not None:
        status["lastBackup"] = ts(last_backup)
    if validation_errors:
        status["validationErrors"] = list(validation_errors)
    spec: dict[str, Any] = {"schedule": cron, "useOwnerReferencesInBackup": False, "template": {
        "includedNamespaces": ["*"], "storageLocation": "default", "ttl": "720h0m0s", "snapshotMoveData": False,
        "csiSnapshotTimeout": "10m0s", "itemOperationTimeout": "4h0m0s", "metadata": {}, "hooks": {}}}
    if paused:
        spec["paused"] = True
    return {"apiVersion": "velero.io/v1", "kind": "Schedule",
            "metadata": _velero_metadata(name, namespace, created or ago(days=60), {}),
            "spec": spec, "status": status}
