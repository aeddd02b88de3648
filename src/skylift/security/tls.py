"""Self-signed TLS certificates for `skylift serve --tls-self-signed`."""

from __future__ import annotations

import datetime
import ipaddress
from pathlib import Path

from skylift import _atomic


def self_signed(folder: Path, hosts: tuple[str, ...]) -> tuple[Path, Path, str]:
    """Write a new ECDSA P-256 certificate valid for `hosts` (names or IPs) for 30 days.

    Returns (cert path, key path, SHA-256 fingerprint as AA:BB:...). The key file is 0600.
    """
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    names: list[x509.GeneralName] = []
    for host in hosts:
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            names.append(x509.DNSName(host))
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hosts[0])])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=30))
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = folder / "tls-cert.pem", folder / "tls-key.pem"
    _atomic.write_bytes(cert_path, cert.public_bytes(serialization.Encoding.PEM))
    _atomic.write_bytes(
        key_path,
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        ),
    )
    cert_path.chmod(0o644)  # public; clients need it to verify (the key stays 0600)
    digest = cert.fingerprint(hashes.SHA256()).hex().upper()
    return cert_path, key_path, ":".join(digest[i : i + 2] for i in range(0, len(digest), 2))
