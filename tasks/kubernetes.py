"""Kubernetes: list the pods of some namespaces with the official client, as `PodInfo`; the
cluster's nodes and their metrics-server usage as plain dicts; and Velero's custom objects
(velero.io/v1 Backups, BackupStorageLocations, Schedules) as plain dicts.

Configuration is found the way kubectl finds it: `$KUBECONFIG` (read at call time, a
colon-separated list), else `~/.kube/config`, else the pod's service account when running in a
cluster (`KUBERNETES_SERVICE_HOST`). An explicit `context` always means a kubeconfig. Every call
builds its own `Configuration` and `ApiClient`: the client's process-wide default is never read
or set, so two clusters (or two test servers) never share credentials.

Speed: a list is fetched raw (`_preload_content=False`), in pages of `PAGE_SIZE` like kubectl,
and parsed with `json` into plain dicts; deserialising 1,000 pods into the client's model
objects is much slower and yields SDK objects maint does not want.

Every failure becomes `KubernetesError` naming the API server and the namespace, never a token.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import urllib3
from kubernetes import client as k8s
from kubernetes.config import ConfigException, load_incluster_config, load_kube_config

from maint.errors import KubernetesError
from maint.nodes import node_info_from_json, node_usage_from_json
from maint.pods import PodInfo, pod_info_from_json
from maint.velero import backup_from_json, location_from_json, schedule_from_json

PAGE_SIZE = 500  # kubectl's --chunk-size
# Connection failures are retried twice at once (a load balancer blip); a request that was sent
# is not retried, so a call takes at most about `timeout_seconds` per page. The flow's task
# retries the whole listing.
_RETRIES = urllib3.Retry(total=2, connect=2, read=0, status=0, redirect=0, other=0, backoff_factor=0.2)


def _kubeconfig_paths() -> list[Path]:
    env = os.environ.get("KUBECONFIG")
    if env:
        return [Path(p).expanduser() for p in env.split(os.pathsep) if p]
    return [Path("~/.kube/config").expanduser()]


def load_configuration(context: str | None = None) -> k8s.Configuration:
    """A fresh client Configuration from the usual places; KubernetesError when there is none."""
    configuration = k8s.Configuration()
    paths = _kubeconfig_paths()
    existing = [p for p in paths if p.is_file()]
    in_cluster = bool(os.environ.get("KUBERNETES_SERVICE_HOST"))
    try:
        if existing or context is not None or not in_cluster:
            if not existing:
                where = "$KUBECONFIG" if os.environ.get("KUBECONFIG") else "~/.kube/config"
                raise KubernetesError(
                    f"no Kubernetes configuration: {where} ({', '.join(map(str, paths))}) does not exist"
                    + ("" if context is None else f" (context {context!r} was asked for)")
                    + ("" if in_cluster else " and this is not a pod in a cluster (KUBERNETES_SERVICE_HOST is unset)"))
            # persist_config=False: a health check never rewrites the operator's kubeconfig.
            load_kube_config(config_file=os.pathsep.join(map(str, existing)), context=context,
                             client_configuration=configuration, persist_config=False)
        else:
            load_incluster_config(client_configuration=configuration)
    except ConfigException as exc:
        source = ("the in-cluster service account" if not existing and context is None
                  else os.pathsep.join(map(str, existing)))
        what = f"context {context!r} in " if context is not None else ""
        raise KubernetesError(f"cannot load Kubernetes configuration from {what}{source}: {exc}") from exc
    configuration.retries = _RETRIES
    return configuration


def list_pods(namespaces: list[str], context: str | None = None, timeout_seconds: float = 10) -> list[PodInfo]:
    """Every pod of `namespaces` (listed concurrently), in namespace order.

    An unknown namespace is an error (the API answers an empty list for it, so an empty list is
    checked against the namespace itself; if reading namespaces is forbidden, it is taken as
    empty). Raises KubernetesError naming the server and namespace.
    """
    with _api_client(context, "maint/health-check") as (api_client, server):
        api = k8s.CoreV1Api(api_client)
        with ThreadPoolExecutor(max_workers=min(8, max(1, len(namespaces))),
                                thread_name_prefix="list-pods") as pool:
            per_namespace = list(pool.map(lambda ns: _list_namespace(api, server, ns, timeout_seconds), namespaces))
    return [pod for pods in per_namespace for pod in pods]


@contextmanager
def _api_client(context: str | None, user_agent: str) -> Iterator[tuple[k8s.ApiClient, str]]:
    """A fresh ApiClient (and the server's URL, for messages) on the configuration found the
    usual way; closed after, its connection pool too, so no socket outlives the call."""
    configuration = load_configuration(context)
    api_client = k8s.ApiClient(configuration)
    api_client.user_agent = user_agent
    try:
        yield api_client, configuration.host
    finally:
        api_client.close()
        api_client.rest_client.close()


def _list_namespace(api: k8s.CoreV1Api, server: str, namespace: str, timeout: float) -> list[PodInfo]:
    pods: list[PodInfo] = []
    token: str | None = None
    while True:
        kwargs = {"_continue": token} if token else {}
        body = _get(server, namespace, timeout, lambda: api.list_namespaced_pod(
            namespace, limit=PAGE_SIZE, _preload_content=False, _request_timeout=timeout, **kwargs))
        try:
            document = json.loads(body)
            for item in document["items"] or []:
                item.setdefault("metadata", {}).setdefault("namespace", namespace)
                pods.append(pod_info_from_json(item))
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise KubernetesError(f"{server}: listing pods in namespace {namespace!r}: "
                                  f"the answer is not a Kubernetes PodList ({exc.__class__.__name__}: {exc})") from exc
        token = (document.get("metadata") or {}).get("continue")
        if not token:
            break
    if not pods:
        try:
            _get(server, namespace, timeout, lambda: api.read_namespace(
                namespace, _preload_content=False, _request_timeout=timeout))
        except _Forbidden:
            pass  # allowed to list pods but not to read namespaces: trust the empty list
        except _NotFound as exc:
            raise KubernetesError(f"namespace {namespace!r} does not exist on {server}: "
                                  "check [health_check.kubernetes].namespaces and the context") from exc
    return pods


class _Forbidden(KubernetesError):
    pass


class _NotFound(KubernetesError):
    pass


def _get(server: str, namespace: str | None, timeout: float, call) -> bytes:
    """Run one request; its raw body, or KubernetesError saying what happened. `namespace` None:
    a cluster-scoped resource."""
    where = server if namespace is None else f"{server} (namespace {namespace!r})"
    try:
        response = call()
        try:
            return response.data
        finally:
            response.release_conn()
    except k8s.ApiException as exc:
        status = exc.status
        detail = _status_message(exc.body) or exc.reason or ""
        if status == 0:  # the client's own wrapper around TLS errors
            raise KubernetesError(f"cannot reach the Kubernetes API at {where}: TLS error: {exc.reason}") from exc
        if status == 401:
            raise KubernetesError(f"the Kubernetes API at {where} refused our credentials (401 Unauthorized): "
                                  "the token or client certificate is missing, wrong or expired") from exc
        if status == 403:
            raise _Forbidden(f"the Kubernetes API at {where} forbids it (403 Forbidden): {detail}; "
                             "grant list on pods (and get on namespaces) to this identity") from exc
        if status == 404:
            raise _NotFound(f"the Kubernetes API at {where} answered 404 Not Found: {detail} "
                            "(is this URL a Kubernetes API server?)") from exc
        answered = f"the Kubernetes API at {where} answered {status} {exc.reason or ''}".rstrip()
        raise KubernetesError(f"{answered}: {detail}" if detail else answered) from exc
    except urllib3.exceptions.HTTPError as exc:
        raise KubernetesError(f"cannot reach the Kubernetes API at {where}: {_network_reason(exc, timeout)}") from exc
    except OSError as exc:
        raise KubernetesError(f"cannot reach the Kubernetes API at {where}: {exc.strerror or exc}") from exc


def _status_message(body) -> str:
    """The `message` of the API's Status JSON ("namespaces \"x\" not found"), if it sent one."""
    if not body:
        return ""
    try:
        status = json.loads(body)
    except (ValueError, TypeError):
        return ""
    return str(status.get("message") or "") if isinstance(status, dict) else ""


def _network_reason(exc: Exception, timeout: float) -> str:
    reason = exc.reason if isinstance(exc, urllib3.exceptions.MaxRetryError) and exc.reason else exc
    # NewConnectionError first: urllib3 makes it a subclass of ConnectTimeoutError.
    if isinstance(reason, urllib3.exceptions.NewConnectionError):
        cause = reason.__cause__ or reason.__context__
        if isinstance(cause, ConnectionRefusedError):
            return "connection refused"
        if isinstance(cause, OSError) and cause.strerror:
            return cause.strerror
        return "cannot connect"
    if isinstance(reason, urllib3.exceptions.TimeoutError):
        return f"no answer within {timeout:g}s"
    if isinstance(reason, urllib3.exceptions.SSLError):
        return f"TLS error: {reason}"
    if isinstance(reason, urllib3.exceptions.ProtocolError):
        return f"connection broken: {reason.args[0] if reason.args else reason}"
    return str(reason) or reason.__class__.__name__


# --- Velero's custom objects ---------------------------------------------------------------------

VELERO_GROUP, VELERO_VERSION = "velero.io", "v1"
_VELERO_PLURALS = {"backups": ("BackupList", backup_from_json),
                   "backupstoragelocations": ("BackupStorageLocationList", location_from_json),
                   "schedules": ("ScheduleList", schedule_from_json)}


@dataclass(frozen=True)
class VeleroObjects:
    """One namespace's velero.io/v1 objects as the API's JSON items (plain dicts), for
    `maint.velero.assess_velero`."""

    backups: list[dict]
    locations: list[dict]  # BackupStorageLocations
    schedules: list[dict]


def list_velero_objects(namespace: str, context: str | None = None, timeout_seconds: float = 10) -> VeleroObjects:
    """Velero's Backups, BackupStorageLocations and Schedules in `namespace` (listed concurrently,
    in pages), each item checked to parse as what it claims to be.

    Raises KubernetesError naming the server and namespace: Velero's CRDs are not installed (a 404
    on the resource), the RBAC rule that is missing (a 403), or the namespace does not exist (all
    three lists empty and the namespace reads as 404, as the pod listing checks it)."""
    with _api_client(context, "maint/backup-verification") as (api_client, server):
        api = k8s.CustomObjectsApi(api_client)
        with ThreadPoolExecutor(max_workers=len(_VELERO_PLURALS), thread_name_prefix="list-velero") as pool:
            listed = list(pool.map(lambda plural: _list_velero(api, server, namespace, plural, timeout_seconds),
                                   _VELERO_PLURALS))
        if not any(listed):
            _namespace_must_exist(k8s.CoreV1Api(api_client), server, namespace, timeout_seconds)
    return VeleroObjects(*listed)


def _list_velero(api: k8s.CustomObjectsApi, server: str, namespace: str, plural: str, timeout: float) -> list[dict]:
    kind, parse = _VELERO_PLURALS[plural]
    items: list[dict] = []
    token: str | None = None
    while True:
        kwargs = {"_continue": token} if token else {}
        try:
            body = _get(server, namespace, timeout, lambda: api.list_namespaced_custom_object(
                VELERO_GROUP, VELERO_VERSION, namespace, plural, limit=PAGE_SIZE, _preload_content=False,
                _request_timeout=timeout, **kwargs))
        except _NotFound as exc:
            raise KubernetesError(f"Velero's CRDs are not installed on {server} (no {VELERO_GROUP}/{VELERO_VERSION} "
                                  f"{plural}; namespace {namespace!r}): install Velero, or check [velero].context "
                                  "names the cluster it runs in") from exc
        except _Forbidden as exc:
            raise KubernetesError(
                f"the Kubernetes API at {server} (namespace {namespace!r}) forbids listing Velero's {plural} "
                f"(403 Forbidden): {_status_message(getattr(exc.__cause__, 'body', None))}; grant a Role rule in "
                f"namespace {namespace!r}: apiGroups [{VELERO_GROUP}], resources [backups, backupstoragelocations, "
                "schedules], verbs [get, list]") from exc
        try:
            document = json.loads(body)
            for item in document["items"] or []:
                item.setdefault("metadata", {}).setdefault("namespace", namespace)
                parse(item, namespace)
                items.append(item)
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise KubernetesError(f"{server}: listing {VELERO_GROUP} {plural} in namespace {namespace!r}: the answer "
                                  f"is not a Velero {kind} ({exc.__class__.__name__}: {exc})") from exc
        token = (document.get("metadata") or {}).get("continue")
        if not token:
            return items


def _namespace_must_exist(api: k8s.CoreV1Api, server: str, namespace: str, timeout: float) -> None:
    try:
        _get(server, namespace, timeout, lambda: api.read_namespace(
            namespace, _preload_content=False, _request_timeout=timeout))
    except _Forbidden:
        pass  # allowed to list Velero's objects but not to read namespaces: trust the empty lists
    except _NotFound as exc:
        raise KubernetesError(f"namespace {namespace!r} does not exist on {server}: "
                              "check [velero].namespace and [velero].context") from exc


# --- nodes and their usage -----------------------------------------------------------------------

METRICS_GROUP, METRICS_VERSION = "metrics.k8s.io", "v1beta1"
NODES_RULE = 'apiGroups [""], resources [nodes], verbs [list]'
NODE_METRICS_RULE = f"apiGroups [{METRICS_GROUP}], resources [nodes], verbs [list]"


@dataclass(frozen=True)
class NodeListing:
    """The cluster's Node items and NodeMetrics items as the API's JSON (plain dicts), for
    `maint.nodes.assess_nodes`. `metrics` None: metrics-server did not answer, and
    `metrics_unavailable` says why (not installed, down, forbidden)."""

    nodes: list[dict]
    metrics: list[dict] | None
    metrics_unavailable: str = ""


def list_nodes(context: str | None = None, timeout_seconds: float = 10) -> NodeListing:
    """Every node (`kubectl get nodes`, in pages) and, at the same time, their usage from
    metrics.k8s.io (`kubectl top nodes`), each item checked to parse.

    Raises KubernetesError naming the server when the nodes cannot be listed (a 403 names the
    ClusterRole rule to grant). Metrics-server is optional: its absence (404: the API group is not
    registered; 503: registered, but metrics-server does not answer), a 403 on it, or any other
    failure leaves `metrics` None with the reason, never an error."""
    with _api_client(context, "maint/health-check") as (api_client, server):
        with ThreadPoolExecutor(max_workers=2, thread_name_prefix="list-nodes") as pool:
            metrics = pool.submit(_list_node_metrics, k8s.CustomObjectsApi(api_client), server, timeout_seconds)
            nodes = _list_all_nodes(k8s.CoreV1Api(api_client), server, timeout_seconds)
            usage, why = metrics.result()
    return NodeListing(nodes, usage, why)


def _list_all_nodes(api: k8s.CoreV1Api, server: str, timeout: float) -> list[dict]:
    items: list[dict] = []
    token: str | None = None
    while True:
        kwargs = {"_continue": token} if token else {}
        try:
            body = _get(server, None, timeout, lambda: api.list_node(
                limit=PAGE_SIZE, _preload_content=False, _request_timeout=timeout, **kwargs))
        except _Forbidden as exc:
            raise KubernetesError(
                f"the Kubernetes API at {server} forbids listing nodes (403 Forbidden): "
                f"{_status_message(getattr(exc.__cause__, 'body', None))}; grant a ClusterRole rule, bound by a "
                f"ClusterRoleBinding: {NODES_RULE} (deploy/kubernetes/rbac.yaml: maint-health-check-nodes), or set "
                "[health_check.kubernetes].nodes = false") from exc
        try:
            document = json.loads(body)
            for item in document["items"] or []:
                node_info_from_json(item)
                items.append(item)
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise KubernetesError(f"{server}: listing nodes: the answer is not a Kubernetes NodeList "
                                  f"({exc.__class__.__name__}: {exc})") from exc
        token = (document.get("metadata") or {}).get("continue")
        if not token:
            return items


def _list_node_metrics(api: k8s.CustomObjectsApi, server: str, timeout: float) -> tuple[list[dict] | None, str]:
    """(NodeMetrics items, "") or (None, why not). Never raises for the API's answers: the nodes'
    conditions are worth reporting without their usage."""
    try:
        # No limit: metrics-server serves its whole in-memory list at once (kubectl top does not chunk).
        body = _get(server, None, timeout, lambda: api.list_cluster_custom_object(
            METRICS_GROUP, METRICS_VERSION, "nodes", _preload_content=False, _request_timeout=timeout))
    except KubernetesError as exc:
        cause = exc.__cause__
        status = getattr(cause, "status", None)
        detail = _status_message(getattr(cause, "body", None)) or getattr(cause, "reason", "") or ""
        if status == 404:
            return None, f"{METRICS_GROUP} is not served (404): metrics-server is not installed"
        if status == 503:
            # The aggregator's plain-text "service unavailable": say it as kubectl top does.
            return None, (f"{METRICS_GROUP} is registered but does not answer (503: the server is currently "
                          "unable to handle the request): metrics-server is down or not ready")
        if status == 403:
            return None, (f"forbidden (403): {detail}; grant a ClusterRole rule: {NODE_METRICS_RULE} "
                          "(deploy/kubernetes/rbac.yaml: maint-health-check-nodes)")
        return None, str(exc)
    try:
        document = json.loads(body)
        items = list(document["items"] or [])
        for item in items:
            node_usage_from_json(item)
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        return None, f"the answer is not a NodeMetricsList ({exc.__class__.__name__}: {exc})"
    return items, ""
