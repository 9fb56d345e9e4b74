"""A local CA and a server certificate for the hosts the Web SDK hard-codes, generated on first use.

A browser reaches vodlocal under the real names (``--host-resolver-rules`` maps them to 127.0.0.1), so it
must get a certificate for them: Chromium accepts it without a trust store change when told the certificate's
public key hash (``--ignore-certificate-errors-spki-list``), or anything does once the CA is imported. Both are
kept in a directory (``.local/tls`` by default, git-ignored) so the hash, and a browser set up with it, stay
valid from one run to the next; they are made again when missing or about to expire.
"""

from __future__ import annotations

import base64
import datetime
import hashlib
import ipaddress
import os
import ssl
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from vodlocal.cos import REGION_ABBREVIATIONS

VALIDITY = datetime.timedelta(days=365)
RENEW_BEFORE = datetime.timedelta(days=7)
# The SDK's hosts: the UGC API and its backup, the reporter, and per COS region the bucket hosts, the region
# probe and the network-error fallback domain (a wildcard covers one label only, hence one per region).
FIXED_NAMES = ("vod2.qcloud.com", "vod2.dnsv1.com", "vodreport.qcloud.com", "vod.tencentcloudapi.com", "localhost")


def server_names(regions: tuple[str, ...] = tuple(REGION_ABBREVIATIONS)) -> list[str]:
    names = list(FIXED_NAMES)
    for region in regions:
        for domain in ("myqcloud.com", "tencentcos.cn"):
            names += [f"cos.{region}.{domain}", f"*.cos.{region}.{domain}"]
    return names


@dataclass(frozen=True)
class TlsFiles:
    ca_cert: Path
    cert_chain: Path  # the server certificate, then the CA's
    key: Path
    spki_sha256: str  # base64 SHA-256 of the server certificate's public key, as Chromium's flag wants it

    def server_context(self) -> ssl.SSLContext:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(self.cert_chain, self.key)
        return context


def ensure_certificate(directory: Path, regions: tuple[str, ...] = tuple(REGION_ABBREVIATIONS)) -> TlsFiles:
    """The CA and server certificate in ``directory``, made (again) when missing, expiring or not covering
    ``regions``."""
    directory.mkdir(parents=True, exist_ok=True)
    ca_path, chain_path, key_path = directory / "ca.pem", directory / "server.pem", directory / "server-key.pem"
    names = server_names(regions)
    if not _usable(chain_path, key_path, names):
        _generate(ca_path, chain_path, key_path, names)
    cert = x509.load_pem_x509_certificate(chain_path.read_bytes())
    spki = cert.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return TlsFiles(ca_path, chain_path, key_path, base64.b64encode(hashlib.sha256(spki).digest()).decode())


def _usable(chain_path: Path, key_path: Path, names: list[str]) -> bool:
    if not (chain_path.exists() and key_path.exists()):
        return False
    cert = x509.load_pem_x509_certificate(chain_path.read_bytes())
    if cert.not_valid_after_utc - datetime.datetime.now(datetime.UTC) < RENEW_BEFORE:
        return False
    covered = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    return set(names) <= set(covered.get_values_for_type(x509.DNSName))


def _name(common_name: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "vodlocal"),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        ]
    )


def _generate(ca_path: Path, chain_path: Path, key_path: Path, names: list[str]) -> None:
    now = datetime.datetime.now(datetime.UTC) - datetime.timedelta(minutes=5)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(_name("vodlocal local CA"))
        .issuer_name(_name("vodlocal local CA"))
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(now + VALIDITY)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    alt_names: list[x509.GeneralName] = [x509.DNSName(name) for name in names]
    alt_names.append(x509.IPAddress(ipaddress.ip_address("127.0.0.1")))
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name("vodlocal"))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(now + VALIDITY)
        .add_extension(x509.SubjectAlternativeName(alt_names), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    pem = serialization.Encoding.PEM
    key_bytes = key.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    # The private key is written readable by its owner only, before anything else can open the file.
    fd = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as out:
        out.write(key_bytes)
    chain_path.write_bytes(cert.public_bytes(pem) + ca_cert.public_bytes(pem))
    ca_path.write_bytes(ca_cert.public_bytes(pem))
