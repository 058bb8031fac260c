"""The first-boot script: everything cloud-init has no module for (ufw,
locale, sshd reload, and the app stack), rendered from
cloudinit/first-boot.sh.j2 and started once by runcmd."""

from __future__ import annotations

from ..templating import render
from .layout import paths
from .web import certificate_name

SCRIPT = "/usr/local/lib/bakery/first-boot.sh"


def first_boot_script(plan) -> str:
    cert_name = certificate_name(plan) if plan.web else None
    return render("first-boot.sh.j2", plan=plan, paths=paths(plan), cert_name=cert_name)


def build(plan) -> dict:
    return {
        "write_files": [{"path": SCRIPT, "owner": "root:root", "permissions": "0700", "content": first_boot_script(plan)}],
        # Alone in runcmd, so its exit status is the status cloud-init records.
        "runcmd": [[SCRIPT]],
    }
