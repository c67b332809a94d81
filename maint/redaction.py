"""Secrets are redacted from every text that leaves the process, whatever path it took.

The systems layer registers each secret at the moment it reads it (`maint.tasks.environment.
resolve_secret`); reports, notifications and the loggers that print URLs call `redact`. Process
state, but no I/O: the core's report model may use it.
"""

from __future__ import annotations

import logging

_SHORTEST_SECRET = 4  # a shorter "secret" would redact ordinary words
_known_secrets: set[str] = set()


def remember_secret(value: str) -> None:
    if len(value) >= _SHORTEST_SECRET:
        _known_secrets.add(value)


def redact(text: str) -> str:
    """Defence in depth: whatever path a message took, no resolved secret leaves the process."""
    for secret in _known_secrets:
        if secret in text:
            text = text.replace(secret, "[REDACTED]")
    return text


class RedactingFilter(logging.Filter):
    """Installed on loggers that print URLs (httpx logs every request at INFO): a webhook URL
    is itself a secret."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        cleaned = redact(message)
        if cleaned != message:
            record.msg, record.args = cleaned, ()
        return True


def install_redaction(*logger_names: str) -> None:
    for name in logger_names:
        logger = logging.getLogger(name)
        if not any(isinstance(f, RedactingFilter) for f in logger.filters):
            logger.addFilter(RedactingFilter())
