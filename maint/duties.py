"""The duties maint can run, and where each one's flow lives. Imported lazily: Prefect is slow
to import, and `maint config check` should not pay for it."""

from __future__ import annotations

import importlib
from dataclasses import dataclass


@dataclass(frozen=True)
class Duty:
    name: str
    flow_ref: str  # "module:function"
    section: str | None  # the config section (or list of entries) the duty cannot run without
    summary: str
    tags: tuple[str, ...] = ()

    def load_flow(self):
        module, _, attribute = self.flow_ref.partition(":")
        return getattr(importlib.import_module(module), attribute)


IMPLEMENTED: dict[str, Duty] = {d.name: d for d in (
    Duty("backup", "maint.flows.backup:backup", "backup",
         "pg_dump of [backup].database streamed into [backup].store, with a manifest", ("backup", "postgres")),
    Duty("backup-verification", "maint.flows.backup_verification:backup_verification", "backup_stores",
         "every store's newest backup: present, fresh for the RPO, sane size, intact in one streamed pass",
         ("backup", "verification")),
    Duty("health-check", "maint.flows.health_check:health_check", "health_check",
         "the morning checklist: endpoints, databases, data checks and pods, concurrently",
         ("health", "postgres", "kubernetes")),
    Duty("vacuum", "maint.flows.vacuum:vacuum", "vacuum",
         "bloat and dead-tuple report, then VACUUM (ANALYZE) where needed with SKIP_LOCKED and a lock_timeout",
         ("postgres", "vacuum")),
    Duty("restore-test", "maint.flows.restore_test:restore_test", "restore_test",
         "restore the newest backup into a scratch database, validate it, time it, always drop it",
         ("backup", "restore")),
    Duty("backup-retention", "maint.flows.backup_retention:backup_retention", "retention",
         "GFS retention planned by real creation time; deletes only with apply", ("backup", "retention")),
    Duty("dr-drill", "maint.flows.dr_drill:dr_drill", "dr_drill",
         "simulated loss: verify and restore the newest backup, measure RTO/RPO, write the drill record",
         ("backup", "restore", "dr")),
    Duty("cert-check", "maint.flows.cert_check:cert_check", "certificates",
         "TLS certificates of HTTPS endpoints and PostgreSQL servers: chain, hostname, expiry", ("tls",)),
)}


def missing_section_problem(duty: Duty, config) -> str | None:
    """The duty's own section is absent (or an empty list of entries): it cannot run."""
    if duty.section is None or getattr(config, duty.section):
        return None
    return f"{duty.section}: the {duty.name} duty needs [{duty.section}] in the configuration"
