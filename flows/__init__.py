"""The duties as Prefect flows, one module per duty; `steps` holds what several duties run."""
