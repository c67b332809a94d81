"""maint: production runbooks as Prefect flows.

The core package holds what every duty shares and that does no I/O of its own: configuration,
the report model, pure decisions and the CLI. Talking to systems lives in `tasks/`; the duties
themselves, as Prefect flows, in `flows/`.
"""

__version__ = "0.1.0"
