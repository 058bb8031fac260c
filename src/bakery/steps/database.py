"""Database bootstrap (MISSION step 14): the SQL that creates the app's
database and its local-only user, delivered root-only (it holds the
password) and run by the first-boot script as the database superuser over
the unix socket. SQLite needs only its folder (made by the update command).
Per server: the password is never baked into an image."""

from __future__ import annotations

from ..templating import render
from ..layout import paths

TEMPLATES = {"mysql": "db-bootstrap-mysql.sql.j2", "postgresql": "db-bootstrap-postgresql.sql.j2"}


def bootstrap_sql(plan) -> str:
    return render(TEMPLATES[plan.database.engine], plan=plan)


def build(plan) -> dict:
    if plan.app is None or plan.database is None or plan.database.engine not in TEMPLATES or not plan.per_server:
        return {}
    return {"write_files": [{"path": paths(plan).db_sql, "owner": "root:root", "permissions": "0600",
                             "content": bootstrap_sql(plan)}]}
