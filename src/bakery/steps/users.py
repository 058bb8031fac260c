"""The admin user (MISSION step 2-3): sudo without password, SSH keys, locked
password, and root kept out."""

from __future__ import annotations

from ..targets import HARDWARE_GROUPS
from . import raspberry_pi


def build(plan) -> dict:
    admin = plan.admin
    user = {
        "name": admin.name,
        "groups": ["sudo", "adm"] + (raspberry_pi.PI_GROUPS if plan.target.can(HARDWARE_GROUPS) else []),
        "sudo": "ALL=(ALL) NOPASSWD:ALL",
        "shell": admin.shell,
        "lock_passwd": True,
    }
    if admin.keys:
        user["ssh_authorized_keys"] = list(admin.keys)
    if admin.import_ids:
        user["ssh_import_id"] = list(admin.import_ids)
    users = [user]
    app = plan.app
    if app is not None and not app.user_is_admin:
        # A separate, unprivileged owner for the code: no sudo, no SSH keys.
        users.append({"name": app.user, "shell": "/bin/bash", "lock_passwd": True, "homedir": app.home})
    return {"users": users, "disable_root": not plan.permit_root_login}
