"""TLS for the gRPC port: a configured certificate, or a self-signed one made at startup.

The official RocketMQ 5 clients (Java by default) speak TLS and accept any certificate, so the
proxy answers TLS and plaintext on the same port; :func:`server_ssl_context` builds the server
side with ALPN ``h2``.
"""

from __future__ import annotations

import datetime
import os
import ssl
import tempfile


def self_signed_pem(common_name: str = "rocketlite") -> tuple[bytes, bytes]:
    """A fresh EC P-256 key and a 10-year self-signed certificate for localhost, as PEM."""
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    now = datetime.datetime.now(datetime.timezone.utc)
    san = x509.SubjectAlternativeName(
        [
            x509.DNSName("localhost"),
            x509.DNSName(common_name),
            x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
            x509.IPAddress(ipaddress.ip_address("::1")),
        ]
    )
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=3650))
        .add_extension(san, critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_pem = cert.public_bytes(serialization.Encoding.PEM)
    key_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    return cert_pem, key_pem


def server_ssl_context(cert_file: str = "", key_file: str = "") -> ssl.SSLContext:
    """Server context with ALPN h2; self-signed when no certificate is configured."""
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.set_alpn_protocols(["h2"])
    if cert_file:
        ctx.load_cert_chain(cert_file, key_file or None)
        return ctx
    cert_pem, key_pem = self_signed_pem()
    with tempfile.TemporaryDirectory(prefix="rocketlite-tls-") as tmp:
        cpath = os.path.join(tmp, "cert.pem")
        kpath = os.path.join(tmp, "key.pem")
        with open(cpath, "wb") as f:
            f.write(cert_pem)
        fd = os.open(kpath, os.O_WRONLY | os.O_CREAT, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(key_pem)
        ctx.load_cert_chain(cpath, kpath)
    return ctx
