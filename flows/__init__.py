"""The duties as Prefect flows, one module per duty (no duty module imports another);
`_duty` is what every duty does around its steps, `steps` the steps several duties share."""

from __future__ import annotations

import importlib

from maint.duties import Duty


def load_flow(duty: Duty):
    """The duty's flow, imported on demand: Prefect is slow to import."""
    module = importlib.import_module(f"{__name__}.{duty.flow_module}")
    return getattr(module, duty.flow_module)
