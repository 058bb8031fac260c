"""Outgoing mail that receivers accept: the DKIM key first boot makes, the
opendkim and postfix settings, and the records `bakery dns` prints, each
checked with the real tools (opendkim-genkey, opendkim, miltertest, postconf,
sshd and ssh) and the signatures with dkimpy's verifier. The whole path in a
real guest is in tests/e2e/test_first_boot.py."""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

from bakery import layout
from bakery.dns import DkimKey, dns_records, format_records, parse_genkey_record
from bakery.steps import firstboot, mail

from conftest import make_dkim_public_key, require_tool, run_bakery
from mail_helpers import dkim_verifies, zone_txt
from stack_helpers import make_plan

MAIL_HOST = {"hostname": "web", "domain": "example.com"}


def needs_root():
    if os.geteuid() != 0:
        pytest.skip("needs root: opendkim drops to its own user, which must own the key")


@pytest.fixture
def safe_dir():
    """A folder opendkim accepts for its key: no folder above it may be
    writable by others (so not under /tmp), like /etc/dkimkeys on a server."""
    needs_root()
    folder = Path(tempfile.mkdtemp(prefix="bakery-dkim-", dir="/run"))
    folder.chmod(0o755)
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


def make_key_script(plan, key_dir: Path) -> str:
    """The first-boot script's make_dkim_key, making the key in ``key_dir``."""
    script = firstboot.first_boot_script(plan)
    start = script.index("make_dkim_key() {")
    end = script.index("\n}\n", start) + 3
    body = script[start:end].replace(layout.DKIM_KEY_DIR, str(key_dir))
    return "set -Eeuo pipefail\nlog() { echo \"$*\"; }\n" + body + "make_dkim_key\n"


def make_key(plan, key_dir: Path) -> subprocess.CompletedProcess:
    require_tool("opendkim-genkey")
    return subprocess.run(["bash", "-c", make_key_script(plan, key_dir)], capture_output=True, text=True, check=True)


def signer_files(plan, root: Path) -> Path:
    """opendkim's configuration for ``plan``, as the server gets it, with
    its paths moved under ``root``; returns the config."""
    where = mail.server_paths()
    where.private_key = str(root / "dkimkeys" / "bakery.private")
    where.socket, where.pid_file = str(root / "run" / "opendkim.sock"), str(root / "run" / "opendkim.pid")
    (root / "run").mkdir(exist_ok=True)
    shutil.chown(root / "run", "opendkim", "opendkim")
    # No syslog daemon here: the test reads what the filter does instead.
    conf = mail.opendkim_conf(plan, where).replace("Syslog\t\t\tyes", "Syslog\t\t\tno")
    (root / "opendkim.conf").write_text(conf)
    return root / "opendkim.conf"


# --- the key ---------------------------------------------------------------------

def test_first_boot_makes_a_2048_bit_key_for_opendkim_alone_and_only_once(safe_dir):
    from cryptography.hazmat.primitives import serialization

    plan = make_plan(safe_dir, host=MAIL_HOST)
    keys = safe_dir / "dkimkeys"
    make_key(plan, keys)
    private, public = keys / "bakery.private", keys / "bakery.txt"
    assert oct(keys.stat().st_mode & 0o777) == "0o700" and keys.owner() == "opendkim"
    assert oct(private.stat().st_mode & 0o777) == "0o600" and private.owner() == "opendkim"
    record = parse_genkey_record(public.read_text())
    assert (record.selector, record.domain) == ("web", "example.com")
    key = serialization.load_pem_private_key(private.read_bytes(), password=None)
    assert key.key_size == 2048
    der = key.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    import base64
    assert record.public_key == base64.b64encode(der).decode()

    made = private.read_bytes()
    make_key(plan, keys)
    assert private.read_bytes() == made, "a second run made a new key"

    # A power cut after the public half was moved: the next run starts over.
    private.unlink()
    (keys / "new.leftover").mkdir()
    make_key(plan, keys)
    assert private.read_bytes() != made and not (keys / "new.leftover").exists()
    assert sorted(p.name for p in keys.iterdir()) == ["bakery.private", "bakery.txt"]


def test_the_key_is_made_on_the_server_never_in_user_data(tmp_path):
    from bakery.cloudconfig import assemble, to_yaml

    plan = make_plan(tmp_path, host=MAIL_HOST)
    user_data = to_yaml(assemble(plan))
    assert "opendkim-genkey -b 2048" in user_data
    assert "PRIVATE KEY" not in user_data and "p=MII" not in user_data


def stage_plan(tmp_path, stage: str):
    import yaml

    from bakery.pipeline import render_config
    from bakery.targets import get_target
    from stack_helpers import MICROBLOG_APP, public_key

    path = tmp_path / f"{stage}.yaml"
    path.write_text(yaml.safe_dump({"admin": {"name": "ubuntu", "ssh_keys": [public_key()]},
                                    "host": {"domain": "example.com"}, "app": MICROBLOG_APP}))
    return render_config(path, get_target("generic"), environ={}, home=tmp_path, stage=stage,
                         hostname="web1" if stage == "instance" else None, save_secrets=False).plan


def test_an_image_carries_no_key_and_its_servers_make_their_own(tmp_path):
    from bakery.cloudconfig import assemble
    from conftest import write_files

    files = write_files(assemble(stage_plan(tmp_path, "image")))
    assert "make_dkim_key" not in files[firstboot.SCRIPT] and "opendkim.conf" not in files[firstboot.SCRIPT]
    assert "opendkim-tools" in files[firstboot.SCRIPT]  # installed in the image, ready for each server
    clean_up = (Path(__file__).parents[1] / "packer" / "scripts" / "clean-image.sh").read_text()
    assert f"rm -rf {layout.DKIM_PRIVATE_KEY} {layout.DKIM_PUBLIC_RECORD}" in clean_up
    instance = stage_plan(tmp_path, "instance")
    files = write_files(assemble(instance))
    assert "make_dkim_key\n" in files[firstboot.SCRIPT] and f"cat > {layout.OPENDKIM_CONF}" in files[firstboot.SCRIPT]
    # Each server signs under its own name: servers from one image never share a record.
    assert f"KeyTable\t\tcsl:bakery=example.com:web1:{layout.DKIM_PRIVATE_KEY}\n" in files[firstboot.SCRIPT]


# --- opendkim and postfix ----------------------------------------------------------

def test_opendkim_accepts_the_rendered_config(tmp_path):
    opendkim = require_tool("opendkim")
    plan = make_plan(tmp_path, host=MAIL_HOST)
    conf = tmp_path / "opendkim.conf"
    # Written by the dkim step's own lines, as on the server.
    step = postfix_steps(plan)
    start = step.index(f"cat > {layout.OPENDKIM_CONF} <<")
    lines = step[start:step.index("\nBAKERY_OPENDKIM\n", start) + 17].replace(layout.OPENDKIM_CONF, str(conf))
    subprocess.run(["bash", "-c", f"set -Eeuo pipefail\n{lines}"], check=True)
    assert conf.read_text() == mail.opendkim_conf(plan)
    checked = subprocess.run([opendkim, "-n", "-x", str(conf)], capture_output=True, text=True)
    assert checked.returncode == 0, checked.stderr
    assert "KeyTable\t\tcsl:bakery=example.com:web:/etc/dkimkeys/bakery.private\n" in conf.read_text()
    assert "SigningTable\t\tcsl:example.com=bakery,.example.com=bakery\n" in conf.read_text()
    # The check can fail: a parameter opendkim does not know.
    conf.write_text(conf.read_text() + "SignAllTheThings\tyes\n")
    assert subprocess.run([opendkim, "-n", "-x", str(conf)], capture_output=True).returncode != 0


SIGN_ALL = r'''
-- One connection per case; a filter that has nothing to do with a mail
-- answers "accept" (no more of it, please) before its end.
local function send(conn, n, ip, from)
  local function step(result, what)
    if result ~= nil then error(what .. ": " .. result) end
    local reply = mt.getreply(conn)
    if reply == SMFIR_ACCEPT then return false end
    if reply ~= SMFIR_CONTINUE then error(what .. ": reply " .. tostring(reply)) end
    return true
  end
  if not step(mt.conninfo(conn, "localhost", ip), "connect") then return nil end
  mt.macro(conn, SMFIC_MAIL, "i", "Q" .. n)
  if not step(mt.mailfrom(conn, "app@" .. from), "MAIL") then return nil end
  if not step(mt.rcptto(conn, "someone@example.net"), "RCPT") then return nil end
  for _, h in ipairs({{"From", "App <app@" .. from .. ">"}, {"To", "someone@example.net"},
                      {"Subject", "case " .. n}, {"Date", "Tue, 22 Dec 2009 13:04:12 -0800"}}) do
    if not step(mt.header(conn, h[1], h[2]), h[1]) then return nil end
  end
  if not step(mt.eoh(conn), "EOH") then return nil end
  if not step(mt.bodystring(conn, "Hello from the app.\r\n"), "body") then return nil end
  if mt.eom(conn) ~= nil then error("EOM") end
  return mt.getheader(conn, "DKIM-Signature", 0)
end

local n = 0
for ip, from in string.gmatch(cases, "([^,;]+),([^;]+)") do
  n = n + 1
  local conn = mt.connect(sock, 40, 0.25)
  if conn == nil then error("cannot connect to " .. sock) end
  print("CASE " .. n .. " " .. (send(conn, n, ip, from) or "UNSIGNED") .. "\nEND")
  mt.disconnect(conn)
end
'''


def signed_by_opendkim(conf: Path, sock: Path, cases: list) -> list:
    """The DKIM-Signature opendkim adds to a mail from each (client address,
    From: domain) of ``cases`` (None when it signs none), through
    miltertest, the milter protocol's own test client."""
    miltertest = require_tool("miltertest")
    script = conf.parent / "sign.lua"
    script.write_text(f'mt.startfilter({require_tool("opendkim")!r}, "-f", "-x", {str(conf)!r})\n' + SIGN_ALL)
    spec = ";".join(f"{ip},{domain}" for ip, domain in cases)
    result = subprocess.run([miltertest, "-D", f"sock=local:{sock}", "-D", f"cases={spec}", "-s", str(script)],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    found = re.findall(r"^CASE \d+ (.*?)\nEND$", result.stdout, re.M | re.S)
    assert len(found) == len(cases), result.stdout
    return [None if sig == "UNSIGNED" else sig for sig in found]


def test_opendkim_signs_the_mail_domain_its_subdomains_and_the_host_name(safe_dir):
    # The host name (web.example.com) lies outside the mail domain: signed too.
    plan = make_plan(safe_dir, host=MAIL_HOST, mail={"domain": "example.org"})
    make_key(plan, safe_dir / "dkimkeys")
    conf = signer_files(plan, safe_dir)
    cases = [("127.0.0.1", "example.org"), ("::1", "example.org"), ("127.0.0.1", "news.example.org"),
             ("::1", "web.example.com"), ("127.0.0.1", "example.com"), ("127.0.0.1", "elsewhere.net")]
    signatures = signed_by_opendkim(conf, safe_dir / "run" / "opendkim.sock", cases)
    assert [sig is not None for sig in signatures] == [True, True, True, True, False, False], signatures
    # Checked against the record `bakery dns --from` prints for this key.
    key = parse_genkey_record((safe_dir / "dkimkeys" / "bakery.txt").read_text())
    zone = format_records(dns_records(plan, key))
    for n, ((_, domain), sig) in enumerate(zip(cases, signatures), start=1):
        if sig is None:
            continue
        assert "d=example.org;" in sig and "s=web;" in sig, sig
        message = (f"DKIM-Signature:{sig}\r\nFrom: App <app@{domain}>\r\nTo: someone@example.net\r\n"
                   f"Subject: case {n}\r\nDate: Tue, 22 Dec 2009 13:04:12 -0800\r\n\r\nHello from the app.\r\n")
        assert dkim_verifies(message.replace("\r\n", "\n").encode(), zone), (domain, sig)
        # A changed body no longer verifies: the check can fail.
        assert not dkim_verifies(message.replace("Hello", "Bye").encode(), zone)


def postfix_steps(plan) -> str:
    """The steps that set postfix up: services (loopback only), dkim, mail."""
    script = firstboot.first_boot_script(plan)
    bodies = []
    for name in ("services", "dkim", "mail"):
        start = script.index(f"step_{name}() {{")
        bodies.append(script[start:script.index("\n}\n", start)])
    return "\n".join(bodies)


def test_postfix_takes_every_setting_of_the_services_dkim_and_mail_steps(tmp_path):
    postconf = require_tool("postconf")
    plan = make_plan(tmp_path, host=MAIL_HOST)
    folder = tmp_path / "postfix"
    folder.mkdir()
    shutil.copy("/usr/share/postfix/main.cf.debian", folder / "main.cf")
    shutil.copy("/usr/share/postfix/master.cf.dist", folder / "master.cf")
    settings = [line.strip() for line in postfix_steps(plan).splitlines() if line.strip().startswith("postconf -e ")]
    assert len(settings) >= 4, settings
    for line in settings:
        subprocess.run(["bash", "-c", line.replace("postconf -e ", f"{postconf} -c {folder} -e ", 1)], check=True)
    shown = subprocess.run([postconf, "-c", str(folder), "-n"], capture_output=True, text=True, check=True)
    assert "warning" not in shown.stderr, shown.stderr  # postfix knows every parameter set
    values = dict(line.split(" = ", 1) for line in shown.stdout.splitlines())
    assert values["smtpd_milters"] == values["non_smtpd_milters"] == mail.MILTER
    assert values["milter_default_action"] == "accept"  # opendkim down: mail leaves unsigned, not lost
    assert values["inet_interfaces"] == "loopback-only" and values["mydestination"] == "localhost"
    # Inside postfix's chroot, the milter's name is the socket opendkim makes.
    assert f"local:{layout.POSTFIX_QUEUE_DIR}/{mail.MILTER.split(':', 1)[1]}" in mail.opendkim_conf(plan)


def test_postfix_starts_once_signing_after_the_site_serves_and_outside_the_lockdown(tmp_path):
    """Making the key and starting postfix take a while on a small CPU and
    mail can wait: the site comes first; postfix is loopback-only (and not
    running) before either; it starts once, with signing wired in."""
    plan = make_plan(tmp_path, host=MAIL_HOST)
    steps = firstboot.step_names(plan)
    assert steps.index("services") < steps.index("nginx") < steps.index("dkim") < steps.index("mail") \
        < steps.index("verdict")
    assert "dkim" not in firstboot.LOCKDOWN and "mail" not in firstboot.LOCKDOWN
    script = firstboot.first_boot_script(plan)
    bodies = {}
    for name in ("services", "dkim", "mail"):
        start = script.index(f"step_{name}() {{")
        bodies[name] = script[start:script.index("\n}\n", start)]
    assert "loopback-only" in bodies["services"] and "opendkim" not in bodies["services"]
    assert "systemctl" not in bodies["services"]  # enabled for later boots, not started here
    assert "restart postfix" not in bodies["dkim"]
    assert bodies["mail"].count("systemctl restart postfix") == 1
    assert script.count("systemctl restart postfix") == 1
    # postfix.service succeeds even when postfix@- failed: postfix's own status decides.
    assert "if postfix status 2>/dev/null; then return 0; fi" in bodies["mail"] and "return 1" in bodies["mail"]
    assert "myhostname = web.example.com" in bodies["mail"]


def test_a_server_from_an_image_names_its_postfix_after_the_site_serves(tmp_path):
    """The image locked postfix down while baking and starts it at boot: on
    each server, only its name changes (a restart, seconds on a small CPU),
    after the site serves; while baking, the lockdown comes before the app."""
    image = firstboot.step_names(stage_plan(tmp_path, "image"))
    assert image.index("services") < image.index("app") and "mail" not in image
    # Enabled in the image: enabling it on each server (systemd's reload and the
    # SysV scripts) cost more than its start at boot, 20 s on a small VM.
    script = firstboot.first_boot_script(stage_plan(tmp_path, "image"))
    start = script.index("step_services() {")
    body = script[start:script.index("\n}\n", start)]
    assert "enable_unit postfix" in body and "systemctl disable" not in body
    instance_plan = stage_plan(tmp_path, "instance")
    instance = firstboot.step_names(instance_plan)
    assert "services" not in instance
    assert instance.index("app") < instance.index("nginx") < instance.index("dkim") < instance.index("mail")
    script = firstboot.first_boot_script(instance_plan)
    start = script.index("step_mail() {")
    body = script[start:script.index("\n}\n", start)]
    assert "myhostname = web1.example.com" in body and "systemctl restart postfix" in body


def test_no_signer_without_a_dns_domain(tmp_path):
    plan = make_plan(tmp_path, host={"hostname": "web"})
    assert not plan.mail.dkim
    script = firstboot.first_boot_script(plan)
    assert "opendkim" not in script and "postfix" in script


# --- the records ------------------------------------------------------------------

def test_records_spf_dkim_with_its_selector_and_dmarc(tmp_path):
    key = make_dkim_public_key()
    plan = make_plan(tmp_path, host=MAIL_HOST, mail={"dkim_selector": "s2024", "dkim_public_key": key})
    records = dns_records(plan)
    assert [r[:3] for r in records] == [
        ("example.com", "TXT", "v=spf1 a mx a:web.example.com -all"),
        ("s2024._domainkey.example.com", "TXT", f"v=DKIM1; k=rsa; p={key}"),
        ("_dmarc.example.com", "TXT", "v=DMARC1; p=none; rua=mailto:postmaster@example.com"),
    ]
    zone = format_records(records)
    assert re.search(r"^_dmarc\.example\.com\. .*\n; .*p=quarantine", zone, re.M), zone
    assert zone_txt(zone)["s2024._domainkey.example.com."] == f"v=DKIM1; k=rsa; p={key}".encode()
    # The server's own key wins over the config's, under the server's selector.
    server = DkimKey("web", "example.com", make_dkim_public_key())
    assert dns_records(plan, server)[1][:2] == ("web._domainkey.example.com", "TXT")


def test_the_selector_defaults_to_the_host_name_then_mail(tmp_path):
    assert make_plan(tmp_path, host=MAIL_HOST).mail.dkim_selector == "web"
    assert make_plan(tmp_path, host={"domain": "example.com"}).mail.dkim_selector == "mail"
    reports = make_plan(tmp_path, host=MAIL_HOST, mail={"dmarc_reports": "dmarc@reports.example.net"})
    assert dns_records(reports)[-1].value.endswith("rua=mailto:dmarc@reports.example.net")


def test_parse_the_record_opendkim_genkey_writes(tmp_path):
    genkey = require_tool("opendkim-genkey")
    subprocess.run([genkey, "-b", "2048", "-h", "sha256", "-r", "-s", "web1", "-d", "example.com", "-D", str(tmp_path)],
                   check=True)
    key = parse_genkey_record((tmp_path / "web1.txt").read_text())
    assert (key.selector, key.domain) == ("web1", "example.com") and key.public_key.startswith("MIIB")
    with pytest.raises(ValueError):
        parse_genkey_record("-----BEGIN RSA PRIVATE KEY-----\n")


# --- bakery dns --from, against a real sshd -----------------------------------------

def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class LocalServer:
    """A real sshd on 127.0.0.1 standing in for the server: it lets in one
    key, and answers only bakery's read-only command with ``record``."""

    def __init__(self, folder: Path, record: str):
        self.folder, self.port = folder, free_port()
        folder.mkdir()
        self.client_key = folder / "client"
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(self.client_key)], check=True)
        (folder / "authorized_keys").write_text(self.client_key.with_suffix(".pub").read_text())
        (folder / "record.txt").write_text(record)
        answer = folder / "answer.sh"
        answer.write_text(f"#!/bin/sh\n[ \"$SSH_ORIGINAL_COMMAND\" = 'sudo -n cat {layout.DKIM_PUBLIC_RECORD}' ] || "
                          "{ echo \"unexpected command: $SSH_ORIGINAL_COMMAND\" >&2; exit 3; }\n"
                          f"cat {folder / 'record.txt'}\n")
        answer.chmod(0o755)
        self.process = None
        self.new_host_key()

    def new_host_key(self) -> None:
        self.stop()
        host_key = self.folder / "host_key"
        for path in (host_key, host_key.with_suffix(".pub")):
            path.unlink(missing_ok=True)
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(host_key)], check=True)
        self.fingerprint = subprocess.run(["ssh-keygen", "-l", "-f", str(host_key)], capture_output=True,
                                          text=True, check=True).stdout.split()[1]
        config = self.folder / "sshd_config"
        config.write_text(f"Port {self.port}\nListenAddress 127.0.0.1\nHostKey {host_key}\n"
                          f"PidFile {self.folder / 'sshd.pid'}\nAuthorizedKeysFile {self.folder / 'authorized_keys'}\n"
                          "PasswordAuthentication no\nKbdInteractiveAuthentication no\nUsePAM no\nStrictModes no\n"
                          "PermitRootLogin prohibit-password\n"
                          f"ForceCommand {self.folder / 'answer.sh'}\n")
        if os.geteuid() == 0:
            os.makedirs("/run/sshd", mode=0o755, exist_ok=True)
        self.process = subprocess.Popen([require_tool("sshd"), "-D", "-e", "-f", str(config)],
                                        stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return
            except OSError:
                time.sleep(0.1)
        raise RuntimeError("sshd did not start")

    def stop(self) -> None:
        if self.process:
            self.process.terminate()
            self.process.wait(timeout=10)
            self.process = None


@pytest.fixture
def local_server(tmp_path):
    require_tool("ssh")
    genkey = require_tool("opendkim-genkey")
    subprocess.run([genkey, "-b", "2048", "-r", "-s", "web", "-d", "example.com", "-D", str(tmp_path)], check=True)
    server = LocalServer(tmp_path / "server", (tmp_path / "web.txt").read_text())
    yield server
    server.stop()


def test_bakery_dns_from_reads_the_server_key_and_pins_its_host_key(tmp_path, workstation, local_server):
    import getpass

    config = tmp_path / "bakery.yaml"
    config.write_text("host: {hostname: web, domain: example.com}\napp: {repo: https://example.com/app.git}\n")
    command = ["dns", "-c", config, "--from", f"{getpass.getuser()}@127.0.0.1", "-p", local_server.port,
               "-i", local_server.client_key]
    env = {"XDG_CONFIG_HOME": str(tmp_path / "xdg")}
    first = run_bakery(command, home=workstation, env=env)
    assert first.returncode == 0, first.stderr.decode()
    zone = first.stdout.decode()
    expected = parse_genkey_record((tmp_path / "web.txt").read_text())
    assert zone_txt(zone)["web._domainkey.example.com."] == f"v=DKIM1; k=rsa; p={expected.public_key}".encode()
    assert "_dmarc.example.com." in zone and "v=spf1" in zone
    said = first.stderr.decode()
    assert "pinned the host key of 127.0.0.1" in said and f"ED25519 {local_server.fingerprint}" in said, said
    known_hosts = tmp_path / "xdg" / "bakery" / "known_hosts"
    found = subprocess.run(["ssh-keygen", "-F", f"[127.0.0.1]:{local_server.port}", "-f", str(known_hosts)],
                           capture_output=True, text=True)
    assert found.returncode == 0 and "ssh-ed25519" in found.stdout, found.stdout

    again = run_bakery(command, home=workstation, env=env)
    assert again.returncode == 0 and again.stdout.decode() == zone
    assert "pinned" not in again.stderr.decode()

    # The server now shows another host key: refused, and the pin is kept.
    pinned = known_hosts.read_text()
    local_server.new_host_key()
    changed = run_bakery(command, home=workstation, env=env)
    assert changed.returncode == 1 and changed.stdout == b""
    assert "is not the one known for it" in changed.stderr.decode(), changed.stderr.decode()
    assert known_hosts.read_text() == pinned


def test_bakery_dns_from_a_server_without_a_key_says_why(tmp_path, workstation, local_server):
    import getpass

    (local_server.folder / "record.txt").unlink()
    config = tmp_path / "bakery.yaml"
    config.write_text("host: {hostname: web, domain: example.com}\napp: {repo: https://example.com/app.git}\n")
    result = run_bakery(["dns", "-c", config, "--from", f"{getpass.getuser()}@127.0.0.1", "-p", local_server.port,
                         "-i", local_server.client_key], home=workstation, env={"XDG_CONFIG_HOME": str(tmp_path)})
    assert result.returncode == 1 and "has no DKIM key" in result.stderr.decode(), result.stderr.decode()


@pytest.mark.parametrize("bad", ["-oProxyCommand=sh", "user@", "a b", "us er@host"])
def test_bakery_dns_from_refuses_what_is_not_user_at_host(tmp_path, workstation, bad):
    config = tmp_path / "bakery.yaml"
    config.write_text("host: {hostname: web, domain: example.com}\n")
    result = run_bakery(["dns", "-c", config, "--from", bad], home=workstation)
    assert result.returncode == 2 and "expected [USER@]HOST" in result.stderr.decode()
