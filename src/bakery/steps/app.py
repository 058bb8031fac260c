"""The app itself (MISSION steps 9-13, 15-17, 20): the update command that
checks out a ref, installs it into the venv, migrates and restarts it; the
.env (root-only copy, installed into the checkout by the update command);
the login profile block; and gunicorn's supervisor program.
An image holds the code side (update command, profile); each server gets
the .env and the supervisor program on its own first boot."""

from __future__ import annotations

from ..templating import render
from ..layout import paths


def update_script(plan, **where) -> str:
    return render("update.sh.j2", plan=plan, paths=paths(plan, **where))


def dotenv_file(plan) -> str:
    return render("dotenv.j2", plan=plan)


def profile_block(plan) -> str:
    return render("profile.sh.j2", plan=plan)


def supervisor_program(plan, log_dir: str | None = None) -> str:
    return render("supervisor-program.conf.j2", plan=plan, log_dir=log_dir or paths(plan).supervisor_log_dir)


def build(plan) -> dict:
    if plan.app is None:
        return {}
    where = paths(plan)
    files = []
    if plan.per_server:
        files.append({"path": where.dotenv, "owner": "root:root", "permissions": "0600", "content": dotenv_file(plan)})
    if plan.shared:
        files += [
            {"path": where.profile, "owner": "root:root", "permissions": "0644", "content": profile_block(plan)},
            {"path": where.update, "owner": "root:root", "permissions": "0755", "content": update_script(plan)},
        ]
    if plan.per_server:
        # Not in an image: supervisord would start the app at boot, before the
        # server has its .env and database. Loaded by the update command.
        files.append({"path": where.supervisor_conf, "owner": "root:root", "permissions": "0644",
                      "content": supervisor_program(plan)})
    return {"write_files": files}
