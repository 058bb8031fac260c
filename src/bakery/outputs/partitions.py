"""Finding the FAT boot partition inside a disk image file, without root.

This module owns reading partition tables (MBR and GPT) and recognising a FAT
file system from its boot sector. It only reads; writing into the partition
is done by `bakery.outputs.sdimage` through mtools at the offset found here.

Why parse by hand: the alternatives (`losetup -P`, `kpartx`, mounting) need
root, and `sfdisk --json` would add a tool and a second parser of its output
for 100 lines of well-specified binary layout.
"""

from __future__ import annotations

import struct
import uuid
import zlib
from dataclasses import dataclass
from pathlib import Path

SECTOR = 512  # MBR addresses are in 512-byte units on every image file we handle

# MBR partition types that hold FAT: FAT12, FAT16 (<32M), FAT16, FAT32 (CHS),
# FAT32 (LBA), FAT16 (LBA), EFI system. Raspberry Pi OS uses 0x0c, Ubuntu 0x0c.
MBR_FAT_TYPES = {0x01, 0x04, 0x06, 0x0B, 0x0C, 0x0E, 0xEF}
MBR_GPT_PROTECTIVE = 0xEE
MBR_EXTENDED_TYPES = {0x05, 0x0F, 0x85}

GPT_BASIC_DATA = uuid.UUID("ebd0a0a2-b9e5-4433-87c0-68b6b72699c7")
GPT_EFI_SYSTEM = uuid.UUID("c12a7328-f81f-11d2-ba4b-00a0c93ec93b")
GPT_FAT_TYPES = {GPT_BASIC_DATA, GPT_EFI_SYSTEM}


class PartitionError(Exception):
    """The file has no usable FAT partition; the message says why."""


@dataclass(frozen=True)
class Partition:
    number: int          # 1-based, as `fdisk -l` shows it
    start: int           # byte offset in the image
    size: int            # bytes
    type: str            # "0x0c" for MBR, the type GUID for GPT
    scheme: str          # "mbr" or "gpt"

    @property
    def end(self) -> int:
        return self.start + self.size


@dataclass(frozen=True)
class FatInfo:
    fat_type: str        # "FAT12", "FAT16" or "FAT32"
    label: str | None    # volume label from the boot sector, None for "NO NAME"


@dataclass(frozen=True)
class BootPartition:
    partition: Partition
    fat: FatInfo


def read_partitions(path: Path) -> list[Partition]:
    """All primary partitions of the image at ``path``, MBR or GPT."""
    with open(path, "rb") as fh:
        mbr = fh.read(SECTOR)
        if len(mbr) < SECTOR or mbr[510:512] != b"\x55\xaa":
            raise PartitionError("it has no partition table (no MBR boot signature)")
        entries = _mbr_entries(mbr)
        if any(type_ == MBR_GPT_PROTECTIVE for _, type_, _, _ in entries):
            return _gpt_partitions(fh)
    return [
        Partition(number, lba * SECTOR, count * SECTOR, f"0x{type_:02x}", "mbr")
        for number, type_, lba, count in entries
        if type_ != 0 and count > 0
    ]


def find_boot_partition(path: Path) -> BootPartition:
    """The first FAT partition of the image, confirmed by its boot sector.

    The Raspberry Pi firmware boots from the first FAT partition, so that is
    the one to write into; a FAT-typed partition whose first sector is not a
    FAT boot sector is skipped (and named in the error if nothing else fits).
    """
    partitions = read_partitions(path)
    file_size = path.stat().st_size
    rejected: list[str] = []
    with open(path, "rb") as fh:
        for part in partitions:
            if not _is_fat_type(part):
                continue
            if part.end > file_size:
                raise PartitionError(
                    f"partition {part.number} ends at byte {part.end} but the file has only "
                    f"{file_size} bytes: the image is truncated (download it again)"
                )
            fh.seek(part.start)
            fat = parse_fat_boot_sector(fh.read(SECTOR))
            if fat is None:
                rejected.append(f"partition {part.number} (type {part.type}) is not formatted as FAT")
                continue
            return BootPartition(part, fat)
    found = ", ".join(f"{p.number}: type {p.type}" for p in partitions) or "none"
    detail = "; ".join(rejected)
    raise PartitionError(
        "it has no FAT boot partition (partitions found: "
        f"{found}){'; ' + detail if detail else ''}"
    )


def parse_fat_boot_sector(sector: bytes) -> FatInfo | None:
    """FAT type and label if ``sector`` is a plausible FAT boot sector, else None."""
    if len(sector) < SECTOR or sector[510:512] != b"\x55\xaa" or sector[0] not in (0xEB, 0xE9):
        return None
    bytes_per_sector, sectors_per_cluster, reserved, fats, root_entries = struct.unpack_from(
        "<HBHBH", sector, 11
    )
    sectors_per_fat16 = struct.unpack_from("<H", sector, 22)[0]
    if bytes_per_sector not in (512, 1024, 2048, 4096):
        return None
    if sectors_per_cluster == 0 or sectors_per_cluster & (sectors_per_cluster - 1):
        return None
    if reserved == 0 or fats == 0:
        return None
    if root_entries == 0 and sectors_per_fat16 == 0:
        fat_type, label_at = "FAT32", 71
    else:
        fat_type, label_at = ("FAT12" if sector[54:59] == b"FAT12" else "FAT16"), 43
    raw_label = sector[label_at:label_at + 11].decode("ascii", "replace").rstrip(" \x00")
    label = None if raw_label in ("", "NO NAME") else raw_label
    return FatInfo(fat_type, label)


def _is_fat_type(part: Partition) -> bool:
    if part.scheme == "mbr":
        return int(part.type, 16) in MBR_FAT_TYPES
    return uuid.UUID(part.type) in GPT_FAT_TYPES


def _mbr_entries(mbr: bytes) -> list[tuple[int, int, int, int]]:
    entries = []
    for index in range(4):
        entry = mbr[446 + 16 * index: 446 + 16 * (index + 1)]
        type_ = entry[4]
        lba, count = struct.unpack_from("<II", entry, 8)
        if type_ in MBR_EXTENDED_TYPES:
            continue  # logical partitions never hold a Pi boot partition
        entries.append((index + 1, type_, lba, count))
    return entries


def _gpt_partitions(fh) -> list[Partition]:
    # Images are made with 512-byte sectors; a 4Kn image has its header at 4096.
    for lba_size in (512, 4096):
        fh.seek(lba_size)
        header = fh.read(92)
        if header[:8] == b"EFI PART":
            break
    else:
        raise PartitionError("its MBR says GPT but there is no GPT header")
    header_size = struct.unpack_from("<I", header, 12)[0]
    fh.seek(lba_size)
    header = fh.read(max(header_size, 92))
    stored_crc = struct.unpack_from("<I", header, 16)[0]
    zeroed = header[:16] + b"\0\0\0\0" + header[20:header_size]
    if zlib.crc32(zeroed) != stored_crc:
        raise PartitionError("its GPT header is corrupt (checksum mismatch)")
    entries_lba, count, entry_size = struct.unpack_from("<QII", header, 72)
    if entry_size < 128 or count > 1024:
        raise PartitionError("its GPT header describes an impossible partition array")
    fh.seek(entries_lba * lba_size)
    table = fh.read(count * entry_size)
    partitions = []
    for index in range(count):
        entry = table[index * entry_size:(index + 1) * entry_size]
        if len(entry) < 128 or entry[:16] == bytes(16):
            continue
        type_guid = uuid.UUID(bytes_le=bytes(entry[:16]))
        first, last = struct.unpack_from("<QQ", entry, 32)
        partitions.append(
            Partition(index + 1, first * lba_size, (last - first + 1) * lba_size, str(type_guid), "gpt")
        )
    return partitions
