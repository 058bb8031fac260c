"""Finding bakery's data folders (cloudinit/, packer/, schemas/) both in a
checkout and in an installed wheel, where they travel as package data."""

from __future__ import annotations

from pathlib import Path

_HERE = Path(__file__).resolve().parent


def data_path(name: str) -> Path:
    """Return the folder ``name`` (``cloudinit``, ``packer`` or ``schemas``)."""
    installed = _HERE / "_data" / name
    if installed.is_dir():
        return installed
    checkout = _HERE.parents[1] / name
    if checkout.is_dir():
        return checkout
    raise FileNotFoundError(f"bakery data folder {name!r} not found (looked in {installed} and {checkout})")
