"""What `fi-stream kafka up --secure` adds to the local broker: a CA and a broker
certificate it makes, SCRAM users with generated passwords, and the broker settings for a
SASL_SSL listener with KRaft's StandardAuthorizer (deny unless an ACL allows).

Layout under the broker's home: ``tls/ca.pem`` (what clients trust, `ssl_cafile`),
``tls/broker.pem`` (the broker's key and certificate chain, PEM keystore), and
``users.json`` (mode 0600: user → password). `admin` is the broker's own user and the
only super user of the SASL listener; it creates topics and ACLs.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import json
import os
import secrets
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

MECHANISM = "SCRAM-SHA-512"
ADMIN = "admin"


@dataclass(frozen=True, kw_only=True)
class SecureFiles:
    ca: Path
    keystore: Path
    users: Path

    def passwords(self) -> dict[str, str]:
        data: dict[str, str] = json.loads(self.users.read_text())
        return data


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def make_tls(directory: Path, days: int = 365) -> tuple[Path, Path]:
    """A CA and a broker certificate for 127.0.0.1/localhost, signed by it (kept if present)."""
    directory.mkdir(parents=True, exist_ok=True)
    ca_path, keystore = directory / "ca.pem", directory / "broker.pem"
    if ca_path.exists() and keystore.exists():
        return ca_path, keystore
    now = dt.datetime.now(dt.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = (x509.CertificateBuilder().subject_name(_name("fi-stream local CA"))
          .issuer_name(_name("fi-stream local CA")).public_key(ca_key.public_key())
          .serial_number(x509.random_serial_number())
          .not_valid_before(now - dt.timedelta(minutes=5))
          .not_valid_after(now + dt.timedelta(days=days))
          .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
          .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True,
                                       crl_sign=True, content_commitment=False,
                                       key_encipherment=False, data_encipherment=False,
                                       key_agreement=False, encipher_only=False,
                                       decipher_only=False), critical=True)
          .sign(ca_key, hashes.SHA256()))
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (x509.CertificateBuilder().subject_name(_name("localhost")).issuer_name(ca.subject)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=days))
            .add_extension(x509.SubjectAlternativeName([
                x509.DNSName("localhost"),
                x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
            .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH,
                                                  x509.oid.ExtendedKeyUsageOID.CLIENT_AUTH]),
                           critical=False)
            .sign(ca_key, hashes.SHA256()))
    pem = serialization.Encoding.PEM
    ca_path.write_bytes(ca.public_bytes(pem))
    key_pem = key.private_bytes(pem, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
    fd = os.open(keystore, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(key_pem + cert.public_bytes(pem) + ca.public_bytes(pem))
    return ca_path, keystore


def ensure_users(path: Path, names: list[str]) -> dict[str, str]:
    """user → password for `admin` and `names`, generating passwords for new users."""
    users: dict[str, str] = json.loads(path.read_text()) if path.exists() else {}
    for name in [ADMIN, *names]:
        users.setdefault(name, secrets.token_urlsafe(18))
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump(users, f, indent=2)
    return users


def scram_args(users: dict[str, str]) -> list[str]:
    """`kafka-storage format` arguments that create the users' SCRAM credentials."""
    out = []
    for name, password in sorted(users.items()):
        out += ["--add-scram", f"{MECHANISM}=[name={name},password={password}]"]
    return out


def broker_properties(*, port: int, controller_port: int, ca: Path, keystore: Path,
                      admin_password: str) -> str:
    """Appended to server.properties (a later key wins): the SASL_SSL listener and the
    authorizer. The controller listener stays PLAINTEXT on the loopback interface; its
    principal (ANONYMOUS) is the broker talking to its own controller, hence a super user."""
    jaas = (f'org.apache.kafka.common.security.scram.ScramLoginModule required '
            f'username="{ADMIN}" password="{admin_password}";')
    return "\n".join([
        "# --secure (fi_stream.kafka.secure)",
        f"listeners=SASL_SSL://127.0.0.1:{port},CONTROLLER://127.0.0.1:{controller_port}",
        f"advertised.listeners=SASL_SSL://127.0.0.1:{port}",
        "listener.security.protocol.map=CONTROLLER:PLAINTEXT,SASL_SSL:SASL_SSL",
        "inter.broker.listener.name=SASL_SSL",
        f"sasl.enabled.mechanisms={MECHANISM}",
        f"sasl.mechanism.inter.broker.protocol={MECHANISM}",
        f"listener.name.sasl_ssl.scram-sha-512.sasl.jaas.config={jaas}",
        "ssl.keystore.type=PEM",
        f"ssl.keystore.location={keystore}",
        "ssl.truststore.type=PEM",
        f"ssl.truststore.location={ca}",
        "authorizer.class.name=org.apache.kafka.metadata.authorizer.StandardAuthorizer",
        f"super.users=User:{ADMIN};User:ANONYMOUS",
        "allow.everyone.if.no.acl.found=false",
        "",
    ])
