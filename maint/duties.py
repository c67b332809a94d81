"""The duties maint can run, and where each one's flow lives. Imported lazily: Prefect is slow
to import, and `maint config check` should not pay for it."""

from __future__ import annotations

import importlib
from dataclasses import dataclass


@dataclass(frozen=True)
class Duty:
    name: str
    flow_ref: str  # "module:function"
    section: str | None  # the config section the duty cannot run without
    summary: str
    tags: tuple[str, ...] = ()

    def load_flow(self):
        module, _, attribute = self.flow_ref.partition(":")
        return getattr(importlib.import_module(module), attribute)


IMPLEMENTED: dict[str, Duty] = {d.name: d for d in (
    Duty("backup", "flows.backup:backup", "backup",
         "pg_dump of [backup].database streamed into [backup].store, with a manifest", ("backup", "postgres")),
)}
