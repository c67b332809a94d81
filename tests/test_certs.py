"""cert-check against real TLS servers: trustme certificates (and the cryptography builder for
an expired intermediate and a self-signed leaf), and PostgreSQL with ssl on and off."""

from __future__ import annotations

import datetime as dt
import os
import pwd
import socket
import ssl
import tempfile
import threading
from pathlib import Path

import pytest
import trustme
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from maint.tasks.postgres.server import ThrowawayPostgres, free_port
from tests.conftest import run_json, system_fixture

NOW = dt.datetime.now(dt.timezone.utc)


class TlsServer:
    """Accepts connections on 127.0.0.1 and completes a TLS handshake with the given context."""

    def __init__(self, context: ssl.SSLContext):
        self.context = context
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.thread = threading.Thread(target=self._serve, daemon=True)

    def _serve(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            threading.Thread(target=self._handshake, args=(client,), daemon=True).start()

    def _handshake(self, client: socket.socket) -> None:
        try:
            with self.context.wrap_socket(client, server_side=True) as tls:
                tls.recv(1)
        except (OSError, ssl.SSLError):
            pass

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.listener.close()


def _server_context(leaf: trustme.LeafCert) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    leaf.configure_cert(context)
    return context


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _build(subject: str, issuer_name: str, key, issuer_key, *, ca: bool, not_before, not_after, sans=()):
    builder = (x509.CertificateBuilder().subject_name(_name(subject)).issuer_name(_name(issuer_name))
               .public_key(key.public_key()).serial_number(x509.random_serial_number())
               .not_valid_before(not_before).not_valid_after(not_after)
               .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName([x509.DNSName(s) for s in sans]), critical=False)
    if ca:
        builder = builder.add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                                      content_commitment=False, key_encipherment=False,
                                                      data_encipherment=False, key_agreement=False,
                                                      encipher_only=False, decipher_only=False), critical=True)
    return builder.sign(issuer_key, hashes.SHA256())


def _pem(*certs) -> bytes:
    return b"".join(c.public_bytes(serialization.Encoding.PEM) for c in certs)


def _key_pem(key) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


@pytest.fixture(scope="module")
def ca():
    return trustme.CA()


@pytest.fixture(scope="module")
def ca_file(ca, tmp_path_factory):
    path = tmp_path_factory.mktemp("ca") / "ca.pem"
    ca.cert_pem.write_to_path(str(path))
    return path


@pytest.fixture(scope="module")
def built_chains(tmp_path_factory):
    """Cases trustme cannot make: an expired intermediate, a self-signed leaf."""
    work = tmp_path_factory.mktemp("built")
    root_key, mid_key, leaf_key, self_key = (ec.generate_private_key(ec.SECP256R1()) for _ in range(4))
    long_ago, later = NOW - dt.timedelta(days=400), NOW + dt.timedelta(days=300)
    root = _build("maint test root", "maint test root", root_key, root_key, ca=True, not_before=long_ago,
                  not_after=later)
    expired_mid = _build("maint expired intermediate", "maint test root", mid_key, root_key, ca=True,
                         not_before=long_ago, not_after=NOW - dt.timedelta(days=3))
    leaf = _build("localhost", "maint expired intermediate", leaf_key, mid_key, ca=False, not_before=long_ago,
                  not_after=later, sans=("localhost",))
    self_signed = _build("localhost", "localhost", self_key, self_key, ca=False, not_before=long_ago,
                         not_after=later, sans=("localhost",))
    (work / "root.pem").write_bytes(_pem(root))
    (work / "mid-chain.pem").write_bytes(_pem(leaf, expired_mid))
    (work / "mid-key.pem").write_bytes(_key_pem(leaf_key))
    (work / "self.pem").write_bytes(_pem(self_signed))
    (work / "self-key.pem").write_bytes(_key_pem(self_key))
    return work


def _context_from(chain: Path, key: Path) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(str(chain), str(key))
    return context


@system_fixture(scope="module")
def pg_tls(ca, tmp_path_factory):
    """PostgreSQL with ssl = on and a trustme certificate for localhost."""
    certs = Path(tempfile.mkdtemp(prefix="maint-pg-tls-"))
    leaf = ca.issue_cert("localhost", "127.0.0.1")
    leaf.private_key_and_cert_chain_pem.write_to_path(str(certs / "server.pem"))
    leaf.private_key_pem.write_to_path(str(certs / "server.key"))
    if os.geteuid() == 0:
        account = pwd.getpwnam("postgres")
        for path in (certs, certs / "server.pem", certs / "server.key"):
            os.chown(path, account.pw_uid, account.pw_gid)
    os.chmod(certs / "server.key", 0o600)
    with ThrowawayPostgres(settings={"ssl": "on", "ssl_cert_file": str(certs / "server.pem"),
                                     "ssl_key_file": str(certs / "server.key")}) as server:
        yield server


def _target(host: str, port: int, *, protocol: str = "https", ca_file: Path | str = "", warning: int = 28,
            critical: int = 14) -> str:
    return (f'\n[[certificates]]\nhost = "{host}"\nport = {port}\nprotocol = "{protocol}"\nca_file = "{ca_file}"\n'
            f"warning_days = {warning}\ncritical_days = {critical}\n")


def test_every_case_in_one_concurrent_run(prefect_harness, tmp_path, capsys, ca, ca_file, built_chains, pg_tls, pg):
    servers = {
        "valid": TlsServer(_server_context(ca.issue_cert("localhost"))),
        "warning": TlsServer(_server_context(ca.issue_cert("localhost", not_after=NOW + dt.timedelta(days=20)))),
        "critical": TlsServer(_server_context(ca.issue_cert("localhost", not_after=NOW + dt.timedelta(days=7)))),
        "expired": TlsServer(_server_context(ca.issue_cert("localhost", not_before=NOW - dt.timedelta(days=90),
                                                           not_after=NOW - dt.timedelta(days=2)))),
        "mismatch": TlsServer(_server_context(ca.issue_cert("other.example.com"))),
        "unknown-ca": TlsServer(_server_context(ca.issue_cert("localhost"))),
        "expired-mid": TlsServer(_context_from(built_chains / "mid-chain.pem", built_chains / "mid-key.pem")),
        "self-signed": TlsServer(_context_from(built_chains / "self.pem", built_chains / "self-key.pem")),
    }
    for server in servers.values():
        server.__enter__()
    closed = free_port()
    try:
        body = "".join(_target("localhost", s.port, ca_file="" if name in ("unknown-ca", "self-signed") else
                               built_chains / "root.pem" if name == "expired-mid" else ca_file)
                       for name, s in servers.items())
        body += _target("localhost", pg_tls.port, protocol="postgres", ca_file=ca_file)
        body += _target("localhost", pg.port, protocol="postgres", ca_file=ca_file)  # ssl is off there
        body += _target("localhost", closed, ca_file=ca_file)
        config = tmp_path / "maint.toml"
        config.write_text(body)
        code, report = run_json(capsys, config, "cert-check")
    finally:
        for server in servers.values():
            server.__exit__()

    found = {(f["check"], f["subject"]): f for f in report["findings"]}

    def get(check, name=None, port=None, protocol="https"):
        port = port or servers[name].port
        return found[(check, f"{protocol}://localhost:{port}")]

    assert get("tls", "valid")["severity"] == "ok" and "SANs localhost" in get("tls", "valid")["message"]
    assert get("expiry", "valid")["severity"] == "ok"
    assert get("expiry", "warning")["severity"] == "warning" and "expires in 20 days" in get("expiry", "warning")["message"]
    assert get("expiry", "critical")["severity"] == "critical" and "expires in 7 days" in get("expiry", "critical")["message"]
    assert get("tls", "expired")["message"].startswith(f"verification failed for localhost:{servers['expired'].port}: expired")
    assert "leaf OU=Testing cert" in get("expiry", "expired")["message"] and "expired 2 days ago" in get("expiry", "expired")["message"]
    mismatch = get("tls", "mismatch")
    assert "hostname mismatch" in mismatch["message"] and "other.example.com" in mismatch["message"]
    assert "unknown issuer" in get("tls", "unknown-ca")["message"]
    assert ": expired" in get("tls", "expired-mid")["message"]
    assert "chain certificate CN=maint expired intermediate expired 3 days ago" in get("expiry", "expired-mid")["message"]
    assert ": self-signed" in get("tls", "self-signed")["message"]
    assert get("tls", port=pg_tls.port, protocol="postgres")["severity"] == "ok"
    assert get("expiry", port=pg_tls.port, protocol="postgres")["severity"] == "ok"
    no_tls = get("tls", port=pg.port, protocol="postgres")
    assert no_tls["severity"] == "critical" and "TLS not enabled" in no_tls["message"] and "'N'" in no_tls["message"]
    assert "cannot connect" in get("tls", port=closed)["message"]
    assert code == 2


@pytest.mark.parametrize("days, severity", [(100, "ok"), (28.5, "warning"), (14.5, "critical"), (-1, "critical")])
def test_expiry_thresholds(days, severity):
    from maint.certs import CertInfo, TlsProbe, assess_certificate

    probe = TlsProbe("h:443", "https", verified=True,
                     chain=(CertInfo("CN=h", ("h",), NOW + dt.timedelta(days=days), True),
                            CertInfo("CN=ca", (), NOW + dt.timedelta(days=900), False)))
    [tls, expiry] = assess_certificate(probe, NOW, warning_days=30, critical_days=15)
    assert tls.severity.value == "ok" and expiry.severity.value == severity
