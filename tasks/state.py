"""What maint remembers between runs, in Prefect Variables on the Prefect server: pages still
open per duty, and the newest backup per store that passed verification."""

from __future__ import annotations

import re


def _variable(*parts: str) -> str:
    return re.sub(r"[^a-z0-9_]", "_", "maint_" + "_".join(parts).lower())


def load_open_pages(duty: str) -> list[str]:
    from prefect.variables import Variable

    value = Variable.get(_variable("open_pages", duty), default=[])
    return list(value) if isinstance(value, list) else []


def save_open_pages(duty: str, keys: list[str]) -> None:
    from prefect.variables import Variable

    Variable.set(_variable("open_pages", duty), keys, overwrite=True)


def record_verified(store: str, backup_name: str) -> None:
    from prefect.variables import Variable

    # Written only when it changes: a write to the temporary (SQLite) Prefect server can meet
    # "database is locked" and cost the run a 2 s client back-off for nothing.
    if last_verified(store) != backup_name:
        Variable.set(_variable("verified", store), backup_name, overwrite=True)


def last_verified(store: str) -> str | None:
    from prefect.variables import Variable

    value = Variable.get(_variable("verified", store), default=None)
    return value if isinstance(value, str) else None
