"""The two scripts every Packer build runs, on a real guest: the wait for
cloud-init (passes after a clean boot, fails the build after an error) and the
image clean-up, after which the machine boots again as a new instance with
fresh host keys and machine id, the way a server started from the image does.

They run in the container tier (on the VM too with ``BAKERY_E2E_VM=all``):
what they do is files and services, which the container shows as the VM
does; the VM's own boot is proven by the main scenario (tests/e2e/README.md)."""

from __future__ import annotations

import pytest
import yaml

from bakery.outputs.seed import meta_data
from bakery.resources import data_path

from .conftest import tiers
from .guest import generate_ssh_key, make_seed_iso

pytestmark = pytest.mark.e2e

SCRIPTS = data_path("packer") / "scripts"


def user_data(public_key: str, **extra) -> bytes:
    config = {
        "users": [{
            "name": "baker",
            "shell": "/bin/bash",
            "sudo": "ALL=(ALL) NOPASSWD:ALL",
            "lock_passwd": True,
            "ssh_authorized_keys": [public_key],
        }],
        "manage_etc_hosts": True,
        **extra,
    }
    return ("#cloud-config\n" + yaml.safe_dump(config)).encode()


def upload(vm, name: str) -> str:
    # Run as a file, as Packer does: the scripts re-run themselves under sudo.
    path = f"/tmp/{name}"
    vm.ssh(f"cat > {path}", input=(SCRIPTS / name).read_text())
    return path


@pytest.fixture(scope="module", params=tiers(vm=False), ids=str)
def bake_vm(request, boot_guest, ssh_key, tmp_path_factory):
    public_key = ssh_key.with_suffix(".pub").read_text().strip()
    seed = make_seed_iso(tmp_path_factory.mktemp("seed") / "seed.iso", {
        "user-data": user_data(public_key),
        "meta-data": meta_data("bake-1", "bake"),
    })
    vm = boot_guest(seed, "baker", tier=request.param)
    vm.wait_ssh()
    return vm


def test_wait_script_passes_when_cloud_init_is_done(bake_vm):
    # Started as soon as SSH answers, like Packer: it must do the waiting itself.
    result = bake_vm.ssh(f"sh {upload(bake_vm, 'wait-for-cloud-init.sh')}", check=False, timeout=1500)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "cloud-init finished without errors" in result.stdout
    assert bake_vm.ssh("test -e /var/lib/cloud/instance/boot-finished", check=False).returncode == 0


def test_clean_up_removes_per_instance_state(bake_vm, tmp_path):
    temporary_key = generate_ssh_key(tmp_path).with_suffix(".pub").read_text().strip()
    bake_vm.ssh("cat >> ~/.ssh/authorized_keys", input=temporary_key + "\n")
    before = {
        "boot_id": bake_vm.boot_id(),
        "machine_id": bake_vm.ssh("cat /etc/machine-id").stdout.strip(),
        "host_key": bake_vm.ssh("cat /etc/ssh/ssh_host_ed25519_key.pub").stdout.strip(),
    }
    bake_vm.ssh("echo 'history line' > ~/.bash_history")
    script = upload(bake_vm, "clean-image.sh")
    # One session, as in a Packer build: without host keys sshd takes no new
    # connection until the next boot has made new ones.
    result = bake_vm.ssh(
        f"PACKER_SSH_PUBLIC_KEY='{temporary_key}' sh {script} >&2 && "
        "{ ls /etc/ssh/ | grep -c '^ssh_host_' || true; } && "
        "stat -c %s /etc/machine-id && "
        "{ sudo -n test -e /var/lib/cloud/instance && echo instance || echo no-instance; } && "
        "{ sudo -n test -e /var/log/cloud-init.log && echo log || echo no-log; } && "
        "{ test -e ~/.bash_history && echo history || echo no-history; } && "
        "{ readlink /var/lib/dbus/machine-id || echo no-dbus-id; } && "
        "awk '{print $2}' ~/.ssh/authorized_keys | tr '\\n' ' ' && echo && "
        "{ (sleep 2; sudo -n systemctl reboot) > /dev/null 2>&1 & }",
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    assert lines[:5] == ["0", "0", "no-instance", "no-log", "no-history"], result.stdout + result.stderr
    assert lines[5] in ("/etc/machine-id", "no-dbus-id")
    remaining_keys = lines[6].split()
    assert temporary_key.split()[1] not in remaining_keys
    assert bake_vm.ssh_key.with_suffix(".pub").read_text().split()[1] in remaining_keys

    # The next boot is a new instance: cloud-init runs again and makes its own.
    bake_vm.wait_ssh()
    bake_vm.wait_boot_finished()
    assert bake_vm.boot_id() != before["boot_id"]
    assert bake_vm.ssh("cat /etc/machine-id").stdout.strip() not in ("", before["machine_id"])
    assert bake_vm.ssh("cat /etc/ssh/ssh_host_ed25519_key.pub").stdout.strip() != before["host_key"]
    status = bake_vm.ssh("cloud-init status --long", check=False).stdout
    assert "status: done" in status


@pytest.mark.parametrize("tier", tiers(vm=False), ids=str)
def test_wait_script_fails_the_build_when_cloud_init_failed(tier, boot_guest, ssh_key, tmp_path):
    public_key = ssh_key.with_suffix(".pub").read_text().strip()
    seed = make_seed_iso(tmp_path / "seed.iso", {
        "user-data": user_data(public_key, runcmd=[["sh", "-c", "echo broken step >&2; exit 3"]]),
        "meta-data": meta_data("bake-broken-1", "broken"),
    })
    vm = boot_guest(seed, "baker", tier=tier)
    vm.wait_ssh()
    result = vm.ssh(f"sh {upload(vm, 'wait-for-cloud-init.sh')}", check=False, timeout=1500)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "cloud-init reported errors; not building an image from this machine" in result.stderr
    assert "scripts_user" in result.stdout + result.stderr
