"""network.ca_certs: each certificate of each file reaches the server as a
file of its own where update-ca-certificates looks, pip is pointed at the
system store, and a file that is not a certificate is refused with its place.
That the first-boot script trusts them as update-ca-certificates would is
proven on booted servers (tests/e2e/test_letsencrypt.py)."""

from __future__ import annotations

import datetime

import pytest
import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from bakery.steps import system

from conftest import run_bakery, write_files

BASE = "admin:\n  name: alice\nhost:\n  hostname: web1\n"


def make_ca(name: str) -> str:
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.datetime.now(datetime.timezone.utc)
    certificate = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject)
                   .public_key(key.public_key()).serial_number(x509.random_serial_number())
                   .not_valid_before(now).not_valid_after(now + datetime.timedelta(days=30))
                   .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
                   .sign(key, hashes.SHA256()))
    return certificate.public_bytes(serialization.Encoding.PEM).decode()


def render(tmp_path, workstation, ca_files: list[str]):
    config = tmp_path / "bakery.yaml"
    config.write_text(BASE + "network:\n  ca_certs: [" + ", ".join(ca_files) + "]\n")
    return run_bakery(["render", "-c", config, "-o", tmp_path / "user-data"], home=workstation)


def test_each_certificate_of_each_file_is_a_file_of_its_own_and_pip_uses_the_system_store(tmp_path, workstation):
    root, intermediate, proxy = make_ca("Company Root"), make_ca("Company Issuing"), make_ca("Proxy")
    (tmp_path / "chain.pem").write_text("the company's chain\n" + root + intermediate)
    (tmp_path / "proxy.pem").write_text(proxy.replace("\n", "\r\n"))
    result = render(tmp_path, workstation, ["chain.pem", "proxy.pem"])
    assert result.returncode == 0, result.stderr.decode()
    doc = yaml.safe_load((tmp_path / "user-data").read_text())
    files = write_files(doc)
    cas = {path: text for path, text in files.items() if path.startswith(system.LOCAL_CA_DIR)}
    assert sorted(cas) == [f"{system.LOCAL_CA_DIR}/bakery-ca-{n}.crt" for n in (1, 2, 3)], sorted(cas)
    loaded = [x509.load_pem_x509_certificate(text.encode()) for text in cas.values()]
    assert [c.subject.rfc4514_string() for c in loaded] == ["CN=Company Root", "CN=Company Issuing", "CN=Proxy"]
    assert all(text.count("BEGIN CERTIFICATE") == 1 and text.endswith("-----\n") for text in cas.values())
    # cloud-init's module is not used: it rebuilds the whole store.
    assert "ca_certs" not in doc
    assert f"cert = {system.SYSTEM_CA_BUNDLE}\n" in files[system.PIP_CONF]
    assert "\ntrust_cas\n" in files["/usr/local/lib/bakery/first-boot.sh"]


def test_no_ca_certs_no_trust_step(tmp_path, workstation):
    config = tmp_path / "bakery.yaml"
    config.write_text(BASE)
    result = run_bakery(["render", "-c", config, "-o", tmp_path / "user-data"], home=workstation)
    assert result.returncode == 0, result.stderr.decode()
    files = write_files(yaml.safe_load((tmp_path / "user-data").read_text()))
    assert not any(path.startswith(system.LOCAL_CA_DIR) for path in files)
    assert "trust_cas" not in files["/usr/local/lib/bakery/first-boot.sh"]


@pytest.mark.parametrize("content, message", [
    ("no certificate here\n", "is not a PEM certificate (expected -----BEGIN CERTIFICATE-----)"),
    ("-----BEGIN CERTIFICATE-----\nbm90IGEgY2VydGlmaWNhdGU=\n-----END CERTIFICATE-----\n",
     "does not parse as an X.509 certificate"),
    ("GOOD-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n",
     "certificate 2 of 2 in"),
])
def test_a_file_that_is_not_a_certificate_is_refused_with_its_place(tmp_path, workstation, content, message):
    (tmp_path / "ca.pem").write_text(content.replace("GOOD", make_ca("Fine")))
    result = render(tmp_path, workstation, ["ca.pem"])
    err = result.stderr.decode()
    assert result.returncode == 2 and "Traceback" not in err, err
    assert f"{tmp_path / 'bakery.yaml'}:6:" in err and "network.ca_certs[0]" in err and message in err, err
    assert not (tmp_path / "user-data").exists()
