"""The NoCloud file set shared by the seed ISO and the SD-card image:
user-data, meta-data and, when the config has network settings,
network-config (netplan v2)."""

from __future__ import annotations

import hashlib
from typing import Optional

import yaml

from ..fsutil import write_output
from .seed import build_seed_iso, meta_data
from .userdata import user_data


def network_config(plan) -> Optional[dict]:
    """netplan v2 for Wi-Fi; None when the config has no network settings
    (the image's own default, DHCP on Ethernet, then applies)."""
    wifi = plan.wifi
    if wifi is None:
        return None
    access_point: dict = {}
    if wifi.psk:
        # 64 hex digits: the derived PSK, so the passphrase itself is not stored.
        access_point["password"] = wifi.psk
    if wifi.hidden:
        access_point["hidden"] = True
    wlan = {"dhcp4": True, "optional": True, "access-points": {wifi.ssid: access_point}}
    if wifi.country:
        wlan["regulatory-domain"] = wifi.country
    return {"network": {"version": 2, "ethernets": {"eth0": {"dhcp4": True, "optional": True}}, "wifis": {"wlan0": wlan}}}


def instance_id(user_data: bytes, salt: str = "") -> str:
    """An instance id derived from the content: a changed config is a new
    instance, so cloud-init runs the first boot again."""
    return "bakery-" + hashlib.sha256(salt.encode() + user_data).hexdigest()[:16]


def seed_files(plan, user_data: bytes, instance: Optional[str] = None) -> dict:
    files = {
        "user-data": user_data,
        "meta-data": meta_data(instance or instance_id(user_data), plan.hostname or "localhost"),
    }
    net = network_config(plan)
    if net is not None:
        files["network-config"] = yaml.safe_dump(net, sort_keys=False, default_flow_style=False).encode()
    return files


def write_seed(rendered, path, *, never_over=None) -> str:
    """The NoCloud seed ISO of ``rendered`` at ``path``; what was written."""
    write_output(path, build_seed_iso(seed_files(rendered.plan, user_data(rendered))), never_over=never_over)
    return f"wrote {path} (NoCloud seed, volume cidata)"
