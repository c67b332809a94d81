"""Alertmanager: read its alerts through the v2 API (`GET /api/v2/alerts`), as plain dicts.

Only v2: the v1 API the old runbooks used is gone since Alertmanager 0.28. Every alert is asked
for, silenced, inhibited and unprocessed ones too, so the decision (`maint.alerts`) can count
what it does not report; the configured matchers are passed as Alertmanager's own `filter`
parameters, so Alertmanager applies them with its own matcher syntax.

TLS is verified against the system trust store, or the configured ca_file, as curl on the host
would. Redirects are not followed: an API that redirects is a login proxy or the wrong URL, and
says so. Every failure becomes `AlertmanagerError` naming the URL without its userinfo.
"""

from __future__ import annotations

import json
import ssl
from typing import Any

import httpx

from maint.alerts import display_url
from maint.config import AlertmanagerConfig
from maint.errors import AlertmanagerError

_STATES = {"active": "true", "silenced": "true", "inhibited": "true", "unprocessed": "true"}
_QUOTED = 200  # characters of an unexpected answer quoted in the error


def _tls_reason(exc: BaseException) -> str | None:
    """The certificate problem behind an httpx error, if TLS is what failed."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, ssl.SSLError):
            return getattr(seen, "verify_message", None) or seen.reason or str(seen)
        seen = seen.__cause__ or seen.__context__
    return None


def _quoted(text: str) -> str:
    text = " ".join(text.split())
    return repr(text if len(text) <= _QUOTED else text[:_QUOTED] + "…")


def _status_error(response: httpx.Response, where: str, config: AlertmanagerConfig) -> AlertmanagerError:
    # The standard phrase, not the server's own spelling of it ("NOT FOUND", "Not found").
    status = f"{response.status_code} {httpx.codes.get_reason_phrase(response.status_code)}".strip()
    if response.status_code == 404:
        return AlertmanagerError(f"{where} answered {status}: is this Alertmanager older than 0.16 (no v2 API), "
                                 "or the wrong URL?",
                                 "check the url: Alertmanager's own address, with its --web.route-prefix path "
                                 "if it has one (its UI shows at that URL)")
    if response.status_code == 400:
        return AlertmanagerError(f"{where} refused the query ({status}): {_quoted(response.text)}",
                                 f"fix the matchers {config.matchers}: Alertmanager's syntax, e.g. "
                                 "'team=\"sre\"' or 'severity=~\"critical|page\"'")
    if response.status_code in (401, 403):
        return AlertmanagerError(f"{where} refused us ({status})",
                                 "a proxy in front of it wants credentials: give maint a URL it may read")
    if response.is_redirect:
        location = display_url(response.headers.get("location", "").split("?")[0]) or "nowhere"
        return AlertmanagerError(f"{where} answered {status}, a redirect to {location}",
                                 "a login proxy or the wrong URL: give maint Alertmanager's own address")
    return AlertmanagerError(f"{where} answered {status}: {_quoted(response.text)}",
                             "read Alertmanager's log; is it starting up or overloaded?")


def _alerts_of(response: httpx.Response, where: str) -> list[dict[str, Any]]:
    try:
        alerts = response.json()
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise AlertmanagerError(f"{where} answered 200 with something that is not JSON: {_quoted(response.text)}",
                                "is this URL Alertmanager's, and not a proxy's or another service's?") from None
    if not isinstance(alerts, list) or not all(isinstance(a, dict) for a in alerts):
        raise AlertmanagerError(f"{where} answered JSON that is not a list of alerts: {_quoted(response.text)}",
                                "is this URL Alertmanager's, and not a proxy's or another service's?")
    return alerts


def _tls_context(config: AlertmanagerConfig, where: str) -> ssl.SSLContext:
    if not config.url.lower().startswith("https://"):
        # Verifying, but trusting nothing: plain http never reaches TLS (no redirects are
        # followed), and loading a trust store costs ~50 ms.
        return ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    try:
        return ssl.create_default_context(cafile=config.ca_file or None)
    except (OSError, ssl.SSLError) as exc:
        raise AlertmanagerError(f"{where}: cannot load ca_file {config.ca_file!r}: {exc}",
                                "ca_file must be a readable PEM bundle of the CA that signed its certificate") from exc


def list_alerts(config: AlertmanagerConfig) -> list[dict[str, Any]]:
    """Every alert Alertmanager holds that matches the config's matchers: the v2 API's
    `GettableAlert` objects, unchanged. Raises AlertmanagerError naming the URL."""
    base = config.url.rstrip("/")
    where = f"Alertmanager at {display_url(config.url)}"
    timeout = config.timeout.total_seconds()
    params = [*_STATES.items(), *(("filter", matcher) for matcher in config.matchers)]
    verify = _tls_context(config, where)
    try:
        with httpx.Client(verify=verify, timeout=timeout, follow_redirects=False,
                          headers={"User-Agent": "maint-health-check", "Accept": "application/json"}) as client:
            response = client.get(f"{base}/api/v2/alerts", params=params)
    except httpx.TimeoutException as exc:
        raise AlertmanagerError(f"{where} did not answer within {timeout:g}s ({type(exc).__name__})",
                                "is it overloaded, or is a firewall dropping the connection?") from exc
    except httpx.HTTPError as exc:
        tls = _tls_reason(exc)
        if tls:
            raise AlertmanagerError(f"{where}: TLS error: {tls}",
                                    "check its certificate (chain, expiry, hostname) and ca_file") from exc
        raise AlertmanagerError(f"{where} cannot be reached: {exc or type(exc).__name__}") from exc
    if response.status_code != 200:
        raise _status_error(response, where, config)
    return _alerts_of(response, where)
