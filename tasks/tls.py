"""TLS endpoints and PostgreSQL servers: one handshake each, all at once.

The handshake verifies the chain and the hostname against the system trust store (or the
target's ca_file). The presented chain is read either way: on success from the verified
connection, on failure from a second, non-verifying handshake, so the report can say which
certificate expired and what names it was issued for.
"""

from __future__ import annotations

import asyncio
import functools
import ssl
import struct

from cryptography import x509
from cryptography.x509.oid import NameOID

from maint.certs import CertInfo, TlsProbe, verify_cause
from maint.config import CertificateConfig

_SSL_REQUEST = struct.pack("!ii", 8, 80877103)  # PostgreSQL SSLRequest


class _NoTls(Exception):
    pass


async def _connect(target: CertificateConfig, context: ssl.SSLContext) -> asyncio.StreamWriter:
    """TCP, PostgreSQL's SSLRequest when it is a PostgreSQL server, then the TLS handshake."""
    if target.protocol != "postgres":
        _, writer = await asyncio.open_connection(target.host, target.port, ssl=context,
                                                  server_hostname=target.host)
        return writer
    reader, writer = await asyncio.open_connection(target.host, target.port)
    try:
        writer.write(_SSL_REQUEST)
        answer = await reader.read(1)
        if answer != b"S":
            raise _NoTls("the server answered 'N' to SSLRequest" if answer == b"N"
                         else f"unexpected answer {answer!r} to SSLRequest")
        await writer.start_tls(context, server_hostname=target.host)
    except BaseException:
        writer.close()
        raise
    return writer


async def _close(writer: asyncio.StreamWriter) -> None:
    """Close, giving the server up to a second to answer close_notify; what it answers (or
    not) changes nothing about the probe."""
    writer.close()
    try:
        async with asyncio.timeout(1):
            await writer.wait_closed()
    except (OSError, ssl.SSLError, TimeoutError):
        pass


def _chain(writer: asyncio.StreamWriter, verified: bool) -> tuple[CertInfo, ...]:
    tls = writer.get_extra_info("ssl_object")
    name = "get_verified_chain" if verified else "get_unverified_chain"
    getter = getattr(tls, name, None) or getattr(tls._sslobj, name)  # public from Python 3.13
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


async def _read_chain(target: CertificateConfig, context: ssl.SSLContext, verified: bool) -> tuple[CertInfo, ...]:
    writer = await _connect(target, context)
    try:
        return _chain(writer, verified)
    finally:
        await _close(writer)


def _cert_verify_error(exc: BaseException) -> ssl.SSLCertVerificationError | None:
    while exc is not None:
        if isinstance(exc, ssl.SSLCertVerificationError):
            return exc
        exc = exc.__cause__ or exc.__context__
    return None


async def probe(target: CertificateConfig, timeout: float, verifying: ssl.SSLContext) -> TlsProbe:
    name = f"{target.host}:{target.port}"
    try:
        async with asyncio.timeout(timeout):
            return TlsProbe(name, target.protocol, verified=True,
                            chain=await _read_chain(target, verifying, verified=True))
    except _NoTls as exc:
        return TlsProbe(name, target.protocol, tls_enabled=False, error=str(exc))
    except TimeoutError:
        return TlsProbe(name, target.protocol, reached=False, error=f"no TLS handshake within {timeout:g}s")
    except (OSError, ssl.SSLError) as exc:
        failed = _cert_verify_error(exc)
        if failed is None:
            return TlsProbe(name, target.protocol, reached=False, error=str(exc) or exc.__class__.__name__)
        cause = verify_cause(failed.verify_code, failed.verify_message)
    # Verification failed: look at what was presented, without trusting it.
    try:
        async with asyncio.timeout(timeout):
            chain = await _read_chain(target, _lenient_context(), verified=False)
    except (OSError, ssl.SSLError, TimeoutError, _NoTls):
        chain = ()
    return TlsProbe(name, target.protocol, verified=False, cause=cause, chain=chain)


async def _probe_all(targets: list[CertificateConfig], timeout: float, concurrency: int) -> list[TlsProbe]:
    # One verifying context per trust store for this run: loading the system store costs tens of
    # milliseconds each time, and a renewed ca_file is read again on the next run.
    contexts = {ca_file: _verifying_context(ca_file) for ca_file in {t.ca_file for t in targets}}
    limit = asyncio.Semaphore(concurrency)

    async def bounded(target: CertificateConfig) -> TlsProbe:
        async with limit:
            return await probe(target, timeout, contexts[target.ca_file])

    return list(await asyncio.gather(*(bounded(t) for t in targets)))


def probe_all(targets: list[CertificateConfig], timeout: float = 10.0, concurrency: int = 64) -> list[TlsProbe]:
    """Every target at once on one event loop (a thread per handshake costs more than the
    handshake); the order of the results is the order of the targets."""
    if not targets:
        return []
    return asyncio.run(_probe_all(targets, timeout, concurrency))
