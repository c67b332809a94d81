"""TLS endpoints and PostgreSQL servers: one handshake each, all at once.

The handshake verifies the chain and the hostname against the system trust store (or the
target's ca_file). The presented chain is read either way: on success from the verified
connection, on failure from a second, non-verifying handshake, so the report can say which
certificate expired and what names it was issued for.
"""

from __future__ import annotations

import functools
import socket
import ssl
import struct
from concurrent.futures import ThreadPoolExecutor

from cryptography import x509
from cryptography.x509.oid import NameOID

from maint.certs import CertInfo, TlsProbe, verify_cause
from maint.config import CertificateConfig

_SSL_REQUEST = struct.pack("!ii", 8, 80877103)  # PostgreSQL SSLRequest


class _NoTls(Exception):
    pass


def _connect(target: CertificateConfig, timeout: float) -> socket.socket:
    sock = socket.create_connection((target.host, target.port), timeout=timeout)
    if target.protocol == "postgres":
        sock.sendall(_SSL_REQUEST)
        answer = sock.recv(1)
        if answer != b"S":
            sock.close()
            raise _NoTls("the server answered 'N' to SSLRequest" if answer == b"N"
                         else f"unexpected answer {answer!r} to SSLRequest")
    return sock


def _chain(tls: ssl.SSLSocket, verified: bool) -> tuple[CertInfo, ...]:
    getter = getattr(tls, "get_verified_chain" if verified else "get_unverified_chain", None)
    if getter is None:  # before Python 3.13 the chain is on the private object
        getter = getattr(tls._sslobj, "get_verified_chain" if verified else "get_unverified_chain")
    certs = []
    for i, cert in enumerate(getter() or []):
        der = cert if isinstance(cert, bytes) else cert.public_bytes(ssl._ssl.ENCODING_DER)
        certs.append(_describe(x509.load_der_x509_certificate(der), is_leaf=i == 0))
    return tuple(certs)


def _describe(cert: x509.Certificate, is_leaf: bool) -> CertInfo:
    names = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    subject = f"CN={names[0].value}" if names else cert.subject.rfc4514_string() or "(no subject)"
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        sans = tuple([*san.get_values_for_type(x509.DNSName), *map(str, san.get_values_for_type(x509.IPAddress))])
    except x509.ExtensionNotFound:
        sans = ()
    return CertInfo(subject=subject, sans=sans, not_after=cert.not_valid_after_utc, is_leaf=is_leaf)


def _verifying_context(ca_file: str) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=ca_file or None)


@functools.lru_cache(maxsize=1)
def _lenient_context() -> ssl.SSLContext:
    """For reading what a server presents after verification failed; never for trusting it."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


def probe(target: CertificateConfig, timeout: float = 10.0, verifying: ssl.SSLContext | None = None) -> TlsProbe:
    name = f"{target.host}:{target.port}"
    verifying = verifying or _verifying_context(target.ca_file)
    try:
        with _connect(target, timeout) as sock, verifying.wrap_socket(sock, server_hostname=target.host) as tls:
            return TlsProbe(name, target.protocol, verified=True, chain=_chain(tls, verified=True))
    except _NoTls as exc:
        return TlsProbe(name, target.protocol, tls_enabled=False, error=str(exc))
    except ssl.SSLCertVerificationError as exc:
        cause = verify_cause(exc.verify_code, exc.verify_message)
    except (OSError, ssl.SSLError) as exc:
        return TlsProbe(name, target.protocol, reached=False, error=str(exc) or exc.__class__.__name__)
    # Verification failed: look at what was presented, without trusting it.
    lenient = _lenient_context()
    try:
        with _connect(target, timeout) as sock, lenient.wrap_socket(sock, server_hostname=target.host) as tls:
            chain = _chain(tls, verified=False)
    except (OSError, ssl.SSLError, _NoTls):
        chain = ()
    return TlsProbe(name, target.protocol, verified=False, cause=cause, chain=chain)


def probe_all(targets: list[CertificateConfig], timeout: float = 10.0, concurrency: int = 64) -> list[TlsProbe]:
    if not targets:
        return []
    # One verifying context per trust store for this run: loading the system store costs tens of
    # milliseconds each time, and a renewed ca_file is read again on the next run.
    contexts = {ca_file: _verifying_context(ca_file) for ca_file in {t.ca_file for t in targets}}
    with ThreadPoolExecutor(max_workers=min(concurrency, len(targets))) as pool:
        return list(pool.map(lambda t: probe(t, timeout, contexts[t.ca_file]), targets))
