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


@dataclass(frozen=True)
class PageScope:
    """Which list of open pages a run keeps, and whether its findings page at all.

    `scope` None is the duty's own list; a target's name is that target's list, for a run limited
    to one target, so that runs of one duty on different targets at the same time (a fan-out's
    children) never load and save the same list: a lost update there is a page never resolved.
    `adopt_from`: the lists that runs of another shape (every target at once, or one) kept the
    same findings' pages in; this run resolves or triggers those keys again and moves them into its
    own list, so switching between the shapes leaves no page behind. A run's own failure page (the
    `flow-run` key) is never adopted: only a run of the same shape resolves it.
    `pages` False: the findings are paged by other runs; the run triggers nothing, and its
    completion only resolves its own failure page. `unpaged_checks`: the same for some checks
    only (a fan-out parent's `child-run` findings, whose children page their own), while the
    run's other findings page as usual.
    """

    scope: str | None = None
    adopt_from: tuple[str | None, ...] = ()
    pages: bool = True
    unpaged_checks: tuple[str, ...] = ()

    def paged(self, findings: list) -> list:
        """The findings this run pages (triggers and resolves) itself."""
        return [f for f in findings if f.check not in self.unpaged_checks] if self.pages else []

    @property
    def lists(self) -> tuple[str | None, ...]:
        """The lists a run reads: its own first, then the ones it adopts from, each once."""
        return tuple(dict.fromkeys((self.scope, *self.adopt_from)))


def open_pages_in_view(scope: PageScope, lists: dict[str | None, list[str]], reported: set[str]) -> list[str]:
    """The open keys a run plans over: its own list, and the keys of its reported findings
    (`reported`, never the run-failure key) that other lists hold."""
    adopted = {key for name in scope.lists if name != scope.scope for key in lists.get(name, []) if key in reported}
    return sorted(set(lists.get(scope.scope, [])) | adopted)


def open_pages_after(scope: PageScope, lists: dict[str | None, list[str]], reported: set[str],
                     still_open: set[str]) -> dict[str | None, list[str]]:
    """The lists to save after a run: its own always (as every run always did), holding what is
    still open; another list only when it held a key of this run's findings, without those keys
    (resolved, or open now in this run's list). Only keys are ever removed from another list, so
    a concurrent run of that list can at worst see a key it already resolved again, never lose one."""
    after: dict[str | None, list[str]] = {scope.scope: sorted(still_open)}
    for name in scope.lists:
        before = lists.get(name, [])
        if name != scope.scope and any(key in reported for key in before):
            after[name] = [key for key in before if key not in reported]
    return after
