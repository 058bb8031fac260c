"""SD-card baking with real tools: mtools writes, fsck.vfat checks, xz compresses."""

from __future__ import annotations

import hashlib
import os
import stat
import subprocess
from pathlib import Path

import pytest
from conftest import require_tool

from bakery.errors import BakeryError
from bakery.outputs.partitions import find_boot_partition
from bakery.outputs.sdimage import (
    BootKind,
    DirectoryBootFS,
    ImageBootFS,
    ImageError,
    _check_cmdline_edit,
    bake_boot_dir,
    bake_image,
    detect_boot_kind,
    firstrun_params,
    nocloud_param,
    set_cmdline_params,
)
from pi_images import (
    RPIOS_CMDLINE,
    UBUNTU_CMDLINE,
    build_image,
    fsck_boot,
    mdir_names,
    mtype,
    rpios_cloud_init_files,
    rpios_firstrun_files,
    run,
    ubuntu_files,
)

USER_DATA = b"#cloud-config\nhostname: microblog\nmanage_etc_hosts: true\n"
NETWORK_CONFIG = (
    b"network:\n  version: 2\n  wifis:\n    wlan0:\n      dhcp4: true\n"
    b"      regulatory-domain: GB\n      access-points:\n        home:\n          password: \"0123\"\n"
)
META_DATA = b"instance-id: bakery-7f3a\n"
INSTANCE = "bakery-7f3a"
FIRSTRUN = b"#!/bin/bash\nset -e\necho first boot\n"


def cloud_files(kind: BootKind) -> dict[str, bytes]:
    if kind is BootKind.RPIOS_FIRSTRUN:
        raise ImageError(
            f"{kind.value} has no cloud-init: use a recent Raspberry Pi OS with cloud-init "
            "or Ubuntu Server for Raspberry Pi"
        )
    return {"user-data": USER_DATA, "meta-data": META_DATA, "network-config": NETWORK_CONFIG}


def any_files(kind: BootKind) -> dict[str, bytes]:
    if kind is BootKind.RPIOS_FIRSTRUN:
        return {"firstrun.sh": FIRSTRUN}
    return cloud_files(kind)


def edit_cmdline(cmdline: str, kind: BootKind) -> str:
    if kind is BootKind.RPIOS_FIRSTRUN:
        return set_cmdline_params(cmdline, firstrun_params())
    return set_cmdline_params(cmdline, [nocloud_param(INSTANCE)])


@pytest.fixture(autouse=True)
def _tools():
    for tool in ("mcopy", "mdir", "mtype", "sfdisk", "mkfs.vfat", "fsck.vfat"):
        require_tool(tool)


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def assert_baked(image, tmp_path, path=None, *, expect_files=None, cmdline_name="cmdline.txt",
                 original_cmdline=RPIOS_CMDLINE, root_hash=None):
    """The checks every baked image must pass."""
    path = path or image.path
    fsck_boot(image, tmp_path, path)
    names = mdir_names(image, path)
    folded = [n.casefold() for n in names]
    assert len(folded) == len(set(folded)), f"duplicate names on the boot partition: {names}"
    for name, data in (expect_files or cloud_files(BootKind.RPIOS_CLOUD_INIT)).items():
        assert mtype(image, name, path) == data, name
    cmdline = mtype(image, cmdline_name, path).decode()
    assert cmdline.count("\n") <= 1 and cmdline.endswith("\n")
    kept = cmdline.split()
    for param in original_cmdline.split():
        assert param in kept, f"{param} lost from cmdline.txt"
    if root_hash is not None:
        assert image.root_hash(path) == root_hash
    return cmdline


def no_leftovers(folder: Path, *expected: str) -> None:
    assert sorted(p.name for p in folder.iterdir()) == sorted(expected)


# --------------------------------------------------------------------------
# Partition tables

@pytest.mark.parametrize("scheme", ["mbr", "gpt"])
def test_finds_the_fat_boot_partition_like_sfdisk(tmp_path, scheme):
    image = build_image(tmp_path / "pi.img", rpios_cloud_init_files(), scheme=scheme)
    import json
    table = json.loads(run("sfdisk", "--json", str(image.path)).stdout)["partitiontable"]
    first = table["partitions"][0]
    found = find_boot_partition(image.path)
    assert found.partition.number == 1
    assert found.partition.scheme == scheme
    assert found.partition.start == first["start"] * 512 == image.boot_start
    assert found.partition.size == first["size"] * 512
    assert found.fat.fat_type == "FAT32"
    assert found.fat.label == "bootfs"


# --------------------------------------------------------------------------
# Image kinds

def test_detects_raspberry_pi_os_with_cloud_init(tmp_path):
    image = build_image(tmp_path / "pi.img", rpios_cloud_init_files())
    boot = ImageBootFS(image.path, find_boot_partition(image.path), tmp_path)
    assert detect_boot_kind(boot) is BootKind.RPIOS_CLOUD_INIT


def test_detects_raspberry_pi_os_without_cloud_init(tmp_path):
    image = build_image(tmp_path / "pi.img", rpios_firstrun_files())
    boot = ImageBootFS(image.path, find_boot_partition(image.path), tmp_path)
    assert detect_boot_kind(boot) is BootKind.RPIOS_FIRSTRUN


def test_detects_ubuntu_by_its_label(tmp_path):
    files = ubuntu_files()
    del files["README"]
    files["cmdline.txt"] = RPIOS_CMDLINE.encode()   # only the label says Ubuntu
    image = build_image(tmp_path / "ubuntu.img", files, label="system-boot")
    boot = ImageBootFS(image.path, find_boot_partition(image.path), tmp_path)
    assert boot.label == "system-boot"
    assert detect_boot_kind(boot) is BootKind.UBUNTU_PI


def test_detects_ubuntu_in_a_mounted_card_from_its_files(tmp_path):
    card = tmp_path / "system-boot"
    card.mkdir()
    for name, data in ubuntu_files().items():
        (card / name).write_bytes(data)
    assert detect_boot_kind(DirectoryBootFS(card)) is BootKind.UBUNTU_PI
    (card / "README").unlink()                       # the cmdline alone says so too
    assert detect_boot_kind(DirectoryBootFS(card)) is BootKind.UBUNTU_PI


def test_detection_ignores_the_file_name(tmp_path):
    image = build_image(tmp_path / "ubuntu-24.04-raspi.img", rpios_firstrun_files())
    boot = ImageBootFS(image.path, find_boot_partition(image.path), tmp_path)
    assert detect_boot_kind(boot) is BootKind.RPIOS_FIRSTRUN


# --------------------------------------------------------------------------
# Baking: the four forms

@pytest.mark.parametrize("scheme", ["mbr", "gpt"])
def test_bake_a_copy(tmp_path, scheme):
    image = build_image(tmp_path / "raspios.img", rpios_cloud_init_files(), scheme=scheme)
    source_hash = sha256(image.path)
    outside = image.outside_boot_hash()
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    output = out_dir / "pi.img"

    report = bake_image(image.path, output, files_for=cloud_files, cmdline_edit=edit_cmdline)

    assert report.kind is BootKind.RPIOS_CLOUD_INIT
    assert sorted(report.written) == ["cmdline.txt", "meta-data", "network-config", "user-data"]
    cmdline = assert_baked(image, tmp_path, output, root_hash=image.root_hash())
    assert f"ds=nocloud;i={INSTANCE}" in cmdline.split()
    assert image.outside_boot_hash(output) == outside        # table, root, GPT backup
    assert sha256(image.path) == source_hash                 # the source is untouched
    assert output.stat().st_size == image.path.stat().st_size
    assert stat.S_IMODE(output.stat().st_mode) == 0o600      # user-data holds secrets
    assert mtype(image, "kernel8.img", output) == rpios_cloud_init_files()["kernel8.img"]
    no_leftovers(out_dir, "pi.img")


def test_bake_in_place(tmp_path):
    image = build_image(tmp_path / "pi.img", rpios_cloud_init_files(), scheme="gpt")
    outside = image.outside_boot_hash()
    report = bake_image(image.path, None, in_place=True, files_for=cloud_files, cmdline_edit=edit_cmdline)
    assert report.image == image.path
    assert_baked(image, tmp_path)
    assert image.outside_boot_hash() == outside
    no_leftovers(tmp_path, "pi.img")


def test_bake_an_xz_image(tmp_path):
    require_tool("xz")
    image = build_image(tmp_path / "raspios.img", rpios_cloud_init_files())
    outside = image.outside_boot_hash()
    subprocess.run(["xz", "-0", "-T0", "-k", str(image.path)], check=True)
    compressed = tmp_path / "raspios.img.xz"
    output = tmp_path / "pi.img"

    report = bake_image(compressed, output, files_for=cloud_files, cmdline_edit=edit_cmdline, progress=False)

    assert report.image == output
    assert_baked(image, tmp_path, output)
    assert image.outside_boot_hash(output) == outside
    no_leftovers(tmp_path, "raspios.img", "raspios.img.xz", "pi.img")


def test_bake_a_mounted_card(tmp_path):
    card = tmp_path / "bootfs"
    card.mkdir()
    for name, data in rpios_cloud_init_files().items():
        (card / name).write_bytes(data)
    (card / "cmdline.txt").rename(card / "CMDLINE.TXT")  # as a FAT mount may show it

    report = bake_boot_dir(card, cloud_files, edit_cmdline)

    assert report.boot_dir == card and report.kind is BootKind.RPIOS_CLOUD_INIT
    assert "cmdline.txt" not in os.listdir(card)           # replaced, not duplicated
    cmdline = (card / "CMDLINE.TXT").read_text()
    assert cmdline.startswith(RPIOS_CMDLINE.strip()) and f"ds=nocloud;i={INSTANCE}" in cmdline
    for name, data in cloud_files(BootKind.RPIOS_CLOUD_INIT).items():
        assert (card / name).read_bytes() == data
    assert not [n for n in os.listdir(card) if n.endswith(".tmp")]


def test_ubuntu_image(tmp_path):
    image = build_image(tmp_path / "ubuntu.img", ubuntu_files(), label="system-boot")
    report = bake_image(image.path, None, in_place=True, files_for=cloud_files, cmdline_edit=edit_cmdline)
    assert report.kind is BootKind.UBUNTU_PI
    assert_baked(image, tmp_path, original_cmdline=UBUNTU_CMDLINE)


def test_upper_case_names_are_replaced_not_duplicated(tmp_path):
    files = rpios_cloud_init_files()
    files["CMDLINE.TXT"] = files.pop("cmdline.txt")
    files["USER-DAT.A"] = b"not user-data\n"            # unrelated short name stays
    files["META-DATA"] = files.pop("meta-data")
    image = build_image(tmp_path / "pi.img", files)

    report = bake_image(image.path, None, in_place=True, files_for=cloud_files, cmdline_edit=edit_cmdline)

    assert "CMDLINE.TXT" in report.written and "META-DATA" in report.written
    cmdline = assert_baked(image, tmp_path, cmdline_name="CMDLINE.TXT")
    assert f"ds=nocloud;i={INSTANCE}" in cmdline
    names = mdir_names(image)
    assert [n for n in names if n.casefold() == "cmdline.txt"] == ["CMDLINE.TXT"]
    assert [n for n in names if n.casefold() == "meta-data"] == ["META-DATA"]
    assert mtype(image, "USER-DAT.A") == b"not user-data\n"


def test_baking_twice_replaces_the_instance_id(tmp_path):
    image = build_image(tmp_path / "pi.img", rpios_cloud_init_files())
    bake_image(image.path, None, in_place=True, files_for=cloud_files, cmdline_edit=edit_cmdline)

    def second(cmdline, kind):
        return set_cmdline_params(cmdline, [nocloud_param("bakery-second")])

    bake_image(image.path, None, in_place=True, files_for=cloud_files, cmdline_edit=second)
    cmdline = assert_baked(image, tmp_path)
    assert [p for p in cmdline.split() if p.startswith("ds=")] == ["ds=nocloud;i=bakery-second"]


def test_without_cmdline_edit_cmdline_is_untouched(tmp_path):
    image = build_image(tmp_path / "pi.img", rpios_cloud_init_files())
    report = bake_image(image.path, None, in_place=True, files_for=cloud_files)
    assert "cmdline.txt" not in report.written
    assert mtype(image, "cmdline.txt") == RPIOS_CMDLINE.encode()
    fsck_boot(image, tmp_path)


def test_firstrun_image_with_a_first_boot_script(tmp_path):
    image = build_image(tmp_path / "bookworm.img", rpios_firstrun_files())
    report = bake_image(image.path, None, in_place=True, files_for=any_files, cmdline_edit=edit_cmdline)
    assert report.kind is BootKind.RPIOS_FIRSTRUN
    cmdline = assert_baked(image, tmp_path, expect_files={"firstrun.sh": FIRSTRUN})
    assert "systemd.run=/boot/firmware/firstrun.sh" in cmdline.split()
    assert "systemd.unit=kernel-command-line.target" in cmdline.split()


def test_user_mtools_configuration_cannot_interfere(tmp_path, monkeypatch):
    broken = "drive z: file=\"/nonexistent\" this is = not valid\n"
    home = tmp_path / "home"
    home.mkdir()
    (home / ".mtoolsrc").write_text(broken)
    (tmp_path / "mtoolsrc").write_text(broken)
    image = build_image(tmp_path / "pi.img", rpios_cloud_init_files())
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("MTOOLSRC", str(tmp_path / "mtoolsrc"))
    failing = subprocess.run(["mdir", "-b", "-i", image.spec, "::/"], capture_output=True)
    assert failing.returncode == 1 and b"Syntax error" in failing.stderr   # what users would hit

    bake_image(image.path, None, in_place=True, files_for=cloud_files)

    monkeypatch.undo()
    assert_baked(image, tmp_path)


def test_mcopy_without_overwrite_fails_silently_on_a_name_clash(tmp_path):
    """Why every mcopy gets -o and every exit code is checked."""
    image = build_image(tmp_path / "pi.img", rpios_cloud_init_files())
    local = tmp_path / "user-data"
    local.write_bytes(b"new\n")
    env = {**os.environ, "MTOOLS_SKIP_CHECK": "1"}
    clash = subprocess.run(["mcopy", "-i", image.spec, str(local), "::/user-data"],
                           capture_output=True, env=env, stdin=subprocess.DEVNULL)
    assert clash.returncode == 1
    assert mtype(image, "user-data") != b"new\n"


def test_copy_stays_sparse(tmp_path):
    image = build_image(tmp_path / "pi.img", rpios_cloud_init_files())
    output = tmp_path / "baked.img"
    bake_image(image.path, output, files_for=cloud_files)
    allocated = output.stat().st_blocks * 512
    assert allocated < output.stat().st_size // 4, f"{allocated} bytes allocated"


# --------------------------------------------------------------------------
# cmdline.txt

def test_set_cmdline_params_keeps_everything_and_stays_one_line():
    line = "console=serial0,115200 console=tty1 root=PARTUUID=x-02 rootwait quiet\n"
    once = set_cmdline_params(line, [nocloud_param("a"), "splash"])
    twice = set_cmdline_params(once, [nocloud_param("b"), "splash"])
    assert once == "console=serial0,115200 console=tty1 root=PARTUUID=x-02 rootwait quiet ds=nocloud;i=a splash\n"
    assert twice == once.replace("i=a", "i=b")
    assert set_cmdline_params("a b", ["c=1"]) == "a b c=1"


def test_nocloud_param_refuses_what_breaks_the_command_line():
    with pytest.raises(ValueError):
        nocloud_param("two words")
    with pytest.raises(ValueError):
        nocloud_param("a;s=http://evil/")


def test_a_cmdline_edit_must_keep_parameters_and_one_line():
    _check_cmdline_edit("a b=1 c\n", "a b=2 c d\n")
    with pytest.raises(ValueError, match="dropped original parameters: c"):
        _check_cmdline_edit("a b=1 c\n", "a b=1\n")
    with pytest.raises(ValueError, match="one line"):
        _check_cmdline_edit("a b\n", "a b\nc\n")


def test_a_bad_cmdline_edit_writes_nothing(tmp_path):
    image = build_image(tmp_path / "pi.img", rpios_cloud_init_files())
    before = sha256(image.path)
    with pytest.raises(ValueError):
        bake_image(image.path, None, in_place=True, files_for=cloud_files,
                   cmdline_edit=lambda line, kind: "root=/dev/sda2\n")
    assert sha256(image.path) == before


# --------------------------------------------------------------------------
# Refusals: each says what is wrong and what to do

def refuse(match, *args, **kwargs):
    kwargs.setdefault("files_for", cloud_files)
    with pytest.raises(ImageError, match=match) as caught:
        bake_image(*args, **kwargs)
    return str(caught.value)


def test_refuses_a_missing_image(tmp_path):
    refuse("image not found: .*nope.img", tmp_path / "nope.img", tmp_path / "pi.img")


def test_refuses_a_file_without_partition_table(tmp_path):
    junk = tmp_path / "photo.img"
    junk.write_bytes(os.urandom(1 << 20))
    message = refuse("no partition table", junk, tmp_path / "pi.img")
    assert "Raspberry Pi OS or Ubuntu Server for Raspberry Pi image" in message
    no_leftovers(tmp_path, "photo.img")


def test_refuses_an_image_without_fat_partition(tmp_path):
    disk = tmp_path / "linux.img"
    with open(disk, "wb") as fh:
        fh.truncate(16 << 20)
    run("sfdisk", "--quiet", str(disk), input=b"label: dos\nstart=2048, type=83\n")
    refuse(r"no FAT boot partition \(partitions found: 1: type 0x83\)", disk, tmp_path / "pi.img")
    no_leftovers(tmp_path, "linux.img")


def test_refuses_a_fat_typed_partition_that_is_not_formatted(tmp_path):
    disk = tmp_path / "blank.img"
    with open(disk, "wb") as fh:
        fh.truncate(16 << 20)
    run("sfdisk", "--quiet", str(disk), input=b"label: dos\nstart=2048, type=c\n")
    refuse("partition 1 \\(type 0x0c\\) is not formatted as FAT", disk, None, in_place=True)


@pytest.mark.parametrize("missing", ["cmdline.txt", "config.txt"])
def test_refuses_a_boot_partition_without_pi_boot_files(tmp_path, missing):
    files = rpios_cloud_init_files()
    del files[missing]
    image = build_image(tmp_path / "other.img", files)
    before = sha256(image.path)
    message = refuse(f"not a Raspberry Pi boot partition: it has no {missing}", image.path, None, in_place=True)
    assert "Use a Raspberry Pi OS or Ubuntu Server for Raspberry Pi image" in message
    assert sha256(image.path) == before


def test_refuses_output_equal_to_input(tmp_path):
    image = build_image(tmp_path / "pi.img", rpios_cloud_init_files())
    before = sha256(image.path)
    refuse("is the input image: use --in-place", image.path, image.path)
    refuse("is the input image", image.path, tmp_path / "sub" / ".." / "pi.img")
    os.link(image.path, tmp_path / "hardlink.img")
    refuse("is the input image", image.path, tmp_path / "hardlink.img")
    assert sha256(image.path) == before


def test_refuses_in_place_on_xz(tmp_path):
    xz = tmp_path / "raspios.img.xz"
    xz.write_bytes(b"\xfd7zXZ\x00")
    refuse(r"compressed and cannot be baked in place: write a baked copy with -o raspios.img", xz, None, in_place=True)


def test_refuses_in_place_with_another_output(tmp_path):
    image = build_image(tmp_path / "pi.img", rpios_cloud_init_files())
    refuse("either --in-place or an output file", image.path, tmp_path / "other.img", in_place=True)


def test_refuses_without_output(tmp_path):
    image = build_image(tmp_path / "pi.img", rpios_cloud_init_files())
    refuse("say where to write the baked image", image.path, None)


def test_refuses_a_compressed_output_name(tmp_path):
    image = build_image(tmp_path / "pi.img", rpios_cloud_init_files())
    refuse("uncompressed image: name the output baked.img", image.path, tmp_path / "baked.img.xz")


def test_refuses_a_character_device(tmp_path):
    message = refuse("/dev/null is a device: bakery does not write to cards directly", Path("/dev/null"), None,
                     in_place=True)
    assert "Raspberry Pi Imager" in message and "dd" in message
    image = build_image(tmp_path / "pi.img", rpios_cloud_init_files())
    refuse("/dev/null is a device", image.path, Path("/dev/null"))


def test_refuses_a_block_device():
    devices = [Path("/dev", n) for n in sorted(os.listdir("/dev"))
               if stat.S_ISBLK(os.stat(Path("/dev", n)).st_mode)] if os.path.isdir("/dev") else []
    if not devices:
        pytest.skip("no block device in /dev to point at")
    refuse("is a device: bakery does not write to cards directly.*Raspberry Pi Imager", devices[0], None,
           in_place=True)


def test_refuses_a_folder_as_image(tmp_path):
    refuse("is a folder: for a mounted boot partition use --boot-dir", tmp_path, tmp_path / "pi.img")


def test_refuses_a_truncated_image(tmp_path):
    image = build_image(tmp_path / "pi.img", rpios_cloud_init_files())
    with open(image.path, "r+b") as fh:
        fh.truncate(image.boot_start + image.boot_size // 2)
    refuse("the image is truncated", image.path, tmp_path / "baked.img")
    no_leftovers(tmp_path, "pi.img")


def test_refuses_a_damaged_xz_and_leaves_nothing(tmp_path):
    require_tool("xz")
    image = build_image(tmp_path / "raspios.img", rpios_cloud_init_files())
    subprocess.run(["xz", "-0", "-T0", str(image.path)], check=True)
    compressed = tmp_path / "raspios.img.xz"
    data = compressed.read_bytes()
    compressed.write_bytes(data[: len(data) // 2])
    refuse("incomplete|not a valid .xz", compressed, tmp_path / "pi.img")
    no_leftovers(tmp_path, "raspios.img.xz")


def test_a_refusing_renderer_leaves_nothing_behind(tmp_path):
    image = build_image(tmp_path / "bookworm.img", rpios_firstrun_files())
    before = sha256(image.path)
    message = refuse("has no cloud-init: use a recent Raspberry Pi OS with cloud-init", image.path,
                     tmp_path / "pi.img")
    assert "Bookworm" in message
    refuse("has no cloud-init", image.path, None, in_place=True)
    assert sha256(image.path) == before
    no_leftovers(tmp_path, "bookworm.img")


def test_a_refusing_renderer_on_xz_leaves_nothing_behind(tmp_path):
    require_tool("xz")
    image = build_image(tmp_path / "bookworm.img", rpios_firstrun_files())
    subprocess.run(["xz", "-0", "-T0", str(image.path)], check=True)
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    refuse("has no cloud-init", tmp_path / "bookworm.img.xz", out_dir / "pi.img")
    no_leftovers(out_dir)


def test_boot_dir_refusals(tmp_path):
    with pytest.raises(ImageError, match="does not exist: mount the card's boot partition"):
        bake_boot_dir(tmp_path / "nope", cloud_files)
    (tmp_path / "file").write_text("x")
    with pytest.raises(ImageError, match="is not a folder"):
        bake_boot_dir(tmp_path / "file", cloud_files)
    rootfs = tmp_path / "rootfs"
    (rootfs / "boot" / "firmware").mkdir(parents=True)
    (rootfs / "boot" / "firmware" / "cmdline.txt").write_text(RPIOS_CMDLINE)
    with pytest.raises(ImageError, match="looks like the root file system; the boot partition is .*boot/firmware"):
        bake_boot_dir(rootfs, cloud_files)
    other = tmp_path / "usbstick"
    other.mkdir()
    (other / "holiday.jpg").write_bytes(b"jpeg")
    with pytest.raises(ImageError, match="not a Raspberry Pi boot partition: it has no cmdline.txt or config.txt"):
        bake_boot_dir(other, cloud_files)
    assert os.listdir(other) == ["holiday.jpg"]


def test_refusals_exit_2_and_failures_exit_1(tmp_path, monkeypatch):
    error = ImageError("x")
    assert isinstance(error, BakeryError) and error.exit_code == 2
    image = build_image(tmp_path / "pi.img", rpios_cloud_init_files())
    empty = tmp_path / "bin"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))
    with pytest.raises(ImageError, match="mdir is not installed.*apt install mtools") as caught:
        bake_image(image.path, None, in_place=True, files_for=cloud_files)
    assert caught.value.exit_code == 1


@pytest.mark.skipif(os.geteuid() == 0, reason="root can write to read-only files")
def test_refuses_in_place_on_a_read_only_image(tmp_path):
    image = build_image(tmp_path / "pi.img", rpios_cloud_init_files())
    image.path.chmod(0o444)
    refuse("cannot bake .* in place: it is not writable", image.path, None, in_place=True)


def test_nothing_to_write_leaves_the_image_as_it_was(tmp_path):
    image = build_image(tmp_path / "pi.img", rpios_cloud_init_files())
    before = sha256(image.path)
    report = bake_image(image.path, None, in_place=True, files_for=lambda kind: {})
    assert report.written == [] and sha256(image.path) == before
