"""A Let's Encrypt stand-in on the host: Debian's ``pebble`` (an RFC 8555 test
CA) and ``pebble-challtestsrv`` as the DNS that pebble's validation asks.

Owns the wiring. Pebble's ACME listener speaks HTTPS with a certificate for
the address the guest uses (10.0.2.2, the host under QEMU's and slirp4netns's
user networking; 127.0.0.1 for the host itself), signed by a throwaway CA made
here. Pebble makes a new issuing root on every start; ``start`` fetches it
from the management listener into ``root_file``. The guest trusts both CAs
through ``network.ca_certs``, as a server of a private CA would, and the
tests check the served chain against the issuing root. The DNS stand-in
answers nothing for any name until ``point`` adds an A record: a server whose
DNS does not point at it yet. When it does point, the name resolves to
127.0.0.1 and pebble's HTTP-01 request goes to ``http_port`` there, the host
port chosen beforehand that forwards to the guest's port 80.
"""

from __future__ import annotations

import ipaddress
import json
import os
import ssl
import subprocess
import time
import urllib.request
from datetime import datetime, timedelta, timezone
from pathlib import Path

from .gitserve import GUEST_HOST_ADDRESS
from .guest import free_port

# Pebble's defaults sleep up to 15 s before each validation and reject 5 % of
# good nonces; a test wants neither, and every validation must really happen.
PEBBLE_ENV = {"PEBBLE_VA_NOSLEEP": "1", "PEBBLE_VA_ALWAYS_VALID": "0", "PEBBLE_WFE_NONCEREJECT": "0",
              # Every order validates again (a renewal too), instead of reusing half of the time.
              "PEBBLE_AUTHZREUSE": "0"}


def issue(common_name: str, issuer=None, *, ca: bool = False, addresses=()):
    """A (certificate, private key) pair, P-256: self-signed without ``issuer``,
    else signed by ``issuer`` (a pair made here); ``ca`` makes it an issuing CA,
    ``addresses`` its IP subject alternative names."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    issuer_certificate, issuer_key = issuer or (None, key)
    now = datetime.now(timezone.utc)
    builder = (x509.CertificateBuilder().subject_name(name)
               .issuer_name(issuer_certificate.subject if issuer_certificate else name)
               .public_key(key.public_key()).serial_number(x509.random_serial_number())
               .not_valid_before(now - timedelta(hours=1)).not_valid_after(now + timedelta(days=7))
               .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
               .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_key.public_key()),
                              critical=False)
               .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
               .add_extension(x509.KeyUsage(digital_signature=not ca, key_cert_sign=ca, crl_sign=ca,
                                            content_commitment=False, key_encipherment=False,
                                            data_encipherment=False, key_agreement=False, encipher_only=False,
                                            decipher_only=False), critical=True))
    if not ca:
        builder = builder.add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
    if addresses:
        builder = builder.add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address(a)) for a in addresses]), critical=False)
    return builder.sign(issuer_key, hashes.SHA256()), key


def pem(*items) -> bytes:
    """Certificates and private keys, PEM-encoded one after another."""
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization

    return b"".join(item.public_bytes(serialization.Encoding.PEM) if isinstance(item, x509.Certificate)
                    else item.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                            serialization.NoEncryption()) for item in items)


def _write_listener_certificates(directory: Path) -> tuple[Path, Path, Path]:
    """(CA, certificate, key) PEM files for pebble's HTTPS listeners."""
    authority = issue("bakery e2e ACME listener CA", ca=True)
    certificate, key = issue(GUEST_HOST_ADDRESS, authority, addresses=(GUEST_HOST_ADDRESS, "127.0.0.1"))
    paths = directory / "listener-ca.crt", directory / "listener.crt", directory / "listener.key"
    for path, item in zip(paths, (authority[0], certificate, key)):
        path.write_bytes(pem(item))
    return paths


class AcmeServer:
    """Pebble and its DNS stand-in, started by ``start(http_port)``; ``close`` ends both."""

    def __init__(self, workdir: Path):
        self.workdir = workdir
        self.ca_file, self._cert, self._key = _write_listener_certificates(workdir)
        self.port, self.management_port = free_port(), free_port()
        self.dns_port, self.dns_management_port = free_port(), free_port()
        self.log_file = workdir / "pebble.log"
        self.root_file = workdir / "pebble-root.crt"
        self.http_port: int | None = None
        self._processes: list[subprocess.Popen] = []

    @property
    def guest_directory(self) -> str:
        """The ACME directory URL as the guest reaches it: web.acme_server."""
        return f"https://{GUEST_HOST_ADDRESS}:{self.port}/dir"

    def start(self, http_port: int) -> None:
        """Start the DNS stand-in, then pebble validating HTTP-01 on ``http_port``;
        its issuing root is in ``root_file`` once this returns."""
        self.http_port = http_port
        # No default answers: every name is unknown until ``point`` adds it.
        self._spawn(["pebble-challtestsrv", "-defaultIPv4", "", "-defaultIPv6", "",
                     "-dns01", f"127.0.0.1:{self.dns_port}", "-http01", "", "-https01", "", "-tlsalpn01", "",
                     "-management", f"127.0.0.1:{self.dns_management_port}"], self.workdir / "challtestsrv.log")
        config = self.workdir / "pebble-config.json"
        config.write_text(json.dumps({"pebble": {
            "listenAddress": f"127.0.0.1:{self.port}",
            "managementListenAddress": f"127.0.0.1:{self.management_port}",
            "certificate": str(self._cert), "privateKey": str(self._key),
            "httpPort": http_port,
            # TLS-ALPN-01 is not used (certbot's webroot answers HTTP-01); a port nothing serves.
            "tlsPort": free_port(),
            "ocspResponderURL": "", "externalAccountBindingRequired": False}}))
        self._spawn(["pebble", "-config", str(config), "-dnsserver", f"127.0.0.1:{self.dns_port}"], self.log_file,
                    env={**os.environ, **PEBBLE_ENV})
        self._wait_ready()
        url = f"https://127.0.0.1:{self.management_port}/roots/0"
        self.root_file.write_bytes(urllib.request.urlopen(url, context=self._context(), timeout=10).read())

    def _spawn(self, command: list[str], log: Path, env: dict | None = None) -> None:
        with open(log, "ab") as out:
            self._processes.append(subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=out,
                                                    stderr=subprocess.STDOUT, env=env, cwd=self.workdir))

    def _context(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=str(self.ca_file))

    def _wait_ready(self, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while True:
            dead = [p.args[0] for p in self._processes if p.poll() is not None]
            if dead:
                raise RuntimeError(f"{dead} stopped: {self.log()}")
            try:
                urllib.request.urlopen(f"https://127.0.0.1:{self.port}/dir", context=self._context(), timeout=5).read()
                # Answers once the DNS stand-in is up; no default address, as started.
                self._dns_management("set-default-ipv4", {"ip": ""})
                return
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)

    def _dns_management(self, endpoint: str, body: dict) -> None:
        request = urllib.request.Request(f"http://127.0.0.1:{self.dns_management_port}/{endpoint}",
                                         data=json.dumps(body).encode(), method="POST")
        urllib.request.urlopen(request, timeout=10).read()

    def point(self, name: str, address: str = "127.0.0.1") -> None:
        """From now on ``name`` resolves to ``address`` (IPv4 only) for pebble's validation."""
        self._dns_management("add-a", {"host": name, "addresses": [address]})

    def log(self) -> str:
        return self.log_file.read_text(errors="replace") if self.log_file.exists() else ""

    def close(self) -> None:
        for process in self._processes:
            if process.poll() is None:
                process.terminate()
                try:
                    process.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()
        self._processes.clear()
