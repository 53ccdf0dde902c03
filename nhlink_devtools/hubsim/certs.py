"""Test PKI for the simulator, generated at run time with ``cryptography``.

:func:`generate_pki` writes into a folder (all PEM, keys unencrypted, EC P-256
as NervesKey devices use)::

    ca.pem / ca-key.pem                 server CA: clients trust this (hub.tls.cafile)
    server.pem / server-key.pem         server certificate for 127.0.0.1, ::1 and localhost
    device-ca.pem / device-ca-key.pem   device CA: the sim accepts device certs it issued

:func:`load_or_generate_pki` reuses a folder's PKI when it is complete.
:func:`issue_device_cert` makes ``<identifier>.pem`` / ``<identifier>-key.pem``
with CN = the device identifier, signed by the device CA (or by any other CA
made with :func:`generate_ca`, e.g. to test an unknown CA).
:func:`issue_server_cert` replaces the server certificate, e.g. with one for
other names or one outside its validity (``valid`` = (not before, not after));
the device certificate takes ``valid`` too. These are test keys only: never
use them outside tests and demos.
"""

from __future__ import annotations

import datetime
import ipaddress
import ssl
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID


@dataclass(frozen=True, slots=True)
class CertPair:
    """A certificate and its private key, as PEM files."""

    cert: Path
    key: Path


@dataclass(frozen=True, slots=True)
class SimPKI:
    """The files :func:`generate_pki` wrote."""

    folder: Path
    ca: CertPair
    server: CertPair
    device_ca: CertPair


def _name(common_name: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "nhlink-hub-sim test PKI"),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        ]
    )


def _write(pair: CertPair, cert: x509.Certificate, key: ec.EllipticCurvePrivateKey) -> CertPair:
    pair.cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    pair.key.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    pair.key.chmod(0o600)
    return pair


def _load(pair: CertPair) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    cert = x509.load_pem_x509_certificate(pair.cert.read_bytes())
    key = serialization.load_pem_private_key(pair.key.read_bytes(), password=None)
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise TypeError(f"{pair.key}: not an EC private key")
    return cert, key


Validity = tuple[datetime.datetime, datetime.datetime]


def _builder(
    subject: x509.Name,
    issuer: x509.Name,
    public_key: ec.EllipticCurvePublicKey,
    days: int,
    valid: Validity | None = None,
) -> x509.CertificateBuilder:
    now = datetime.datetime.now(datetime.UTC)
    not_before, not_after = valid or (
        now - datetime.timedelta(minutes=5),
        now + datetime.timedelta(days=days),
    )
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
    )


def generate_ca(folder: Path, name: str, *, days: int = 30) -> CertPair:
    """A self-signed CA written as ``<name>.pem`` / ``<name>-key.pem``."""
    folder.mkdir(parents=True, exist_ok=True)
    key = ec.generate_private_key(ec.SECP256R1())
    subject = _name(f"{name} (nhlink-hub-sim test CA)")
    cert = (
        _builder(subject, subject, key.public_key(), days)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .sign(key, hashes.SHA256())
    )
    return _write(CertPair(folder / f"{name}.pem", folder / f"{name}-key.pem"), cert, key)


def _issue(
    ca: CertPair,
    out: CertPair,
    common_name: str,
    *,
    server_names: tuple[str, ...] = (),
    days: int = 30,
    valid: Validity | None = None,
) -> CertPair:
    ca_cert, ca_key = _load(ca)
    key = ec.generate_private_key(ec.SECP256R1())
    usage = ExtendedKeyUsageOID.SERVER_AUTH if server_names else ExtendedKeyUsageOID.CLIENT_AUTH
    builder = (
        _builder(_name(common_name), ca_cert.subject, key.public_key(), days, valid)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
            critical=False,
        )
    )
    if server_names:
        alt: list[x509.GeneralName] = []
        for name in server_names:
            try:
                alt.append(x509.IPAddress(ipaddress.ip_address(name)))
            except ValueError:
                alt.append(x509.DNSName(name))
        builder = builder.add_extension(x509.SubjectAlternativeName(alt), critical=False)
    return _write(out, builder.sign(ca_key, hashes.SHA256()), key)


def generate_pki(folder: Path, *, server_names: tuple[str, ...] = ()) -> SimPKI:
    """Server CA + server cert + device CA in ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    names = ("127.0.0.1", "::1", "localhost", *server_names)
    ca = generate_ca(folder, "ca")
    server = _issue(
        ca,
        CertPair(folder / "server.pem", folder / "server-key.pem"),
        "localhost",
        server_names=names,
    )
    device_ca = generate_ca(folder, "device-ca")
    return SimPKI(folder, ca, server, device_ca)


def load_or_generate_pki(folder: Path) -> SimPKI:
    """The complete PKI already in ``folder`` (device certs stay valid), else a new one."""
    folder = folder.resolve()
    pki = SimPKI(
        folder,
        CertPair(folder / "ca.pem", folder / "ca-key.pem"),
        CertPair(folder / "server.pem", folder / "server-key.pem"),
        CertPair(folder / "device-ca.pem", folder / "device-ca-key.pem"),
    )
    pairs = (pki.ca, pki.server, pki.device_ca)
    if all(p.cert.is_file() and p.key.is_file() for p in pairs):
        return pki
    return generate_pki(folder)


def issue_device_cert(
    ca: CertPair,
    identifier: str,
    folder: Path,
    *,
    days: int = 30,
    valid: Validity | None = None,
) -> CertPair:
    """A device certificate with CN = ``identifier`` issued by ``ca``; ``valid`` =
    (not before, not after) instead of from 5 minutes ago for ``days``."""
    folder.mkdir(parents=True, exist_ok=True)
    out = CertPair(folder / f"{identifier}.pem", folder / f"{identifier}-key.pem")
    return _issue(ca, out, identifier, days=days, valid=valid)


def issue_server_cert(
    pki: SimPKI,
    *,
    server_names: tuple[str, ...] = ("127.0.0.1", "::1", "localhost"),
    valid: Validity | None = None,
) -> CertPair:
    """Replace ``pki``'s server certificate (same CA) with one for ``server_names``
    valid over ``valid``; a sim started on this folder afterwards serves it."""
    return _issue(pki.ca, pki.server, server_names[0], server_names=server_names, valid=valid)


def server_context(pki: SimPKI, *, client_certs: bool) -> ssl.SSLContext:
    """TLS 1.2 only, as the device endpoint; client certs optional and checked
    against the device CA when ``client_certs`` (protocol.md §2.1)."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.maximum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(pki.server.cert, pki.server.key)
    if client_certs:
        context.verify_mode = ssl.CERT_OPTIONAL
        context.load_verify_locations(cafile=pki.device_ca.cert)
    return context


def client_context(
    pki: SimPKI, device: CertPair | None = None, *, cafile: Path | None = None
) -> ssl.SSLContext:
    """A client context trusting the sim's server CA, presenting ``device`` if given."""
    context = ssl.create_default_context(cafile=str(cafile or pki.ca.cert))
    if device is not None:
        context.load_cert_chain(device.cert, device.key)
    return context
