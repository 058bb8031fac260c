"""The rendered update command (also the first-boot app step) run for real
inside a temporary root: a local git repository of a tiny WSGI app, a real
venv and pip (offline, from a local wheelhouse), git, bash. Only
supervisorctl is replaced, by a stand-in that records its calls: the test
is about what the script asks supervisor to do and when.

Proves: first install, update to a new commit, a broken commit (pip cannot
install it) fails and leaves the previous checkout and venv in place without
stopping the app, a bad ref stops nothing, and the first-boot profile step
can run twice."""

from __future__ import annotations

import base64
import hashlib
import itertools
import os
import pwd
import subprocess
import zipfile
from pathlib import Path

import pytest

from bakery.steps import app as app_step
from bakery.steps import firstboot
from bakery.layout import paths
from bakery.templating import render

from stack_helpers import MICROBLOG_APP, make_plan, require_tool


def make_wheel(folder: Path, name: str, version: str) -> None:
    """A minimal pure-Python wheel, so pip installs without any index."""
    module = name.replace("-", "_")
    dist = f"{module}-{version}"
    files = {
        f"{module}.py": f"VERSION = {version!r}\n",
        f"{dist}.dist-info/METADATA": f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n",
        f"{dist}.dist-info/WHEEL": "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
    }
    record = []
    for path, text in files.items():
        digest = base64.urlsafe_b64encode(hashlib.sha256(text.encode()).digest()).rstrip(b"=").decode()
        record.append(f"{path},sha256={digest},{len(text.encode())}")
    record.append(f"{dist}.dist-info/RECORD,,")
    files[f"{dist}.dist-info/RECORD"] = "\n".join(record) + "\n"
    with zipfile.ZipFile(folder / f"{dist}-py3-none-any.whl", "w") as whl:
        for path, text in files.items():
            whl.writestr(path, text)


def git(repo: Path, *args) -> str:
    env = dict(os.environ, GIT_AUTHOR_NAME="t", GIT_AUTHOR_EMAIL="t@t", GIT_COMMITTER_NAME="t", GIT_COMMITTER_EMAIL="t@t")
    return subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True, text=True, env=env).stdout.strip()


def commit_app(repo: Path, version: str, dep: str, message: str) -> str:
    (repo / "wsgi.py").write_text(
        "import fixture_dep\n\n"
        f"VERSION = {version!r}\n\n"
        "def app(environ, start_response):\n"
        "    start_response('200 OK', [('Content-Type', 'text/plain')])\n"
        "    return [VERSION.encode()]\n")
    (repo / "requirements.txt").write_text(dep + "\n")
    (repo / ".gitignore").write_text("venv/\n.env\n*.log\n")
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", message)
    return git(repo, "rev-parse", "HEAD")


class Server:
    """A temporary root holding the app user's home, /etc/bakery, the logs,
    and a supervisorctl stand-in; the rendered update script installed in it."""

    def __init__(self, tmp_path: Path):
        require_tool("git")
        require_tool("python3")
        if os.geteuid() != 0:
            pytest.skip("the update command is root-run (it installs .env owned by the app user)")
        self.root = tmp_path / "root"
        self.origin = tmp_path / "origin"
        self.origin.mkdir()
        git(self.origin, "init", "-q", "-b", "main")
        self.wheels = tmp_path / "wheels"
        self.wheels.mkdir()
        for version in ("1.0", "2.0"):
            make_wheel(self.wheels, "fixture-dep", version)
        make_wheel(self.wheels, "fixture-extra", "1.0")

        plan = make_plan(tmp_path, app=dict(MICROBLOG_APP, name="fixture", ref="v1", environment={"FLASK_APP": "wsgi.py"}))
        app = plan.app
        app.repo = str(self.origin)
        # The test runs as root: the "app user" is root, so the script runs
        # its app steps directly instead of through runuser; so is the user
        # the app runs as (test_the_app_runs_as_a_user_that_cannot_change_its_code
        # has real ones).
        app.user = app.run_user = pwd.getpwuid(os.geteuid()).pw_name
        app.data_dir = str(self.root / "data")
        app.home = str(self.root / "home")
        app.dir = f"{app.home}/fixture"
        app.venv = f"{app.dir}/venv"
        app.pip_packages = ["fixture-extra"]
        # The venv's python comes first on PATH, and the login environment is set.
        app.migrate = ["python -c 'import fixture_dep; print(fixture_dep.VERSION)' >> migrate.log"]
        app.setup = ['printf "%s\\n" "$FLASK_APP" >> setup.log']
        self.plan = plan
        self.app = app
        etc, logs = self.root / "etc", self.root / "log"
        etc.mkdir(parents=True)
        Path(app.home).mkdir(parents=True)
        (etc / "fixture.env").write_text(render("dotenv.j2", plan=plan))
        (etc / "fixture.env").chmod(0o600)
        self.where = paths(plan, etc=str(etc), log_dir=str(logs))
        self.script = self.root / "fixture-update"
        self.script.write_text(app_step.update_script(plan, etc=str(etc), log_dir=str(logs)))
        self.script.chmod(0o755)
        self.bin = self.root / "bin"
        self.bin.mkdir()
        self.calls = self.root / "supervisorctl.calls"
        fake = self.bin / "supervisorctl"
        fake.write_text(f'#!/bin/sh\necho "$*" >> {self.calls}\n')
        fake.chmod(0o755)

    def update(self, *ref) -> subprocess.CompletedProcess:
        env = dict(os.environ, PATH=f"{self.bin}:{os.environ['PATH']}", PIP_NO_INDEX="1",
                   PIP_FIND_LINKS=str(self.wheels), BAKERY_RETRY_PAUSE="0", BAKERY_RETRY_FOR="3", PIP_NO_CACHE_DIR="1")
        self.calls.write_text("")
        return subprocess.run([str(self.script), *ref], capture_output=True, text=True, env=env, timeout=300)

    def head(self) -> str:
        return git(Path(self.app.dir), "rev-parse", "HEAD")

    def installed(self) -> str:
        return subprocess.run([f"{self.app.venv}/bin/python", "-c", "import fixture_dep; print(fixture_dep.VERSION)"],
                              capture_output=True, text=True, check=True).stdout.strip()

    def supervisorctl(self) -> list[str]:
        return self.calls.read_text().splitlines()


@pytest.fixture
def server(tmp_path):
    return Server(tmp_path)


def test_install_update_and_a_broken_commit(server):
    v1 = commit_app(server.origin, "one", "fixture-dep==1.0", "v1")
    git(server.origin, "tag", "v1")

    # First boot: clone, venv, install, .env, migrate, setup, start.
    first = server.update()
    assert first.returncode == 0, first.stdout + first.stderr
    app_dir = Path(server.app.dir)
    assert server.head() == v1 and server.installed() == "1.0"
    assert Path(server.app.venv, "bin", "python").exists()
    assert (Path(server.app.venv) / "lib").is_dir() and "fixture_extra" in subprocess.run(
        [f"{server.app.venv}/bin/pip", "list", "--format=freeze"], capture_output=True, text=True).stdout.replace("-", "_")
    env_file = app_dir / ".env"
    assert oct(env_file.stat().st_mode & 0o777) == "0o640"
    assert "SECRET_KEY=" in env_file.read_text()
    assert (app_dir / "migrate.log").read_text() == "1.0\n"
    assert (app_dir / "setup.log").read_text() == "wsgi.py\n"
    assert server.supervisorctl() == ["stop fixture", "reread", "update", "start fixture"]
    assert "fixture runs " + v1 in Path(server.where.log_dir, "update.log").read_text()

    # A new commit on the branch: fetched, installed, migrated, restarted.
    v2 = commit_app(server.origin, "two", "fixture-dep==2.0", "v2")
    second = server.update("main")
    assert second.returncode == 0, second.stdout + second.stderr
    assert server.head() == v2 and server.installed() == "2.0"
    assert (app_dir / "migrate.log").read_text() == "1.0\n2.0\n"
    assert server.supervisorctl() == ["stop fixture", "reread", "update", "start fixture"]

    # A commit pip cannot install: the update fails before stopping anything,
    # and the checkout and venv stay at the running version.
    commit_app(server.origin, "three", "fixture-dep==9.9", "broken")
    broken = server.update("main")
    assert broken.returncode != 0
    assert f"pip install failed: back at {v2}" in broken.stdout
    assert server.head() == v2 and server.installed() == "2.0"
    assert server.supervisorctl() == []
    assert (app_dir / "migrate.log").read_text() == "1.0\n2.0\n"

    # A ref that does not exist: nothing stopped, nothing changed.
    missing = server.update("no-such-ref")
    assert missing.returncode != 0 and server.head() == v2 and server.supervisorctl() == []

    # Back to the tag (a rollback is an update to an older ref).
    back = server.update("v1")
    assert back.returncode == 0, back.stdout + back.stderr
    assert server.head() == v1 and server.installed() == "1.0"


def test_failing_migration_stops_with_an_error(server):
    commit_app(server.origin, "one", "fixture-dep==1.0", "v1")
    git(server.origin, "tag", "v1")
    assert server.update().returncode == 0
    server.app.migrate = ["false"]
    server.script.write_text(app_step.update_script(server.plan, etc=server.where.etc, log_dir=server.where.log_dir))
    result = server.update()
    assert result.returncode != 0
    assert "FAILED at line" in result.stdout
    # It stopped at the migration: the app is not started on a half-migrated database.
    assert server.supervisorctl() == ["stop fixture"]


def test_the_update_writes_its_state_for_bakery_status(server):
    state = Path(server.where.update_status)
    v1 = commit_app(server.origin, "one", "fixture-dep==1.0", "v1")
    git(server.origin, "tag", "v1")
    # The migration sees the state the update is in while it runs.
    server.app.migrate = [f"cat {state} >> seen.log"]
    server.script.write_text(app_step.update_script(server.plan, etc=server.where.etc, log_dir=server.where.log_dir))
    assert server.update().returncode == 0
    assert (Path(server.app.dir) / "seen.log").read_text() == "running 3/4 migrate\n"
    assert state.read_text() == f"ready {v1}\n"

    commit_app(server.origin, "two", "fixture-dep==9.9", "broken")
    assert server.update("main").returncode != 0
    assert state.read_text() == "failed install\n"
    assert server.update("no-such-ref").returncode != 0
    assert state.read_text() == "failed fetch\n"
    server.app.migrate = ["false"]
    server.script.write_text(app_step.update_script(server.plan, etc=server.where.etc, log_dir=server.where.log_dir))
    assert server.update("v1").returncode != 0
    assert state.read_text() == "failed migrate\n"
    # First boot's background preparation (and an image's) is no update: it leaves the state alone.
    assert server.update("--prepare", "v1").returncode == 0
    assert state.read_text() == "failed migrate\n"


def test_update_refuses_to_run_twice_at_once(server):
    import fcntl

    commit_app(server.origin, "one", "fixture-dep==1.0", "v1")
    git(server.origin, "tag", "v1")
    Path(server.where.log_dir).mkdir(parents=True)
    with open(Path(server.where.log_dir) / ".fixture-update.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        result = server.update()
    assert result.returncode != 0 and "another fixture-update is running" in result.stderr
    assert not Path(server.app.dir).exists() and not Path(server.where.update_status).exists()


def test_first_boot_profile_step_keeps_one_block(server, tmp_path):
    require_tool("bash")
    where = server.where
    Path(where.profile).write_text(app_step.profile_block(server.plan))
    profile = Path(server.app.home) / ".profile"
    profile.write_text("# the user's own lines\nexport KEEP=1\n")
    script = firstboot.first_boot_script(server.plan, paths=where)
    start = script.index("install_profile() {")
    function = script[start:script.index("\n}\n", start) + 3]
    for _ in range(2):  # first boot, then a re-run after a reboot
        subprocess.run(["bash", "-euo", "pipefail", "-c",
                        f"APP_USER={server.app.user}\n{function}install_profile\n"], check=True)
    assert profile.read_text() == ("# the user's own lines\nexport KEEP=1\n"
                                   "# >>> bakery fixture >>>\nexport FLASK_APP=wsgi.py\n# <<< bakery fixture <<<\n")


def test_a_tag_moved_upstream_is_reported_and_not_deployed(server):
    v1 = commit_app(server.origin, "one", "fixture-dep==1.0", "v1")
    git(server.origin, "tag", "v1")
    assert server.update().returncode == 0 and server.head() == v1
    # Someone re-points v1 at another commit upstream.
    moved = commit_app(server.origin, "two", "fixture-dep==2.0", "moved")
    git(server.origin, "tag", "-f", "v1", moved)
    result = server.update("v1")
    assert result.returncode != 0
    assert "tag v1 moved upstream" in result.stdout and "--accept-moved-tag" in result.stdout, result.stdout
    # Refused for good at once, not retried for the network's sake.
    assert "attempt 1 failed" not in result.stdout
    assert server.head() == v1 and server.installed() == "1.0" and server.supervisorctl() == []
    # The operator says so: the moved tag is deployed.
    accepted = server.update("--accept-moved-tag", "v1")
    assert accepted.returncode == 0, accepted.stdout + accepted.stderr
    assert server.head() == moved and server.installed() == "2.0"


def test_a_pinned_commit_is_the_only_one_deployed(server):
    v1 = commit_app(server.origin, "one", "fixture-dep==1.0", "v1")
    git(server.origin, "tag", "v1")
    other = commit_app(server.origin, "two", "fixture-dep==2.0", "v2")
    git(server.origin, "tag", "v2")
    server.app.commit = v1
    server.script.write_text(app_step.update_script(server.plan, etc=server.where.etc, log_dir=server.where.log_dir))
    assert server.update().returncode == 0 and server.head() == v1
    # v1 upstream now points elsewhere: refused even when the moved tag is accepted.
    git(server.origin, "tag", "-f", "v1", other)
    result = server.update("--accept-moved-tag")
    assert result.returncode != 0
    assert f"not the pinned app.commit {v1}" in result.stdout, result.stdout
    assert server.head() == v1 and server.supervisorctl() == []
    # Another ref named by the operator is the operator's choice.
    assert server.update("v2").returncode == 0 and server.head() == other


# --- root never acts through a path the app user controls ---------------------

_user_numbers = itertools.count()


@pytest.fixture
def make_user(tmp_path):
    """make_user(suffix, *groups): a real unprivileged user whose home is
    inside tmp_path; removed afterwards."""
    if os.geteuid() != 0:
        pytest.skip("needs root to create a user")
    require_tool("useradd")
    made = []

    def make(suffix: str, *groups: str):
        extra = ["--groups", ",".join(groups)] if groups else []
        while True:
            # Another test run may hold a name (or a killed one left it): the next number then.
            name = f"bakery-t{os.getpid() % 100000}-{next(_user_numbers)}{suffix}"[:32]
            home = tmp_path / "home" / name
            made_user = subprocess.run(["useradd", "--system", "--user-group", "--home-dir", str(home),
                                        "--shell", "/bin/sh", *extra, name])
            if made_user.returncode != 9:  # 9: the name is taken
                made_user.check_returncode()
                break
        made.append(name)
        # Every folder above the home must be traversable for the user.
        for folder in [tmp_path, *tmp_path.parents]:
            folder.chmod(folder.stat().st_mode | 0o111)
        home.mkdir(parents=True)
        (tmp_path / "home").chmod(0o755)
        user = pwd.getpwnam(name)
        os.chown(home, user.pw_uid, user.pw_gid)
        home.chmod(0o700)  # as Debian 13 makes them
        return user

    try:
        yield make
    finally:
        for name in made:
            # The update command leaves a byte-compile running as the user; userdel refuses while it runs.
            subprocess.run(["pkill", "-KILL", "-u", name], check=False, capture_output=True)
            subprocess.run(["userdel", name], check=False, capture_output=True)
        for name in made:
            subprocess.run(["groupdel", name], check=False, capture_output=True)


@pytest.fixture
def app_user(make_user):
    return make_user("")


def owned_by_root_unchanged(path: Path, text=None) -> bool:
    st = os.lstat(path)
    return st.st_uid == 0 and st.st_gid == 0 and (text is None or path.read_text() == text)


def test_symlinks_the_app_user_plants_never_lead_root_outside(tmp_path, app_user):
    victim_dir, victim_file = tmp_path / "outside", tmp_path / "outside.txt"
    victim_dir.mkdir(mode=0o755)
    victim_file.write_text("precious\n")
    server = Server(tmp_path)
    uid, gid = app_user.pw_uid, app_user.pw_gid
    app = server.app
    app.user, app.home = app_user.pw_name, app_user.pw_dir
    app.dir, app.venv = f"{app.home}/fixture", f"{app.home}/fixture/venv"
    app.run_user = app_user.pw_name
    server.plan.database.engine, server.plan.database.path = "sqlite", f"{app.dir}/data/fixture.db"
    commit_app(server.origin, "one", "fixture-dep==1.0", "v1")
    git(server.origin, "tag", "v1")
    # The app user reads the origin (git refuses a repository of another owner).
    subprocess.run(["chown", "-R", f"{uid}:{gid}", str(server.origin), str(server.wheels)], check=True)
    server.script.write_text(app_step.update_script(server.plan, etc=server.where.etc, log_dir=server.where.log_dir))

    # The checkout itself planted as a link to a folder of root's: the clone
    # fails as the app user, and the folder stays root's and empty.
    os.symlink(victim_dir, app.dir)
    os.lchown(app.dir, uid, gid)
    planted = server.update()
    assert planted.returncode != 0
    assert owned_by_root_unchanged(victim_dir) and list(victim_dir.iterdir()) == []
    os.unlink(app.dir)

    # A real install, then links planted where root used to write.
    first = server.update()
    assert first.returncode == 0, first.stdout + first.stderr
    checkout = Path(app.dir)
    assert os.stat(checkout / ".env").st_uid == uid and oct(os.stat(checkout / ".env").st_mode & 0o777) == "0o640"
    for link in (checkout / ".env", checkout / "data"):
        if link.is_dir() and not link.is_symlink():
            os.rmdir(link)
        else:
            link.unlink()
    os.symlink(victim_file, checkout / ".env")
    os.symlink(victim_dir, checkout / "data")
    for link in (checkout / ".env", checkout / "data"):
        os.lchown(link, uid, gid)
    again = server.update()
    assert again.returncode == 0, again.stdout + again.stderr
    assert owned_by_root_unchanged(victim_file, "precious\n") and owned_by_root_unchanged(victim_dir)
    # The .env link was replaced by the app user's own file.
    assert not (checkout / ".env").is_symlink() and "SECRET_KEY=" in (checkout / ".env").read_text()

    # ~/.profile planted as a link: first boot's profile step writes as the
    # app user, so the link's target is untouched.
    Path(server.where.profile).write_text(app_step.profile_block(server.plan))
    profile = Path(app.home) / ".profile"
    os.symlink(victim_file, profile)
    os.lchown(profile, uid, gid)
    script = firstboot.first_boot_script(server.plan, paths=server.where)
    start = script.index("install_profile() {")
    function = script[start:script.index("\n}\n", start) + 3]
    subprocess.run(["bash", "-euo", "pipefail", "-c", f"APP_USER={app.user}\n{function}install_profile\n"],
                   capture_output=True)
    assert owned_by_root_unchanged(victim_file, "precious\n")


def test_the_app_runs_as_a_user_that_cannot_change_its_code(tmp_path, make_user):
    """Two real users as on the server: the code's owner (app.user) and the
    one gunicorn and the migrations run as (<app>-web), each in the other's
    group, as the users step makes them."""
    owner = make_user("o")
    runner = make_user("r", owner.pw_name)
    stranger = make_user("x")
    subprocess.run(["usermod", "-aG", runner.pw_name, owner.pw_name], check=True)
    server = Server(tmp_path)
    app = server.app
    app.user, app.home, app.run_user = owner.pw_name, owner.pw_dir, runner.pw_name
    app.dir, app.venv = f"{app.home}/fixture", f"{app.home}/fixture/venv"
    data = Path(app.data_dir)
    server.plan.database.engine, server.plan.database.path = "sqlite", f"{data}/fixture.db"
    app.migrate = [f"id -un > {data}/migrate.who && python -c \"import sqlite3; c = sqlite3.connect('{data}/fixture.db'); "
                   "c.execute('CREATE TABLE IF NOT EXISTS t (x)'); c.commit()\""]
    app.setup = ["id -un > setup.who"]
    commit_app(server.origin, "one", "fixture-dep==1.0", "v1")
    git(server.origin, "tag", "v1")
    subprocess.run(["chown", "-R", f"{owner.pw_uid}:{owner.pw_gid}", str(server.origin), str(server.wheels)], check=True)
    server.script.write_text(app_step.update_script(server.plan, etc=server.where.etc, log_dir=server.where.log_dir))
    result = server.update()
    assert result.returncode == 0, result.stdout + result.stderr
    checkout = Path(app.dir)

    def can(user, command: str) -> bool:
        return subprocess.run(["runuser", "-u", user.pw_name, "--", "sh", "-c", command], capture_output=True).returncode == 0

    # Setup commands ran as the owner, migrations as the running user.
    assert (checkout / "setup.who").read_text().strip() == owner.pw_name
    assert (data / "migrate.who").read_text().strip() == runner.pw_name
    # The running user reads its code and .env, and changes neither the code nor the venv.
    assert can(runner, f"cat {checkout}/.env >/dev/null && cat {checkout}/wsgi.py >/dev/null")
    for target in (f"{checkout}/wsgi.py", f"{app.venv}/bin/python", f"{app.venv}/pyvenv.cfg"):
        assert not can(runner, f": >> {target}"), target
    for folder in (checkout, Path(app.venv), Path(app.venv) / "bin", next(Path(app.venv, "lib").glob("python3*/site-packages"))):
        assert not can(runner, f"touch {folder}/planted"), folder
    assert not can(runner, f"mv {checkout} {checkout}.moved")
    # .env: the owner's, readable by the running user's group only.
    env = os.stat(checkout / ".env")
    assert (env.st_uid, env.st_gid, oct(env.st_mode & 0o777)) == (owner.pw_uid, runner.pw_gid, "0o640")
    assert not can(stranger, f"cat {checkout}/.env")
    # The data folder: the running user's, setgid; the owner reads the database, the running user writes it.
    st = os.stat(data)
    assert (st.st_uid, oct(st.st_mode & 0o7777)) == (runner.pw_uid, "0o2770")
    assert can(runner, f"touch {data}/upload")
    assert can(runner, f"python3 -c \"import sqlite3; c = sqlite3.connect('{data}/fixture.db'); "
                       "c.execute('INSERT INTO t VALUES (1)'); c.commit()\"")
    assert can(owner, f"python3 -c \"import sqlite3; sqlite3.connect('file:{data}/fixture.db?mode=ro', uri=True)"
                      ".execute('SELECT x FROM t').fetchall()\"")
    assert not can(stranger, f"ls {data}")
    # And gunicorn is started as that user, with the umask that keeps this so.
    program = app_step.supervisor_program(server.plan)
    assert f"user={runner.pw_name}\n" in program and "umask=007\n" in program


def test_a_repository_over_ssh_gets_a_deploy_key_made_on_the_server(tmp_path, app_user):
    require_tool("ssh-keygen")
    server = Server(tmp_path)
    app = server.app
    app.user, app.home = app_user.pw_name, app_user.pw_dir
    app.dir, app.venv = f"{app.home}/fixture", f"{app.home}/fixture/venv"
    app.run_user = app_user.pw_name
    # Nothing listens there: the clone fails, after the key is made and shown.
    app.repo, app.repo_over_ssh = "ssh://git@127.0.0.1:9/me/fixture.git", True
    server.script.write_text(app_step.update_script(server.plan, etc=server.where.etc, log_dir=server.where.log_dir))
    first = server.update()
    assert first.returncode != 0
    key = Path(app.home) / ".ssh" / "id_ed25519"
    public = (key.parent / "id_ed25519.pub").read_text().strip()
    assert public.startswith("ssh-ed25519 ") and public.endswith(" fixture deploy key")
    assert f"add this deploy key (read-only) to ssh://git@127.0.0.1:9/me/fixture.git so the server can clone it: {public}" \
        in first.stdout
    # The app user's own, private to it; git tried it, over SSH, as that user.
    assert os.stat(key).st_uid == app_user.pw_uid and oct(os.stat(key).st_mode & 0o777) == "0o600"
    assert "127.0.0.1 port 9: Connection refused" in first.stdout
    # Made once: the next run keeps it.
    server.update()
    assert (key.parent / "id_ed25519.pub").read_text().strip() == public
