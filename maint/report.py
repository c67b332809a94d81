"""The report every duty returns: findings, each ok/warning/critical; status is the worst one."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from maint.redaction import redact


class Severity(enum.Enum):
    OK = "ok"
    WARNING = "warning"
    CRITICAL = "critical"

    @property
    def rank(self) -> int:
        return _RANK[self]

    @property
    def exit_code(self) -> int:
        """Nagios plugin convention: 0 ok, 1 warning, 2 critical (3 is 'could not run')."""
        return self.rank

    @classmethod
    def worst(cls, severities) -> "Severity":
        return max(severities, key=lambda s: s.rank, default=cls.OK)


_RANK = {Severity.OK: 0, Severity.WARNING: 1, Severity.CRITICAL: 2}
_ICON = {Severity.OK: "✅", Severity.WARNING: "⚠️", Severity.CRITICAL: "🔴"}


@dataclass(frozen=True)
class Finding:
    """One observation: what was checked, about what, how bad, what was seen, what to do next."""

    check: str
    subject: str
    severity: Severity
    message: str
    hint: str = ""

    def to_dict(self) -> dict[str, str]:
        return {"check": self.check, "subject": self.subject, "severity": self.severity.value,
                "message": self.message, "hint": self.hint}

    @classmethod
    def from_dict(cls, data: dict[str, str]) -> "Finding":
        return cls(data["check"], data["subject"], Severity(data["severity"]), data["message"],
                   data.get("hint", ""))


def name_worst(findings: list[Finding], shown: int = 2, *, subjects: bool = True) -> str:
    """The first `shown` findings of the worst severity among `findings`, on one line
    ("subject: check: message; ...; and N more"); `subjects` False leaves the subject out."""
    status = Severity.worst(f.severity for f in findings)
    worst = [f for f in findings if f.severity is status]
    named = "; ".join((f"{f.subject}: " if subjects else "") + f"{f.check}: {' '.join(f.message.split())}"
                      for f in worst[:shown])
    return named + (f"; and {len(worst) - shown} more" if len(worst) > shown else "")


@dataclass
class Report:
    duty: str
    started_at: datetime
    finished_at: datetime | None = None
    findings: list[Finding] = field(default_factory=list)
    # Duty-specific facts (object names, sizes, timings) that belong in --json and the artifact.
    details: dict[str, Any] = field(default_factory=dict)
    # Checks evaluated in full that list only what is wrong: their absent subjects are fine now.
    exhaustive_checks: set[str] = field(default_factory=set)

    def add(self, finding: Finding) -> Finding:
        finding = Finding(finding.check, finding.subject, finding.severity,
                          redact(finding.message), redact(finding.hint))
        self.findings.append(finding)
        return finding

    @property
    def status(self) -> Severity:
        return Severity.worst(f.severity for f in self.findings)

    def problems(self) -> list[Finding]:
        return [f for f in self.findings if f.severity is not Severity.OK]

    def to_dict(self) -> dict[str, Any]:
        return {
            "duty": self.duty,
            "status": self.status.value,
            "started_at": self.started_at.isoformat(),
            "finished_at": self.finished_at.isoformat() if self.finished_at else None,
            "findings": [f.to_dict() for f in self.findings],
            "details": self.details,
            "exhaustive_checks": sorted(self.exhaustive_checks),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Report":
        return cls(
            duty=data["duty"],
            started_at=datetime.fromisoformat(data["started_at"]),
            finished_at=datetime.fromisoformat(data["finished_at"]) if data.get("finished_at") else None,
            findings=[Finding.from_dict(f) for f in data["findings"]],
            details=data.get("details", {}),
            exhaustive_checks=set(data.get("exhaustive_checks", [])),
        )

    def counts(self) -> dict[Severity, int]:
        return {s: sum(1 for f in self.findings if f.severity is s) for s in Severity}

    def summary_line(self) -> str:
        counts = self.counts()
        parts = ", ".join(f"{counts[s]} {s.value}" for s in Severity if counts[s])
        return f"{self.duty}: {self.status.value.upper()} ({parts or 'no findings'})"

    @staticmethod
    def is_critical_reason(duty: str, message: str | None) -> bool:
        """Whether a Failed run's message is `failure_reason` of a critical report of `duty`."""
        return bool(message) and message.startswith(f"{duty}: {Severity.CRITICAL.value.upper()} (")

    def failure_reason(self, shown: int = 2, width: int = 300) -> str:
        """One line naming the duty and its worst findings: a Failed run's state message."""
        line = f"{self.summary_line()}: {name_worst(self.findings, shown)}"
        return line if len(line) <= width else line[:width - 1] + "…"

    def to_text(self) -> str:
        """The human summary `maint run DUTY` prints: by subject, worst first, hints for problems."""
        lines = [self.summary_line()]
        by_subject: dict[str, list[Finding]] = {}
        for f in self.findings:
            by_subject.setdefault(f.subject, []).append(f)
        ordered = sorted(by_subject.items(), key=lambda item: -Severity.worst(f.severity for f in item[1]).rank)
        for subject, findings in ordered:
            lines.append(f"{subject}")
            for f in sorted(findings, key=lambda f: -f.severity.rank):
                lines.append(f"  [{f.severity.value.upper():8}] {f.check}: {f.message}")
                if f.hint and f.severity is not Severity.OK:
                    lines.append(f"             -> {f.hint}")
        blocks = []
        for key, value in self.details.items():
            if isinstance(value, str) and "\n" in value:
                blocks.append(value)  # a document of its own, such as the DR drill record
            elif isinstance(value, (str, int, float)):
                lines.append(f"  {key}: {value}")
        return "\n".join(lines + [f"\n{block}" for block in blocks])

    def to_markdown(self, flow_run_url: str | None = None) -> str:
        """The run's report artifact: readable in the Prefect UI by someone woken at 3am."""
        out = [f"# {_ICON[self.status]} {self.duty}: {self.status.value}", ""]
        finished = self.finished_at.isoformat(timespec="seconds") if self.finished_at else "-"
        out.append(f"Started {self.started_at.isoformat(timespec='seconds')}, finished {finished}.")
        if flow_run_url:
            out.append(f"Flow run: {flow_run_url}")
        out += ["", "| severity | check | subject | message | next step |", "|---|---|---|---|---|"]
        for f in sorted(self.findings, key=lambda f: -f.severity.rank):
            cells = [f"{_ICON[f.severity]} {f.severity.value}", f.check, f"`{f.subject}`",
                     f.message, f.hint if f.severity is not Severity.OK else ""]
            out.append("| " + " | ".join(_md_cell(c) for c in cells) + " |")
        scalar_details = {k: v for k, v in self.details.items()
                          if isinstance(v, (int, float)) or isinstance(v, str) and "\n" not in v}
        if scalar_details:
            out += ["", "## Details", ""]
            out += [f"- **{k}**: {_md_cell(str(v))}" for k, v in scalar_details.items()]
        for key, rows in self.details.items():
            if isinstance(rows, list) and rows and all(isinstance(r, dict) for r in rows):
                columns = list(rows[0])
                out += ["", f"## {key[:1].upper()}{key[1:]}", "", "| " + " | ".join(columns) + " |",
                        "|" + "---|" * len(columns)]
                out += ["| " + " | ".join(_md_cell(str(r.get(c, ""))) for c in columns) + " |" for r in rows]
        return "\n".join(out) + "\n"

    def to_table(self) -> list[dict[str, str]]:
        return [f.to_dict() for f in self.findings]


def _md_cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")
