"""Nodes as `kubectl get nodes` and `kubectl top nodes` show them, and which of them need a human.

Pure: the API's JSON comes in (Node items of `GET /api/v1/nodes`, NodeMetrics items of
`GET /apis/metrics.k8s.io/v1beta1/nodes`, plain dicts with the API's camelCase keys), findings go
out. No I/O and no clock: `now` is a parameter.

Two checks, both exhaustive (one finding per node that needs a human, then an OK summary with
subject `nodes`), so a page opened for a node resolves on the first run that no longer flags it:
  - `NODE_CHECK` ("nodes"): the kubelet's conditions (Ready, the pressures, NetworkUnavailable)
    and cordons; evaluated whenever the nodes were listed.
  - `NODE_USAGE_CHECK` ("node-usage"): CPU and memory in use against allocatable, from
    metrics-server; evaluated in full only when metrics.k8s.io answered, so `exhaustive_checks`
    leaves it out otherwise (a usage page is not resolved by a run that could not see usage).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal, InvalidOperation
from typing import Any

from maint.config import KubernetesConfig
from maint.durations import format_bytes, format_duration
from maint.pods import parse_time
from maint.report import Finding, Severity

NODE_CHECK = "nodes"
NODE_USAGE_CHECK = "node-usage"
SUMMARY_SUBJECT = "nodes"
CORDON_WARNING_AFTER = timedelta(hours=24)  # maintenance takes hours; a cordon left for a day is forgotten
METRICS_SERVER_INSTALL = ("kubectl apply -f https://github.com/kubernetes-sigs/metrics-server/releases/latest/"
                          "download/components.yaml")
UNSCHEDULABLE_TAINT = "node.kubernetes.io/unschedulable"

# --- Kubernetes quantities -------------------------------------------------------------------------

# k8s.io/apimachinery/pkg/api/resource: a signed decimal, then a binary suffix (Ki..Ei), a decimal
# SI suffix (n, u, m, "", k, M, G, T, P, E) or a decimal exponent (e3, E-2).
_QUANTITY = re.compile(r"([+-]?(?:\d+(?:\.\d*)?|\.\d+))(Ki|Mi|Gi|Ti|Pi|Ei|n|u|m|k|M|G|T|P|E|[eE][+-]?\d+)?")
_SCALE = {None: Decimal(1), "n": Decimal("1e-9"), "u": Decimal("1e-6"), "m": Decimal("0.001"),
          "k": Decimal(10) ** 3, "M": Decimal(10) ** 6, "G": Decimal(10) ** 9, "T": Decimal(10) ** 12,
          "P": Decimal(10) ** 15, "E": Decimal(10) ** 18, "Ki": Decimal(2) ** 10, "Mi": Decimal(2) ** 20,
          "Gi": Decimal(2) ** 30, "Ti": Decimal(2) ** 40, "Pi": Decimal(2) ** 50, "Ei": Decimal(2) ** 60}


def parse_quantity(value: Any) -> Decimal:
    """A resource quantity's exact value: "3950m" -> 3.95, "16Gi" -> 17179869184, "1.5" -> 1.5,
    "152774129n" -> 0.152774129. Raises ValueError on anything else."""
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise ValueError(f"not a Kubernetes quantity: {value!r}")
    match = _QUANTITY.fullmatch(str(value))
    if not match:
        raise ValueError(f"not a Kubernetes quantity: {value!r}")
    try:
        number, suffix = Decimal(match[1]), match[2]
    except InvalidOperation as exc:
        raise ValueError(f"not a Kubernetes quantity: {value!r}") from exc
    if suffix and suffix[0] in "eE":
        return number.scaleb(int(suffix[1:]))
    return number * _SCALE[suffix]


_GO_DURATION = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|ms|s|m|h)")
_GO_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1, "m": 60, "h": 3600}


def parse_go_duration(text: str) -> timedelta:
    """A Go `time.Duration` string as metav1.Duration writes it ("20.059s", "1m0s")."""
    if text in ("0", "0s"):
        return timedelta(0)
    parts = _GO_DURATION.findall(text or "")
    if not parts or "".join(n + u for n, u in parts) != text:
        raise ValueError(f"not a Go duration: {text!r}")
    return timedelta(seconds=sum(float(n) * _GO_UNITS[u] for n, u in parts))


# --- what the API says about a node ----------------------------------------------------------------

@dataclass(frozen=True)
class Condition:
    """One of status.conditions: type Ready/MemoryPressure/..., status "True"/"False"/"Unknown"."""

    type: str
    status: str
    reason: str = ""
    message: str = ""
    since: datetime | None = None  # lastTransitionTime


@dataclass(frozen=True)
class NodeInfo:
    """One node as `kubectl get nodes -o wide` would list it, plus what the decision needs."""

    name: str
    conditions: tuple[Condition, ...]
    unschedulable: bool
    cordoned_since: datetime | None  # the unschedulable taint's timeAdded, when it has one
    allocatable_cpu: Decimal | None  # cores
    allocatable_memory: Decimal | None  # bytes
    roles: tuple[str, ...] = ()
    kubelet_version: str = ""
    created_at: datetime | None = None

    @property
    def subject(self) -> str:
        return f"node {self.name}"

    def condition(self, kind: str) -> Condition | None:
        return next((c for c in self.conditions if c.type == kind), None)

    @property
    def kubectl_status(self) -> str:
        """The STATUS column of `kubectl get nodes` (kubectl's printNode): Ready, NotReady (for
        False and Unknown alike), Unknown (no Ready condition), then ",SchedulingDisabled"."""
        ready = self.condition("Ready")
        status = "Unknown" if ready is None else ("Ready" if ready.status == "True" else "NotReady")
        return status + (",SchedulingDisabled" if self.unschedulable else "")


@dataclass(frozen=True)
class NodeUsage:
    """One NodeMetrics item: what the node's kubelet measured over `window`, at `measured_at`."""

    name: str
    cpu: Decimal  # cores
    memory: Decimal  # bytes (the working set)
    measured_at: datetime | None = None
    window: timedelta | None = None


def node_info_from_json(node: dict[str, Any]) -> NodeInfo:
    """One item of `GET /api/v1/nodes`. Raises KeyError or ValueError on JSON that is not a node
    (no name, a malformed timestamp or quantity)."""
    meta = node.get("metadata") or {}
    spec = node.get("spec") or {}
    status = node.get("status") or {}
    conditions = tuple(Condition(str(c["type"]), str(c.get("status") or "Unknown"), c.get("reason") or "",
                                 c.get("message") or "", parse_time(c.get("lastTransitionTime")))
                       for c in status.get("conditions") or [])
    taint = next((t for t in spec.get("taints") or [] if t.get("key") == UNSCHEDULABLE_TAINT), None)
    allocatable = status.get("allocatable") or {}
    labels = meta.get("labels") or {}
    roles = sorted({key.split("/", 1)[1] for key in labels if key.startswith("node-role.kubernetes.io/")}
                   | ({labels["kubernetes.io/role"]} if labels.get("kubernetes.io/role") else set()))
    name = meta["name"]
    if not name:
        raise ValueError("a node without a name")
    return NodeInfo(
        name=name, conditions=conditions, unschedulable=bool(spec.get("unschedulable")),
        cordoned_since=parse_time((taint or {}).get("timeAdded")),
        allocatable_cpu=parse_quantity(allocatable["cpu"]) if "cpu" in allocatable else None,
        allocatable_memory=parse_quantity(allocatable["memory"]) if "memory" in allocatable else None,
        roles=tuple(r for r in roles if r),
        kubelet_version=(status.get("nodeInfo") or {}).get("kubeletVersion") or "",
        created_at=parse_time(meta.get("creationTimestamp")))


def node_usage_from_json(metrics: dict[str, Any]) -> NodeUsage:
    """One item of `GET /apis/metrics.k8s.io/v1beta1/nodes`. Raises KeyError or ValueError."""
    usage = metrics["usage"]
    window = metrics.get("window")
    return NodeUsage(name=metrics["metadata"]["name"], cpu=parse_quantity(usage["cpu"]),
                     memory=parse_quantity(usage["memory"]), measured_at=parse_time(metrics.get("timestamp")),
                     window=parse_go_duration(window) if window else None)


# --- the decision ------------------------------------------------------------------------------------

def _for_how_long(since: datetime | None, now: datetime) -> str:
    return f"for {format_duration(max(now - since, timedelta(0)))}" if since is not None else "since when is not known"


def _why(condition: Condition) -> str:
    said = ": ".join(part for part in (condition.reason, condition.message) if part)
    return f" ({said})" if said else ""


_PRESSURE_HINTS = {
    "MemoryPressure": "kubectl top pods -A --sort-by=memory: the kubelet evicts pods while memory is short",
    "DiskPressure": "free disk on the node (unused images: crictl rmi --prune; container logs): the kubelet "
                    "evicts pods while disk is short",
    "PIDPressure": "find the pod that forks without end (a pids limit per pod stops it)",
}


def _node_problems(node: NodeInfo, now: datetime, cordon_grace: timedelta) -> list[tuple[Severity, str, tuple[str, ...]]]:
    """(severity, what was seen, next steps) for each thing wrong with the node; an OK severity
    is a note (a fresh cordon)."""
    describe = f"kubectl describe node {node.name}"
    problems: list[tuple[Severity, str, tuple[str, ...]]] = []
    ready = node.condition("Ready")
    if ready is None:
        problems.append((Severity.CRITICAL, "no Ready condition: its kubelet never reported",
                         (describe, "is the kubelet running on it (systemctl status kubelet)?")))
    elif ready.status == "Unknown":
        # The node controller sets Unknown once the kubelet stops posting status (node-monitor-grace-period).
        problems.append((Severity.CRITICAL, f"Ready Unknown {_for_how_long(ready.since, now)}{_why(ready)}",
                         (describe, "is the machine up, and can its kubelet reach the API server "
                          "(cloud console, ssh, journalctl -u kubelet)?")))
    elif ready.status != "True":
        problems.append((Severity.CRITICAL, f"NotReady {_for_how_long(ready.since, now)}{_why(ready)}",
                         (describe, "read its Conditions and Events, then on the node journalctl -u kubelet "
                          "(container runtime, network plugin, certificates)")))
    for kind in ("MemoryPressure", "DiskPressure", "PIDPressure"):
        condition = node.condition(kind)
        if condition is not None and condition.status == "True":
            problems.append((Severity.WARNING, f"{kind} {_for_how_long(condition.since, now)}{_why(condition)}",
                             (describe, _PRESSURE_HINTS[kind])))
    network = node.condition("NetworkUnavailable")
    if network is not None and network.status == "True":
        problems.append((Severity.CRITICAL, f"NetworkUnavailable {_for_how_long(network.since, now)}{_why(network)}",
                         (describe, f"kubectl -n kube-system get pods -o wide --field-selector spec.nodeName={node.name}: "
                          "is the network plugin's pod running on it?")))
    if node.unschedulable:
        uncordon = f"kubectl uncordon {node.name} once its maintenance is over"
        since = node.cordoned_since
        if since is not None and now - since >= cordon_grace:
            problems.append((Severity.WARNING, f"cordoned {_for_how_long(since, now)}, more than "
                             f"{format_duration(cordon_grace)}: a forgotten maintenance?", (uncordon,)))
        else:
            # A cordon is how maintenance starts (kubectl drain): noted, not flagged, while fresh.
            problems.append((Severity.OK, f"cordoned {_for_how_long(since, now)} (maintenance in progress?)",
                             (uncordon,)))
    return problems


def _describe(node: NodeInfo, now: datetime) -> str:
    roles = ",".join(node.roles) or "<none>"
    age = format_duration(now - node.created_at) if node.created_at is not None else "unknown"
    return f"status {node.kubectl_status}, roles {roles}, age {age}, version {node.kubelet_version or 'unknown'}"


def assess_node(node: NodeInfo, now: datetime, *, cordon_grace: timedelta = CORDON_WARNING_AFTER) -> Finding | None:
    """The `nodes` finding for one node (its worst severity, every problem in the message), or
    None when there is nothing to say."""
    problems = _node_problems(node, now, cordon_grace)
    if not problems:
        return None
    severity = Severity.worst(p[0] for p in problems)
    what = "; ".join(p[1] for p in problems)
    hint = "; ".join(dict.fromkeys(step for p in problems for step in p[2]))
    return Finding(NODE_CHECK, node.subject, severity, f"{what} — {_describe(node, now)}", hint)


def _share(used: Decimal, allocatable: Decimal | None) -> Decimal | None:
    return used / allocatable if allocatable else None


def _cores(value: Decimal) -> str:
    return f"{value:.2f}".rstrip("0").rstrip(".")


def _usage_text(node: NodeInfo, usage: NodeUsage) -> str:
    cpu_share, memory_share = _share(usage.cpu, node.allocatable_cpu), _share(usage.memory, node.allocatable_memory)
    cpu = f"CPU {_cores(usage.cpu)} of {_cores(node.allocatable_cpu)} cores" if node.allocatable_cpu else \
        f"CPU {_cores(usage.cpu)} cores (allocatable not reported)"
    memory = (f"memory {format_bytes(int(usage.memory))} of {format_bytes(int(node.allocatable_memory))}"
              if node.allocatable_memory else f"memory {format_bytes(int(usage.memory))} (allocatable not reported)")
    return (cpu + (f" ({cpu_share:.0%})" if cpu_share is not None else "") + ", " + memory
            + (f" ({memory_share:.0%})" if memory_share is not None else ""))


def assess_node_usage(config: KubernetesConfig, nodes: list[NodeInfo], metrics: list[NodeUsage] | None, *,
                      metrics_unavailable: str = "") -> list[Finding]:
    """`node-usage` findings: one warning per node whose CPU or memory in use is at least
    `node_cpu_warning`/`node_memory_warning` of its allocatable, then the OK summary. `metrics`
    None (metrics-server did not answer, `metrics_unavailable` says why): one OK note, never a
    failure: usage is not known, the nodes' conditions still are."""
    if metrics is None:
        why = f": {metrics_unavailable}" if metrics_unavailable else ""
        return [Finding(NODE_USAGE_CHECK, SUMMARY_SUBJECT, Severity.OK,
                        f"usage not known: metrics.k8s.io did not answer{why}",
                        f"for `kubectl top nodes` and this check, install metrics-server ({METRICS_SERVER_INSTALL}); "
                        "if it is installed: kubectl get apiservice v1beta1.metrics.k8s.io; "
                        "kubectl -n kube-system logs deploy/metrics-server")]
    by_name = {u.name: u for u in metrics}
    flagged: list[Finding] = []
    measured: list[tuple[NodeInfo, NodeUsage]] = []
    for node in nodes:
        usage = by_name.get(node.name)
        if usage is None:
            continue
        measured.append((node, usage))
        high = []
        cpu_share, memory_share = _share(usage.cpu, node.allocatable_cpu), _share(usage.memory, node.allocatable_memory)
        if cpu_share is not None and cpu_share >= Decimal(str(config.node_cpu_warning)):
            high.append(f"CPU at {cpu_share:.0%} of allocatable (warning at {config.node_cpu_warning:.0%})")
        if memory_share is not None and memory_share >= Decimal(str(config.node_memory_warning)):
            high.append(f"memory at {memory_share:.0%} of allocatable (warning at {config.node_memory_warning:.0%})")
        if high:
            sort = "memory" if memory_share is not None and memory_share >= Decimal(str(config.node_memory_warning)) \
                else "cpu"
            flagged.append(Finding(
                NODE_USAGE_CHECK, node.subject, Severity.WARNING,
                f"{'; '.join(high)} — {_usage_text(node, usage)}",
                f"kubectl describe node {node.name} (Allocated resources, Non-terminated Pods); "
                f"kubectl top pods -A --sort-by={sort}: what grew, or does the cluster need another node?"))
    unmeasured = sorted(n.name for n in nodes if n.name not in by_name)
    summary = f"{len(measured)} of {len(nodes)} nodes measured, {len(flagged)} flagged"
    if measured:
        busiest_cpu = max(measured, key=lambda m: _share(m[1].cpu, m[0].allocatable_cpu) or 0)
        busiest_memory = max(measured, key=lambda m: _share(m[1].memory, m[0].allocatable_memory) or 0)
        summary += (f"; busiest: {busiest_cpu[0].name} {_usage_text(*busiest_cpu).split(', ')[0]}, "
                    f"{busiest_memory[0].name} {_usage_text(*busiest_memory).split(', ')[1]}")
    if unmeasured:
        summary += f"; no metrics for {', '.join(unmeasured)} (not scraped yet, or its kubelet is down)"
    return flagged + [Finding(NODE_USAGE_CHECK, SUMMARY_SUBJECT, Severity.OK, summary)]


def assess_nodes(config: KubernetesConfig, nodes: list[dict], metrics: list[dict] | None, now: datetime, *,
                 metrics_unavailable: str = "", cordon_grace: timedelta = CORDON_WARNING_AFTER) -> list[Finding]:
    """Flag the nodes that need a human, as `kubectl get nodes` and `kubectl top nodes` show them.

    `nodes`: the items of `GET /api/v1/nodes`; `metrics`: the items of
    `GET /apis/metrics.k8s.io/v1beta1/nodes`, or None when metrics-server did not answer
    (`metrics_unavailable` says why; usage is then a note, never a failure).

    `nodes` check, per node: CRITICAL for Ready False or Unknown (reason, message, for how long)
    or no Ready condition at all, and for NetworkUnavailable; WARNING for MemoryPressure,
    DiskPressure, PIDPressure, and for a cordon older than `cordon_grace`; a fresher cordon (or
    one whose start is not known) is an OK note. `node-usage` check: WARNING at
    `node_cpu_warning`/`node_memory_warning` of allocatable. Each check ends with an OK summary
    (subject `nodes`); see `exhaustive_checks` for which of them a run saw in full.
    """
    infos = sorted((node_info_from_json(n) for n in nodes), key=lambda n: n.name)
    flagged = [f for f in (assess_node(n, now, cordon_grace=cordon_grace) for n in infos) if f is not None]
    bad = sum(f.severity is not Severity.OK for f in flagged)
    notes = [f.subject.removeprefix("node ") for f in flagged if f.severity is Severity.OK]
    not_ready = sum(1 for n in infos if n.kubectl_status.split(",")[0] != "Ready")
    summary = f"{len(infos)} nodes, {len(infos) - not_ready} Ready, {bad} flagged"
    if notes:
        summary += f"; cordoned: {', '.join(notes)}"
    if infos:
        findings = flagged + [Finding(NODE_CHECK, SUMMARY_SUBJECT, Severity.OK, summary)]
    else:  # nothing can run; or the context names a cluster whose nodes are not its own (Fargate, Autopilot)
        findings = [Finding(NODE_CHECK, SUMMARY_SUBJECT, Severity.WARNING, "the API lists no node",
                            "kubectl get nodes: is [health_check.kubernetes].context the right cluster?")]
    usage = None if metrics is None else [node_usage_from_json(m) for m in metrics]
    return findings + assess_node_usage(config, infos, usage, metrics_unavailable=metrics_unavailable)


def exhaustive_checks(metrics: list[dict] | None) -> set[str]:
    """The checks of `assess_nodes` to mark exhaustive in the report: `nodes` always (every node
    was listed), `node-usage` only when metrics-server answered."""
    return {NODE_CHECK} | ({NODE_USAGE_CHECK} if metrics is not None else set())
