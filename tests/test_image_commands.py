"""The image commands end to end through the CLI: seed, packer, sd-image."""

from __future__ import annotations

import re
import subprocess

import yaml

from conftest import REPO, first_boot_packages, require_tool, run_bakery

PI_EXAMPLE = REPO / "examples" / "raspberry-pi.yaml"
EXAMPLE = REPO / "examples" / "microblog.yaml"


def test_seed_command_writes_cidata_iso(tmp_path, workstation):
    isoinfo = require_tool("isoinfo")
    iso = tmp_path / "seed.iso"
    result = run_bakery(["seed", "-c", EXAMPLE, "-o", iso, "--secrets", tmp_path / "s.yaml"], home=workstation)
    assert result.returncode == 0, result.stderr.decode()
    rendered = run_bakery(["render", "-c", EXAMPLE, "--secrets", tmp_path / "s.yaml"], home=workstation).stdout
    extracted = subprocess.run([isoinfo, "-J", "-i", iso, "-x", "/user-data"], capture_output=True, check=True).stdout
    assert extracted == rendered
    meta = yaml.safe_load(subprocess.run([isoinfo, "-J", "-i", iso, "-x", "/meta-data"], capture_output=True, check=True).stdout)
    assert meta["local-hostname"] == "microblog" and meta["instance-id"].startswith("bakery-")


def test_pi_render_has_pi_defaults(tmp_path, workstation, cloud_init_schema):
    out = tmp_path / "user-data"
    result = run_bakery(["render", "-c", PI_EXAMPLE, "--target", "raspberry-pi", "-o", out, "--secrets", tmp_path / "s.yaml"], home=workstation)
    assert result.returncode == 0, result.stderr.decode()
    cloud_init_schema.assert_valid(out)
    doc = yaml.safe_load(out.read_text())
    assert doc["users"][0]["name"] == "pi"
    packages = first_boot_packages(doc)
    assert "avahi-daemon" in packages and "nginx" not in packages
    assert "sqlite3" in packages and "default-mysql-server" not in packages
    assert doc["runcmd"][0] == ["systemctl", "enable", "--now", "ssh"]
    assert doc["keyboard"] == {"layout": "gb"}
    text = out.read_text()
    assert "0.0.0.0:8000" in text
    assert re.search(r"(-w|--workers)[ =]1\b", text), "one gunicorn worker on a Pi"


def test_sd_image_command_bakes_copy(tmp_path, workstation):
    from pi_images import build_image, mtype, rpios_cloud_init_files

    source = build_image(tmp_path / "raspios.img", rpios_cloud_init_files())
    out = tmp_path / "baked.img"
    env = {"WIFI_SSID": "HomeNet", "WIFI_PASSWORD": "correct horse battery"}
    result = run_bakery(["sd-image", "-c", PI_EXAMPLE, "--image", source.path, "-o", out, "--secrets", tmp_path / "s.yaml"], home=workstation, env=env)
    assert result.returncode == 0, result.stderr.decode()
    baked = source.__class__(**{**source.__dict__, "path": out})
    network = yaml.safe_load(mtype(baked, "network-config"))
    wlan = network["network"]["wifis"]["wlan0"]
    assert wlan["regulatory-domain"] == "GB"
    psk = wlan["access-points"]["HomeNet"]["password"]
    assert len(psk) == 64 and "correct horse" not in mtype(baked, "network-config").decode()
    # wpa_passphrase's derivation (PBKDF2-HMAC-SHA1, 4096 rounds, SSID as salt)
    import hashlib
    assert psk == hashlib.pbkdf2_hmac("sha1", b"correct horse battery", b"HomeNet", 4096, 32).hex()
    assert b"ds=nocloud;i=bakery-" in mtype(baked, "cmdline.txt")
    user_data = mtype(baked, "user-data")
    assert user_data.startswith(b"#cloud-config\n")


def test_sd_image_usage_errors(tmp_path, workstation):
    result = run_bakery(["sd-image", "-c", PI_EXAMPLE, "--image", tmp_path / "x.img"], home=workstation)
    assert result.returncode == 2 and "-o OUT" in result.stderr.decode()
    both = run_bakery(["sd-image", "-c", PI_EXAMPLE, "--boot-dir", tmp_path, "--in-place"], home=workstation)
    assert both.returncode == 2 and "--boot-dir stands alone" in both.stderr.decode()


def test_packer_command_writes_folder(tmp_path, workstation):
    out = tmp_path / "packer"
    result = run_bakery(["packer", "-c", EXAMPLE, "--target", "hetzner", "-o", out, "--secrets", tmp_path / "s.yaml"], home=workstation)
    assert result.returncode == 0, result.stderr.decode()
    names = sorted(p.name for p in out.iterdir())
    assert "hcloud.pkr.hcl" in names and "user-data" in names and "plugins.pkr.hcl" in names
    assert 'ssh_username = "ubuntu"' in (out / "bakery.auto.pkrvars.hcl").read_text()
    linode = run_bakery(["packer", "-c", EXAMPLE, "--target", "linode", "-o", tmp_path / "l", "--secrets", tmp_path / "s.yaml"], home=workstation)
    assert linode.returncode == 2 and "no Packer template for target 'linode'" in linode.stderr.decode()
