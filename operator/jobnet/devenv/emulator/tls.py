"""The serving certificate of the emulator's secure port (clients trust it through their kubeconfig).

client-go sends bearer tokens only over TLS, so a kubeconfig that authenticates with a token
(a ServiceAccount's, a test user's) needs an HTTPS endpoint. One CA and serving certificate per
emulator (the operator's own issuer, :func:`jobnet.core.servingcert.issue`), valid for the loopback
address it listens on; its kubeconfigs name that CA.
"""

from __future__ import annotations

import datetime
import ssl
import tempfile
from dataclasses import dataclass

from jobnet.core.servingcert import issue

VALIDITY = datetime.timedelta(days=1)  # an emulator lives as long as a test or a dev session


@dataclass(frozen=True)
class ServingCertificate:
    authority_pem: bytes
    certificate_pem: bytes
    key_pem: bytes

    def server_context(self) -> ssl.SSLContext:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        # ssl loads a chain only from files: written to a private temporary directory, then gone
        with tempfile.TemporaryDirectory() as directory:
            cert_path, key_path = f"{directory}/tls.crt", f"{directory}/tls.key"
            with open(cert_path, "wb") as cert_file:
                cert_file.write(self.certificate_pem)
            with open(key_path, "wb") as key_file:
                key_file.write(self.key_pem)
            context.load_cert_chain(cert_path, key_path)
        return context


def loopback_certificate(host: str = "127.0.0.1") -> ServingCertificate:
    """A CA and a serving certificate for ``host`` and ``localhost``."""
    material = issue([host, "localhost"], datetime.datetime.now(datetime.UTC), VALIDITY)
    return ServingCertificate(material.ca_bundle, material.certificate, material.private_key)
