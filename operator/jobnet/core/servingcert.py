"""The admission webhook's serving certificate, as the operator manages it (pure: no I/O; the
time is passed in).

Like Knative's and Tekton's webhooks, the operator keeps its own TLS material in a Secret
(``jobnet.kube.certificates``): a self-signed CA and a serving certificate it signed, both
generated with ``cryptography``, never by the Helm chart (a chart that generates them renders
differently every time, which GitOps tools read as a change on every sync).

* :func:`issue` makes a new CA and a serving certificate for the Service's DNS names.
* :func:`certificate_problem` says why stored material cannot be served (missing, unreadable,
  not covering a name, not signed by the bundled CA, due for renewal), or None.
* :func:`rotated_bundle` is the CA bundle after a rotation: the new CA first, then the CAs
  still valid, so replicas serving the previous certificate stay trusted until they reload.
"""

from __future__ import annotations

import datetime
import ipaddress
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

#: Keys of the Secret (those of a ``kubernetes.io/tls`` Secret plus the CA bundle).
CA_KEY = "ca.crt"
CERT_KEY = "tls.crt"
PRIVATE_KEY_KEY = "tls.key"
#: A certificate is accepted from this long before its ``notBefore`` (clocks of replicas differ).
CLOCK_SKEW = datetime.timedelta(minutes=5)


@dataclass(frozen=True, repr=False)
class ServingMaterial:
    """PEM bytes: the CA bundle (one or more CAs), the serving certificate and its key."""

    ca_bundle: bytes
    certificate: bytes
    private_key: bytes

    def __repr__(self) -> str:  # the key never reaches a log
        return f"ServingMaterial(ca_bundle={len(self.ca_bundle)} bytes, certificate={len(self.certificate)} bytes)"

    def secret_data(self) -> dict[str, bytes]:
        return {CA_KEY: self.ca_bundle, CERT_KEY: self.certificate, PRIVATE_KEY_KEY: self.private_key}

    @classmethod
    def from_secret_data(cls, data: Mapping[str, bytes]) -> ServingMaterial | None:
        """The material in a Secret's data; None when a key is missing or empty."""
        values = [data.get(key) for key in (CA_KEY, CERT_KEY, PRIVATE_KEY_KEY)]
        if not all(values):
            return None
        ca_bundle, certificate, private_key = values
        assert ca_bundle and certificate and private_key
        return cls(ca_bundle, certificate, private_key)


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _subject_alternative_names(names: Iterable[str]) -> list[x509.GeneralName]:
    alternative: list[x509.GeneralName] = []
    for name in names:
        try:
            alternative.append(x509.IPAddress(ipaddress.ip_address(name)))
        except ValueError:
            alternative.append(x509.DNSName(name))
    return alternative


def _pem(certificate: x509.Certificate) -> bytes:
    return certificate.public_bytes(serialization.Encoding.PEM)


def issue(names: Sequence[str], now: datetime.datetime, validity: datetime.timedelta) -> ServingMaterial:
    """A new CA and a serving certificate for ``names`` (DNS names or IP addresses; the first
    is the subject), both valid from ``now`` for ``validity``. ECDSA P-256 keys."""
    if not names:
        raise ValueError("a serving certificate needs at least one DNS name")
    not_before, not_after = now - CLOCK_SKEW, now + validity
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = _name(f"jobnet-operator webhook CA {now:%Y%m%dT%H%M%SZ}")
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
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
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    certificate = (
        x509.CertificateBuilder()
        .subject_name(_name(names[0]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectAlternativeName(_subject_alternative_names(names)), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    private_key = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    return ServingMaterial(_pem(ca), _pem(certificate), private_key)


def certificate_problem(
    material: ServingMaterial | None, names: Sequence[str], now: datetime.datetime, renew_before: datetime.timedelta
) -> str | None:
    """Why ``material`` must be replaced before (or instead of) serving it, or None."""
    if material is None:
        return "there is no certificate yet"
    try:
        certificate = x509.load_pem_x509_certificate(material.certificate)
        authorities = x509.load_pem_x509_certificates(material.ca_bundle)
        key = serialization.load_pem_private_key(material.private_key, password=None)
    except ValueError as e:
        return f"the stored certificate, key or CA bundle is unreadable ({e})"
    if key.public_key() != certificate.public_key():
        return "the stored key does not belong to the certificate"
    if not any(_signed_by(certificate, authority) for authority in authorities):
        return "the certificate is not signed by a CA of the bundle"
    try:
        covered = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return "the certificate names no DNS names"
    wanted = _subject_alternative_names(names)
    missing = [name for name, general in zip(names, wanted, strict=True) if general not in covered]
    if missing:
        return f"the certificate does not cover {', '.join(missing)}"
    if now < certificate.not_valid_before_utc - CLOCK_SKEW:
        return f"the certificate is not valid before {certificate.not_valid_before_utc:%Y-%m-%dT%H:%M:%SZ}"
    expires = certificate.not_valid_after_utc
    if now >= expires - renew_before:
        return f"the certificate expires at {expires:%Y-%m-%dT%H:%M:%SZ} (renewed {renew_before} before)"
    return None


def _signed_by(certificate: x509.Certificate, authority: x509.Certificate) -> bool:
    try:
        certificate.verify_directly_issued_by(authority)
    except (ValueError, TypeError, InvalidSignature):
        return False
    return True


def rotated_bundle(new: ServingMaterial, previous_bundle: bytes | None, now: datetime.datetime) -> ServingMaterial:
    """``new`` with a CA bundle of its CA first, then the previous bundle's CAs that are still
    valid (API servers then trust the replicas that still serve the previous certificate)."""
    bundle = [new.ca_bundle]
    try:
        previous = x509.load_pem_x509_certificates(previous_bundle) if previous_bundle else []
    except ValueError:
        previous = []  # an unreadable bundle trusts nothing worth keeping
    bundle += [_pem(ca) for ca in previous if ca.not_valid_after_utc > now and _pem(ca) not in bundle]
    return ServingMaterial(b"".join(bundle), new.certificate, new.private_key)
