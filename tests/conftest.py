"""Shared test helpers: finding the real tools (skip outside CI, fail in CI),
cloud-init's own schema check, a workstation with an SSH key, and running the
bakery command."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
SBIN_PATH = os.pathsep.join([os.environ.get("PATH", ""), "/usr/local/sbin", "/usr/sbin", "/sbin"])
CACHE = Path(os.environ.get("BAKERY_TEST_CACHE", Path.home() / ".cache" / "bakery-tests"))


def pytest_collection_modifyitems(items):
    """The guests boot last: the quick tests first, while scripts/test builds
    the guests' images in the background."""
    items.sort(key=lambda item: item.get_closest_marker("e2e") is not None)


def tool_path(name: str) -> str | None:
    return shutil.which(name, path=SBIN_PATH)


def require_tool(name: str, why: str = "") -> str:
    """Path of the real tool ``name``. Missing: skip with the reason, or fail
    under CI=true, where every real check must run."""
    path = tool_path(name)
    if path:
        return path
    reason = f"{name} is not installed{': ' + why if why else ''} (scripts/test installs it as root on Debian/Ubuntu)"
    if IN_CI:
        pytest.fail(f"CI=true and {reason}", pytrace=False)
    pytest.skip(reason)


def _cloud_init_tree() -> Path:
    """Debian's cloud-init package unpacked under the cache (no system-wide
    install: cloud-init on a workstation would act on its next boot)."""
    tree = CACHE / "cloud-init"
    marker = tree / "usr" / "lib" / "python3" / "dist-packages" / "cloudinit"
    if marker.is_dir():
        return tree
    require_tool("apt-get", "needed to fetch Debian's cloud-init package")
    require_tool("dpkg-deb")
    download = CACHE / "download"
    download.mkdir(parents=True, exist_ok=True)
    result = subprocess.run(["apt-get", "download", "cloud-init"], cwd=download, capture_output=True, text=True)
    debs = sorted(download.glob("cloud-init_*.deb"))
    if result.returncode != 0 or not debs:
        msg = f"cannot download cloud-init: {result.stderr.strip()}"
        pytest.fail(msg, pytrace=False) if IN_CI else pytest.skip(msg)
    staging = CACHE / "cloud-init.tmp"
    shutil.rmtree(staging, ignore_errors=True)
    subprocess.run(["dpkg-deb", "-x", str(debs[-1]), str(staging)], check=True)
    shutil.rmtree(tree, ignore_errors=True)
    staging.rename(tree)
    return tree


class CloudInitSchema:
    """Runs `cloud-init schema --config-file` from Debian's package."""

    def __init__(self, tree: Path):
        self.env = dict(os.environ, PYTHONPATH=str(tree / "usr" / "lib" / "python3" / "dist-packages"))

    def run(self, path: Path) -> subprocess.CompletedProcess:
        code = ("import sys; from cloudinit.cmd.main import main; "
                "sys.argv = ['cloud-init', 'schema', '--config-file', sys.argv[1]]; sys.exit(main())")
        return subprocess.run(["/usr/bin/python3", "-c", code, str(path)], env=self.env, capture_output=True, text=True)

    def assert_valid(self, path: Path) -> None:
        result = self.run(path)
        assert result.returncode == 0, f"cloud-init schema rejected {path}:\n{result.stdout}{result.stderr}"
        assert "Valid cloud-config" in result.stdout


@pytest.fixture(scope="session")
def cloud_init_schema() -> CloudInitSchema:
    if not Path("/usr/bin/python3").exists():
        require_tool("python3-system", "cloud-init's schema check runs on the system Python 3")
    checker = CloudInitSchema(_cloud_init_tree())
    probe = subprocess.run(["/usr/bin/python3", "-c", "import yaml, jsonschema, jinja2, configobj, requests, jsonpatch"],
                           capture_output=True, text=True)
    if probe.returncode != 0:
        msg = "cloud-init's Python dependencies are missing on the system Python (python3-yaml, python3-jsonschema, python3-jinja2, python3-configobj, python3-requests, python3-jsonpatch)"
        pytest.fail(msg, pytrace=False) if IN_CI else pytest.skip(msg)
    return checker


def make_public_key(kind: str = "ed25519", comment: str = "test@bakery") -> tuple[str, bytes]:
    """A fresh OpenSSH key pair: (public key line, private key in OpenSSH PEM)."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

    if kind == "ed25519":
        key = ed25519.Ed25519PrivateKey.generate()
    elif kind == "ecdsa":
        key = ec.generate_private_key(ec.SECP256R1())
    elif kind.startswith("rsa"):
        bits = int(kind[3:] or 3072)
        key = rsa.generate_private_key(public_exponent=65537, key_size=bits)
    else:
        raise ValueError(kind)
    public = key.public_key().public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH).decode()
    private = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH, serialization.NoEncryption())
    return f"{public} {comment}", private


@pytest.fixture
def workstation(tmp_path) -> Path:
    """A home directory with ~/.ssh/id_ed25519.pub, as on a developer's laptop."""
    home = tmp_path / "home"
    (home / ".ssh").mkdir(parents=True)
    public, private = make_public_key()
    (home / ".ssh" / "id_ed25519.pub").write_text(public + "\n")
    (home / ".ssh" / "id_ed25519").write_bytes(private)
    os.chmod(home / ".ssh" / "id_ed25519", 0o600)
    return home


def run_bakery(args, *, home: Path, cwd: Path | None = None, env: dict | None = None, input: bytes | None = None,
               timeout: float | None = None) -> subprocess.CompletedProcess:
    """Run the real `bakery` command in a subprocess, as a user would (a
    ``timeout`` proves that bad input is refused, not read forever)."""
    full_env = {k: v for k, v in os.environ.items() if k not in ("MS_TRANSLATOR_KEY",)}
    full_env.update({"HOME": str(home), "PYTHONPATH": str(REPO / "src")})
    if env:
        full_env.update(env)
    return subprocess.run([sys.executable, "-m", "bakery", *map(str, args)], cwd=cwd, env=full_env,
                          capture_output=True, input=input, timeout=timeout)


def write_files(doc: dict) -> dict:
    """A rendered cloud-config's write_files as {path: content}, unpacking the
    ones bakery sent gzip+base64 to fit a size limit."""
    import base64
    import gzip

    files = {path: content for path, (content, _) in archived_files(doc).items()}
    for entry in doc.get("write_files", []):
        content = entry["content"]
        if entry.get("encoding") == "gz+b64":
            content = gzip.decompress(base64.b64decode(content)).decode("utf-8")
        files[entry["path"]] = content
    return files


def archived_files(doc: dict) -> dict:
    """{path: (content, mode)} of the files a rendered cloud-config carries
    in its unpacking bootcmd (when nothing else fit the provider's limit)."""
    import lzma
    import re

    from bakery.cloudconfig import b94decode

    files = {}
    for command in doc.get("bootcmd", []):
        match = re.search(r"<<'BAKERY_FILES'.*?\n(\S+)\nBAKERY_FILES", command[-1], re.S)
        if match:
            data = lzma.decompress(b94decode(match.group(1)))
            while data:
                path, mode, size, data = data.split(b"\n", 3)
                files[path.decode()] = (data[:int(size)].decode("utf-8"), int(mode, 8))
                data = data[int(size):]
    return files


def first_boot_packages(doc: dict) -> list:
    """The packages the first-boot script of a rendered cloud-config installs."""
    import re
    import shlex

    script = write_files(doc)["/usr/local/lib/bakery/first-boot.sh"]
    # The whole list is the line that also takes the time daemon.
    match = re.search(r'install --no-install-recommends \$\{time_sync:\+"\$time_sync"\}(.*)$', script, re.M)
    return shlex.split(match.group(1)) if match else []


def make_dkim_public_key() -> str:
    """A real RSA public key as a DKIM record carries it: the base64 of its DER."""
    import base64

    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048).public_key()
    der = key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return base64.b64encode(der).decode("ascii")
