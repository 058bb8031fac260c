"""sshd hardening (MISSION step 4): a drop-in that sorts before cloud-init's
own 50-cloud-init.conf, because sshd keeps the first value it reads.
The same on every server: baked into images."""

from __future__ import annotations

from ..templating import render

SSHD_DROPIN = "/etc/ssh/sshd_config.d/10-bakery.conf"


def sshd_dropin(plan) -> str:
    return render("sshd-hardening.conf.j2", plan=plan)


def build(plan) -> dict:
    if not plan.shared:
        return {}
    return {
        "ssh_pwauth": plan.password_authentication,
        "write_files": [{"path": SSHD_DROPIN, "owner": "root:root", "permissions": "0644", "content": sshd_dropin(plan)}],
    }
