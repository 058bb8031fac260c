"""The rendered update command (also the first-boot app step) run for real
inside a temporary root: a local git repository of a tiny WSGI app, a real
venv and pip (offline, from a local wheelhouse), git, bash. Only
supervisorctl is replaced, by a stand-in that records its calls and, like
supervisor, starts the release ``current`` points at (a real WSGI server on
a free port, which the health check asks) and stops it.

Proves: first install, update to a new commit, a broken commit (pip cannot
install it) fails and leaves the previous release serving without stopping
it, a bad ref stops nothing; releases and ``current``, the health check and
the automatic rollback, the dump before migrations, ``--rollback``,
pruning, a release cut off halfway; a requirement without a wheel (built
from source, the compiler installed the first time) and one that does not
build (named, nothing changed); and the first-boot profile step can run
twice."""

from __future__ import annotations

import base64
import hashlib
import itertools
import os
import pwd
import signal
import socket
import subprocess
import time
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


# An in-tree PEP 517 backend (pip needs nothing from an index to run it):
# metadata first, then a "C extension" compiled with cc, as setuptools does.
SDIST_BACKEND = """\
import base64, hashlib, subprocess, zipfile
NAME, VERSION = {name!r}, {version!r}
MODULE = NAME.replace("-", "_")
DIST = f"{{MODULE}}-{{VERSION}}"
METADATA = f"Metadata-Version: 2.1\\nName: {{NAME}}\\nVersion: {{VERSION}}\\n"

def prepare_metadata_for_build_wheel(directory, config_settings=None):
    import os
    os.makedirs(f"{{directory}}/{{DIST}}.dist-info")
    with open(f"{{directory}}/{{DIST}}.dist-info/METADATA", "w") as f:
        f.write(METADATA)
    return f"{{DIST}}.dist-info"

def build_wheel(directory, config_settings=None, metadata_directory=None):
    subprocess.run(["cc", "-c", "ext.c", "-o", "ext.o"], check=True)
    files = {{f"{{MODULE}}.py": f"VERSION = {{VERSION!r}}\\n", f"{{DIST}}.dist-info/METADATA": METADATA,
             f"{{DIST}}.dist-info/WHEEL": "Wheel-Version: 1.0\\nGenerator: test\\nRoot-Is-Purelib: true\\nTag: py3-none-any\\n"}}
    record = [f"{{path}},sha256={{base64.urlsafe_b64encode(hashlib.sha256(text.encode()).digest()).rstrip(b'=').decode()}},"
              f"{{len(text.encode())}}" for path, text in files.items()]
    files[f"{{DIST}}.dist-info/RECORD"] = "\\n".join(record + [f"{{DIST}}.dist-info/RECORD,,"]) + "\\n"
    name = f"{{DIST}}-py3-none-any.whl"
    with zipfile.ZipFile(f"{{directory}}/{{name}}", "w") as whl:
        for path, text in files.items():
            whl.writestr(path, text)
    return name
"""


def make_sdist(folder: Path, name: str, version: str, source: str) -> None:
    """A source-only package (no wheel): building it compiles ``source`` with cc."""
    import io
    import tarfile

    dist = f"{name.replace('-', '_')}-{version}"
    files = {
        "pyproject.toml": '[build-system]\nrequires = []\nbuild-backend = "backend"\nbackend-path = ["."]\n',
        "backend.py": SDIST_BACKEND.format(name=name, version=version),
        "ext.c": source,
        "PKG-INFO": f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n",
    }
    with tarfile.open(folder / f"{dist}.tar.gz", "w:gz") as archive:
        for path, text in files.items():
            data = text.encode()
            info = tarfile.TarInfo(f"{dist}/{path}")
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))


def git(repo: Path, *args) -> str:
    env = dict(os.environ, GIT_AUTHOR_NAME="t", GIT_AUTHOR_EMAIL="t@t", GIT_COMMITTER_NAME="t", GIT_COMMITTER_EMAIL="t@t")
    return subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True, text=True, env=env).stdout.strip()


def commit_app(repo: Path, version: str, dep: str, message: str, status: str = "200 OK") -> str:
    (repo / "wsgi.py").write_text(
        "import fixture_dep\n\n"
        f"VERSION = {version!r}\n\n"
        "def app(environ, start_response):\n"
        f"    start_response({status!r}, [('Content-Type', 'text/plain')])\n"
        "    return [VERSION.encode()]\n")
    (repo / "requirements.txt").write_text(dep + "\n")
    (repo / ".gitignore").write_text("venv/\n.env\n*.log\n")
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", message)
    return git(repo, "rev-parse", "HEAD")


class Server:
    """A temporary root holding the app user's home, /etc/bakery, the logs,
    and a supervisorctl stand-in; the rendered update script installed in it."""

    made: list = []

    def __init__(self, tmp_path: Path):
        Server.made.append(self)
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
        app = self.app = plan.app
        self.plan = plan
        app.repo = str(self.origin)
        # The test runs as root: the "app user" is root, so the script runs
        # its app steps directly instead of through runuser; so is the user
        # the app runs as (test_the_app_runs_as_a_user_that_cannot_change_its_code
        # has real ones).
        app.user = app.run_user = pwd.getpwuid(os.geteuid()).pw_name
        app.data_dir = str(self.root / "data")
        self.place(str(self.root / "home"))
        app.pip_packages = ["fixture-extra"]
        with socket.socket() as free:
            free.bind(("127.0.0.1", 0))
            app.port = free.getsockname()[1]
        app.bind, app.health_timeout = f"127.0.0.1:{app.port}", 5
        plan.database.engine, plan.database.path = "sqlite", f"{app.data_dir}/fixture.db"
        # The venv's python comes first on PATH, and the login environment is set.
        app.migrate = [f"python -c 'import fixture_dep; print(fixture_dep.VERSION)' >> {app.data_dir}/migrate.log",
                       f"python -c \"import sqlite3; c = sqlite3.connect('{app.data_dir}/fixture.db'); "
                       "c.execute('CREATE TABLE IF NOT EXISTS t (x)'); c.execute('INSERT INTO t VALUES (1)'); c.commit()\""]
        app.setup = ['printf "%s\\n" "$FLASK_APP" >> setup.log']
        self.plan = plan
        self.app = app
        etc, logs = self.root / "etc", self.root / "log"
        etc.mkdir(parents=True)
        Path(app.home).mkdir(parents=True)
        (etc / "fixture.env").write_text(render("dotenv.j2", plan=plan))
        (etc / "fixture.env").chmod(0o600)
        # Where the rendered update command finds everything, inside the temporary root.
        self.roots = dict(etc=str(etc), log_dir=str(logs), backups=str(self.root / "backups"),
                          supervisor=str(self.root / "supervisor"), run=str(self.root / "run"))
        self.where = paths(plan, **self.roots)
        self.script = self.root / "fixture-update"
        self.bin = self.root / "bin"
        self.bin.mkdir()
        self.calls = self.root / "supervisorctl.calls"
        self.pid = self.root / "app.pid"
        self.rewrite()

    def place(self, home: str) -> None:
        """The app user's home: its app folder, releases and current link in it."""
        app = self.app
        app.home, app.base = home, f"{home}/fixture"
        app.dir, app.venv = f"{app.base}/current", f"{app.base}/current/venv"

    def rewrite(self) -> None:
        """The update command and the supervisorctl stand-in, for the plan as it is now."""
        app = self.app
        self.script.write_text(app_step.update_script(self.plan, **self.roots))
        self.script.chmod(0o755)
        # supervisor's part: start serves the release current points at (as
        # gunicorn would, from that folder and its venv), stop ends it.
        serve = ("import sys; sys.path.insert(0, '.'); from wsgi import app; from wsgiref.simple_server import make_server; "
                 f"make_server('127.0.0.1', {app.port}, app).serve_forever()")
        fake = self.bin / "supervisorctl"
        fake.write_text(f'#!/bin/bash\necho "$*" >> {self.calls}\ncase $1 in\n'
                        f'  start) cd {app.dir} && {{ venv/bin/python -c "{serve}" </dev/null >/dev/null 2>&1 9>&- & '
                        f'echo $! > {self.pid}; }} ;;\n'
                        f'  stop) [ ! -s {self.pid} ] || {{ kill "$(cat {self.pid})" || true; rm {self.pid}; sleep 0.2; }} ;;\nesac\n')
        fake.chmod(0o755)

    def env(self) -> dict:
        return dict(os.environ, PATH=f"{self.bin}:{os.environ['PATH']}", PIP_NO_INDEX="1",
                    PIP_FIND_LINKS=str(self.wheels), BAKERY_RETRY_PAUSE="0", BAKERY_RETRY_FOR="3", PIP_NO_CACHE_DIR="1")

    def update(self, *ref) -> subprocess.CompletedProcess:
        self.calls.write_text("")
        return subprocess.run([str(self.script), *ref], capture_output=True, text=True, env=self.env(), timeout=300)

    def stop(self) -> None:
        if self.pid.exists() and self.pid.read_text().strip():
            subprocess.run(["kill", self.pid.read_text().strip()], capture_output=True)

    def serves(self) -> str:
        """What the app answers now (the release the stand-in supervisor started)."""
        import urllib.request
        with urllib.request.urlopen(f"http://127.0.0.1:{self.app.port}/", timeout=5) as response:
            return response.read().decode()

    def current(self) -> str:
        return os.readlink(self.app.dir)

    def previous(self) -> str:
        return os.readlink(f"{self.app.base}/previous")

    def releases(self) -> list[str]:
        return sorted(os.listdir(f"{self.app.base}/releases"))

    def head(self) -> str:
        return git(Path(self.app.dir), "rev-parse", "HEAD")

    def installed(self) -> str:
        return subprocess.run([f"{self.app.venv}/bin/python", "-c", "import fixture_dep; print(fixture_dep.VERSION)"],
                              capture_output=True, text=True, check=True).stdout.strip()

    def supervisorctl(self) -> list[str]:
        return self.calls.read_text().splitlines()


@pytest.fixture(autouse=True)
def _stop_servers():
    yield
    while Server.made:
        Server.made.pop().stop()


@pytest.fixture
def server(tmp_path):
    return Server(tmp_path)


def test_install_update_and_a_broken_commit(server):
    v1 = commit_app(server.origin, "one", "fixture-dep==1.0", "v1")
    git(server.origin, "tag", "v1")

    # First boot: clone, venv, install, .env, setup, migrate, start, health check.
    first = server.update()
    assert first.returncode == 0, first.stdout + first.stderr
    app_dir = Path(server.app.dir)
    migrate_log = Path(server.app.data_dir) / "migrate.log"
    assert server.head() == v1 and server.installed() == "1.0" and server.serves() == "one"
    assert Path(server.app.venv, "bin", "python").exists()
    assert (Path(server.app.venv) / "lib").is_dir() and "fixture_extra" in subprocess.run(
        [f"{server.app.venv}/bin/pip", "list", "--format=freeze"], capture_output=True, text=True).stdout.replace("-", "_")
    env_file = app_dir / ".env"
    assert oct(env_file.stat().st_mode & 0o777) == "0o640"
    assert "SECRET_KEY=" in env_file.read_text()
    assert migrate_log.read_text() == "1.0\n"
    assert (app_dir / "setup.log").read_text() == "wsgi.py\n"
    # Nothing could run before a release was current: nothing stopped.
    assert server.supervisorctl() == ["update", "start fixture"]
    assert "fixture runs " + v1 in Path(server.where.log_dir, "update.log").read_text()

    # A new commit on the branch: fetched, installed, migrated, restarted.
    v2 = commit_app(server.origin, "two", "fixture-dep==2.0", "v2")
    second = server.update("main")
    assert second.returncode == 0, second.stdout + second.stderr
    assert server.head() == v2 and server.installed() == "2.0" and server.serves() == "two"
    assert migrate_log.read_text() == "1.0\n2.0\n"
    assert server.supervisorctl() == ["stop fixture", "update", "start fixture"]

    # A commit pip cannot install: the update fails before stopping anything,
    # the release serving stays current, and the unfinished one is gone.
    releases = server.releases()
    commit_app(server.origin, "three", "fixture-dep==9.9", "broken")
    broken = server.update("main")
    assert broken.returncode != 0
    assert f"pip install failed: {releases[-1]} still serves" in broken.stdout
    assert server.head() == v2 and server.installed() == "2.0" and server.serves() == "two"
    assert server.supervisorctl() == [] and server.releases() == releases
    assert migrate_log.read_text() == "1.0\n2.0\n"

    # A ref that does not exist: nothing stopped, nothing changed.
    missing = server.update("no-such-ref")
    assert missing.returncode != 0 and server.head() == v2 and server.supervisorctl() == []

    # Back to the tag (a rollback is an update to an older ref): its release is deployed again.
    back = server.update("v1")
    assert back.returncode == 0, back.stdout + back.stderr
    assert f"{v1} is installed in {releases[0]}" in back.stdout
    assert server.head() == v1 and server.installed() == "1.0" and server.serves() == "one"
    assert server.current() == f"releases/{releases[0]}" and server.previous() == f"releases/{releases[1]}"


# --- requirements without a wheel ------------------------------------------------

# A compiler stand-in: it fails on a source that says so, as cc on code that
# does not compile.
FAKE_CC = '#!/bin/sh\nfor a; do case $a in *.c) grep -q "does not compile" "$a" && { echo "$a:1: error" >&2; exit 1; };; esac; done\nexit 0\n'


def without_compiler(server: Server) -> Path:
    """A PATH folder with every program this machine has but a C compiler,
    and an apt-get stand-in that records its call and "installs" one."""
    tools = server.root / "tools"
    tools.mkdir()
    for folder in os.environ["PATH"].split(os.pathsep):
        if not os.path.isdir(folder):
            continue
        for entry in os.scandir(folder):
            if entry.name in ("cc", "gcc", "c89", "c99", "clang") or (tools / entry.name).exists():
                continue
            if entry.is_file() and os.access(entry.path, os.X_OK):
                (tools / entry.name).symlink_to(entry.path)
    apt = server.bin / "apt-get"
    apt.write_text(f'#!/bin/sh\necho "$*" >> {server.root}/apt-get.calls\n'
                   f"printf '%s' '{FAKE_CC}' > {server.bin}/cc && chmod 755 {server.bin}/cc\n")
    apt.chmod(0o755)
    return tools



def test_supervisor_reads_the_program_file_again_only_when_it_changed_since_it_started(server):
    """`supervisorctl update` (a Python start, seconds on a small CPU) only when
    the program file is newer than supervisord's pid file, which it writes
    once it has read its configuration: first boot starts supervisord after
    the file is written."""
    commit_app(server.origin, "one", "fixture-dep==1.0", "v1")
    git(server.origin, "tag", "v1")
    program, pid = Path(server.where.supervisor_conf), Path(server.where.supervisor_pid)
    program.parent.mkdir(parents=True)
    program.write_text("[program:fixture]\n")
    pid.parent.mkdir(parents=True)
    pid.write_text("1\n")
    now = time.time()
    os.utime(program, (now - 60, now - 60))
    first = server.update()
    assert first.returncode == 0, first.stdout + first.stderr
    assert server.serves() == "one" and server.supervisorctl() == ["start fixture"]

    # The file changed after supervisord started: read again.
    os.utime(pid, (now - 120, now - 120))
    commit_app(server.origin, "two", "fixture-dep==2.0", "v2")
    second = server.update("main")
    assert second.returncode == 0, second.stdout + second.stderr
    assert server.serves() == "two" and server.supervisorctl() == ["stop fixture", "update", "start fixture"]

def test_a_requirement_without_a_wheel_gets_the_compiler_once_and_installs(server):
    tools = without_compiler(server)
    make_sdist(server.wheels, "fixture-native", "1.0", "int answer(void) { return 42; }\n")
    commit_app(server.origin, "one", "fixture-dep==1.0\nfixture-native==1.0", "v1")
    git(server.origin, "tag", "v1")
    env = dict(server.env(), PATH=f"{server.bin}:{tools}")
    first = subprocess.run([str(server.script)], capture_output=True, text=True, env=env, timeout=300)
    assert first.returncode == 0, first.stdout + first.stderr
    assert "pip must build fixture-native from source: installing build-essential and python3-dev" in first.stdout
    calls = (server.root / "apt-get.calls").read_text().splitlines()
    assert len(calls) == 1 and calls[0].endswith("install --no-install-recommends build-essential python3-dev")
    assert server.serves() == "one"
    assert subprocess.run([f"{server.app.venv}/bin/python", "-c", "import fixture_native"]).returncode == 0

    # The compiler is there now: the next build needs no apt-get.
    make_sdist(server.wheels, "fixture-native", "2.0", "int answer(void) { return 43; }\n")
    commit_app(server.origin, "two", "fixture-dep==1.0\nfixture-native==2.0", "v2")
    second = subprocess.run([str(server.script), "main"], capture_output=True, text=True, env=env, timeout=300)
    assert second.returncode == 0, second.stdout + second.stderr
    assert "pip must build" not in second.stdout and len((server.root / "apt-get.calls").read_text().splitlines()) == 1
    assert server.serves() == "two"


def test_a_requirement_that_does_not_build_is_named_and_nothing_changes(server):
    (server.bin / "cc").write_text(FAKE_CC)
    (server.bin / "cc").chmod(0o755)
    commit_app(server.origin, "one", "fixture-dep==1.0", "v1")
    git(server.origin, "tag", "v1")
    assert server.update().returncode == 0
    releases = server.releases()
    make_sdist(server.wheels, "fixture-broken", "1.0", "this does not compile\n")
    commit_app(server.origin, "two", "fixture-dep==1.0\nfixture-broken==1.0", "v2")
    broken = server.update("main")
    assert broken.returncode != 0
    assert "pip could not build fixture-broken from source; pip's messages are above" in broken.stdout, broken.stdout
    assert "ext.c:1: error" in broken.stdout + broken.stderr  # the build's own output reaches the log
    assert f"pip install failed: {releases[-1]} still serves" in broken.stdout
    assert server.serves() == "one" and server.releases() == releases and server.supervisorctl() == []
    # Failed for good: not retried for network.retry_minutes.
    assert "retrying" not in broken.stdout


def test_failing_migration_on_a_first_install_starts_nothing(server):
    commit_app(server.origin, "one", "fixture-dep==1.0", "v1")
    git(server.origin, "tag", "v1")
    server.app.migrate = ["false"]
    server.rewrite()
    result = server.update()
    assert result.returncode != 0
    assert "FAILED at line" in result.stdout
    # Nothing served before: nothing is started on a half-migrated database
    # (nor stopped: nothing could run).
    assert server.supervisorctl() == []
    assert not os.path.lexists(server.app.dir)


def test_the_update_writes_its_state_for_bakery_status(server):
    state = Path(server.where.update_status)
    v1 = commit_app(server.origin, "one", "fixture-dep==1.0", "v1")
    git(server.origin, "tag", "v1")
    # The migration sees the state the update is in while it runs.
    seen = Path(server.app.data_dir) / "seen.log"
    server.app.migrate = [f"cat {state} >> {seen}"]
    server.rewrite()
    assert server.update().returncode == 0
    assert seen.read_text() == "running 4/6 migrate\n"
    assert state.read_text() == f"ready {v1}\n"

    commit_app(server.origin, "two", "fixture-dep==9.9", "broken")
    assert server.update("main").returncode != 0
    assert state.read_text() == "failed install\n"
    assert server.update("no-such-ref").returncode != 0
    assert state.read_text() == "failed fetch\n"
    commit_app(server.origin, "unhealthy", "fixture-dep==1.0", "unhealthy", status="500 Internal Server Error")
    assert server.update("main").returncode != 0
    assert state.read_text() == "failed health\n"
    server.app.migrate = ["false"]
    server.rewrite()
    assert server.update("v1").returncode != 0
    assert state.read_text() == "failed migrate\n"
    # One release only: nothing to go back to.
    alone = server.update("--rollback")
    assert alone.returncode != 0 and "no previous release" in alone.stdout
    # First boot's background preparation (and an image's) is no update: it leaves the state alone.
    assert server.update("--prepare", "v1").returncode == 0
    assert state.read_text() == "failed migrate\n"


def test_releases_health_check_rollback_dump_and_pruning(server):
    v1 = commit_app(server.origin, "one", "fixture-dep==1.0", "v1")
    git(server.origin, "tag", "v1")
    assert server.update().returncode == 0
    [first] = server.releases()
    assert first.endswith("-" + v1[:12]) and server.current() == f"releases/{first}"
    assert not os.path.lexists(f"{server.app.base}/previous")
    backups = Path(server.where.backups)
    assert not backups.exists()  # nothing served before: nothing to dump

    # A new release: installed beside the one serving, the database dumped, switched.
    v2 = commit_app(server.origin, "two", "fixture-dep==2.0", "v2")
    good = server.update("main")
    assert good.returncode == 0, good.stdout
    second = server.releases()[-1]
    assert server.current() == f"releases/{second}" and server.previous() == f"releases/{first}"
    assert server.serves() == "two" and server.head() == v2
    [dump] = backups.iterdir()
    assert dump.name == f"{second}.before.gz" and oct(dump.stat().st_mode & 0o777) == "0o600"
    assert oct(backups.stat().st_mode & 0o777) == "0o700"
    # The dump is the database before this release's migrations: one row, not two.
    import gzip
    import sqlite3
    copy = server.root / "restored.db"
    copy.write_bytes(gzip.decompress(dump.read_bytes()))
    assert sqlite3.connect(copy).execute("SELECT COUNT(*) FROM t").fetchone() == (1,)

    # A release whose app answers 500: back to the one before, started again.
    commit_app(server.origin, "three", "fixture-dep==2.0", "unhealthy", status="500 Internal Server Error")
    unhealthy = server.update("main")
    assert unhealthy.returncode != 0
    assert f"health failed: back to {second}" in unhealthy.stdout, unhealthy.stdout
    assert f"the previous release {second} serves again" in unhealthy.stdout
    assert server.current() == f"releases/{second}" and server.previous() == f"releases/{first}"
    assert server.serves() == "two"
    assert server.supervisorctl() == ["stop fixture", "update", "start fixture",
                                      "stop fixture", "update", "start fixture"]

    # A migration that fails: the same, and the dump from before it is named with its restore command.
    server.app.migrate = server.app.migrate + ["false"]
    server.rewrite()
    v4 = commit_app(server.origin, "four", "fixture-dep==1.0", "migration fails")
    failed = server.update("main")
    assert failed.returncode != 0
    assert f"migrate failed: back to {second}" in failed.stdout and "serves again" in failed.stdout
    dump = backups / f"{sorted(server.releases())[-1]}.before.gz"
    assert dump.exists() and v4[:12] in dump.name
    assert f"the database before them: {dump}; to restore it: sudo supervisorctl stop fixture && sudo zcat {dump} |" \
        in failed.stdout
    assert server.current() == f"releases/{second}" and server.serves() == "two"

    # --rollback by hand: the previous release, with its own health check; twice goes forth again.
    back = server.update("--rollback")
    assert back.returncode == 0, back.stdout
    assert server.current() == f"releases/{first}" and server.previous() == f"releases/{second}"
    assert server.serves() == "one" and server.supervisorctl() == ["stop fixture", "update", "start fixture"]
    assert Path(server.where.update_status).read_text() == f"ready {v1}\n"
    assert server.update("--rollback").returncode == 0 and server.serves() == "two"

    # Pruning: the last 3 releases stay, and the current and previous ones whatever their age.
    server.app.migrate = server.app.migrate[:-1]
    server.rewrite()
    assert len(server.releases()) == 4
    assert server.update("--rollback").returncode == 0 and server.serves() == "one"
    commit_app(server.origin, "five", "fixture-dep==2.0", "v5")
    assert server.update("main").returncode == 0 and server.serves() == "five"
    kept = server.releases()
    assert len(kept) == 4 and first in kept and second not in kept, kept
    assert server.current() == f"releases/{kept[-1]}" and server.previous() == f"releases/{first}"
    # Their git objects are shared: one repository, each release a worktree of it.
    assert len(git(Path(server.app.base) / "repo.git", "worktree", "list").splitlines()) == 1 + len(kept)
    assert len(list(backups.iterdir())) == 3


def test_a_release_cut_off_halfway_never_becomes_current(server, tmp_path):
    commit_app(server.origin, "one", "fixture-dep==1.0", "v1")
    git(server.origin, "tag", "v1")
    assert server.update().returncode == 0
    [first] = server.releases()
    commit_app(server.origin, "two", "fixture-dep==2.0", "v2")
    # pip asks an index that accepts and never answers: the update is killed
    # (as by a power cut) while pip waits, its release half made.
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen()
    env = dict(server.env(), PIP_NO_INDEX="", PIP_FIND_LINKS="",
               PIP_INDEX_URL=f"http://127.0.0.1:{silent.getsockname()[1]}/simple", PIP_DEFAULT_TIMEOUT="60")
    env.pop("PIP_NO_INDEX")
    update = subprocess.Popen([str(server.script), "main"], env=env, start_new_session=True,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    releases = Path(server.app.base) / "releases"
    deadline = time.time() + 60
    while not any(releases.glob("*/venv/bin/pip")) and time.time() < deadline:
        time.sleep(0.2)
    time.sleep(1)
    os.killpg(update.pid, signal.SIGKILL)
    update.wait()
    # As after a power cut, none of its processes is left (a busy machine
    # can take a moment to end one stuck in I/O, which still holds the lock).
    deadline = time.time() + 60
    while subprocess.run(["pgrep", "-s", str(update.pid)], capture_output=True).returncode == 0 and time.time() < deadline:
        time.sleep(0.2)
    silent.close()
    [half] = [r for r in server.releases() if r != first]
    assert not (releases / half / "venv" / ".bakery-prepared").exists()
    assert server.current() == f"releases/{first}" and server.serves() == "one"

    # The next run removes it and starts cleanly.
    again = server.update("main")
    assert again.returncode == 0, again.stdout
    assert f"removing {half}: unfinished" in again.stdout
    assert half not in server.releases() and server.serves() == "two"
    assert server.current() == f"releases/{server.releases()[-1]}"


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
    server.rewrite()
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
    app.user = app.run_user = app_user.pw_name
    server.place(app_user.pw_dir)
    commit_app(server.origin, "one", "fixture-dep==1.0", "v1")
    git(server.origin, "tag", "v1")
    # The app user reads the origin (git refuses a repository of another owner).
    subprocess.run(["chown", "-R", f"{uid}:{gid}", str(server.origin), str(server.wheels)], check=True)
    server.rewrite()

    # The app's folder itself planted as a link to a folder of root's: the
    # clone fails as the app user, and the folder stays root's and empty.
    os.symlink(victim_dir, app.base)
    os.lchown(app.base, uid, gid)
    planted = server.update()
    assert planted.returncode != 0
    assert owned_by_root_unchanged(victim_dir) and list(victim_dir.iterdir()) == []
    os.unlink(app.base)

    # A real install, then links planted where root used to write.
    first = server.update()
    assert first.returncode == 0, first.stdout + first.stderr
    checkout = Path(app.dir)
    assert os.stat(checkout / ".env").st_uid == uid and oct(os.stat(checkout / ".env").st_mode & 0o777) == "0o640"
    (checkout / ".env").unlink()
    os.symlink(victim_file, checkout / ".env")
    os.lchown(checkout / ".env", uid, gid)
    # The current link pointed at root's folder: replaced, not followed.
    release = server.current()
    os.unlink(app.dir)
    os.symlink(victim_dir, app.dir)
    os.lchown(app.dir, uid, gid)
    os.symlink(victim_dir, f"{app.base}/previous")
    os.lchown(f"{app.base}/previous", uid, gid)
    again = server.update()
    assert again.returncode == 0, again.stdout + again.stderr
    assert owned_by_root_unchanged(victim_file, "precious\n") and owned_by_root_unchanged(victim_dir)
    assert list(victim_dir.iterdir()) == [] and server.current() == release
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
    app.user, app.run_user = owner.pw_name, runner.pw_name
    server.place(owner.pw_dir)
    data = Path(app.data_dir)
    server.plan.database.engine, server.plan.database.path = "sqlite", f"{data}/fixture.db"
    app.migrate = [f"id -un > {data}/migrate.who && python -c \"import sqlite3; c = sqlite3.connect('{data}/fixture.db'); "
                   "c.execute('CREATE TABLE IF NOT EXISTS t (x)'); c.commit()\""]
    app.setup = ["id -un > setup.who"]
    commit_app(server.origin, "one", "fixture-dep==1.0", "v1")
    git(server.origin, "tag", "v1")
    subprocess.run(["chown", "-R", f"{owner.pw_uid}:{owner.pw_gid}", str(server.origin), str(server.wheels)], check=True)
    server.rewrite()
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
    assert not can(runner, f"ln -sfn /tmp {checkout}") and not can(runner, f"touch {app.base}/releases/planted")
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
    app.user = app.run_user = app_user.pw_name
    server.place(app_user.pw_dir)
    # Nothing listens there: the clone fails, after the key is made and shown.
    app.repo, app.repo_over_ssh = "ssh://git@127.0.0.1:9/me/fixture.git", True
    server.rewrite()
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
