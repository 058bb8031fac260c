"""Raspberry Pi specifics (MISSION step 21): SSH switched on (Raspberry Pi OS
ships it disabled), the console keyboard, and the hardware groups the admin
user needs. Wi-Fi is not cloud-config: it goes to network-config (see
outputs/nocloud.py)."""

from __future__ import annotations

from ..targets import SSH_OFF_BY_DEFAULT

PI_GROUPS = ["video", "gpio", "i2c", "spi", "dialout", "plugdev"]


def build(plan) -> dict:
    out: dict = {}
    if not plan.shared:
        return out
    if plan.keyboard:
        out["keyboard"] = {"layout": plan.keyboard}
    if not plan.target.can(SSH_OFF_BY_DEFAULT):
        return out
    # Before the first-boot script, so the Pi is reachable even if a later
    # step fails.
    out["runcmd"] = [["systemctl", "enable", "--now", "ssh"]]
    return out
