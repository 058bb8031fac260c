"""The Let's Encrypt path, for real: ``tls: letsencrypt`` with ``web.acme_server``
pointing at Debian's ``pebble`` on the host (an RFC 8555 CA, as Let's
Encrypt's staging, ZeroSSL or a private CA would be). The guest trusts
pebble's roots (its HTTPS listener's CA and its issuing root) through
``network.ca_certs``, as a server of a private CA would. certbot on the guest
answers HTTP-01 from nginx; pebble asks its DNS stand-in where the name
points (``acmeserve.py`` has the wiring).

One guest per platform, checked in file order:
1. the name does not resolve yet: first boot still ends "ready", nginx serves
   the self-signed certificate without HSTS, and the hourly retry timer runs;
2. the name resolves: the timer's own service (started by hand rather than an
   hour later) gets pebble's certificate, nginx serves it with HSTS (its chain
   ends at a root the server trusts), and the timer is switched off;
3. ``certbot renew --force-renewal``: nginx serves the new certificate with no
   reload by hand (certbot's deploy hook).

Container tier on Ubuntu 24.04 and Debian 12 (the oldest certbot, 2.1);
``BAKERY_E2E_VM=all`` boots the VM as well.
"""

from __future__ import annotations

import socket
import ssl
from pathlib import Path

import pytest

from . import scenario
from .acmeserve import AcmeServer
from .conftest import platforms, require_tool
from .gitserve import GitRepoServer
from .guest import GuestError, free_port, wait_for

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.parametrize("tier", platforms(container=("ubuntu-24.04", "debian-12")), indirect=True,
                            scope="module", ids=str),
]

HOST = scenario.DOMAIN
UNIT = f"bakery-letsencrypt-{scenario.APP}"
HSTS = "max-age=63072000"


@pytest.fixture(scope="module")
def repo(tier, tmp_path_factory):
    server = GitRepoServer(tmp_path_factory.mktemp("git"))
    yield server
    server.close()


@pytest.fixture(scope="module")
def acme(tier, tmp_path_factory):
    require_tool("pebble")
    require_tool("pebble-challtestsrv")
    server = AcmeServer(tmp_path_factory.mktemp("acme"))
    # The host port the guest's port 80 will be forwarded to: pebble validates there.
    server.start(http_port=free_port())
    yield server
    server.close()


@pytest.fixture(scope="module")
def server(tier, boot_guest, ssh_key, repo, acme, tmp_path_factory):
    workdir = tmp_path_factory.mktemp("letsencrypt")
    config = scenario.write_config(workdir, ssh_key.with_suffix(".pub").read_text().strip(), repo.guest_url,
                                   tier=tier.tier, acme=(acme.guest_directory, [acme.ca_file, acme.root_file]))
    seed = scenario.make_seed(config, workdir / "seed.iso")
    vm = boot_guest(seed, scenario.ADMIN, tier=tier, ports={80: acme.http_port})
    try:
        vm.wait_ssh(timeout=400)
        assert vm.wait_first_boot(timeout=1500) == "ready", vm.ssh("sudo -n tail -n 60 /var/log/bakery/first-boot.log").stdout
        vm.wait_https(host=HOST, timeout=120)
    except GuestError:
        vm.dump_logs()
        raise
    return vm


@pytest.fixture(scope="module")
def pebble_root(acme):
    return acme.root_file.read_text()


def served_certificate(server):
    """The certificate nginx serves for the site's name, unverified."""
    from cryptography import x509

    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    with socket.create_connection(("127.0.0.1", server.ports[443]), timeout=30) as raw:
        with context.wrap_socket(raw, server_hostname=HOST) as tls:
            return x509.load_der_x509_certificate(tls.getpeercert(binary_form=True))


def verifies_against(server, root_pem: str) -> bool:
    """Whether what nginx serves for the name chains to ``root_pem`` and names the site."""
    context = ssl.create_default_context(cadata=root_pem)
    try:
        with socket.create_connection(("127.0.0.1", server.ports[443]), timeout=30) as raw:
            with context.wrap_socket(raw, server_hostname=HOST):
                return True
    except ssl.SSLCertVerificationError:
        return False


def timer_state(server) -> list[str]:
    """[is-active, is-enabled] of the retry timer."""
    return server.ssh(f"systemctl is-active {UNIT}.timer; systemctl is-enabled {UNIT}.timer", check=False).stdout.split()


# --- 1: the name does not point here yet -------------------------------------------

def test_first_boot_is_ready_on_the_self_signed_certificate(server, acme, pebble_root):
    assert server.first_boot_status() == "ready"
    certificate = served_certificate(server)
    assert certificate.issuer == certificate.subject, certificate.issuer.rfc4514_string()
    assert HOST in certificate.subject.rfc4514_string()
    assert not verifies_against(server, pebble_root)
    # certbot did ask pebble, and pebble could not find the name.
    log = server.ssh("sudo -n cat /var/log/bakery/first-boot.log").stdout
    assert "no certificate yet" in log, log[-3000:]
    assert f"could not resolve URL \"http://{HOST}" in server.ssh("sudo -n cat /var/log/letsencrypt/letsencrypt.log").stdout
    assert "set INVALID" in acme.log()


def test_no_hsts_while_the_certificate_is_self_signed(server):
    response = server.http("/", host=HOST)
    assert response.status == 200
    assert "strict-transport-security" not in response.headers, response.headers


def test_the_hourly_retry_timer_runs(server):
    assert timer_state(server) == ["active", "enabled"]


# --- 2: the name points here; the retry gets the certificate ------------------------

def test_the_retry_switches_nginx_to_the_ca_s_certificate(server, acme, pebble_root):
    acme.point(HOST)
    # The unit the timer starts; one the timer started itself must end first.
    assert wait_for(lambda: server.ssh(f"systemctl is-active {UNIT}.service", check=False).stdout.strip()
                    != "activating", timeout=300)
    result = server.ssh(f"sudo -n systemctl start {UNIT}.service", check=False, timeout=600)
    assert result.returncode == 0, server.ssh(f"sudo -n journalctl -u {UNIT}.service --no-pager | tail -n 60").stdout
    # `systemctl reload nginx` returns once nginx has its signal: for a moment
    # after it, a new connection may still meet a worker with the old certificate.
    assert wait_for(lambda: verifies_against(server, pebble_root), timeout=30), \
        server.ssh(f"sudo -n journalctl -u {UNIT}.service --no-pager | tail -n 60").stdout
    certificate = served_certificate(server)
    assert certificate.issuer != certificate.subject
    assert "Pebble" in certificate.issuer.rfc4514_string(), certificate.issuer.rfc4514_string()


def test_hsts_once_the_real_certificate_serves(server):
    response = server.http("/", host=HOST)
    assert response.status == 200
    assert response.headers.get("strict-transport-security") == HSTS, response.headers


def test_the_retry_timer_is_switched_off(server):
    assert timer_state(server) == ["inactive", "disabled"]


# --- 3: renewal -----------------------------------------------------------------------

def test_renewal_reloads_nginx_by_itself(server, pebble_root):
    # The distribution's certbot package runs `certbot renew` twice a day.
    assert server.ssh("systemctl is-active certbot.timer", check=False).stdout.strip() == "active"
    before = served_certificate(server).serial_number
    result = server.ssh("sudo -n certbot renew --force-renewal --no-random-sleep-on-renew", check=False, timeout=600)
    assert result.returncode == 0, result.stdout + result.stderr
    # nginx's new workers take the new certificate a moment after the reload.
    assert wait_for(lambda: served_certificate(server).serial_number != before, timeout=60, interval=1), \
        result.stdout + result.stderr
    assert verifies_against(server, pebble_root)
    assert server.http("/", host=HOST).headers.get("strict-transport-security") == HSTS


# --- 4: the trusted CAs, as update-ca-certificates keeps them ---------------------------

def trust_store(server) -> tuple[list, list]:
    """The certificates of the system bundle (SHA-256 fingerprints, sorted, a
    duplicate counted) and the links of /etc/ssl/certs (a hash link as its
    hash and target, without the .N a collision numbers)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes

    bundle = server.ssh("cat /etc/ssl/certs/ca-certificates.crt").stdout.encode()
    certificates = sorted(c.fingerprint(hashes.SHA256()).hex() for c in x509.load_pem_x509_certificates(bundle))
    links = []
    for line in server.ssh("find /etc/ssl/certs -maxdepth 1 -type l -printf '%f %l\\n'").stdout.splitlines():
        name, target = line.split(" ", 1)
        stem, _, number = name.rpartition(".")
        links.append(f"{stem} -> {target}" if number.isdigit() else line)
    return certificates, sorted(links)


# A distribution CA or two has a serial number of 0, which cryptography warns of.
@pytest.mark.filterwarnings("ignore:Parsed a serial number")
def test_the_trusted_cas_are_as_update_ca_certificates_would_keep_them(server, acme):
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes

    # Not cloud-init's ca_certs module: it runs the tool, which rebuilds the whole store.
    assert "update-ca-certificates" not in server.ssh("sudo -n cat /var/log/cloud-init.log").stdout
    given = [acme.ca_file, acme.root_file, *map(Path, scenario.host_ca_certs())]
    expected = [c.fingerprint(hashes.SHA256()).hex() for path in given
                for c in x509.load_pem_x509_certificates(path.read_bytes())]
    certificates, links = trust_store(server)
    assert set(expected) <= set(certificates)
    files = [name for name in server.ssh("ls /usr/local/share/ca-certificates/").stdout.split()
             if name.startswith("bakery-ca-")]
    assert sorted(files) == sorted(f"bakery-ca-{n}.crt" for n in range(1, len(expected) + 1)), files
    # Found by subject hash, as OpenSSL looks a CA up (no bundle given).
    for name in files:
        verify = server.ssh(f"openssl verify -no-CAfile -CApath /etc/ssl/certs /usr/local/share/ca-certificates/{name}",
                            check=False)
        assert verify.returncode == 0, verify.stdout + verify.stderr
    # The tool (what an upgrade of ca-certificates runs) finds nothing to add
    # and builds the same bundle; from scratch it makes the same links.
    update = server.ssh("sudo -n update-ca-certificates", check=False)
    assert update.returncode == 0 and "0 added, 0 removed" in update.stdout, update.stdout + update.stderr
    assert trust_store(server) == (certificates, links)
    fresh = server.ssh("sudo -n update-ca-certificates --fresh", check=False)
    assert fresh.returncode == 0, fresh.stdout + fresh.stderr
    assert trust_store(server) == (certificates, links)
