"""Certificates made for the TLS tests (trustme): a CA, a server certificate for 127.0.0.1 and
localhost, one for another name, a client certificate, and an unrelated CA."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import trustme


@dataclass(frozen=True)
class TlsFiles:
    ca: Path  # signed every certificate below but `other_ca`
    server_cert: Path  # for 127.0.0.1 and localhost
    server_key: Path
    elsewhere_cert: Path  # for db.elsewhere.example only
    elsewhere_key: Path
    client_cert: Path
    client_key: Path
    client_combined: Path  # the client's key and certificate in one file
    other_ca: Path  # signed nothing here


def make_tls_files(directory: Path) -> TlsFiles:
    ca = trustme.CA()
    server = ca.issue_cert("127.0.0.1", "localhost")
    elsewhere = ca.issue_cert("db.elsewhere.example")
    client = ca.issue_cert("cmapi-client")
    files = TlsFiles(
        ca=directory / "ca.pem",
        server_cert=directory / "server.pem",
        server_key=directory / "server.key",
        elsewhere_cert=directory / "elsewhere.pem",
        elsewhere_key=directory / "elsewhere.key",
        client_cert=directory / "client.pem",
        client_key=directory / "client.key",
        client_combined=directory / "client-combined.pem",
        other_ca=directory / "other-ca.pem",
    )
    ca.cert_pem.write_to_path(files.ca)
    for cert, cert_path, key_path in (
        (server, files.server_cert, files.server_key),
        (elsewhere, files.elsewhere_cert, files.elsewhere_key),
        (client, files.client_cert, files.client_key),
    ):
        cert.cert_chain_pems[0].write_to_path(cert_path)
        cert.private_key_pem.write_to_path(key_path)
    client.private_key_and_cert_chain_pem.write_to_path(files.client_combined)
    trustme.CA().cert_pem.write_to_path(files.other_ca)
    return files
