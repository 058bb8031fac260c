"""Smoke test of the harness itself: a hand-written minimal cloud-config (one
user with the test key) boots, cloud-init finishes, and SSH works. In the
container tier; the VM's harness is proven by the main scenario, and
``BAKERY_E2E_VM=all`` smoke-tests it alone."""

from __future__ import annotations

import pytest
import yaml

from .conftest import tiers
from .guest import make_seed_iso

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.parametrize("tier", tiers(vm=False), indirect=True, scope="module", ids=str),
]


@pytest.fixture(scope="module")
def smoke_vm(tier, boot_guest, ssh_key, tmp_path_factory):
    public_key = ssh_key.with_suffix(".pub").read_text().strip()
    user_data = "#cloud-config\n" + yaml.safe_dump({
        "users": [{
            "name": "smoke",
            "shell": "/bin/bash",
            "sudo": "ALL=(ALL) NOPASSWD:ALL",
            "lock_passwd": True,
            "ssh_authorized_keys": [public_key],
        }],
        "manage_etc_hosts": True,
    })
    seed = make_seed_iso(tmp_path_factory.mktemp("seed") / "seed.iso", {
        "user-data": user_data.encode(),
        "meta-data": b"instance-id: smoke-1\nlocal-hostname: smoke\n",
    })
    vm = boot_guest(seed, "smoke", tier=tier)
    vm.wait_ssh()
    vm.wait_boot_finished()
    return vm


def test_ssh_and_sudo(smoke_vm):
    assert smoke_vm.ssh("whoami").stdout.strip() == "smoke"
    assert smoke_vm.ssh("sudo -n whoami").stdout.strip() == "root"


def test_cloud_init_done(smoke_vm):
    status = smoke_vm.ssh("cloud-init status --long", check=False)
    assert "status: done" in status.stdout, status.stdout + status.stderr
