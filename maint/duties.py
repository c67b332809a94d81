"""The duties maint runs: the one list that the CLI, the configuration, the flows and the
deployments all read. Each duty's flow is `maint.flows.<module>.<module>`, loaded on demand by
`maint.flows.load_flow` (Prefect is slow to import, and `maint config check` should not pay)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Duty:
    name: str
    section: str  # the config section (or list of entries) the duty cannot run without
    summary: str
    tags: tuple[str, ...] = ()
    other_sections: tuple[str, ...] = ()  # any one of these instead of `section` will do too

    @property
    def flow_module(self) -> str:
        """The flow's module in maint.flows, and the flow function's name in it."""
        return self.name.replace("-", "_")


DUTIES: dict[str, Duty] = {d.name: d for d in (
    Duty("backup", "backup",
         "pg_dump of [backup].database streamed into [backup].store, with a manifest", ("backup", "postgres")),
    Duty("backup-verification", "backup_stores",
         "every store's newest backup: present, fresh for the RPO, sane size, intact in one streamed pass; "
         "Cloud SQL automated backups and PITR; Velero's cluster backups",
         ("backup", "verification"), other_sections=("cloud_sql", "velero")),
    Duty("health-check", "health_check",
         "the morning checklist: endpoints, databases, data checks and pods, concurrently",
         ("health", "postgres", "kubernetes")),
    Duty("vacuum", "vacuum",
         "bloat and dead-tuple report, then VACUUM (ANALYZE) where needed with SKIP_LOCKED and a lock_timeout",
         ("postgres", "vacuum")),
    Duty("restore-test", "restore_test",
         "restore the newest backup into a scratch database, validate it, time it, always drop it",
         ("backup", "restore")),
    Duty("backup-retention", "retention",
         "GFS retention planned by real creation time; deletes only with apply", ("backup", "retention")),
    Duty("dr-drill", "dr_drill",
         "simulated loss: verify and restore the newest backup, measure RTO/RPO, write the drill record",
         ("backup", "restore", "dr")),
    Duty("cert-check", "certificates",
         "TLS certificates of HTTPS endpoints and PostgreSQL servers: chain, hostname, expiry", ("tls",)),
    Duty("query-review", "query_review",
         "weekly: the top queries from pg_stat_statements, and the ones that got slower since the last review",
         ("postgres", "performance")),
)}


def missing_section_problem(duty: Duty, config) -> str | None:
    """The duty's own section is absent (or an empty list of entries): it cannot run."""
    sections = (duty.section, *duty.other_sections)
    if any(getattr(config, section) for section in sections):
        return None
    wanted = " or ".join(f"[{section}]" for section in sections)
    return f"{duty.section}: the {duty.name} duty needs {wanted} in the configuration"
