"""TLS contexts: the certificate the gateway offers to clients, and the modes it uses towards targets."""

from __future__ import annotations

import datetime
import ipaddress
import os
import socket
import ssl
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from gateway.errors import WiregateError


def self_signed_pem(common_name: str, hosts: list[str], organization: str = "wiregate") -> tuple[bytes, bytes]:
    """(certificate PEM, private key PEM) of a self-signed certificate for ``hosts``.

    The certificate is its own trust anchor, so a client can verify it (verify-full)
    by naming the file as its root certificate.
    """
    key = ec.generate_private_key(ec.SECP256R1())
    names: list[x509.GeneralName] = []
    for h in hosts:
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(h)))
        except ValueError:
            names.append(x509.DNSName(h))
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name),
                         x509.NameAttribute(NameOID.ORGANIZATION_NAME, organization)])
    now = datetime.datetime.now(datetime.timezone.utc)
    ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(days=825))
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=False, key_encipherment=False,
                                     data_encipherment=False, key_agreement=False, key_cert_sign=True,
                                     crl_sign=True, encipher_only=False, decipher_only=False), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(ski, critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski), critical=False)
        .sign(key, hashes.SHA256())
    )
    key_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
    return cert.public_bytes(serialization.Encoding.PEM), key_pem


def write_self_signed(cert_path: Path, key_path: Path, common_name: str, hosts: list[str]) -> None:
    """Write a fresh self-signed certificate and its key (mode 0600) for ``hosts``."""
    cert_pem, key_pem = self_signed_pem(common_name, hosts)
    cert_path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(key_pem)
    cert_path.write_bytes(cert_pem)


def server_context(state_dir: Path, cert_file: str | None, key_file: str | None) -> ssl.SSLContext:
    """The context for client-facing TLS: the configured pair, else a self-signed
    certificate generated once into ``state_dir/tls``."""
    if bool(cert_file) != bool(key_file):
        raise WiregateError("gateway.tls_cert_file and gateway.tls_key_file must be set together")
    if cert_file and key_file:
        cert, key = Path(cert_file), Path(key_file)
    else:
        cert, key = state_dir / "tls" / "gateway.crt", state_dir / "tls" / "gateway.key"
        if not cert.exists() or not key.exists():
            os.makedirs(cert.parent, mode=0o700, exist_ok=True)
            write_self_signed(cert, key, "wiregate", ["localhost", "127.0.0.1", "::1", socket.gethostname()])
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        ctx.load_cert_chain(cert, key)
    except (OSError, ssl.SSLError) as e:
        raise WiregateError(f"cannot load TLS certificate {cert} / key {key}: {e}") from e
    return ctx


def upstream_context(mode: str, ca_file: str | None) -> ssl.SSLContext | None:
    """The context for a target's TLS mode (libpq's sslmode meanings); None for ``disable``."""
    if mode == "disable":
        return None
    if mode == "verify-full":
        ctx = ssl.create_default_context(cafile=ca_file) if ca_file else ssl.create_default_context()
        return ctx
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx
