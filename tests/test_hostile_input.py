"""Input that would hurt the server or the workstation is refused cleanly:
a located message, exit 2 (1 for a file that cannot be written), nothing
written, nothing outside the output path touched.

Table-driven: each row is a config fragment and the message it must get."""

from __future__ import annotations

import os
import stat

import pytest

from conftest import REPO, run_bakery

BASE = "admin:\n  name: alice\nhost:\n  hostname: web1\n"
APP = "app:\n  repo: https://example.org/app.git\n"
EXAMPLE = REPO / "examples" / "microblog.yaml"


def write(tmp_path, text: str):
    path = tmp_path / "bakery.yaml"
    path.write_text(text)
    return path


@pytest.mark.parametrize("fragment, key, message", [
    # The admin locked out.
    ("admin:\n  name: root\n", "admin.name", "root stays locked out of SSH"),
    ("admin:\n  name: alice\n  shell: /usr/sbin/nologin\n", "admin.shell", "refuses every login"),
    ("admin:\n  name: alice\n  shell: /bin/false\n", "admin.shell", "refuses every login"),
    ("admin:\n  name: alice\npackages: [openssh-server-]\n", "packages[0]", "makes apt remove openssh-server"),
    ("admin:\n  name: alice\n  ssh_import_id:\n    - |\n      gh:alice\n", "admin.ssh_import_id[0]", "is not a valid"),
    # Paths that would hand / or /tmp to the app user, or serve /etc.
    (APP + "database:\n  engine: sqlite\n  path: ../../../app.db\n", "database.path", "must be inside the app's folder"),
    (APP + "database:\n  engine: sqlite\n  path: /tmp/app.db\n", "database.path", "must be inside the app's folder"),
    (APP + "database:\n  engine: sqlite\n  path: /var/lib/mysql/app.db\n", "database.path", "in /var/lib/app/"),
    (APP + "  static: app/../../../../etc\n", "app.static", "must be a folder inside the app's checkout"),
    (APP + "  static: app/..\n", "app.static", "must be a folder inside the app's checkout"),
])
def test_config_that_would_hurt_is_refused_with_its_place(tmp_path, workstation, fragment, key, message):
    text = fragment if fragment.startswith("admin:") else BASE + fragment
    cfg = write(tmp_path, text)
    result = run_bakery(["render", "-c", cfg], home=workstation)
    err = result.stderr.decode()
    assert result.returncode == 2 and result.stdout == b"", err
    assert f"{cfg}:" in err and f" {key}: " in err and message in err, err


def test_a_special_file_is_written_to_not_replaced(tmp_path, workstation):
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    reader = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)
    try:
        result = run_bakery(["render", "-c", EXAMPLE, "-o", fifo, "--secrets", tmp_path / "s.yaml"], home=workstation)
        assert result.returncode == 0, result.stderr.decode()
        assert stat.S_ISFIFO(os.stat(fifo).st_mode)
        assert os.read(reader, 14) == b"#cloud-config\n"
    finally:
        os.close(reader)
    devnull = run_bakery(["render", "-c", EXAMPLE, "-o", "/dev/null", "--secrets", tmp_path / "s.yaml"],
                         home=workstation)
    assert devnull.returncode == 0, devnull.stderr.decode()
    assert stat.S_ISCHR(os.stat("/dev/null").st_mode)


def test_the_config_is_never_overwritten(tmp_path, workstation):
    cfg = tmp_path / "bakery.yaml"
    cfg.write_bytes(EXAMPLE.read_bytes())
    result = run_bakery(["render", "-c", cfg, "-o", cfg, "--secrets", tmp_path / "s.yaml"], home=workstation)
    assert result.returncode == 2 and "is the config itself" in result.stderr.decode()
    assert cfg.read_bytes() == EXAMPLE.read_bytes()


@pytest.mark.parametrize("where", ["a-file/user-data", "/proc/bakery-test/user-data"],
                         ids=["parent-is-a-file", "folder-that-cannot-be-made"])
def test_an_output_that_cannot_be_written_is_one_line_exit_1(tmp_path, workstation, where):
    (tmp_path / "a-file").write_text("x")
    output = tmp_path / where if not where.startswith("/") else where
    result = run_bakery(["render", "-c", EXAMPLE, "-o", output, "--secrets", tmp_path / "s.yaml"], home=workstation)
    err = result.stderr.decode()
    assert result.returncode == 1 and "Traceback" not in err, err
    assert err.strip().splitlines()[-1].startswith("bakery: error: "), err
    assert (tmp_path / "a-file").read_text() == "x"


def test_packer_keeps_the_user_s_own_template(tmp_path, workstation):
    out = tmp_path / "packer"
    out.mkdir()
    mine = out / "amazon-ebs.pkr.hcl"
    mine.write_text("# my own template\n")
    result = run_bakery(["packer", "-c", EXAMPLE, "--target", "hetzner", "-o", out, "--secrets", tmp_path / "s.yaml"],
                        home=workstation)
    assert result.returncode == 2 and "which bakery did not write" in result.stderr.decode()
    assert mine.read_text() == "# my own template\n" and sorted(p.name for p in out.iterdir()) == [mine.name]
    # bakery's own template from an earlier run for another builder is replaced.
    mine.unlink()
    first = run_bakery(["packer", "-c", EXAMPLE, "--target", "ec2", "-o", out, "--secrets", tmp_path / "s.yaml"],
                       home=workstation)
    assert first.returncode == 0, first.stderr.decode()
    second = run_bakery(["packer", "-c", EXAMPLE, "--target", "hetzner", "-o", out, "--secrets", tmp_path / "s.yaml"],
                        home=workstation)
    assert second.returncode == 0 and not mine.exists(), second.stderr.decode()


def test_a_symlinked_secrets_file_is_written_through(tmp_path, workstation):
    store = tmp_path / "vault" / "real.secrets.yaml"
    store.parent.mkdir()
    link = tmp_path / "bakery.secrets.yaml"
    link.symlink_to(store)
    result = run_bakery(["render", "-c", EXAMPLE, "--secrets", link], home=workstation)
    assert result.returncode == 0, result.stderr.decode()
    assert link.is_symlink() and "secret_key" in store.read_text()
    assert stat.S_IMODE(store.stat().st_mode) == 0o600
