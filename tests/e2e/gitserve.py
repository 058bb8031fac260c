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
import socket
import subprocess
import threading
from pathlib import Path


FIXTURE_APP = Path(__file__).resolve().parent / "fixture_app"
GUEST_HOST_ADDRESS = "10.0.2.2"


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format, *args):
        pass


class _PortSharingServer(http.server.ThreadingHTTPServer):
    """Binds beside the socket that reserves its port."""

    def server_bind(self):
        self.socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        super().server_bind()


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
        # The port is reserved for this server's whole life by a socket that
        # is bound but never listens (SO_REUSEPORT lets the serving socket
        # share it): no other test, nor an outgoing connection, can take it
        # while the host is "down", and a connection meanwhile is refused, as
        # by a host that is down.
        self._reservation = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._reservation.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        self._reservation.bind(("127.0.0.1", 0))
        self.port = self._reservation.getsockname()[1]
        self._handler = functools.partial(_QuietHandler, directory=str(served))
        self._server = None
        if serve:
            self.start()

    def start(self) -> None:
        """The host comes up (again) on its port."""
        server = _PortSharingServer(("127.0.0.1", self.port), self._handler)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        self._server = server

    def stop(self) -> None:
        """The host goes down; its port stays reserved for ``start``."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

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
        self.stop()
        self._reservation.close()

