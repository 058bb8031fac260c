"""The rendered example in examples/rendered/ is what bakery renders today
(regenerate with scripts/render-examples), and the microblog user-data fits
the smallest provider limit (16 KiB) as plain #cloud-config text, its files
packed into one archive that the first bootcmd unpacks."""

from __future__ import annotations

import base64
import gzip
import re
import shutil
import subprocess

import yaml

from bakery.cloudconfig import UNPACKED_MARK, without_comments
from conftest import REPO, require_tool, run_bakery

RENDERED = REPO / "examples" / "rendered"


def test_rendered_example_has_not_drifted(tmp_path):
    home = tmp_path / "home"
    (home / ".ssh").mkdir(parents=True)
    shutil.copy(RENDERED / "example-key.pub", home / ".ssh" / "id_ed25519.pub")
    secrets = tmp_path / "secrets.yaml"
    result = run_bakery(["render", "-c", REPO / "examples" / "microblog.yaml", "--target", "digitalocean", "--secrets", secrets], home=home)
    assert result.returncode == 0, result.stderr.decode()
    assert not secrets.exists()  # secrets: server: none drawn on the workstation
    expected = (RENDERED / "microblog.digitalocean.user-data").read_bytes()
    assert result.stdout == expected, "examples/rendered is stale: run scripts/render-examples"
    small = run_bakery(["render", "-c", REPO / "examples" / "microblog.yaml", "--target", "ec2", "--secrets", secrets], home=home)
    assert small.returncode == 0, small.stderr.decode()
    assert small.stdout.startswith(b"#cloud-config\n") and len(small.stdout) <= 16 * 1024
    assert b"encoding: gz+b64" not in result.stdout


def test_files_that_fit_no_other_way_are_unpacked_by_the_first_bootcmd(tmp_path, workstation):
    """For a 16 KiB provider the files travel as one archive in a bootcmd;
    the real sh and python3 unpack it (into a temporary root here) to the
    files a roomier target gets, with their modes, once per instance."""
    # The same server compressed as a whole carries its files unpacked.
    compressed = run_bakery(["render", "-c", REPO / "examples" / "microblog.yaml", "--target", "ec2",
                             "--format", "gzip-base64"], home=workstation).stdout
    full = yaml.safe_load(gzip.decompress(base64.b64decode(compressed)))
    result = run_bakery(["render", "-c", REPO / "examples" / "microblog.yaml", "--target", "ec2"], home=workstation)
    assert result.returncode == 0, result.stderr.decode()
    small = yaml.safe_load(result.stdout)
    assert len(result.stdout) <= 16 * 1024 and "write_files" not in small
    unpack = small["bootcmd"][0]
    assert unpack[:2] == ["sh", "-c"] and "BAKERY_FILES" in unpack[2]
    checked = subprocess.run([require_tool("shellcheck"), "-s", "sh", "-"], input=unpack[2], capture_output=True, text=True)
    assert checked.returncode == 0, checked.stdout
    # The other bootcmd scripts travel in the archive, as files their bootcmd
    # runs: the roomier target's scripts without their comment lines.
    assert len(small["bootcmd"]) == len(full["bootcmd"]) + 1
    scripts = {}
    for command, roomier in zip(small["bootcmd"][1:], full["bootcmd"]):
        assert roomier[:2] == ["sh", "-c"] and command[0] == "sh" and len(command) == 2, command
        scripts[command[1]] = [line for line in roomier[-1].splitlines()
                               if line.strip() and not line.lstrip().startswith("#")]
    # The same command, with the root and the instance's state moved into tmp_path.
    command = unpack[2].replace("' / <<'BAKERY_FILES'", f"' {tmp_path}/root <<'BAKERY_FILES'")
    command = command.replace(UNPACKED_MARK, f"{tmp_path}/unpacked")
    (tmp_path / "root").mkdir()
    for _ in range(2):
        done = subprocess.run(["sh", "-c", command], capture_output=True, text=True)
        assert done.returncode == 0, done.stderr
    assert (tmp_path / "unpacked").exists()
    for path, lines in scripts.items():
        unpacked = tmp_path / "root" / path.lstrip("/")
        assert unpacked.read_text().splitlines() == lines and oct(unpacked.stat().st_mode & 0o7777) == "0o600", path
        checked = subprocess.run([require_tool("shellcheck"), "-s", "sh", unpacked], capture_output=True, text=True)
        assert checked.returncode == 0, checked.stdout
    for entry in full["write_files"]:
        path = tmp_path / "root" / entry["path"].lstrip("/")
        assert path.read_text() == without_comments(entry["path"], entry["content"]), entry["path"]
        assert oct(path.stat().st_mode & 0o7777) == oct(int(entry["permissions"], 8)), entry["path"]
    # Comment lines go where "#" starts one; /etc/issue keeps its text.
    sshd = (tmp_path / "root/etc/ssh/sshd_config.d/10-bakery.conf").read_text()
    assert "PasswordAuthentication no" in sshd and not re.search(r"^\s*#", sshd, re.M)
    issue = next(entry["content"] for entry in full["write_files"] if entry["path"] == "/etc/issue")
    assert (tmp_path / "root/etc/issue").read_text() == issue
    # A second run finds the mark and leaves first boot's changes alone.
    script = tmp_path / "root/usr/local/lib/bakery/first-boot.sh"
    script.write_text("changed")
    subprocess.run(["sh", "-c", command], check=True)
    assert script.read_text() == "changed"


SUPERVISOR_SECTIONS = r"""
import json, sys
from supervisor.options import UnhosedConfigParser
parser = UnhosedConfigParser()
parser.read_string(sys.stdin.read())
print(json.dumps({section: dict(parser.items(section, raw=True)) for section in parser.sections()}))
"""


def test_packed_files_without_their_comments_say_the_same_to_the_tools_that_read_them(tmp_path):
    """A 16 KiB target's archive drops comment lines by folder
    (cloudconfig.COMMENT_MARKERS); MySQL's option reader, apt and supervisor's
    own parser read the same settings from the packed file as from the whole one."""
    files = {}
    for entry in yaml.safe_load((RENDERED / "microblog.digitalocean.user-data").read_text())["write_files"]:
        content = entry["content"]
        if entry.get("encoding") == "gz+b64":
            content = gzip.decompress(base64.b64decode(content)).decode()
        files[entry["path"]] = content
    readers = {
        "/etc/mysql/conf.d/bakery.cnf": lambda path: [require_tool("my_print_defaults"), f"--defaults-file={path}",
                                                      "mysqld"],
        "/etc/apt/apt.conf.d/20auto-upgrades": lambda path: [require_tool("apt-config"), "-c", str(path), "dump"],
        "/etc/supervisor/conf.d/microblog.conf": lambda path: ["/usr/bin/python3", "-c", SUPERVISOR_SECTIONS],
    }
    for number, (name, command) in enumerate(readers.items()):
        whole, packed = files[name], without_comments(name, files[name])
        assert len(packed) < len(whole), f"{name}: no comment line dropped"
        read = []
        for version, text in (("whole", whole), ("packed", packed)):
            path = tmp_path / f"{number}-{version}"
            path.write_text(text)
            result = subprocess.run(command(path), input=text, capture_output=True, text=True)
            assert result.returncode == 0, f"{name}: {result.stderr}"
            read.append(result.stdout.replace(str(path), "FILE"))  # apt's dump names the file it read
        assert read[0] == read[1] and read[0].strip(), name
