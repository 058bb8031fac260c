"""A git repository on the host that the guest clones over plain HTTP.

Owns the fixture app's repository: a work tree made from ``fixture_app/``,
committed and tagged, whose ``.git`` directory is served read-only by a
threaded ``http.server`` on 127.0.0.1. git's "dumb" HTTP protocol needs only
static files plus the index that ``git update-server-info`` writes. Under
QEMU user networking the guest reaches the host's loopback as 10.0.2.2.
"""

from __future__ import annotations

import functools
import http.server
import shutil
import subprocess
import threading
from pathlib import Path


FIXTURE_APP = Path(__file__).resolve().parent / "fixture_app"
GUEST_HOST_ADDRESS = "10.0.2.2"


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format, *args):
        pass


class GitRepoServer:
    """``serve=False`` makes the repository and its address but answers
    nothing until ``start``: a git host that is down."""

    def __init__(self, workdir: Path, serve: bool = True):
        self.worktree = workdir / "repo"
        shutil.copytree(FIXTURE_APP, self.worktree, ignore=shutil.ignore_patterns("__pycache__", "*.db", ".env"))
        self._git("init", "-q", "-b", "main")
        self.commit("fixture app", tag="v1")
        served = workdir / "served"
        served.mkdir()
        (served / "repo.git").symlink_to(self.worktree / ".git")
        self._served = served
        # Bound now, listening only once started: the port stays this
        # server's (no other test can take it meanwhile), and until then a
        # connection to it is refused, as by a host that is down.
        handler = functools.partial(_QuietHandler, directory=str(served))
        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler, bind_and_activate=False)
        self._server.server_bind()
        self.port = self._server.server_address[1]
        self._thread = None
        if serve:
            self.start()

    def start(self) -> None:
        self._server.server_activate()
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    @property
    def guest_url(self) -> str:
        return f"http://{GUEST_HOST_ADDRESS}:{self.port}/repo.git"

    @property
    def host_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/repo.git"

    def _git(self, *args: str) -> str:
        return subprocess.run(
            ["git", "-c", "user.name=bakery e2e", "-c", "user.email=e2e@example.invalid", *args],
            cwd=self.worktree, check=True, capture_output=True, text=True,
        ).stdout

    def write(self, relative: str, content: str) -> None:
        (self.worktree / relative).write_text(content)

    def commit(self, message: str, tag: str | None = None) -> str:
        """Commit the work tree and publish it to the served repository."""
        self._git("add", "-A")
        self._git("commit", "-q", "-m", message)
        if tag:
            self._git("tag", tag)
        self._git("update-server-info")
        return self._git("rev-parse", "HEAD").strip()

    def retag(self, tag: str) -> None:
        """Move ``tag`` to the current commit, as an upstream that re-tags does."""
        self._git("tag", "-f", tag)
        self._git("update-server-info")

    def close(self) -> None:
        if self._thread is not None:  # shutdown() waits for a loop that never ran otherwise
            self._server.shutdown()
        self._server.server_close()
