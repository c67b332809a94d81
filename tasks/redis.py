"""Redis: one PING and one INFO per server with redis-py, as a `RedisSample`.

Every failure leaves as `RedisError` naming the server (host:port/db) and the cause: refused,
timeout, wrong or missing password, TLS, never the password itself.
"""

from __future__ import annotations

import re
import ssl
import time
from datetime import timedelta

from maint.config import RedisConfig
from maint.errors import RedisError
from maint.redaction import redact
from maint.redis_info import RedisSample, redis_endpoint
from maint.tasks.environment import resolve_secret


def _client(config: RedisConfig, password: str | None):
    import redis  # here, not at the top: the CLI imports this module and redis-py costs time
    from redis.backoff import NoBackoff
    from redis.retry import Retry

    host, port, db, tls, username = redis_endpoint(config)
    seconds = config.timeout.total_seconds()
    # One retry, at once: a connection reset in passing is not a finding, but a server that does
    # not answer must not hold the morning check for more than two timeouts.
    return redis.Redis(host=host, port=port, db=db, username=username, password=password,
                       ssl=tls, ssl_ca_certs=config.ca_file or None, protocol=config.protocol,
                       socket_timeout=seconds, socket_connect_timeout=seconds, retry=Retry(NoBackoff(), 1),
                       # No client_name: CLIENT SETNAME would need +client, beyond a monitoring user's
                       # +ping +info (redis-py's own CLIENT SETINFO tolerates a refusal).
                       single_connection_client=True)


def sample_redis(config: RedisConfig) -> RedisSample:
    """PING (timed) and INFO of one server; CONFIG GET maxclients only where INFO lacks it
    (Redis < 7), and a server that forbids CONFIG (a managed Redis) leaves maxclients unknown.
    Raises RedisError."""
    import redis

    password = resolve_secret(config.password_env, field="health_check.redis.password_env")
    client = None
    try:
        # single_connection_client connects in the constructor: its errors are translated too.
        client = _client(config, password)
        # The first PING carries the TCP and TLS handshakes and AUTH; the second is the server's
        # round trip alone, which is what max_latency bounds.
        client.ping()
        started = time.perf_counter()
        client.ping()
        latency = timedelta(seconds=time.perf_counter() - started)
        info = client.info()
        maxclients = None
        if "maxclients" not in info:
            try:
                maxclients = int(client.config_get("maxclients").get("maxclients"))
            except (redis.exceptions.ResponseError, TypeError, ValueError):
                maxclients = None
        return RedisSample.from_info(info, latency, maxclients)
    except redis.exceptions.RedisError as exc:
        raise translate_redis_error(config, exc, password) from exc
    finally:
        if client is not None:
            client.close()


def translate_redis_error(config: RedisConfig, exc: Exception, password: str | None = None) -> RedisError:
    import redis.exceptions as errors

    cause = exc.__context__ if isinstance(exc.__context__, OSError) else None
    detail = _reason(cause or exc)
    if password:
        detail = detail.replace(password, "[REDACTED]")
    detail = redact(detail)
    text = str(exc)
    if isinstance(exc, errors.BusyLoadingError):
        kind = "loading"
    elif isinstance(exc, errors.AuthenticationError) or text.startswith(("WRONGPASS", "NOAUTH")):
        if "without any password configured" in text:
            kind = "password-not-set"
        elif "required" in text.lower() or "already authenticated" in text:  # RESP2's NOAUTH, RESP3's HELLO
            kind = "no-password"
        else:
            kind = "wrong-password"
    elif isinstance(exc, errors.NoPermissionError):
        kind = "no-permission"
    elif isinstance(cause, ssl.SSLError) or "handshake" in detail.lower() or (
            isinstance(cause, FileNotFoundError) and config.ca_file):
        kind = "tls"
        if isinstance(cause, FileNotFoundError):
            detail = f"cannot read ca_file {config.ca_file}: {cause.strerror}"
    elif isinstance(cause, ConnectionRefusedError):
        kind = "refused"
    elif isinstance(exc, errors.TimeoutError) or isinstance(cause, TimeoutError):
        kind = "timeout"
    elif isinstance(cause, ConnectionResetError) and not redis_endpoint(config).tls:
        kind = "not-tls"
    elif isinstance(exc, errors.ConnectionError):
        kind = "connect"
    else:
        kind = "error"
    return RedisError(config.address, kind, detail)


def _reason(exc: BaseException) -> str:
    """The library's reason without its C source position: 'certificate verify failed: ...'."""
    text = exc.strerror if isinstance(exc, OSError) and not isinstance(exc, ssl.SSLError) and exc.strerror else str(exc)
    if isinstance(exc, ssl.SSLError) and getattr(exc, "reason", None) and "] " in text:
        text = text.split("] ", 1)[1]
    return re.sub(r"\s*\(?_ssl\.c:\d+\)?:?\s*", " ", text).strip().rstrip(".")
