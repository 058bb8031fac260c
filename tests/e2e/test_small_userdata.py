"""A provider whose user-data limit is 16 KiB (Linode, EC2, Lightsail), booted:
the main scenario rendered for Linode carries bakery's files, and its every-boot
script, in one compressed archive in the first bootcmd. A real boot unpacks them
with the image's own python3, takes the path of an instance's first boot, and
comes up complete; a reboot unpacks nothing again and runs nothing of first boot.

Container tier, on the image of record: what it proves is files, modes and the
order of cloud-init's modules, which the container shows as the VM would.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from . import scenario
from .conftest import platforms
from .container import seed_files
from .gitserve import GitRepoServer
from .guest import make_seed_iso
from .image import RECORD
from .test_first_boot import HOST, assert_main_checks

pytestmark = [pytest.mark.e2e]
PLATFORMS = platforms(container=(RECORD,))
MARK = "/var/lib/cloud/instance/bakery-unpacked"


@pytest.mark.parametrize("tier", PLATFORMS, ids=str)
def test_a_16_kib_user_data_boots_to_a_complete_server(tier, boot_guest, ssh_key, tmp_path):
    repo = GitRepoServer(tmp_path / "git")
    try:
        config = scenario.write_config(tmp_path, ssh_key.with_suffix(".pub").read_text().strip(), repo.guest_url,
                                       tier=tier.tier)
        # This host's own CAs (a TLS-inspecting proxy between the guest and
        # PyPI) would not fit 16 KiB beside the scenario: they come as the
        # seed's vendor-data, as a provider's own settings would.
        data = yaml.safe_load(config.read_text())
        cas = data.pop("network", {}).get("ca_certs", [])
        config.write_text(yaml.safe_dump(data, sort_keys=False))
        files = seed_files(scenario.make_seed(config, tmp_path / "bakery-seed.iso", target="linode"))
        assert len(files["user-data"]) <= 16_384
        bootcmd = yaml.safe_load(files["user-data"])["bootcmd"]
        assert "<<'BAKERY_FILES'" in bootcmd[0][2] and bootcmd[1][0] == "sh", bootcmd[1]
        every_boot = bootcmd[1][1]
        if cas:
            trusted = {"ca_certs": {"trusted": [Path(ca).read_text() for ca in cas]}}
            files["vendor-data"] = ("#cloud-config\n" + yaml.safe_dump(trusted)).encode()
        guest = boot_guest(make_seed_iso(tmp_path / "seed.iso", files), scenario.ADMIN, tier=tier)
        guest.wait_ssh(timeout=400)
        assert guest.wait_first_boot(timeout=1500) == "ready", \
            guest.ssh("sudo -n tail -n 60 /var/log/bakery/first-boot.log").stdout
        guest.wait_https(host=HOST, timeout=120)
        assert_main_checks(guest, repo)
        # The every-boot script is a file of the archive, root's alone.
        assert guest.ssh(f"sudo -n stat -c '%a %U' {every_boot} {MARK}").stdout.split("\n")[0] == "600 root"
        # First boot was taken for what it was, the first of this instance
        # (the unpacking's mark is not in bakery's state folder, whose absence
        # tells it): a resumed one would have deleted the semaphores of the
        # modules cloud-init ran before the bootcmd (seed_random), to run again.
        assert guest.ssh("sudo -n ls /var/lib/cloud/instance/sem").stdout.split().count("config_seed_random") == 1
        log = guest.ssh("sudo -n cat /var/log/bakery/first-boot.log").stdout
        assert log.count("== step 1/") == 1, log[-2000:]

        # After a reboot: nothing unpacked again, nothing of first boot again.
        unpacked = guest.ssh(f"sudo -n stat -c %Y {MARK}").stdout
        steps = log.count("== step ")
        guest.reboot()
        guest.wait_ssh(timeout=400)
        guest.wait_https(host=HOST, timeout=300)
        assert guest.ssh(f"sudo -n stat -c %Y {MARK}").stdout == unpacked
        assert guest.ssh("sudo -n cat /var/log/bakery/first-boot.log").stdout.count("== step ") == steps
        assert guest.first_boot_status() == "ready"
    finally:
        repo.close()
