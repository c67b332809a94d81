"""Pods as `kubectl get pods` shows them, and which of them need a human.

Pure: the API's JSON comes in (plain dicts with the API's camelCase keys), `PodInfo` and findings
go out. No I/O and no clock: `now` is a parameter.

`kubectl_status` is a port of kubectl's `printPod` (kubernetes/pkg/printers/internalversion/
printers.go), so the status in a finding is the one the on-call engineer sees when they run
`kubectl get pods`: init containers (`Init:0/2`, `Init:CrashLoopBackOff`, `Init:ExitCode:1`),
sidecars (restartable init containers) counted as containers, a waiting or terminated reason
from the first container that has one, `Completed` turned back into `Running`/`NotReady` while a
container still runs, `Terminating` once a deletion is requested, `Unknown` for a lost node.

Findings: one per flagged pod (subject `NS/NAME`) and one OK summary per namespace (subject
`namespace NS`, "N pods, M flagged"), so a clean namespace shows in the report. A healthy pod
gets no finding of its own (1,000 OK findings would drown the report); instead the flow marks the
pods check exhaustive (`Report.exhaustive_checks`), so a page opened for a pod is resolved by the
first run that no longer flags it, whether the pod is fine now or gone (replaced by its
controller under another name).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from maint.durations import format_duration
from maint.report import Finding, Severity

# Statuses that mean the pod cannot do its job right now, whatever its age: paged at once.
# Besides the five named in the runbook, their siblings with the same meaning for on-call:
# other image failures, containers that cannot be created or started, a kill by the OOM killer,
# and kubectl's `ExitCode:N`/`Signal:N` (a container that died without a reason).
_CRASHING = {"CrashLoopBackOff", "Error", "OOMKilled", "RunContainerError", "ContainerCannotRun",
             "StartError"}
_IMAGE = {"ImagePullBackOff", "ErrImagePull", "InvalidImageName", "ErrImageNeverPull"}
_CONFIG = {"CreateContainerConfigError", "CreateContainerError"}
_TERMINAL_PHASES = ("Succeeded", "Failed")


@dataclass(frozen=True)
class PodInfo:
    """One pod as `kubectl get pods -o wide` would list it, plus what the decision needs."""

    namespace: str
    name: str
    phase: str  # Pending | Running | Succeeded | Failed | Unknown
    display_status: str  # the STATUS column
    ready_containers: int
    total_containers: int
    restarts: int  # the RESTARTS column's number
    created_at: datetime
    deletion_requested: bool
    owner_kinds: tuple[str, ...] = ()
    node: str | None = None
    last_restart_reason: str | None = None  # "OOMKilled, exit code 137", "Error, exit code 1"
    last_restart_at: datetime | None = None
    container: str | None = None  # the container the status comes from (for `logs -c`)
    not_ready_since: datetime | None = None  # the Ready condition's last transition, when not True
    deletion_requested_at: datetime | None = None  # metadata.deletionTimestamp
    job_name: str | None = None  # the owning Job, if any

    @property
    def ready(self) -> str:
        return f"{self.ready_containers}/{self.total_containers}"

    @property
    def subject(self) -> str:
        return f"{self.namespace}/{self.name}"


@dataclass(frozen=True)
class _Printed:
    status: str
    ready: int
    total: int
    restarts: int
    last_restart_at: datetime | None
    last_restart_reason: str | None
    container: str | None


def parse_time(value: str | None) -> datetime | None:
    """The API's RFC 3339 timestamps ("2025-03-14T09:30:00Z"), always UTC."""
    if not value:
        return None
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def kubectl_status(pod: dict[str, Any]) -> str:
    """The STATUS column of `kubectl get pods` for one pod of the API's JSON."""
    return _print_pod(pod).status


def pod_info_from_json(pod: dict[str, Any]) -> PodInfo:
    """One item of `GET /api/v1/namespaces/{ns}/pods`. Raises KeyError or ValueError on JSON
    that is not a pod (no name or creationTimestamp, a malformed timestamp)."""
    meta = pod.get("metadata") or {}
    spec = pod.get("spec") or {}
    status = pod.get("status") or {}
    printed = _print_pod(pod)
    owners = meta.get("ownerReferences") or []
    not_ready_since = None
    for condition in status.get("conditions") or []:
        if condition.get("type") == "Ready" and condition.get("status") != "True":
            not_ready_since = parse_time(condition.get("lastTransitionTime"))
    container = printed.container
    if container is None:
        container = next((c.get("name") for c in status.get("containerStatuses") or [] if not c.get("ready")), None)
    deletion = parse_time(meta.get("deletionTimestamp"))
    created_at = parse_time(meta["creationTimestamp"])
    if created_at is None:
        raise ValueError(f"pod {meta.get('name')!r} has an empty creationTimestamp")
    return PodInfo(
        namespace=meta.get("namespace") or "",
        name=meta["name"],
        phase=status.get("phase") or "",
        display_status=printed.status,
        ready_containers=printed.ready,
        total_containers=printed.total,
        restarts=printed.restarts,
        created_at=created_at,
        deletion_requested=deletion is not None,
        owner_kinds=tuple(o.get("kind", "") for o in owners),
        node=spec.get("nodeName") or None,
        last_restart_reason=printed.last_restart_reason,
        last_restart_at=printed.last_restart_at,
        container=container,
        not_ready_since=not_ready_since,
        deletion_requested_at=deletion,
        job_name=next((o.get("name") for o in owners if o.get("kind") == "Job"), None),
    )


def _is_sidecar(container_spec: dict | None) -> bool:
    """A restartable init container (KEP-753): kubectl counts it as a container."""
    return bool(container_spec) and container_spec.get("restartPolicy") == "Always"


def _condition_true(status: dict, kind: str) -> bool:
    return any(c.get("type") == kind and c.get("status") == "True" for c in status.get("conditions") or [])


def _last_termination(container_status: dict) -> tuple[datetime | None, str | None]:
    terminated = (container_status.get("lastState") or {}).get("terminated")
    if terminated is None:
        return None, None
    reason = terminated.get("reason") or ""
    code = terminated.get("exitCode") or 0
    if reason and code:
        text = f"{reason}, exit code {code}"
    elif reason:
        text = reason
    elif terminated.get("signal"):
        text = f"signal {terminated['signal']}"
    else:
        text = f"exit code {code}"
    return parse_time(terminated.get("finishedAt")), text


def _print_pod(pod: dict[str, Any]) -> _Printed:
    """kubectl's printPod, step for step (the comments name its branches)."""
    meta = pod.get("metadata") or {}
    spec = pod.get("spec") or {}
    status = pod.get("status") or {}
    phase = status.get("phase") or ""
    reason = status.get("reason") or phase
    for condition in status.get("conditions") or []:
        if condition.get("type") == "PodScheduled" and condition.get("reason") == "SchedulingGated":
            reason = "SchedulingGated"

    init_specs = spec.get("initContainers") or []
    init_by_name = {c.get("name"): c for c in init_specs}
    total = len(spec.get("containers") or []) + sum(1 for c in init_specs if _is_sidecar(c))
    ready = 0
    restarts = sidecar_restarts = 0
    last: tuple[datetime | None, str | None] = (None, None)
    sidecar_last: tuple[datetime | None, str | None] = (None, None)
    container: str | None = None

    def later(current, candidate):
        return candidate if candidate[0] is not None and (current[0] is None or candidate[0] > current[0]) else current

    initializing = False
    for index, cs in enumerate(status.get("initContainerStatuses") or []):
        restarts += cs.get("restartCount") or 0
        termination = _last_termination(cs)
        last = later(last, termination)
        sidecar = _is_sidecar(init_by_name.get(cs.get("name")))
        if sidecar:
            sidecar_restarts += cs.get("restartCount") or 0
            sidecar_last = later(sidecar_last, termination)
        state = cs.get("state") or {}
        terminated, waiting = state.get("terminated"), state.get("waiting")
        if terminated is not None and not terminated.get("exitCode"):
            continue  # this init container finished
        if sidecar and cs.get("started"):
            if cs.get("ready"):
                ready += 1
            continue  # a started sidecar does not hold up initialisation
        if terminated is not None:  # initialisation failed
            if terminated.get("reason"):
                reason = "Init:" + terminated["reason"]
            elif terminated.get("signal"):
                reason = f"Init:Signal:{terminated['signal']}"
            else:
                reason = f"Init:ExitCode:{terminated.get('exitCode') or 0}"
        elif waiting is not None and waiting.get("reason") and waiting["reason"] != "PodInitializing":
            reason = "Init:" + waiting["reason"]
        else:
            reason = f"Init:{index}/{len(init_specs)}"
        initializing = True
        container = cs.get("name")
        break

    if not initializing or _condition_true(status, "Initialized"):
        restarts, last = sidecar_restarts, sidecar_last
        has_running = False
        # Backwards, so the first container with a waiting or terminated reason wins.
        for cs in reversed(status.get("containerStatuses") or []):
            restarts += cs.get("restartCount") or 0
            last = later(last, _last_termination(cs))
            state = cs.get("state") or {}
            terminated, waiting = state.get("terminated"), state.get("waiting")
            if waiting is not None and waiting.get("reason"):
                reason, container = waiting["reason"], cs.get("name")
            elif terminated is not None and terminated.get("reason"):
                reason, container = terminated["reason"], cs.get("name")
            elif terminated is not None:
                if terminated.get("signal"):
                    reason = f"Signal:{terminated['signal']}"
                else:
                    reason = f"ExitCode:{terminated.get('exitCode') or 0}"
                container = cs.get("name")
            elif cs.get("ready") and state.get("running") is not None:
                has_running = True
                ready += 1
        # A container still running after another completed: back to "Running" (or NotReady).
        if reason == "Completed" and has_running:
            reason = "Running" if _condition_true(status, "Ready") else "NotReady"

    if meta.get("deletionTimestamp") and status.get("reason") == "NodeLost":
        reason = "Unknown"
    elif meta.get("deletionTimestamp") and phase not in _TERMINAL_PHASES:
        reason = "Terminating"
    return _Printed(reason, ready, total, restarts, last[0], last[1], container)


# --- the decision --------------------------------------------------------------------------------

def _failure_kind(status: str) -> str | None:
    """'crash' | 'image' | 'config' for a status that fails the pod at once, else None."""
    bare = status.removeprefix("Init:")
    if bare in _CRASHING or bare.startswith("Signal:") or (
            bare.startswith("ExitCode:") and bare != "ExitCode:0"):
        return "crash"
    if bare in _IMAGE:
        return "image"
    if bare in _CONFIG:
        return "config"
    return None


def _retried_and_completed(pod: PodInfo, pods) -> bool:
    """A failed attempt of a Job that a later attempt completed: the Job controller keeps failed
    pods until the Job is deleted, but the work was done."""
    return pod.phase == "Failed" and pod.job_name is not None and any(
        other.namespace == pod.namespace and other.job_name == pod.job_name and other.phase == "Succeeded"
        and other.created_at >= pod.created_at for other in pods)


def _describe(pod: PodInfo, now: datetime) -> str:
    restarts = str(pod.restarts)
    if pod.restarts and pod.last_restart_at is not None:
        restarts += f" (last {format_duration(now - pod.last_restart_at)} ago"
        restarts += f": {pod.last_restart_reason})" if pod.last_restart_reason else ")"
    node = pod.node or "none (not scheduled)"
    return (f"status {pod.display_status}, ready {pod.ready}, restarts {restarts}, "
            f"age {format_duration(now - pod.created_at)}, node {node}")


def assess_pod(pod: PodInfo, now: datetime, max_restarts: int, *,
               pending_grace: timedelta = timedelta(minutes=15),
               not_ready_grace: timedelta = timedelta(minutes=5),
               siblings: list[PodInfo] | tuple[PodInfo, ...] = ()) -> Finding | None:
    """The finding for one pod, or None when it is fine. `siblings` are the other pods of its
    namespace (to recognise a failed Job attempt that a later attempt completed)."""
    ns, name = pod.namespace, pod.name
    describe = f"kubectl -n {ns} describe pod {name}"
    logs = f"kubectl -n {ns} logs {name}" + (f" -c {pod.container}" if pod.container else "")
    # Finished work is never a problem: Succeeded pods, Completed containers, and failed Job
    # attempts that a later attempt completed.
    if pod.phase == "Succeeded" or pod.display_status == "Completed" or _retried_and_completed(pod, siblings):
        return None

    problems: list[tuple[Severity, str, str]] = []  # (severity, what, next step)
    failure = _failure_kind(pod.display_status)
    where = f" in container {pod.container}" if pod.container else ""
    if failure == "crash":
        # --previous only once it restarted: a failed container that was not restarted still
        # holds its own logs.
        step = f"{logs}{' --previous' if pod.restarts else ''}; {describe}"
        if "OOMKilled" in (pod.display_status, pod.last_restart_reason):
            step += "; OOMKilled: raise its memory limit or find what grew"
        if pod.job_name and pod.phase == "Failed":
            step += f"; kubectl -n {ns} describe job {pod.job_name} (delete the Job once handled)"
        problems.append((Severity.CRITICAL, f"{pod.display_status}{where}", step))
    elif failure == "image":
        problems.append((Severity.CRITICAL, f"{pod.display_status}{where}",
                         f"{describe}: does the image name and tag exist, and can the node pull it "
                         "(imagePullSecrets, registry reachable)?"))
    elif failure == "config":
        problems.append((Severity.CRITICAL, f"{pod.display_status}{where}",
                         f"{describe}: a ConfigMap or Secret it references is missing or lacks a key"))
    elif pod.display_status == "Unknown" or pod.phase == "Unknown":
        # The node stopped reporting: the pod may or may not run. A warning, since the node's own
        # monitoring is what pages for a lost node.
        problems.append((Severity.WARNING, f"status Unknown: node {pod.node or '?'} stopped reporting",
                         f"kubectl describe node {pod.node}: is the node up?" if pod.node else describe))
    elif pod.deletion_requested:
        # Terminating is normal for a grace period; long after, a finalizer or a dead node holds it.
        since = pod.deletion_requested_at or pod.created_at
        if now - since > pending_grace:
            problems.append((Severity.WARNING,
                             f"stuck Terminating for {format_duration(now - since)} after deletion",
                             f"kubectl -n {ns} get pod {name} -o jsonpath='{{.metadata.finalizers}}'; "
                             f"is node {pod.node or '?'} up?"))
    elif pod.phase == "Pending":
        # A pod may wait for scheduling or image pulls for a while: a warning once it waited too long.
        age = now - pod.created_at
        if age > pending_grace:
            problems.append((Severity.WARNING,
                             f"Pending for {format_duration(age)} (more than {format_duration(pending_grace)})",
                             f"{describe}: read its Events (FailedScheduling: resources, taints, node "
                             "selectors, unbound PVCs; or a slow image pull)"))
    elif pod.phase == "Running" and (pod.display_status == "NotReady"
                                     or pod.ready_containers < pod.total_containers):
        # Out of its Service's endpoints, but replicas may carry the load: a warning, after a grace
        # period so a rollout's fresh pods are not reported.
        since = pod.not_ready_since or pod.created_at
        if now - since > not_ready_grace:
            problems.append((Severity.WARNING,
                             f"Running but not ready ({pod.ready}) for {format_duration(now - since)}",
                             f"{describe}: its readiness probe is failing (see Events), then {logs}"))

    if pod.restarts > max_restarts and not pod.deletion_requested and pod.phase != "Failed":
        # It runs, but it keeps dying: a warning. The count resets only when the pod is replaced;
        # a pod that is going away or already failed has nothing left to restart.
        problems.append((Severity.WARNING, f"{pod.restarts} restarts, more than max_restarts {max_restarts}",
                         "" if failure == "crash" else f"{logs} --previous: why does it restart?"))

    if not problems:
        return None
    severity = Severity.worst(p[0] for p in problems)
    what = "; ".join(p[1] for p in problems)
    hint = "; ".join(dict.fromkeys(p[2] for p in problems if p[2]))
    return Finding("pods", pod.subject, severity, f"{what} — {_describe(pod, now)}", hint)


def assess_pods(pods: list[PodInfo], now: datetime, max_restarts: int,
                pending_grace: timedelta = timedelta(minutes=15), *,
                not_ready_grace: timedelta = timedelta(minutes=5),
                namespaces: list[str] | None = None) -> list[Finding]:
    """Flag the pods that need a human; never finished work.

    CRITICAL at once: CrashLoopBackOff, ImagePullBackOff, ErrImagePull, CreateContainerConfigError,
    Error (and Init:<those>, and their siblings listed in `_CRASHING`, `_IMAGE`, `_CONFIG`).
    WARNING: Pending longer than `pending_grace`; Running but not ready for longer than
    `not_ready_grace`; restarts above `max_restarts`; stuck Terminating; status Unknown.
    Never: Succeeded/Completed pods, failed Job attempts that a later attempt completed.

    Returns one finding per flagged pod (`NS/NAME`, its worst severity, every problem in its
    message), then one OK finding per namespace (`namespace NS`); `namespaces` lists those that
    must have one even when they hold no pod (pass the configured list).
    """
    by_namespace: dict[str, list[PodInfo]] = {ns: [] for ns in namespaces or []}
    for pod in pods:
        by_namespace.setdefault(pod.namespace, []).append(pod)
    flagged: list[Finding] = []
    summaries: list[Finding] = []
    for ns, members in by_namespace.items():
        found = [f for f in (assess_pod(p, now, max_restarts, pending_grace=pending_grace,
                                        not_ready_grace=not_ready_grace, siblings=members)
                             for p in sorted(members, key=lambda p: p.name)) if f is not None]
        flagged += found
        summaries.append(Finding("pods", f"namespace {ns}", Severity.OK,
                                 f"{len(members)} pods, {len(found)} flagged"))
    return flagged + summaries
