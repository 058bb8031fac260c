"""``bakery init``: a first, commented bakery.yaml, and with ``--from-app``
what it can tell from a checkout of the app (Flask or Django): the WSGI
entry point, the requirements file, the static folder, the migrations, the
database, the git remote and tag. Each guess says where it came from; what
cannot be told is left as a commented question. Reads files and runs
``git`` read-only in the checkout; writes nothing there."""

from __future__ import annotations

import json
import re
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from .defaults import app_name_from_repo
from .plan import _pip_name as pip_name

REQUIREMENTS = ("requirements.txt", "requirements/production.txt", "requirements/prod.txt", "requirements/base.txt")


@dataclass
class Guess:
    value: object
    source: str  # where it came from, said in the comment


@dataclass
class AppFacts:
    framework: Optional[str] = None  # flask | django
    repo: Optional[Guess] = None
    ref: Optional[Guess] = None
    module: Optional[Guess] = None
    requirements: Optional[Guess] = None
    environment: dict = field(default_factory=dict)  # name -> Guess
    static: Optional[Guess] = None
    setup: list = field(default_factory=list)  # Guess each
    migrate: list = field(default_factory=list)
    engine: Optional[Guess] = None
    questions: list = field(default_factory=list)


def _read(path: Path, limit: int = 200_000) -> str:
    try:
        with open(path, "rb") as fh:
            return fh.read(limit).decode("utf-8", "replace")
    except OSError:
        return ""


def _git(checkout: Path, *args: str) -> Optional[str]:
    try:
        result = subprocess.run(["git", "-C", str(checkout), *args], capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return result.stdout.strip() or None if result.returncode == 0 else None


def _dotenv_value(text: str, name: str) -> Optional[str]:
    match = re.search(rf"^\s*(?:export\s+)?{name}\s*=\s*['\"]?([^'\"\s#]+)", text, re.M)
    return match.group(1) if match else None


def _flask_module(flask_app: str) -> str:
    """gunicorn's module:object for a FLASK_APP value (microblog.py, app:create_app())."""
    target = flask_app.removesuffix(".py").replace("/", ".")
    return target if ":" in target else f"{target}:app"


def _git_facts(checkout: Path, facts: AppFacts) -> None:
    origin = _git(checkout, "remote", "get-url", "origin")
    if origin:
        facts.repo = Guess(origin, 'git remote "origin"')
    tag = _git(checkout, "describe", "--tags", "--exact-match", "HEAD")
    branch = _git(checkout, "symbolic-ref", "--short", "-q", "HEAD")
    if tag:
        facts.ref = Guess(tag, "the tag checked out here")
    elif branch:
        facts.ref = Guess(branch, "the branch checked out here; a tag pins a release")


def _flask_object(checkout: Path) -> Optional[tuple]:
    """(file, module:object, how it was told) of the top-level file that makes
    the Flask app: wsgi.py and app.py first, then any other."""
    files = sorted(checkout.glob("*.py"), key=lambda p: (p.name not in ("wsgi.py", "app.py", "application.py"), p.name))
    for path in files:
        text, stem = _read(path), path.stem
        made = re.search(r"^(\w+)\s*=\s*(?:Flask\(|create_app\()", text, re.M)
        if made:
            return path.name, f"{stem}:{made.group(1)}", f"makes {made.group(1)}"
        if re.search(r"^def create_app\(", text, re.M):
            return path.name, f"{stem}:create_app()", "defines create_app()"
    return None


def _flask(checkout: Path, facts: AppFacts) -> None:
    flaskenv = _read(checkout / ".flaskenv")
    flask_app = _dotenv_value(flaskenv, "FLASK_APP")
    if flask_app:
        facts.environment["FLASK_APP"] = Guess(flask_app, ".flaskenv")
        facts.module = Guess(_flask_module(flask_app), "FLASK_APP in .flaskenv")
    else:
        found = _flask_object(checkout)
        if found:
            name, module, how = found
            facts.module = Guess(module, f"{name} {how}")
            facts.environment["FLASK_APP"] = Guess(name, f"{name} is the app")
    for folder in ("static", "app/static", f"{checkout.name}/static"):
        if (checkout / folder).is_dir():
            facts.static = Guess(folder, "Flask's static folder")
            break
    if (checkout / "migrations" / "alembic.ini").exists() or (checkout / "migrations" / "env.py").exists():
        facts.migrate.append(Guess("flask db upgrade", "Flask-Migrate's migrations/ folder"))


def _django(checkout: Path, facts: AppFacts) -> None:
    for wsgi in sorted(checkout.glob("*/wsgi.py")):
        if "get_wsgi_application" in _read(wsgi):
            facts.module = Guess(f"{wsgi.parent.name}.wsgi:application", f"{wsgi.relative_to(checkout)}")
            settings = _read(wsgi.parent / "settings.py")
            root = re.search(r"^STATIC_ROOT\s*=\s*(?:BASE_DIR\s*/\s*|os\.path\.join\(\s*BASE_DIR\s*,\s*)['\"]([^'\"]+)['\"]",
                             settings, re.M)
            if root:
                facts.static = Guess(root.group(1), f"STATIC_ROOT in {wsgi.parent.name}/settings.py")
                facts.setup.append(Guess("python manage.py collectstatic --noinput", "STATIC_ROOT is set"))
            else:
                facts.questions.append(f"{wsgi.parent.name}/settings.py has no STATIC_ROOT: set one (e.g. BASE_DIR / "
                                       "'staticfiles'), then app.static and a collectstatic setup command")
            if "DATABASE_URL" not in settings:
                facts.questions.append("settings.py does not read DATABASE_URL, which bakery puts in .env: read it "
                                       "(e.g. with dj-database-url) to use the server's database")
            if "ALLOWED_HOSTS = []" in settings:
                facts.questions.append("ALLOWED_HOSTS is empty in settings.py: Django refuses every request "
                                       "unless DEBUG is on; add the server's name")
            break
    facts.migrate.append(Guess("python manage.py migrate", "Django's manage.py"))


def _database(requirements: str, facts: AppFacts) -> None:
    names = {pip_name(line.strip()) for line in requirements.splitlines()
             if line.strip() and not line.lstrip().startswith(("#", "-"))}
    if names & {"psycopg", "psycopg2", "psycopg2-binary", "psycopg-binary"}:
        facts.engine = Guess("postgresql", "psycopg in the requirements")
    elif names & {"pymysql", "mysqlclient"}:
        facts.engine = Guess("mysql", "a MySQL driver in the requirements")
    elif facts.framework == "django":
        facts.engine = Guess("sqlite", "no database driver in the requirements (Django's default)")
    elif names & {"flask-sqlalchemy", "sqlalchemy"}:
        facts.engine = Guess("mysql", "SQLAlchemy without a driver: bakery adds pymysql for MySQL")
    else:
        facts.engine = Guess("none", "no database library in the requirements")


def detect(checkout: Path) -> AppFacts:
    """What the checkout at ``checkout`` tells about deploying it."""
    facts = AppFacts()
    _git_facts(checkout, facts)
    for name in REQUIREMENTS:
        if (checkout / name).is_file():
            facts.requirements = Guess(name, "found in the checkout")
            break
    requirements = _read(checkout / facts.requirements.value) if facts.requirements else ""
    if (checkout / "manage.py").is_file():
        facts.framework = "django"
        _django(checkout, facts)
    elif re.search(r"^flask\b", requirements, re.M | re.I) or (checkout / ".flaskenv").exists():
        facts.framework = "flask"
        _flask(checkout, facts)
    _database(requirements, facts)
    if not facts.requirements:
        facts.questions.append("no requirements.txt: list the app's packages under app.pip_packages, "
                               "or add a requirements file and set app.requirements")
    if not facts.module:
        facts.questions.append("what does gunicorn serve? set app.module (module:object, e.g. wsgi:app)")
    return facts


def _value(value) -> str:
    """A YAML scalar: JSON's quoting is valid YAML and keeps any text exact."""
    return json.dumps(value)


def _line(indent: int, text: str, source: Optional[str] = None) -> str:
    line = " " * indent + text
    return f"{line:<44} # {source}" if source else line


HEADER = """\
# bakery.yaml: one server and the Python web app it runs, set up by the
# server itself on its first boot.
#   bakery validate                                  check it
#   bakery render --target digitalocean -o user-data
# Every key and its default: the README's config reference.
"""

SERVER = """\
admin:
  name: ubuntu          # your login on the server: sudo, your SSH key, no password
  # ssh_keys: [~/.ssh/id_ed25519.pub]   # default: your ~/.ssh/id_ed25519.pub (or id_ecdsa, id_rsa)

host:
  hostname: web1
  # domain: example.com  # with it, web.tls: letsencrypt can get a real certificate

firewall:
  enabled: true         # 22, 80 and 443 open; more under allow:
"""


def starter_yaml(facts: Optional[AppFacts]) -> str:
    """The text of the starter config (``facts`` None: no app looked at)."""
    parts = [HEADER, SERVER]
    if facts is None:
        parts.append("""
# Your app. Uncomment, and fill in where it lives (or run: bakery init --from-app PATH):
# app:
#   repo: https://github.com/you/yourapp
#   ref: main
#   module: yourapp:app   # what gunicorn serves, module:object
""")
        return "\n".join(parts).rstrip("\n") + "\n"
    # The app, its database and its site; all commented when the app's
    # repository is unknown (a config cannot have them without app.repo).
    lines = _app_lines(facts)
    engine = facts.engine or Guess("mysql", "the default")
    if engine.value != "none":
        lines += ["", "database:", _line(2, f"engine: {engine.value}", engine.source)]
    lines += ["", "web:", "  nginx: true",
              "  tls: self-signed      # letsencrypt with web.domain and web.email for a real certificate"]
    if facts.repo is None:
        parts.append("\n# QUESTION: where does the server clone the app from? No \"origin\" remote here.\n"
                     "# Uncomment these sections and set app.repo (https://, ssh:// or git@host:path).\n"
                     + "\n".join(("# " + line).rstrip() for line in lines))
    else:
        parts.append("\n" + "\n".join(lines))
    if facts.questions:
        parts.append("\n" + "\n".join(f"# QUESTION: {q}" for q in facts.questions))
    return "\n".join(parts).rstrip("\n") + "\n"


def _app_lines(facts: AppFacts) -> list:
    repo = facts.repo.value if facts.repo else "https://github.com/you/yourapp"
    lines = ["app:", _line(2, f"repo: {_value(repo)}", facts.repo.source if facts.repo else None)]
    name = app_name_from_repo(repo) if facts.repo else None
    if name:
        lines.append(_line(2, f"name: {_value(name)}", "from the repository's name"))
    ref = facts.ref or Guess("main", "QUESTION: which tag or branch to deploy?")
    lines.append(_line(2, f"ref: {_value(ref.value)}", ref.source))
    if facts.module:
        lines.append(_line(2, f"module: {_value(facts.module.value)}", facts.module.source))
    if facts.requirements:
        lines.append(_line(2, f"requirements: {_value(facts.requirements.value)}", facts.requirements.source))
    if facts.environment:
        lines.append("  environment:")
        lines += [_line(4, f"{key}: {_value(guess.value)}", guess.source) for key, guess in facts.environment.items()]
    for key in ("setup", "migrate"):
        guesses = getattr(facts, key)
        if guesses:
            lines.append(f"  {key}:")
            lines += [_line(4, f"- {_value(guess.value)}", guess.source) for guess in guesses]
    if facts.static:
        lines.append(_line(2, f"static: {_value(facts.static.value)}", facts.static.source))
    return lines
