"""Database bootstrap (MISSION step 14): the SQL that creates the app's
database and its local-only user, delivered root-only (it holds the
password) and run by the first-boot script as the database superuser over
the unix socket. SQLite needs only its folder (made by the update command).
Per server: the password is never baked into an image. Also MySQL's server
settings for a small machine, the boot order of its service and (in an image) the
making of its TLS key on each server started from it, written before the
package installs."""

from __future__ import annotations

from ..templating import render
from ..layout import MYSQL_BOOT_ORDER, MYSQL_CONF, MYSQL_TLS_KEY_SCRIPT, MYSQL_TLS_KEY_UNIT, paths

TEMPLATES = {"mysql": "db-bootstrap-mysql.sql.j2", "postgresql": "db-bootstrap-postgresql.sql.j2"}

# MySQL 8 turns the performance schema on by default (MariaDB does not): its
# instruments hold memory a 1 GiB server needs for gunicorn's workers (the
# workers' count leaves 384 MiB to the database and the system) and cost the
# server's start time at every boot. Nothing bakery sets up reads them.
MYSQL_SETTINGS = """\
# bakery: MySQL on a small server. To turn the performance schema back on,
# set it ON in a file of this folder that sorts after this one.
[mysqld]
performance_schema = OFF
"""

# Every unit waits for cloud-init's network stage (it orders itself before
# sysinit.target), which makes a new server's host keys and runs its bootcmd:
# about 20 s under TCG. The database server needs only the disks, AppArmor's
# profiles (its own confines it) and the network: it starts beside that stage,
# and a server from an image (which must make MySQL's TLS and RSA keys at that
# start) has it up by the time its first-boot steps begin. Stopped before
# shutdown, as default dependencies would.
MYSQL_BOOT_ORDER_UNIT = """\
# bakery: the database server starts beside cloud-init's network stage.
[Unit]
DefaultDependencies=no
After=local-fs.target systemd-tmpfiles-setup.service apparmor.service network.target
Conflicts=shutdown.target
Before=shutdown.target
"""

# A server from an image starts MySQL without the TLS key the bake's clean-up
# removed: made first, as a P-256 key, before mysqld would make RSA ones (on
# the database's start, which the first-boot steps wait for). A failure is
# not the server's: mysqld then makes its own.
MYSQL_TLS_KEY_DROPIN = f"""\
# bakery: MySQL's TLS key, made before the server starts when it is missing.
[Service]
ExecStartPre=-/bin/sh {MYSQL_TLS_KEY_SCRIPT}
"""


def bootstrap_sql(plan) -> str:
    return render(TEMPLATES[plan.database.engine], plan=plan)


def build(plan) -> dict:
    if plan.app is None or plan.database is None or plan.database.engine not in TEMPLATES:
        return {}
    files = []
    if plan.database.engine == "mysql" and plan.stage != "instance":
        files.append({"path": MYSQL_CONF, "owner": "root:root", "permissions": "0644", "content": MYSQL_SETTINGS})
        files.append({"path": MYSQL_BOOT_ORDER, "owner": "root:root", "permissions": "0644",
                      "content": MYSQL_BOOT_ORDER_UNIT})
        if plan.stage == "image":
            # Only an image's servers start MySQL without the package's keys; a
            # whole server's user-data stays the smaller (16 KiB targets).
            files.append({"path": MYSQL_TLS_KEY_SCRIPT, "owner": "root:root", "permissions": "0644",
                          "content": render("mysql-tls-key.sh.j2")})
            files.append({"path": MYSQL_TLS_KEY_UNIT, "owner": "root:root", "permissions": "0644",
                          "content": MYSQL_TLS_KEY_DROPIN})
    if plan.per_server:
        files.append({"path": paths(plan).db_sql, "owner": "root:root", "permissions": "0600",
                      "content": bootstrap_sql(plan)})
    return {"write_files": files} if files else {}
