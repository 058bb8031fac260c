"""The NoCloud seed ISO, checked with the tools that read real ISOs: isoinfo
(genisoimage) and blkid (util-linux)."""

from __future__ import annotations

import os
import stat
import subprocess
import sys

import pytest
import yaml

from conftest import REPO, require_tool, run_bakery
from bakery.errors import UsageError
from bakery.outputs.seed import SeedError, build_seed_iso, iso9660_name, meta_data, write_seed_iso

EXAMPLE = REPO / "examples" / "microblog.yaml"

USER_DATA = b"#cloud-config\nhostname: web1\nruncmd:\n  - [echo, \"caf\xc3\xa9 $HOME\"]\n"
NETWORK_CONFIG = b"version: 2\nethernets:\n  eth0:\n    dhcp4: true\n"


def seed_files(user_data: bytes = USER_DATA) -> dict[str, bytes]:
    return {"user-data": user_data, "meta-data": meta_data("iid-web1", "web1")}


def isoinfo(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([require_tool("isoinfo"), *args], capture_output=True, check=True)


def test_volume_label_and_joliet_rock_ridge(tmp_path):
    iso = write_seed_iso(tmp_path / "seed.iso", seed_files())
    info = isoinfo("-d", "-i", str(iso)).stdout.decode()
    assert "Volume id: cidata" in info
    assert "Joliet with UCS level 3 found" in info
    assert "Rock Ridge signatures version 1 found" in info


def test_files_extract_byte_equal_through_joliet_and_rock_ridge(tmp_path):
    files = seed_files()
    files["network-config"] = NETWORK_CONFIG
    iso = write_seed_iso(tmp_path / "seed.iso", files)
    for name, content in files.items():
        assert isoinfo("-J", "-x", f"/{name}", "-i", str(iso)).stdout == content
        assert isoinfo("-R", "-x", f"/{name}", "-i", str(iso)).stdout == content
    rr_listing = isoinfo("-R", "-l", "-i", str(iso)).stdout.decode()
    for name in files:
        assert f" {name} " in rr_listing or rr_listing.rstrip().endswith(name)


def test_plain_iso9660_names_match_cloud_localds(tmp_path):
    # genisoimage -volid cidata -joliet -rock (what cloud-localds runs) gives these.
    iso = write_seed_iso(tmp_path / "seed.iso", {**seed_files(), "network-config": NETWORK_CONFIG})
    listing = isoinfo("-l", "-i", str(iso)).stdout.decode()
    for short in ("USER_DAT.;1", "META_DAT.;1", "NETWORK_.;1"):
        assert short in listing
    assert iso9660_name("user-data") == "USER_DAT.;1"


def test_blkid_sees_cidata(tmp_path):
    iso = write_seed_iso(tmp_path / "seed.iso", seed_files())
    blkid = require_tool("blkid")
    result = subprocess.run([blkid, "-p", "-o", "export", str(iso)], capture_output=True, text=True, check=True)
    fields = dict(line.split("=", 1) for line in result.stdout.splitlines())
    assert fields["LABEL"] == "cidata"
    assert fields["TYPE"] == "iso9660"


def test_two_builds_are_byte_identical_whatever_the_clock_and_timezone(tmp_path):
    first = build_seed_iso(seed_files())
    # Another process, another timezone, a later wall clock.
    code = (
        "import sys; from bakery.outputs.seed import build_seed_iso, meta_data;"
        f"sys.stdout.buffer.write(build_seed_iso({{'user-data': {USER_DATA!r}, 'meta-data': meta_data('iid-web1', 'web1')}}))"
    )
    env = {k: v for k, v in os.environ.items() if k != "SOURCE_DATE_EPOCH"}
    env.update(TZ="Asia/Kolkata", PYTHONPATH=str(REPO / "src"))
    second = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, check=True).stdout
    assert first == second
    assert build_seed_iso(seed_files()) == first


def test_source_date_epoch_sets_the_dates(tmp_path, monkeypatch):
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1700000000")  # 2023-11-14 22:13:20 UTC
    iso = write_seed_iso(tmp_path / "seed.iso", seed_files())
    listing = isoinfo("-l", "-i", str(iso)).stdout.decode()
    assert "Nov 14 2023" in listing
    info = isoinfo("-d", "-i", str(iso)).stdout.decode()
    assert "Volume id: cidata" in info
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "soon")
    with pytest.raises(UsageError, match="SOURCE_DATE_EPOCH"):
        build_seed_iso(seed_files())


def test_written_atomically_with_mode_0600(tmp_path):
    target = tmp_path / "out" / "seed.iso"
    write_seed_iso(target, seed_files())
    assert stat.S_IMODE(target.stat().st_mode) == 0o600
    assert sorted(p.name for p in target.parent.iterdir()) == ["seed.iso"]
    # A failure leaves the previous file untouched and no temporary behind.
    before = target.read_bytes()
    with pytest.raises(SeedError):
        write_seed_iso(target, {"user-data": USER_DATA, "../meta-data": b""})
    assert target.read_bytes() == before
    assert sorted(p.name for p in target.parent.iterdir()) == ["seed.iso"]


def test_meta_data_is_nocloud_yaml():
    doc = yaml.safe_load(meta_data("iid-1: x", "web1"))
    assert doc == {"instance-id": "iid-1: x", "local-hostname": "web1"}
    with pytest.raises(SeedError):
        meta_data("", "web1")


@pytest.mark.parametrize(
    "files",
    [
        {},
        {"user/data": b""},
        {"user-data": "text, not bytes"},
        # Both map to USER_DAT.;1 on plain ISO 9660.
        {"user-data": b"", "user_data": b""},
    ],
)
def test_refuses_what_cannot_be_a_seed(files):
    with pytest.raises(SeedError):
        build_seed_iso(files)


def test_seed_from_rendered_example(tmp_path, workstation):
    out = tmp_path / "user-data"
    result = run_bakery(
        ["render", "-c", EXAMPLE, "--target", "generic", "-o", out, "--secrets", tmp_path / "s.yaml"], home=workstation
    )
    assert result.returncode == 0, result.stderr.decode()
    user_data = out.read_bytes()
    iso = write_seed_iso(tmp_path / "seed.iso", seed_files(user_data))
    assert isoinfo("-J", "-x", "/user-data", "-i", str(iso)).stdout == user_data
    assert build_seed_iso(seed_files(user_data)) == iso.read_bytes()
