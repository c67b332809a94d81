"""HTTP endpoints, all checked at once on one event loop.

TLS is verified against the system trust store (or the endpoint's ca_file), as a browser or curl
on the host would, not against certifi's bundle. Redirects are not followed: a health endpoint
that redirects is answering something other than expect_status.
"""

from __future__ import annotations

import asyncio
import ssl
import time
from datetime import timedelta

import httpx

from maint.config import EndpointConfig
from maint.health import EndpointResult


def _tls_context(ca_file: str | None) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=ca_file or None)


def _is_tls_error(exc: BaseException) -> str | None:
    seen = exc
    while seen is not None:
        if isinstance(seen, ssl.SSLError):
            return getattr(seen, "verify_message", None) or seen.reason or str(seen)
        seen = seen.__cause__ or seen.__context__
    text = str(exc)
    if "CERTIFICATE_VERIFY_FAILED" in text or "SSL" in text:
        return text
    return None


async def _check_one(client: httpx.AsyncClient, endpoint: EndpointConfig) -> EndpointResult:
    timeout = endpoint.timeout.total_seconds()
    started = time.perf_counter()
    try:
        async with asyncio.timeout(timeout):
            response = await client.get(endpoint.url, timeout=timeout)
    except (TimeoutError, httpx.TimeoutException):
        return EndpointResult(endpoint.url, None, None, "timeout",
                              f"no answer within {endpoint.timeout.total_seconds():g}s")
    except httpx.HTTPError as exc:
        tls = _is_tls_error(exc)
        if tls:
            return EndpointResult(endpoint.url, None, None, "tls", tls)
        reason = str(exc) or exc.__class__.__name__
        return EndpointResult(endpoint.url, None, None, "connect", reason)
    latency = timedelta(seconds=time.perf_counter() - started)
    return EndpointResult(endpoint.url, response.status_code, latency)


def _trust_key(endpoint: EndpointConfig) -> str | None:
    """Which trust store an endpoint needs: its ca_file, "" for the system's, None for plain http
    (redirects are not followed, so a plain http check never reaches TLS)."""
    if not endpoint.url.lower().startswith("https://"):
        return None
    return endpoint.ca_file or ""


def _plain_http_context() -> ssl.SSLContext:
    # Verifying, but trusting nothing: loading a trust store costs ~50 ms that plain http never uses.
    return ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)


async def _check_all(endpoints: list[EndpointConfig]) -> list[EndpointResult]:
    # One client per trust store; connections are not reused across checks (each is a fresh probe).
    clients: dict[str | None, httpx.AsyncClient] = {}
    limits = httpx.Limits(max_connections=None, max_keepalive_connections=0)
    try:
        for endpoint in endpoints:
            key = _trust_key(endpoint)
            if key not in clients:
                context = _plain_http_context() if key is None else _tls_context(key)
                clients[key] = httpx.AsyncClient(verify=context, follow_redirects=False, limits=limits,
                                                 headers={"User-Agent": "maint-health-check"})
        return list(await asyncio.gather(*(_check_one(clients[_trust_key(e)], e) for e in endpoints)))
    finally:
        await asyncio.gather(*(c.aclose() for c in clients.values()))


def check_endpoints(endpoints: list[EndpointConfig]) -> list[EndpointResult]:
    """Probe every endpoint concurrently; never raises for an endpoint's own failure."""
    if not endpoints:
        return []
    return asyncio.run(_check_all(endpoints))
