"""The config means what it says: every key it accepts has its effect, a
check has no side effects, and a config that does not fit its target is
refused the same way by every command (exit 2, nothing written).

Table-driven where the cases differ only in data."""

from __future__ import annotations

import pytest
import yaml

from conftest import REPO, run_bakery, write_files

FIRST_BOOT = "/usr/local/lib/bakery/first-boot.sh"
BASE = "admin:\n  name: alice\nhost:\n  hostname: web1\n"


def write(tmp_path, text: str):
    path = tmp_path / "bakery.yaml"
    path.write_text(text)
    return path


def first_boot(result) -> str:
    return write_files(yaml.safe_load(result.stdout))[FIRST_BOOT]


# --- firewall.allow -----------------------------------------------------------

def test_firewall_allow_opens_each_port_before_ufw_is_enabled(tmp_path, workstation):
    cfg = write(tmp_path, BASE + "firewall:\n  allow: [8080, \"9000/udp\", \"60000:61000/tcp\", \"22/tcp\"]\n")
    result = run_bakery(["render", "-c", cfg], home=workstation)
    assert result.returncode == 0, result.stderr.decode()
    script = first_boot(result)
    enable = script.index("ufw --force enable")
    rules = [line.strip() for line in script[:enable].splitlines() if line.strip().startswith(("ufw allow ", "ufw limit "))]
    # 22/tcp is there once: the default rule already opens it, rate-limited.
    assert rules == ["ufw limit 22/tcp", "ufw allow 80/tcp", "ufw allow 443/tcp", "ufw allow 8080",
                     "ufw allow 9000/udp", "ufw allow 60000:61000/tcp"]


def test_ssh_is_rate_limited_unless_the_config_says_otherwise(tmp_path, workstation):
    limited = first_boot(run_bakery(["render", "-c", write(tmp_path, BASE)], home=workstation))
    assert "ufw limit 22/tcp" in limited and "ufw allow 22/tcp" not in limited.split("ufw --force enable")[0]
    cfg = write(tmp_path, BASE + "firewall:\n  ssh_rate_limit: false\n")
    allowed = first_boot(run_bakery(["render", "-c", cfg], home=workstation))
    assert "ufw allow 22/tcp" in allowed and "ufw limit" not in allowed


@pytest.mark.parametrize("entry, message", [
    ('"60000:61000"', "a port range needs a protocol, e.g. 60000:61000/tcp"),
    ("70000", "70000 is not a valid port: a port from 1 to 65535"),
    ('"9000:5/tcp"', "the range 9000:5 must go from the lower port to the higher one"),
    ('"0/tcp"', "port 0 is out of range"),
])
def test_firewall_allow_refuses_what_ufw_would_refuse(tmp_path, workstation, entry, message):
    cfg = write(tmp_path, BASE + f"firewall:\n  allow:\n    - 80/tcp\n    - {entry}\n")
    result = run_bakery(["render", "-c", cfg], home=workstation)
    assert result.returncode == 2 and result.stdout == b""
    err = result.stderr.decode()
    assert f"{cfg}:" in err and "firewall.allow[1]" in err and message in err, err


# --- validate is a check -------------------------------------------------------

def test_validate_writes_nothing(tmp_path, workstation):
    secrets = tmp_path / "bakery.secrets.yaml"
    result = run_bakery(["validate", "-c", REPO / "examples" / "microblog.yaml", "--target", "digitalocean",
                         "--secrets", secrets], home=workstation)
    assert result.returncode == 0, result.stderr.decode()
    assert not secrets.exists()


# --- a config that does not fit its target ---------------------------------------

TOO_BIG = BASE.replace("admin:\n", "admin:\n  ssh_import_id:\n"
                       + "".join(f"    - gh:user{i:04d}-with-a-long-name-to-fill-space\n" for i in range(900)), 1)


@pytest.mark.parametrize("command", [
    ["render"],
    ["validate"],
    ["seed", "-o", "{out}/seed.iso"],
    ["packer", "-o", "{out}/packer"],
])
def test_every_command_refuses_user_data_over_the_target_limit(tmp_path, workstation, command):
    cfg = write(tmp_path, TOO_BIG)
    out = tmp_path / "out"
    out.mkdir()
    args = [part.format(out=out) for part in command]
    result = run_bakery([args[0], "-c", cfg, "--target", "linode", *args[1:]], home=workstation)
    assert result.returncode == 2, result.stderr.decode()
    assert "over linode's limit of 16384 bytes" in result.stderr.decode()
    assert result.stdout == b"" and list(out.iterdir()) == []
