"""sshd hardening (MISSION step 4): a drop-in that sorts before cloud-init's
own 50-cloud-init.conf, because sshd keeps the first value it reads.
The same on every server: baked into images."""

from __future__ import annotations

from ..templating import render

SSHD_DROPIN = "/etc/ssh/sshd_config.d/10-bakery.conf"


def sshd_dropin(plan) -> str:
    return render("sshd-hardening.conf.j2", plan=plan)


def build(plan) -> dict:
    # cloud-init makes the Ed25519 host key only: the RSA one, slow to make,
    # is made beside the first-boot steps (first-boot.sh.j2, host_keys).
    config = {"ssh_genkeytypes": ["ed25519"]}
    if plan.shared:
        config["ssh_pwauth"] = plan.password_authentication
        config["write_files"] = [{"path": SSHD_DROPIN, "owner": "root:root", "permissions": "0644",
                                  "content": sshd_dropin(plan)}]
    return config
