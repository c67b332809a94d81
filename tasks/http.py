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


async def _check_all(endpoints: list[EndpointConfig]) -> list[EndpointResult]:
    # One client per CA bundle; connections are not reused across checks (each is a fresh probe).
    by_ca: dict[str, httpx.AsyncClient] = {}
    limits = httpx.Limits(max_connections=None, max_keepalive_connections=0)
    try:
        for endpoint in endpoints:
            key = endpoint.ca_file or ""
            if key not in by_ca:
                by_ca[key] = httpx.AsyncClient(verify=_tls_context(endpoint.ca_file), follow_redirects=False,
                                               limits=limits, headers={"User-Agent": "maint-health-check"})
        return list(await asyncio.gather(*(_check_one(by_ca[e.ca_file or ""], e) for e in endpoints)))
    finally:
        await asyncio.gather(*(c.aclose() for c in by_ca.values()))


def check_endpoints(endpoints: list[EndpointConfig]) -> list[EndpointResult]:
    """Probe every endpoint concurrently; never raises for an endpoint's own failure."""
    if not endpoints:
        return []
    return asyncio.run(_check_all(endpoints))
