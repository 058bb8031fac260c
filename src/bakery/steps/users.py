"""The admin user (MISSION step 2-3): sudo without password, SSH keys, locked
password, and root kept out; and the app's two users: the one that owns its
code (app.user) and the one it runs as (<app>-web), neither with sudo."""

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
    groups = []
    app = plan.app
    if app is not None:
        # The user the app runs as: a system user with no login, its home
        # the app's data folder; it reads the code through its owner's group.
        # Its own group is made first: the code's owner joins it, to hand the
        # app its .env and to reach its data (migrations, `flask shell`).
        groups.append(app.run_user)
        owner = user
        if not app.user_is_admin:
            # A separate, unprivileged owner for the code: no sudo, no SSH keys.
            owner = {"name": app.user, "shell": "/bin/bash", "lock_passwd": True, "homedir": app.home, "groups": []}
            users.append(owner)
        owner["groups"] = owner["groups"] + [app.run_user]
        users.append({
            "name": app.run_user, "system": True, "primary_group": app.run_user, "no_user_group": True,
            "groups": [app.user] + (raspberry_pi.PI_GROUPS if plan.target.can(HARDWARE_GROUPS) else []),
            "homedir": app.data_dir, "shell": "/usr/sbin/nologin", "lock_passwd": True,
        })
    config = {"users": users, "disable_root": not plan.permit_root_login}
    if groups:
        config["groups"] = groups
    return config
