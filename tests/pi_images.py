"""Small Raspberry-Pi-like disk images for the SD-image tests, made without root.

Layout (64 MiB, like the real images scaled down): a partition table (MBR or
GPT), a FAT32 boot partition at sector 8192 made with
``mkfs.vfat --offset`` (no loop device), files copied in with mtools, then a
"root" partition filled with seeded random bytes at both ends, so any stray
write into it changes its hash.
"""

from __future__ import annotations

import hashlib
import os
import random
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from conftest import require_tool

SECTOR = 512
IMAGE_MIB = 64
BOOT_START = 8192             # sectors, as Raspberry Pi OS and Ubuntu do
BOOT_SECTORS = 98304          # 48 MiB
ROOT_START = BOOT_START + BOOT_SECTORS
GPT_BACKUP_SECTORS = 34
MTOOLS_ENV = {**os.environ, "MTOOLS_SKIP_CHECK": "1"}

RPIOS_CMDLINE = (
    "console=serial0,115200 console=tty1 root=PARTUUID=2e4a6d3b-02 rootfstype=ext4 "
    "fsck.repair=yes rootwait quiet init=/usr/lib/raspberrypi-sys-mods/firstboot\n"
)
UBUNTU_CMDLINE = (
    "console=serial0,115200 multipath=off dwc_otg.lpm_enable=0 console=tty1 "
    "root=LABEL=writable rootfstype=ext4 rootwait fixrtc quiet splash\n"
)
CONFIG_TXT = b"# http://rptl.io/configtxt\ndtparam=audio=on\ncamera_auto_detect=1\n[all]\n"
STOCK_META_DATA = b"dsmode: local\ninstance_id: rpios-image\n"
STOCK_USER_DATA = b"#cloud-config\n# commented-out examples\nssh_pwauth: false\n"
STOCK_NETWORK_CONFIG = b"# netplan-compatible configuration\n#network:\n#  version: 2\n"
UBUNTU_README = b"The Boot Partition\n\nThis file belongs to the boot partition of the Ubuntu Server for Raspberry Pi.\n"


def run(*command: str, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(command, check=True, capture_output=True, env=MTOOLS_ENV, **kwargs)


@dataclass
class PiImage:
    path: Path
    boot_start: int           # bytes
    boot_size: int            # bytes
    root_start: int           # bytes
    root_size: int            # bytes

    @property
    def spec(self) -> str:
        return f"{self.path}@@{self.boot_start}"

    def root_hash(self, path: Path | None = None) -> str:
        return _hash_range(path or self.path, self.root_start, self.root_size)

    def outside_boot_hash(self, path: Path | None = None) -> str:
        """Everything but the boot partition: table, gaps, root, GPT backup."""
        path = path or self.path
        digest = hashlib.sha256()
        digest.update(_hash_range(path, 0, self.boot_start).encode())
        end = self.boot_start + self.boot_size
        digest.update(_hash_range(path, end, path.stat().st_size - end).encode())
        return digest.hexdigest()


def _hash_range(path: Path, start: int, length: int) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        fh.seek(start)
        while length > 0:
            block = fh.read(min(length, 1 << 20))
            if not block:
                break
            digest.update(block)
            length -= len(block)
    return digest.hexdigest()


def build_image(
    path: Path,
    files: dict[str, bytes],
    *,
    scheme: str = "mbr",
    label: str = "bootfs",
    dirs: tuple[str, ...] = ("overlays",),
) -> PiImage:
    """A Pi-like image at ``path`` whose boot partition holds ``files`` (names as given)."""
    for tool in ("sfdisk", "mkfs.vfat", "mcopy", "mmd"):
        require_tool(tool)
    total = IMAGE_MIB * 1024 * 1024 // SECTOR
    root_end = total - (GPT_BACKUP_SECTORS if scheme == "gpt" else 0)
    root_sectors = root_end - ROOT_START
    with open(path, "wb") as fh:
        fh.truncate(total * SECTOR)
    if scheme == "mbr":
        table = (
            "label: dos\nlabel-id: 0x2e4a6d3b\n"
            f"start={BOOT_START}, size={BOOT_SECTORS}, type=c\n"
            f"start={ROOT_START}, size={root_sectors}, type=83\n"
        )
    else:
        table = (
            "label: gpt\n"
            f"start={BOOT_START}, size={BOOT_SECTORS}, type=EBD0A0A2-B9E5-4433-87C0-68B6B72699C7, name=boot\n"
            f"start={ROOT_START}, size={root_sectors}, type=0FC63DAF-8483-4772-8E79-3D69D8477DE4, name=root\n"
        )
    run(require_tool("sfdisk"), "--quiet", str(path), input=table.encode())
    run(require_tool("mkfs.vfat"), "-F", "32", "-n", label, "--offset", str(BOOT_START),
        str(path), str(BOOT_SECTORS * SECTOR // 1024))
    image = PiImage(path, BOOT_START * SECTOR, BOOT_SECTORS * SECTOR,
                    ROOT_START * SECTOR, root_sectors * SECTOR)
    for name in dirs:
        run("mmd", "-i", image.spec, f"::/{name}")
    staging = path.parent / f".{path.name}.files"
    staging.mkdir()
    try:
        for name, data in files.items():
            local = staging / name.replace("/", "_")
            local.write_bytes(data)
            run("mcopy", "-i", image.spec, str(local), f"::/{name}")
    finally:
        shutil.rmtree(staging)
    _fill_root(image)
    return image


def _fill_root(image: PiImage) -> None:
    rng = random.Random(image.root_size)
    chunk = 1 << 20
    with open(image.path, "r+b") as fh:
        for offset in (image.root_start, image.root_start + image.root_size - chunk):
            fh.seek(offset)
            fh.write(rng.randbytes(chunk))


def rpios_cloud_init_files() -> dict[str, bytes]:
    return {
        "cmdline.txt": RPIOS_CMDLINE.encode(),
        "config.txt": CONFIG_TXT,
        "issue.txt": b"Raspberry Pi reference 2025-11-24\nGenerated using pi-gen\n",
        "meta-data": STOCK_META_DATA,
        "user-data": STOCK_USER_DATA,
        "network-config": STOCK_NETWORK_CONFIG,
        "kernel8.img": random.Random(8).randbytes(300_000),
    }


def rpios_firstrun_files() -> dict[str, bytes]:
    files = rpios_cloud_init_files()
    for name in ("meta-data", "user-data", "network-config"):
        del files[name]
    return files


def ubuntu_files() -> dict[str, bytes]:
    return {
        "cmdline.txt": UBUNTU_CMDLINE.encode(),
        "config.txt": CONFIG_TXT,
        "README": UBUNTU_README,
        "meta-data": b"instance-id: cloud-image\n",
        "user-data": STOCK_USER_DATA,
        "network-config": STOCK_NETWORK_CONFIG,
        "vmlinuz": random.Random(9).randbytes(200_000),
    }


# Reading a baked image back with the real tools -----------------------------

def mdir_names(image: PiImage, path: Path | None = None) -> list[str]:
    spec = f"{path or image.path}@@{image.boot_start}"
    out = run("mdir", "-a", "-b", "-i", spec, "::/").stdout.decode()
    return [line[3:] for line in out.splitlines() if line.startswith("::/")]


def mtype(image: PiImage, name: str, path: Path | None = None) -> bytes:
    spec = f"{path or image.path}@@{image.boot_start}"
    return run("mtype", "-i", spec, f"::/{name}").stdout


def fsck_boot(image: PiImage, scratch: Path, path: Path | None = None) -> str:
    """``fsck.vfat -n`` on a dd copy of the boot partition (it has no offset option)."""
    fsck = require_tool("fsck.vfat")
    copy = scratch / "boot-partition.fsck"
    with open(path or image.path, "rb") as src, open(copy, "wb") as dst:
        src.seek(image.boot_start)
        remaining = image.boot_size
        while remaining:
            block = src.read(min(remaining, 1 << 20))
            dst.write(block)
            remaining -= len(block)
    result = subprocess.run([fsck, "-n", str(copy)], capture_output=True, text=True)
    copy.unlink()
    assert result.returncode == 0, f"fsck.vfat -n reports problems:\n{result.stdout}{result.stderr}"
    return result.stdout
