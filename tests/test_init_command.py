"""`bakery init`: the starter config validates and renders for every target,
for an empty folder, the e2e fixture app (a Flask app in a local git
repository), and a Django project made by django-admin itself; it never
writes over a config."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from bakery.targets import TARGETS

from conftest import REPO, run_bakery

FIXTURE_APP = REPO / "tests" / "e2e" / "fixture_app"


def git(repo: Path, *args: str) -> None:
    env = dict(os.environ, GIT_AUTHOR_NAME="t", GIT_AUTHOR_EMAIL="t@t", GIT_COMMITTER_NAME="t", GIT_COMMITTER_EMAIL="t@t")
    subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True, env=env)


def committed(folder: Path, origin: str | None = None, tag: str | None = None) -> Path:
    git(folder, "init", "-q", "-b", "main")
    git(folder, "add", "-A")
    git(folder, "commit", "-q", "-m", "app")
    if tag:
        git(folder, "tag", tag)
    if origin:
        git(folder, "remote", "add", "origin", origin)
    return folder


def flask_fixture(tmp_path: Path) -> Path:
    app = tmp_path / "fixture"
    shutil.copytree(FIXTURE_APP, app, ignore=shutil.ignore_patterns("__pycache__", "*.db", ".env"))
    return committed(app, origin="https://git.example.com/me/fixture.git", tag="v1")


def django_project(tmp_path: Path) -> Path:
    pytest.importorskip("django") if os.environ.get("CI") != "true" else None
    site = tmp_path / "mysite"
    site.mkdir()
    subprocess.run([sys.executable, "-m", "django", "startproject", "mysite", str(site)], check=True)
    settings = site / "mysite" / "settings.py"
    settings.write_text(settings.read_text() + "\nSTATIC_ROOT = BASE_DIR / 'staticfiles'\n")
    (site / "requirements.txt").write_text("Django>=5\npsycopg[binary]\n")
    return committed(site, origin="git@github.com:me/mysite.git")


def init(tmp_path: Path, home: Path, *args) -> tuple[Path, subprocess.CompletedProcess]:
    out = tmp_path / "bakery.yaml"
    return out, run_bakery(["init", "-o", out, *args], home=home)


def assert_renders_everywhere(config: Path, home: Path) -> None:
    for target in TARGETS:
        result = run_bakery(["validate", "-c", config, "--target", target], home=home)
        assert result.returncode == 0, (target, result.stderr.decode())


def test_an_empty_folder_gets_a_server_without_an_app(tmp_path, workstation):
    config, result = init(tmp_path, workstation)
    assert result.returncode == 0, result.stderr.decode()
    assert "app" not in yaml.safe_load(config.read_text())
    assert "# app:" in config.read_text()  # the app section waits, commented
    assert_renders_everywhere(config, workstation)


def test_the_flask_fixture_app_is_read_from_its_checkout(tmp_path, workstation):
    config, result = init(tmp_path, workstation, "--from-app", flask_fixture(tmp_path))
    assert result.returncode == 0, result.stderr.decode()
    text = config.read_text()
    app = yaml.safe_load(text)["app"]
    assert app["repo"] == "https://git.example.com/me/fixture.git" and app["ref"] == "v1"
    assert app["module"] == "fixture:app" and app["environment"] == {"FLASK_APP": "fixture.py"}
    assert app["requirements"] == "requirements.txt" and app["static"] == "static"
    # Each guess says where it came from.
    for source in ('# git remote "origin"', "# the tag checked out here", "# fixture.py makes app",
                   "# Flask's static folder"):
        assert source in text, source
    assert_renders_everywhere(config, workstation)


def test_a_django_project_made_by_django_admin(tmp_path, workstation):
    config, result = init(tmp_path, workstation, "--from-app", django_project(tmp_path))
    assert result.returncode == 0, result.stderr.decode()
    data = yaml.safe_load(config.read_text())
    app = data["app"]
    assert app["repo"] == "git@github.com:me/mysite.git" and app["ref"] == "main"
    assert app["module"] == "mysite.wsgi:application"
    assert app["migrate"] == ["python manage.py migrate"]
    assert app["setup"] == ["python manage.py collectstatic --noinput"] and app["static"] == "staticfiles"
    assert data["database"]["engine"] == "postgresql"
    # startproject leaves ALLOWED_HOSTS empty: asked, in the file and on stderr.
    assert "# QUESTION: ALLOWED_HOSTS is empty" in config.read_text()
    assert b"question: ALLOWED_HOSTS is empty" in result.stderr
    assert_renders_everywhere(config, workstation)


def test_a_checkout_without_a_remote_leaves_the_app_as_a_question(tmp_path, workstation):
    app = tmp_path / "local"
    shutil.copytree(FIXTURE_APP, app, ignore=shutil.ignore_patterns("__pycache__", "*.db", ".env"))
    committed(app)
    config, result = init(tmp_path, workstation, "--from-app", app)
    assert result.returncode == 0, result.stderr.decode()
    text = config.read_text()
    assert "app" not in yaml.safe_load(text) and "# QUESTION: where does the server clone the app from?" in text
    assert '#   module: "fixture:app"' in text  # what it could tell is there, commented
    assert_renders_everywhere(config, workstation)


def test_init_never_writes_over_a_config(tmp_path, workstation):
    config = tmp_path / "bakery.yaml"
    config.write_text("admin: {name: mine}\n")
    _, result = init(tmp_path, workstation)
    assert result.returncode == 1 and b"exists" in result.stderr and b"--force" in result.stderr
    assert config.read_text() == "admin: {name: mine}\n"
    _, forced = init(tmp_path, workstation, "--force")
    assert forced.returncode == 0 and "admin:" in config.read_text() and "mine" not in config.read_text()


def test_a_missing_config_points_at_bakery_init(tmp_path, workstation):
    result = run_bakery(["render", "-c", tmp_path / "bakery.yaml"], home=workstation)
    assert result.returncode == 2 and b"bakery init" in result.stderr
