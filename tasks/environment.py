"""The process environment: the configuration file it names, and the secrets its variables hold.

Secrets never live in the configuration file: a `*_env` key names the environment variable, and
`resolve_secret` reads it at the moment of use, inside a task, so the value never travels as a
Prefect parameter; every value read is remembered for `maint.redaction.redact`.
"""

from __future__ import annotations

import os
import socket
import tomllib
from pathlib import Path

from maint.config import MaintConfig, parse_config
from maint.errors import ConfigError
from maint.redaction import remember_secret

DEFAULT_CONFIG_FILE = "maint.toml"


def config_path(cli_value: str | None) -> Path:
    """--config PATH, else $MAINT_CONFIG, else ./maint.toml."""
    return Path(cli_value or os.environ.get("MAINT_CONFIG") or DEFAULT_CONFIG_FILE)


def load_config(path: str | Path, *, check_env: bool = True) -> MaintConfig:
    """Read and validate the file; with `check_env`, every `*_env` variable must be set here."""
    path = Path(path)
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise ConfigError([f"{path}: configuration file not found "
                           "(give --config PATH, set MAINT_CONFIG, or create ./maint.toml)"]) from None
    except OSError as exc:
        raise ConfigError([f"{path}: cannot read configuration file: {exc.strerror}"]) from None
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError([f"{path}: not valid TOML: {exc}"]) from None
    return parse_config(raw, environ=os.environ if check_env else None)


def resolve_secret(env_name: str | None, *, field: str) -> str | None:
    """Read a secret from the environment at the moment of use. Remembered for `redact`."""
    if not env_name:
        return None
    value = os.environ.get(env_name)
    if not value:
        raise ConfigError([f"{field}: environment variable {env_name} is not set (or empty)"])
    remember_secret(value)
    return value


def free_port() -> int:
    """A TCP port free on loopback now, for a server this machine starts (demo, tests, benchmarks)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
