"""Who gets paged: a pure decision over a run's findings and the pages still open.

A (duty, check, subject) triple is one incident. It is triggered while its severity is in
`page_on` (PagerDuty folds repeated triggers with the same dedup_key into one incident, so a
failure pages once however many runs see it) and resolved by the first run that sees it below
that severity again.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from maint.report import Finding

RUN_FAILED_CHECK = "flow-run"


def dedup_key(duty: str, check: str, subject: str) -> str:
    """Stable across runs and hosts, short enough for PagerDuty (255), and opaque about the
    subject (a URL may carry credentials); the check is kept readable so a run can tell which
    open pages belong to a check it evaluated in full."""
    digest = hashlib.sha256(f"{duty}\x1f{check}\x1f{subject}".encode()).hexdigest()[:20]
    return f"{_key_prefix(duty, check)}{digest}"


def _key_prefix(duty: str, check: str) -> str:
    return f"maint-{duty}-{check}-"


@dataclass(frozen=True)
class PagePlan:
    triggers: list[tuple[str, Finding]]
    resolves: list[tuple[str, Finding | None]]
    still_open: list[str]


def plan_pages(duty: str, findings: list[Finding], open_keys: list[str], page_on: list[str],
               exhaustive_checks: frozenset[str] = frozenset()) -> PagePlan:
    """`exhaustive_checks`: checks this run evaluated in full and that report only what is wrong
    (one finding per bad pod, not per good one). An open page of such a check whose subject is
    not reported again is resolved: the pod is fine now, or gone."""
    open_set = set(open_keys)
    triggers, resolves = [], []
    for finding in findings:
        key = dedup_key(duty, finding.check, finding.subject)
        if finding.severity.value in page_on:
            triggers.append((key, finding))
            open_set.add(key)
        elif key in open_set:
            resolves.append((key, finding))
            open_set.discard(key)
    triggered = {key for key, _ in triggers}
    for check in sorted(exhaustive_checks):
        for key in sorted(open_set):
            if key.startswith(_key_prefix(duty, check)) and key not in triggered:
                resolves.append((key, None))
                open_set.discard(key)
    return PagePlan(triggers, resolves, sorted(open_set))
