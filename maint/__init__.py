"""maint: production runbooks as Prefect flows.

One import name, in layers (README.md, "Architecture"; import-linter checks them): the pure core
in this folder (the configuration model, the report, durations, errors, the duty list and every
decision, with no I/O and no clock); `maint.tasks`, one module or package per external system;
`maint.flows`, the duties as Prefect flows; `maint.deployments`; and the entry points here,
`maint.cli` and `maint.demo`.
"""

__version__ = "0.1.0"
