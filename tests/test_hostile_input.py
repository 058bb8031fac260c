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
    (APP + "database:\n  engine: sqlite\n  path: ../../../app.db\n", "database.path", "must be in the app's data folder"),
    (APP + "database:\n  engine: sqlite\n  path: /tmp/app.db\n", "database.path", "must be in the app's data folder"),
    (APP + "database:\n  engine: sqlite\n  path: /var/lib/mysql/app.db\n", "database.path", "folder /var/lib/app/"),
    (APP + "  static: app/../../../../etc\n", "app.static", "must be a folder inside the app's checkout"),
    (APP + "  static: app/..\n", "app.static", "must be a folder inside the app's checkout"),
    # Code the server would run, from a source nobody authenticated.
    ("app:\n  repo: http://git.example.org/app.git\n", "app.repo", "does not authenticate the git server"),
    ("app:\n  repo: git://git.example.org/app.git\n", "app.repo", "app.insecure_transport: true"),
])


def test_config_that_would_hurt_is_refused_with_its_place(tmp_path, workstation, fragment, key, message):
    text = fragment if fragment.startswith("admin:") else BASE + fragment
    cfg = write(tmp_path, text)
    result = run_bakery(["render", "-c", cfg], home=workstation)
    err = result.stderr.decode()
    assert result.returncode == 2 and result.stdout == b"", err
    assert f"{cfg}:" in err and f" {key}: " in err and message in err, err


def test_credentials_in_the_repository_url_are_refused_without_showing_them(tmp_path, workstation):
    cfg = write(tmp_path, BASE + "app:\n  repo: https://me:ghp_s3cr3tT0ken@github.com/me/app.git\n")
    result = run_bakery(["render", "-c", cfg], home=workstation)
    err = result.stderr.decode()
    assert result.returncode == 2 and result.stdout == b"", err
    assert " app.repo: " in err and "holds credentials" in err and "deploy key" in err, err
    assert "ghp_s3cr3tT0ken" not in err


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
    config = tmp_path / "shared.yaml"
    config.write_text(EXAMPLE.read_text() + "\nsecrets: shared\n")
    result = run_bakery(["render", "-c", config, "--secrets", link], home=workstation)
    assert result.returncode == 0, result.stderr.decode()
    assert link.is_symlink() and "secret_key" in store.read_text()
    assert stat.S_IMODE(store.stat().st_mode) == 0o600


# --- input the reader cannot take: bounded, located, exit 2 -----------------------

BOMB = "".join(f"l{i}: &l{i} [" + ", ".join([f"*l{i - 1}"] * 9 if i else ['"lol"'] * 9) + "]\n" for i in range(9))


@pytest.mark.parametrize("text, message", [
    (BOMB, "YAML aliases (*name) are not supported"),
    ("a: &a [*a]\n", "YAML aliases (*name) are not supported"),
    ("admin: " + "[" * 3000 + "]" * 3000 + "\n", "nested too deeply"),
    ("admin: !!python/object/apply:os.system ['true']\n", "the YAML tag"),
    ("admin: !vault abc\n", "the YAML tag '!vault' is not supported"),
    ("admin:\n  name: !!int alice\n", "cannot read this value as int"),
    ("app:\n  port: " + "9" * 5000 + "\n", "digits is far too long"),
    ('admin:\n  name: "alice\nhost:\n  hostname: web1\n', "the quoted value that starts here is never closed"),
    ("admin:\n  name: ${ADMIN\n", "a '${' that is not ${NAME}"),
    ("admin:\n  name: ${1ABC}\n", "a '${' that is not ${NAME}"),
])
def test_input_the_reader_cannot_take_is_refused_at_once(tmp_path, workstation, text, message):
    cfg = write(tmp_path, text)
    result = run_bakery(["render", "-c", cfg], home=workstation, timeout=30)
    err = result.stderr.decode()
    assert result.returncode == 2 and "Traceback" not in err, err
    assert message in err and str(cfg) in err, err


def test_an_unterminated_quote_points_at_the_quote(tmp_path, workstation):
    cfg = write(tmp_path, 'admin:\n  name: "alice\nhost:\n  hostname: web1\n')
    err = run_bakery(["render", "-c", cfg], home=workstation).stderr.decode()
    assert f"{cfg}:2:9:" in err, err


@pytest.mark.parametrize("data, where", [
    (b"admin:\n  name: al\xe9ice\n", ":2:11:"),      # Latin-1, not UTF-8
    (b"admin:\n  name: alice\x00\n", ":2:14:"),       # a NUL byte
])
def test_bytes_that_are_not_yaml_text_get_line_and_column(tmp_path, workstation, data, where):
    cfg = tmp_path / "bakery.yaml"
    cfg.write_bytes(data)
    err = run_bakery(["render", "-c", cfg], home=workstation).stderr.decode()
    assert f"{cfg}{where}" in err and "Traceback" not in err, err


@pytest.mark.parametrize("field", ["admin:\n  ssh_keys: [/dev/zero]\n", "network:\n  ca_certs: [/dev/zero]\n"])
def test_a_device_given_as_a_key_or_ca_file_is_not_read_forever(tmp_path, workstation, field):
    cfg = write(tmp_path, BASE.replace("admin:\n  name: alice\n", "") + field)
    result = run_bakery(["render", "-c", cfg], home=workstation, timeout=30)
    assert result.returncode == 2 and "larger than" in result.stderr.decode(), result.stderr.decode()


@pytest.mark.parametrize("make_store, code, message", [
    (lambda p: p.write_bytes(b"app.secret_key: caf\xe9\n"), 1, "not UTF-8"),
    (lambda p: p.mkdir(), 2, "is a directory"),
    (lambda p: p.write_text("app.secret_key: \"two\\nlines\"\n"), 1, "empty or holds a line break"),
    (lambda p: p.write_text("app.secret_key: \"\"\n"), 1, "empty or holds a line break"),
])
def test_a_broken_secrets_file_is_refused_without_showing_it(tmp_path, workstation, make_store, code, message):
    store = tmp_path / "s.yaml"
    make_store(store)
    if store.is_file():
        store.chmod(0o600)
    result = run_bakery(["render", "-c", EXAMPLE, "--secrets", store], home=workstation)
    err = result.stderr.decode()
    assert result.returncode == code and message in err and "Traceback" not in err, err
    assert "two" not in err and "caf" not in err


# --- secrets are never echoed ---------------------------------------------------------

def private_key_pem() -> str:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption()).decode("ascii")


def test_key_material_in_the_wrong_place_is_never_printed(tmp_path, workstation):
    pem = private_key_pem()
    body = "".join(line for line in pem.splitlines() if not line.startswith("-----"))
    cases = {
        "ssh key body without its BEGIN/END lines": f"admin:\n  name: alice\n  ssh_keys: ['{body}']\n",
        "PEM private key as the DKIM key": "admin:\n  name: alice\nmail:\n  dkim_selector: mail\n  dkim_public_key: |\n"
                                           + "".join(f"    {line}\n" for line in pem.splitlines()),
        "private key body as the DKIM key": f"admin:\n  name: alice\nmail:\n  dkim_selector: mail\n  dkim_public_key: {body}\n",
        "Wi-Fi passphrase too short": "admin:\n  name: alice\nnetwork:\n  wifi: {ssid: home, country: GB, password: s3cr3t}\n",
        "Wi-Fi passphrase too long": "admin:\n  name: alice\nnetwork:\n  wifi: {ssid: home, country: GB, password: "
                                     + "x" * 70 + "}\n",
    }
    for name, text in cases.items():
        cfg = write(tmp_path, text)
        for command in (["render", "-c", cfg], ["dns", "-c", cfg]):
            result = run_bakery(command, home=workstation)
            out = result.stdout.decode() + result.stderr.decode()
            assert result.returncode == 2, (name, out)
            for secret in (body[20:60], "s3cr3t", "x" * 70):
                assert secret not in out, (name, out)


def test_an_ssid_is_counted_in_bytes(tmp_path, workstation):
    ssid = "é" * 32  # 32 characters, 64 bytes
    cfg = write(tmp_path, f"admin:\n  name: alice\nnetwork:\n  wifi: {{ssid: '{ssid}', country: GB, password: longenough}}\n")
    result = run_bakery(["render", "-c", cfg, "--target", "raspberry-pi"], home=workstation)
    assert result.returncode == 2 and "at most 32 bytes" in result.stderr.decode()


# --- meaning that was lost --------------------------------------------------------------

def test_a_whole_number_written_as_2_0_is_a_whole_number(tmp_path, workstation):
    cfg = write(tmp_path, BASE + APP + "  workers: 2.0\n")
    result = run_bakery(["render", "-c", cfg], home=workstation, )
    assert result.returncode == 0, result.stderr.decode()
    assert b" -w 2 " in result.stdout and b"-w 2.0" not in result.stdout


def test_tls_without_nginx_is_refused(tmp_path, workstation):
    cfg = write(tmp_path, BASE + APP + "web:\n  nginx: false\n  tls: letsencrypt\n  domain: example.org\n  email: a@example.org\n")
    result = run_bakery(["render", "-c", cfg], home=workstation)
    assert result.returncode == 2 and "web.tls: tls: letsencrypt needs nginx" in result.stderr.decode()


def test_a_long_app_name_gives_a_database_user_mysql_takes(tmp_path, workstation):
    name = "a-very-long-repository-name-for-a-web-app-with-many-words"
    cfg = write(tmp_path, BASE + f"app:\n  repo: https://example.org/{name}.git\ndatabase:\n  engine: mysql\n")
    result = run_bakery(["render", "-c", cfg, "--secrets", tmp_path / "s.yaml"], home=workstation)
    assert result.returncode == 0, result.stderr.decode()
    users = set(__import__("re").findall(rb"CREATE USER IF NOT EXISTS '([^']+)'", result.stdout))
    assert users and all(len(user) <= 32 for user in users), users
