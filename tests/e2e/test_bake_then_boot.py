"""The image path end to end: the main scenario's ``--stage image`` boots and
is baked the way a Packer build bakes it (its wait script, then its clean-up
script), and the same disk then boots as a new server with ``--stage instance
--hostname web1``. That server must come up serving HTTPS with its own host
keys, host name and secrets, and keep nothing per-server from the bake.

It runs in the container tier on the image of record (``BAKERY_E2E_VM=all``:
the VM too); ``bench/first-boot`` measures the same path in the VM.
"""

from __future__ import annotations

import shlex

import pytest

from bakery.resources import data_path

from . import checks, scenario
from .conftest import platforms
from .gitserve import GitRepoServer
from .image import RECORD

pytestmark = [pytest.mark.e2e]
SCRIPTS = data_path("packer") / "scripts"
INSTANCE_HOST = "web1.example.test"
# What the packages make when they are installed and each server must make
# its own of (Packer's clean-up removes them; MariaDB has no server id or keys).
PACKAGE_SECRETS = {
    "/etc/ssl/private/ssl-cert-snakeoil.key": "ssl-cert's key (postfix's TLS)",
    "/var/lib/mysql/auto.cnf": "MySQL's server id",
    "/var/lib/mysql/ca-key.pem": "MySQL's TLS CA key",
    "/var/lib/mysql/server-key.pem": "MySQL's TLS key",
    "/var/lib/mysql/private_key.pem": "MySQL's RSA key for passwords",
    "/etc/mysql/debian.cnf": "the password of MySQL's maintenance account",
}
# A server from the image has no CA key: its MySQL certificate is self-signed
# (mysql-tls-key.sh.j2).
MADE_NO_MORE = {"/var/lib/mysql/ca-key.pem"}
# The digest of each of those files that exists; of debian.cnf, its password
# lines only (Debian's MariaDB has none).
DIGESTS = ("for f in " + " ".join(PACKAGE_SECRETS) + "; do [ -e $f ] || continue; "
           "if [ $f = /etc/mysql/debian.cnf ]; then grep -s '^password' $f | grep -q . || continue; "
           "d=$(grep '^password' $f | sha256sum); else d=$(sha256sum < $f); fi; echo \"$f ${d%% *}\"; done")


def package_secrets(guest) -> dict:
    return dict(line.split() for line in guest.ssh(f"sudo -n sh -c {shlex.quote(DIGESTS)}").stdout.splitlines())


def upload(guest, name: str) -> str:
    path = f"/tmp/{name}"
    guest.ssh(f"cat > {path}", input=(SCRIPTS / name).read_text())
    return path


@pytest.mark.parametrize("tier", platforms(container=(RECORD,)), ids=str)
def test_baked_image_boots_as_a_new_server(tier, boot_guest, ssh_key, tmp_path):
    repo = GitRepoServer(tmp_path / "git")
    try:
        config = scenario.write_config(tmp_path, ssh_key.with_suffix(".pub").read_text().strip(), repo.guest_url,
                                       tier=tier.tier)
        image_seed = tmp_path / "image.iso"
        scenario.bakery("seed", "-c", str(config), "--stage", "image", "-o", str(image_seed))
        instance_seed = tmp_path / "instance.iso"
        scenario.bakery("seed", "-c", str(config), "--stage", "instance", "--hostname", "web1",
                        "-o", str(instance_seed))

        # The bake.
        guest = boot_guest(image_seed, scenario.ADMIN, tier=tier)
        guest.wait_ssh(timeout=400)
        assert guest.wait_first_boot(timeout=1500) == "ready"
        guest.timings["bake-ready"] = guest.timings["first-boot"]
        assert "cloud-init finished without errors" in guest.ssh(
            f"sh {upload(guest, 'wait-for-cloud-init.sh')}", timeout=1500).stdout
        baked = {
            "host_key": guest.ssh("cat /etc/ssh/ssh_host_ed25519_key.pub").stdout.strip(),
            "instance": guest.ssh("cat /var/lib/cloud/data/instance-id").stdout.strip(),
            "packages": package_secrets(guest),
            "swap": guest.ssh("swapon --show=NAME --noheadings").stdout.split(),
        }
        # The image of record has all of them (MySQL 8, ssl-cert with postfix).
        assert set(baked["packages"]) == set(PACKAGE_SECRETS), baked["packages"]
        # An image never holds the per-server parts.
        assert guest.ssh(f"sudo -n test -e {scenario.APP_DIR}/.env", check=False).returncode != 0
        assert guest.ssh("test -e /etc/nginx/sites-enabled/fixture", check=False).returncode != 0
        # postfix, which a server from the image starts at boot, is locked down.
        assert guest.ssh("sudo -n postconf -h inet_interfaces").stdout.strip() == "loopback-only"
        # One session, as in a Packer build: without host keys sshd takes no
        # new connection; the machine is then shut down and the disk kept.
        clean = upload(guest, "clean-image.sh")
        guest.ssh(f"sh {clean} >&2 && {{ (sleep 2; sudo -n systemctl poweroff) > /dev/null 2>&1 & }}")
        guest.wait_stopped(timeout=180)

        # A server started from the image, with its own user-data.
        guest.seed = instance_seed
        guest.start()
        guest.wait_ssh(timeout=400)
        assert guest.wait_first_boot(timeout=1500) == "ready", guest.ssh(
            "sudo -n tail -n 60 /var/log/bakery/first-boot.log").stdout
        guest.wait_https(host=INSTANCE_HOST, timeout=120)
        guest.timings["instance-https"] = guest.timings["https"]

        page = guest.http("/", host=INSTANCE_HOST)
        assert page.status == 200 and "row: hello from the database" in page.body
        assert guest.ssh("hostname").stdout.strip() == "web1"
        assert guest.ssh("cat /etc/ssh/ssh_host_ed25519_key.pub").stdout.strip() != baked["host_key"]
        assert guest.ssh("cat /var/lib/cloud/data/instance-id").stdout.strip() != baked["instance"]
        # The services the site is served by got the CPU first until the
        # verdict, which set them back (runtime settings, gone at reboot).
        weights = guest.ssh("systemctl show -p CPUWeight mysql.service supervisor.service nginx.service; "
                            "cat /run/systemd/system.control/mysql.service.d/50-CPUWeight.conf").stdout
        assert weights.count("CPUWeight=100\n") == 4, weights
        # The image's swap, and its fstab without a line twice.
        assert guest.ssh("swapon --show=NAME --noheadings").stdout.split() == baked["swap"]
        fstab = [line.split() for line in guest.ssh("cat /etc/fstab").stdout.splitlines()
                 if line.strip() and not line.lstrip().startswith("#")]
        assert len({entry[0] for entry in fstab}) == len(fstab), fstab
        # What the packages made at the bake, this server made again for itself.
        made_here = package_secrets(guest)
        for path, digest in baked["packages"].items():
            if path not in MADE_NO_MORE:
                assert path in made_here, f"{PACKAGE_SECRETS[path]} ({path}) is missing"
            assert made_here.get(path) != digest, f"{PACKAGE_SECRETS[path]} ({path}) is the image's"
        # ...and it serves with them: postfix's TLS, MySQL's maintenance login.
        pair = guest.ssh("sudo -n sh -c 'openssl x509 -noout -pubkey -in /etc/ssl/certs/ssl-cert-snakeoil.pem; "
                         "openssl pkey -pubout -in /etc/ssl/private/ssl-cert-snakeoil.key'").stdout.split("-----BEGIN")
        assert len(pair) == 3 and pair[1] == pair[2], pair
        assert "mysqld is alive" in guest.ssh("sudo -n mysqladmin --defaults-file=/etc/mysql/debian.cnf ping").stdout
        # MySQL's TLS, with the P-256 key made before it started, checked by
        # a client against ca.pem and the name it connects to.
        tls = guest.ssh("sudo -n mysql --defaults-file=/etc/mysql/debian.cnf --protocol=TCP -h localhost "
                        "--ssl-mode=VERIFY_IDENTITY --ssl-ca=/var/lib/mysql/ca.pem -N "
                        "-e \"SHOW SESSION STATUS LIKE 'Ssl_version'\"").stdout.split()
        assert tls[:1] == ["Ssl_version"] and tls[1:2] in (["TLSv1.2"], ["TLSv1.3"]), tls
        key = guest.ssh("sudo -n openssl pkey -in /var/lib/mysql/server-key.pem -noout -text").stdout
        assert "ASN1 OID: prime256v1" in key, key[:200]
        # MySQL (making those keys) started beside cloud-init's network stage,
        # before it ended, not after it (cloud-init-network is 24.3+'s name).
        started, *ended = (int(guest.ssh(f"systemctl show -P {what} {unit}").stdout.strip() or 0) for what, unit in (
            ("InactiveExitTimestampMonotonic", "mysql.service"),
            ("ActiveEnterTimestampMonotonic", "cloud-init-network.service"),
            ("ActiveEnterTimestampMonotonic", "cloud-init.service")))
        assert 0 < started < max(ended), (started, ended)
        subject = guest.ssh(f"echo | openssl s_client -connect 127.0.0.1:443 -servername {INSTANCE_HOST} "
                            "2>/dev/null | openssl x509 -noout -subject").stdout
        assert "web1" in subject, subject
        # Only this instance's first boot ran (the bake's log went with the clean-up),
        # and it did not fetch or install the app again.
        log = guest.ssh("sudo -n cat /var/log/bakery/first-boot.log").stdout
        assert log.count("== step 1/") == 1 and "was prepared: no fetch, no pip install" in \
            guest.ssh("sudo -n cat /var/log/bakery/update.log").stdout, log[-3000:]
        # The steps ran early, from their own unit, not in cloud-final (which
        # waits for every service the image starts); cloud-final's links
        # reported them and gave the verdict.
        early = guest.ssh("sudo -n journalctl -b -u bakery-first-boot --no-pager").stdout
        assert "== step 1/" in early and "step verdict" not in early, early[-3000:]
        final = guest.ssh("sudo -n cat /var/log/cloud-init-output.log").stdout
        assert "bakery: step app, earlier in this boot: done (exit 0)" in final, final[-3000:]
        checks.assert_cloud_init_done(guest)
        checks.assert_firewall_allows_exactly(guest, scenario.MAIN_RULES)
        # postfix runs under this server's name.
        assert guest.ssh("systemctl is-active postfix@- opendkim").stdout.split() == ["active"] * 2
        assert guest.ssh("sudo -n postconf -h myhostname").stdout.strip() == INSTANCE_HOST
    finally:
        repo.close()
