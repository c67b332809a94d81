"""Certificate decisions: days to the earliest expiry across the presented chain, and
verification failures by cause. Pure: what the handshake saw comes in, findings go out."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from maint.report import Finding, Severity

# OpenSSL X509_V_ERR_* codes -> the cause an operator acts on.
_CAUSES = {10: "expired", 9: "not yet valid", 62: "hostname mismatch", 64: "IP address mismatch",
           18: "self-signed", 19: "self-signed certificate in the chain", 2: "unknown issuer",
           20: "unknown issuer", 21: "unknown issuer"}
_CAUSE_HINTS = {
    "expired": "renew the certificate (and the intermediate, if it is the one expired) and reload the server",
    "hostname mismatch": "the certificate is for other names: reissue it with this host in its SANs, or fix DNS",
    "IP address mismatch": "the certificate does not list this IP address: connect by name or reissue it",
    "self-signed": "a self-signed certificate: use one from the organisation's CA, or set ca_file to trust it",
    "self-signed certificate in the chain": "the chain ends in a root that is not trusted: set ca_file or fix the chain",
    "unknown issuer": "the issuer is not trusted here: send the intermediate in the chain, or set ca_file to the CA",
    "not yet valid": "the certificate's notBefore is in the future: check the server's and the issuer's clocks",
}


def verify_cause(verify_code: int | None, verify_message: str) -> str:
    return _CAUSES.get(verify_code or -1, verify_message or "verification failed")


@dataclass(frozen=True)
class CertInfo:
    subject: str
    sans: tuple[str, ...]
    not_after: datetime
    is_leaf: bool


@dataclass(frozen=True)
class TlsProbe:
    target: str  # host:port
    protocol: str
    reached: bool = True
    tls_enabled: bool = True
    verified: bool = False
    cause: str = ""  # why verification failed
    error: str = ""  # why the target could not be reached or TLS did not start
    chain: tuple[CertInfo, ...] = field(default_factory=tuple)


def _leaf_description(probe: TlsProbe) -> str:
    leaf = next((c for c in probe.chain if c.is_leaf), None)
    if leaf is None:
        return ""
    return f"; certificate {leaf.subject}, SANs {', '.join(leaf.sans) or 'none'}"


def assess_certificate(probe: TlsProbe, now: datetime, warning_days: int, critical_days: int) -> list[Finding]:
    subject = f"{probe.protocol}://{probe.target}"
    if not probe.reached:
        return [Finding("tls", subject, Severity.CRITICAL, f"cannot connect to {probe.target}: {probe.error}",
                        "is the service up, and reachable from here?")]
    if not probe.tls_enabled:
        return [Finding("tls", subject, Severity.CRITICAL, f"TLS not enabled on {probe.target}: {probe.error}",
                        "turn on ssl (PostgreSQL: ssl = on with ssl_cert_file/ssl_key_file), or fix the port")]
    findings = []
    if probe.verified:
        findings.append(Finding("tls", subject, Severity.OK, f"chain verified for {probe.target}"
                                + _leaf_description(probe)))
    else:
        findings.append(Finding("tls", subject, Severity.CRITICAL,
                                f"verification failed for {probe.target}: {probe.cause}" + _leaf_description(probe),
                                _CAUSE_HINTS.get(probe.cause, "inspect the chain: openssl s_client -showcerts")))
    if probe.chain:
        earliest = min(probe.chain, key=lambda c: c.not_after)
        days = (earliest.not_after - now).total_seconds() / 86400
        which = "leaf" if earliest.is_leaf else "chain certificate"
        when = earliest.not_after.isoformat(timespec="seconds")
        if days < 0:
            findings.append(Finding("expiry", subject, Severity.CRITICAL,
                                    f"{which} {earliest.subject} expired {-days:.0f} days ago ({when})",
                                    _CAUSE_HINTS["expired"]))
        elif days <= critical_days:
            findings.append(Finding("expiry", subject, Severity.CRITICAL,
                                    f"{which} {earliest.subject} expires in {days:.0f} days ({when}); "
                                    f"critical at {critical_days}", "renew it now"))
        elif days <= warning_days:
            findings.append(Finding("expiry", subject, Severity.WARNING,
                                    f"{which} {earliest.subject} expires in {days:.0f} days ({when}); "
                                    f"warning at {warning_days}", "schedule the renewal"))
        else:
            findings.append(Finding("expiry", subject, Severity.OK,
                                    f"earliest expiry in the chain: {which} {earliest.subject} in {days:.0f} days"))
    return findings
