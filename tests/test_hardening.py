"""Kernel and login hardening (host.hardening): the files the server gets,
checked with the real tools where one reads them (bash for the login
profile, sshd -T for the drop-in, the running kernel for the parameter
names), and what the switch leaves out when it is off."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from bakery.cloudconfig import assemble
from bakery.steps import firstboot, hardening, packages, ssh

from stack_helpers import make_plan, require_tool


def files(plan) -> dict:
    return {entry["path"]: entry for entry in assemble(plan).get("write_files", [])}


def test_every_kernel_parameter_is_one_linux_has(tmp_path):
    text = files(make_plan(tmp_path))[hardening.SYSCTL_FILE]["content"]
    keys = [line.split(" = ")[0] for line in text.splitlines() if not line.startswith("#")]
    assert keys == list(hardening.SYSCTL)
    # A misspelt name would be skipped by sysctl with a warning, silently weaker.
    # Yama is a module some kernels (this host's, a container's) leave out.
    missing = [key for key in keys if not Path("/proc/sys", *key.split(".")).exists()]
    assert missing in ([], ["kernel.yama.ptrace_scope"]), missing


def test_a_login_shell_gets_no_core_dumps_and_an_idle_logout(tmp_path):
    profile = tmp_path / "hardening.sh"
    profile.write_text(files(make_plan(tmp_path))["/etc/profile.d/60-bakery-hardening.sh"]["content"])
    # /etc/profile sources it in bash and in dash (Debian's sh) login shells.
    subprocess.run([require_tool("shellcheck"), "-s", "dash", str(profile)], check=True)
    for shell in ("bash", "dash"):
        shown = subprocess.run([require_tool(shell), "-c", f". {profile}; ulimit -c; echo $TMOUT; (TMOUT=0) 2>/dev/null || echo fixed"],
                               capture_output=True, text=True, check=True).stdout.split()
        assert shown == ["0", "900", "fixed"], shell


def test_unused_modules_are_refused_but_a_pi_keeps_usb_storage(tmp_path):
    modprobe = "/etc/modprobe.d/60-bakery-hardening.conf"
    server = files(make_plan(tmp_path))[modprobe]["content"]
    (tmp_path / "pi").mkdir()
    pi = files(make_plan(tmp_path / "pi", target="raspberry-pi"))[modprobe]["content"]
    assert "install usb-storage /bin/false" in server and "install sctp /bin/false" in server
    assert "usb-storage" not in pi and "install sctp /bin/false" in pi


def test_the_hardening_packages_and_step_come_with_it(tmp_path):
    plan = make_plan(tmp_path)
    assert set(hardening.PACKAGES) <= set(packages.package_list(plan))
    steps = firstboot.step_names(plan)
    assert steps.index("firewall") < steps.index("harden") < steps.index("services")
    assert "harden" in firstboot.LOCKDOWN
    script = firstboot.first_boot_script(plan)
    assert f"sysctl -q -p {hardening.SYSCTL_FILE}" in script


def test_hardening_off_leaves_the_image_s_settings(tmp_path):
    plan = make_plan(tmp_path, host={"hostname": "web", "hardening": False})
    written = files(plan)
    assert not [path for path in written if "bakery-hardening" in path or path.startswith("/etc/issue")]
    assert not set(hardening.PACKAGES) & set(packages.package_list(plan))
    assert "harden" not in firstboot.step_names(plan)


@pytest.mark.parametrize("stage", ["image", "instance"])
def test_an_image_carries_the_hardening_and_an_instance_does_not_repeat_it(tmp_path, stage):
    from bakery.pipeline import render_config
    from bakery.targets import get_target

    make_plan(tmp_path)  # writes the config
    config = Path(tmp_path) / "config" / "bakery.yaml"
    staged = render_config(config, get_target("generic"), environ={}, home=config.parent, stage=stage,
                           hostname="web1" if stage == "instance" else None).plan
    assert (hardening.SYSCTL_FILE in files(staged)) == (stage == "image")


def test_sshd_takes_the_session_and_keepalive_settings(tmp_path):
    sshd = require_tool("sshd")
    dropin = tmp_path / "10-bakery.conf"
    dropin.write_text(ssh.sshd_dropin(make_plan(tmp_path)))
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(tmp_path / "hostkey")], check=True)
    main = tmp_path / "sshd_config"
    main.write_text(f"Include {dropin}\nHostKey {tmp_path}/hostkey\n")
    Path("/run/sshd").mkdir(exist_ok=True)
    effective = subprocess.run([sshd, "-T", "-f", str(main), "-C", "user=x,host=x,addr=127.0.0.1"],
                               capture_output=True, text=True, check=True).stdout.splitlines()
    for line in ("compression no", "tcpkeepalive no", "clientaliveinterval 300", "clientalivecountmax 2",
                 "maxsessions 4"):
        assert line in effective, line


def test_the_password_hashing_cost_is_set_once_however_often_the_step_runs(tmp_path):
    script = firstboot.first_boot_script(make_plan(tmp_path))
    body = script.split("step_harden() {\n", 1)[1].split("\n}\n", 1)[0]
    login_defs = tmp_path / "login.defs"
    login_defs.write_text("ENCRYPT_METHOD SHA512\n# SHA_CRYPT_MIN_ROUNDS 5000\n#SHA_CRYPT_MAX_ROUNDS 5000\n")
    edit = "\n".join(line for line in body.splitlines() if "login.defs" in line).replace("/etc/login.defs", str(login_defs))
    for _ in range(2):
        subprocess.run([require_tool("bash"), "-c", edit], check=True)
    rounds = hardening.PASSWORD_HASH_ROUNDS
    assert login_defs.read_text() == f"ENCRYPT_METHOD SHA512\nSHA_CRYPT_MIN_ROUNDS {rounds}\nSHA_CRYPT_MAX_ROUNDS {rounds}\n"
