"""The app stack's server files, checked by the tools that will read them:
nginx -t, shellcheck, supervisor's own config parser, sshd -t, python-dotenv
and bash. Property tests feed arbitrary text into every context."""

from __future__ import annotations

import io
import subprocess
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bakery.dns import dns_records, format_records
from bakery.steps import app as app_step
from bakery.steps import database, firstboot, ssh, web
from bakery.templating import render

from conftest import make_dkim_public_key
from stack_helpers import MICROBLOG_APP, make_plan, require_tool

VARIANTS = {
    "microblog-mysql": dict(),
    "postgresql-letsencrypt": dict(database={"engine": "postgresql"},
                                   web={"tls": "letsencrypt", "domain": "blog.example.com", "email": "ops@example.com"},
                                   host={"hostname": "web", "domain": "example.com"}),
    "sqlite-no-nginx": dict(database={"engine": "sqlite", "path": "/var/lib/microblog/app.db"}, web={"nginx": False},
                            mail={"enabled": False}),
    "separate-user-http-only": dict(app=dict(MICROBLOG_APP, user="microblog", static=None), web={"tls": "none"}),
    # Over SSH: the update command makes and shows a deploy key.
    "search": dict(search={"elasticsearch": True}, app=dict(MICROBLOG_APP, repo="git@github.com:miguelgrinberg/microblog.git")),
}


def variant_plan(tmp_path, name):
    sections = dict(VARIANTS[name])
    if isinstance(sections.get("app"), dict):
        sections["app"] = {k: v for k, v in sections["app"].items() if v is not None}
    return make_plan(tmp_path, memory_mib=4096 if name == "search" else None, **sections)


def all_scripts(plan) -> dict:
    scripts = {"first-boot.sh": firstboot.first_boot_script(plan), "update.sh": app_step.update_script(plan)}
    if plan.web.nginx and plan.web.tls == "letsencrypt":
        le = web.letsencrypt_files(plan)[0]
        scripts["letsencrypt.sh"] = le["content"]
    scripts["profile.sh"] = "#!/bin/sh\n" + app_step.profile_block(plan)
    return scripts


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_every_rendered_script_passes_shellcheck(tmp_path, variant):
    require_tool("shellcheck")
    plan = variant_plan(tmp_path, variant)
    for name, text in all_scripts(plan).items():
        path = tmp_path / name
        path.write_text(text)
        result = subprocess.run(["shellcheck", "--severity=style", str(path)], capture_output=True, text=True)
        assert result.returncode == 0, f"{variant}/{name}:\n{result.stdout}"
        subprocess.run(["bash", "-n", str(path)], check=True)


@pytest.fixture(scope="module")
def throwaway_cert(tmp_path_factory):
    require_tool("openssl")
    folder = tmp_path_factory.mktemp("cert")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-days", "1", "-nodes", "-subj", "/CN=test",
                    "-keyout", str(folder / "test.key"), "-out", str(folder / "test.crt")], check=True, capture_output=True)
    return folder / "test.crt", folder / "test.key"


@pytest.mark.parametrize("variant", ["microblog-mysql", "postgresql-letsencrypt", "separate-user-http-only"])
def test_nginx_site_passes_nginx_t(tmp_path, variant, throwaway_cert):
    nginx = require_tool("nginx")
    plan = variant_plan(tmp_path, variant)
    plan.web.cert_file, plan.web.key_file = map(str, throwaway_cert)
    logs = tmp_path / "logs"
    logs.mkdir()
    site = tmp_path / "site.conf"
    hsts = tmp_path / "hsts.conf"
    hsts.write_text('add_header Strict-Transport-Security "max-age=63072000" always;\n')
    site.write_text(web.nginx_site(plan, log_dir=str(logs), hsts=str(hsts)))
    main = tmp_path / "nginx.conf"
    main.write_text(f"pid {tmp_path}/nginx.pid;\nerror_log {logs}/error.log;\nevents {{}}\n"
                    f"http {{\n  access_log off;\n  include {site};\n}}\n")
    result = subprocess.run([nginx, "-t", "-p", str(tmp_path), "-c", str(main), "-e", str(logs / "error.log")],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    text = site.read_text()
    if plan.web.tls == "none":
        assert "return 301" not in text and "listen 443" not in text
    else:
        assert "return 301 https://$host$request_uri;" in text
        # Mozilla intermediate: TLS 1.2 and 1.3, ECDHE with AES-GCM or ChaCha20 only, no tickets.
        assert "ssl_protocols TLSv1.2 TLSv1.3;" in text and "ssl_session_tickets off;" in text
        ciphers = text.split("ssl_ciphers ", 1)[1].split(";", 1)[0].split(":")
        assert ciphers and all(c.startswith("ECDHE-") and ("GCM" in c or "CHACHA20" in c) for c in ciphers)
        assert f"include {hsts};" in text
    # Forwarding headers are set by nginx alone, whatever the client sent.
    for header in ("Host $host", "X-Real-IP $remote_addr", "X-Forwarded-For $remote_addr",
                   "X-Forwarded-Proto $scheme", "X-Forwarded-Host $host", 'Forwarded ""'):
        assert f"proxy_set_header {header};" in text
    assert "$proxy_add_x_forwarded_for" not in text and "server_tokens off;" in text
    assert "add_header X-Content-Type-Options nosniff always;" in text
    # A domain is named: every other Host is refused.
    if plan.web.server_name != "_":
        assert "listen 80 default_server;" in text and "return 444;" in text
    assert "/.well-known/acme-challenge/" in text
    assert f"{logs}/microblog_access.log" in text and f"{logs}/microblog_error.log" in text
    if plan.app.static_dir:
        assert f"location /static/ {{\n        alias {plan.app.static_dir}/;\n        expires 30d;" in text


def test_no_nginx_means_gunicorn_listens_directly(tmp_path):
    plan = variant_plan(tmp_path, "sqlite-no-nginx")
    assert plan.app.bind == "0.0.0.0:8000"
    assert web.build(plan) == {}
    assert "nginx" not in firstboot.first_boot_script(plan)


SUPERVISOR_PARSE = r"""
import json, sys
from supervisor.options import ServerOptions
opts = ServerOptions()
opts.configfile = sys.argv[1]
opts.process_config(do_usage=False)
out = {}
for group in opts.process_group_configs:
    for p in group.process_configs:
        out[p.name] = dict(command=p.command, directory=p.directory, uid=p.uid, autostart=p.autostart,
                           autorestart=str(p.autorestart), stopasgroup=p.stopasgroup, killasgroup=p.killasgroup,
                           stdout=p.stdout_logfile, stderr=p.stderr_logfile, environment=p.environment, umask=p.umask)
print(json.dumps(out))
"""


def test_supervisor_program_parses_with_supervisors_own_parser(tmp_path):
    require_tool("supervisord")
    import json
    import pwd

    plan = make_plan(tmp_path, app=dict(MICROBLOG_APP, workers=4))
    # A user that exists here, so supervisor resolves it like on the server.
    plan.app.run_user = pwd.getpwuid(0).pw_name
    logs = tmp_path / "logs"
    logs.mkdir()  # supervisor refuses log files in a folder that does not exist
    program = tmp_path / "conf.d" / "microblog.conf"
    program.parent.mkdir()
    program.write_text(app_step.supervisor_program(plan, log_dir=str(logs)))
    main = tmp_path / "supervisord.conf"
    main.write_text(f"[supervisord]\nlogfile={tmp_path}/supervisord.log\npidfile={tmp_path}/s.pid\n"
                    f"[include]\nfiles = {program.parent}/*.conf\n")
    result = subprocess.run(["/usr/bin/python3", "-c", SUPERVISOR_PARSE, str(main)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    conf = json.loads(result.stdout)["microblog"]
    # Through the current link: a restart serves the release it points at.
    assert conf["command"] == "/home/microblog/microblog/current/venv/bin/gunicorn -b 127.0.0.1:8000 -w 4 microblog:app"
    assert conf["directory"] == "/home/microblog/microblog/current"
    assert conf["uid"] == 0 and conf["umask"] == 0o007
    assert conf["autostart"] is True and "RestartUnconditionally" in conf["autorestart"]
    assert conf["stopasgroup"] is True and conf["killasgroup"] is True
    assert conf["stdout"] == f"{logs}/microblog.log" and conf["stderr"] == f"{logs}/microblog-error.log"
    assert conf["environment"] == {"HOME": "/var/lib/microblog", "USER": "root"}


def test_sshd_accepts_the_dropin(tmp_path):
    sshd = require_tool("sshd")
    require_tool("ssh-keygen")
    plan = make_plan(tmp_path)
    dropin = tmp_path / "10-bakery.conf"
    dropin.write_text(ssh.sshd_dropin(plan))
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(tmp_path / "hostkey")], check=True)
    main = tmp_path / "sshd_config"
    main.write_text(f"Include {dropin}\nHostKey {tmp_path}/hostkey\n")
    Path("/run/sshd").mkdir(exist_ok=True)  # sshd -t insists on its privilege separation directory
    result = subprocess.run([sshd, "-t", "-f", str(main)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    effective = subprocess.run([sshd, "-T", "-f", str(main), "-C", "user=x,host=x,addr=127.0.0.1"],
                               capture_output=True, text=True, check=True).stdout
    assert "permitrootlogin no" in effective and "passwordauthentication no" in effective


def test_dotenv_and_profile_carry_the_plan(tmp_path):
    plan = make_plan(tmp_path)
    env_text = app_step.dotenv_file(plan)
    from dotenv import dotenv_values

    parsed = dotenv_values(stream=io.StringIO(env_text))
    assert parsed["DATABASE_URL"].startswith("mysql+pymysql://microblog:")
    assert set(parsed) >= {"SECRET_KEY", "DATABASE_URL", "MAIL_SERVER", "MAIL_PORT"}
    assert app_step.profile_block(plan) == "# >>> bakery microblog >>>\nexport FLASK_APP=microblog.py\n# <<< bakery microblog <<<\n"


def test_secret_files_are_root_only_and_server_files_written_at_once(tmp_path):
    plan = variant_plan(tmp_path, "postgresql-letsencrypt")
    files = {f["path"]: f for step in (database, app_step, web) for f in step.build(plan)["write_files"]}
    assert files["/etc/bakery/microblog-db.sql"]["permissions"] == "0600"
    assert files["/etc/bakery/microblog.env"]["permissions"] == "0600"
    # Root's files, written with the rest in cloud-init's first stage: bakery
    # installs the packages later, so cloud-init's deferred writes would come
    # before the packages anyway (they run before per-instance scripts).
    assert "defer" not in files["/etc/supervisor/conf.d/microblog.conf"]
    assert "defer" not in files["/etc/nginx/sites-available/microblog"]
    assert "/etc/systemd/system/bakery-letsencrypt-microblog.timer" in files


# --- no value escapes its context -------------------------------------------

text = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), max_size=40)
line = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00\n\r"), max_size=40)
# Prefixed, so no name is one of bash's own (_, PWD, SHLVL ...).
names = st.from_regex(r"T_[A-Za-z0-9_]{0,10}", fullmatch=True)


@pytest.fixture(scope="module")
def base_plan(tmp_path_factory):
    return make_plan(tmp_path_factory.mktemp("plan"))


@settings(max_examples=150, suppress_health_check=[HealthCheck.function_scoped_fixture])
# The plan refuses values ending in a backslash (python-dotenv misreads them)
# and values with ${ (python-dotenv expands them, quoted or not).
@given(values=st.dictionaries(names, line.filter(lambda v: not v.endswith("\\") and "${" not in v), max_size=5))
def test_dotenv_values_round_trip_through_python_dotenv(base_plan, values):
    from dotenv import dotenv_values

    base_plan.app.dotenv = dict(values)
    parsed = dotenv_values(stream=io.StringIO(render("dotenv.j2", plan=base_plan)))
    assert dict(parsed) == values


@settings(max_examples=60, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(values=st.dictionaries(names, text, max_size=4))
def test_profile_exports_round_trip_through_bash(base_plan, values):
    base_plan.app.environment = dict(values)
    block = app_step.profile_block(base_plan)
    keys = list(values)
    probe = block + "".join(f'printf "%s\\0" "${{{k}}}"\n' for k in keys)
    out = subprocess.run(["bash", "-c", probe], capture_output=True, check=True).stdout
    assert out.split(b"\0")[:-1] == [values[k].encode() for k in keys]


@settings(max_examples=60, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(setup=st.lists(text.filter(bool), min_size=1, max_size=3), migrate=st.lists(text.filter(bool), max_size=2))
def test_app_commands_reach_bash_c_as_one_exact_word(base_plan, setup, migrate):
    base_plan.app.setup, base_plan.app.migrate = list(setup), list(migrate)
    script = app_step.update_script(base_plan)
    # The script's app_run calls (quoted words may span lines), with app_run
    # printing its arguments instead of running them: the setup commands in
    # the new release before the dump, the migrations after the stop.
    calls = script[script.index("\napp_run ") + 1:script.index('\nif [ -n "$CUR" ]; then\n  update_status running 3/6')]
    if migrate:
        calls += "\n" + script[script.index("\nMIGRATED=1\n") + 1:script.index("\nupdate_status running 5/6")]
    probe = "app_run() { printf '%s\\0' \"$#\" \"$1\" \"$2\"; }\nupdate_status() { :; }\n" + calls + "\n"
    out = subprocess.run(["bash", "-c", probe], capture_output=True, check=True).stdout.split(b"\0")[:-1]
    expected = []
    # Setup commands as the code's owner, migrations as the user the app runs as.
    for who, cmd in [("as_app", c) for c in setup] + [("as_run", c) for c in migrate]:
        expected += [b"2", who.encode(), cmd.encode()]
    assert out == expected


def test_dns_records_for_the_mail_domain(tmp_path):
    plan = make_plan(tmp_path, host={"hostname": "web", "domain": "example.com"},
                     mail={"dkim_selector": "mail", "dkim_public_key": make_dkim_public_key()})
    records = dns_records(plan)
    assert records[0][:3] == ("example.com", "TXT", "v=spf1 a mx a:web.example.com -all")
    assert records[1][0] == "mail._domainkey.example.com" and records[1][2].startswith("v=DKIM1; k=rsa; p=MIIB")
    zone = format_records(records)
    dkim_line = [ln for ln in zone.splitlines() if ln.startswith("mail._domainkey")][0]
    # TXT strings longer than 255 characters are split, as DNS requires.
    assert all(len(part) <= 255 for part in dkim_line.split('"')[1::2])
    assert "".join(dkim_line.split('"')[1::2]) == records[1][2]


def test_plan_refuses_dotenv_values_python_dotenv_cannot_read(tmp_path):
    from bakery.errors import ConfigError

    for bad in ("C:\\path\\", "two\nlines"):
        with pytest.raises(ConfigError) as info:
            make_plan(tmp_path, app=dict(MICROBLOG_APP, dotenv={"BAD": bad}))
        assert "app.dotenv.BAD" in str(info.value.problems[0]) or "BAD" in str(info.value.problems[0])


def test_bakery_dns_command_prints_the_records(tmp_path, workstation):
    from conftest import run_bakery

    config = tmp_path / "bakery.yaml"
    dkim = make_dkim_public_key()
    config.write_text("host: {hostname: web, domain: example.com}\napp: {repo: https://example.com/app.git}\n"
                      f"mail: {{dkim_selector: mail, dkim_public_key: {dkim}}}\n")
    result = run_bakery(["dns", "-c", config], home=workstation)
    assert result.returncode == 0, result.stderr.decode()
    lines = result.stdout.decode().splitlines()
    assert lines[0].split() == ["example.com.", "3600", "IN", "TXT", '"v=spf1', "a", "mx", "a:web.example.com", '-all"']
    assert lines[1].startswith("mail._domainkey.example.com.") and "v=DKIM1; k=rsa; p=" in lines[1]
    assert "".join(lines[1].split('"')[1::2]) == f"v=DKIM1; k=rsa; p={dkim}"
    assert not (tmp_path / "bakery.secrets.yaml").exists()  # printing records writes nothing


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_cloud_init_schema_accepts_every_stack_variant(tmp_path, variant, cloud_init_schema):
    from bakery.cloudconfig import assemble, to_yaml

    plan = variant_plan(tmp_path, variant)
    path = tmp_path / "user-data"
    path.write_text(to_yaml(assemble(plan)))
    cloud_init_schema.assert_valid(path)


# --- secrets born on the server -------------------------------------------------

def _fill_secrets_function(script: str) -> str:
    """The first-boot script's fill_secrets, with the variables it reads."""
    start = script.index("SECRETS_DIR=")
    end = script.index("\n}\n", script.index("fill_secrets() {")) + 3
    token = next(line for line in script.splitlines() if line.startswith("random_token() {"))
    return "set -Eeuo pipefail\n" + token + "\n" + script[start:end]


def test_first_boot_makes_the_secrets_once_and_fills_them_in(tmp_path):
    from dotenv import dotenv_values

    from bakery.layout import paths

    plan = make_plan(tmp_path)
    assert plan.server_secrets == ["microblog_database_password", "microblog_secret_key"]
    where = paths(plan, etc=str(tmp_path / "etc"))
    (tmp_path / "etc").mkdir()
    env_path, sql_path = Path(where.dotenv), Path(where.db_sql)

    def deliver():
        # What cloud-init writes: the files with their placeholders.
        env_path.write_text(app_step.dotenv_file(plan))
        sql_path.write_text(database.bootstrap_sql(plan))
        env_path.chmod(0o600)
        sql_path.chmod(0o600)

    function = tmp_path / "fill.sh"
    function.write_text(_fill_secrets_function(firstboot.first_boot_script(plan, paths=where)) + "fill_secrets\n")
    deliver()
    subprocess.run(["bash", str(function)], check=True)
    env = dotenv_values(env_path)
    made = {p.name: p.read_text() for p in (tmp_path / "etc" / "secrets").iterdir()}
    assert set(made) == set(plan.server_secrets)
    assert oct((tmp_path / "etc" / "secrets").stat().st_mode & 0o777) == "0o700"
    assert all(oct(p.stat().st_mode & 0o777) == "0o600" for p in (tmp_path / "etc" / "secrets").iterdir())
    assert oct(env_path.stat().st_mode & 0o777) == "0o600"
    # 256 random bits, URL- and shell-safe like the workstation's tokens.
    assert all(len(v) == 43 and v.replace("-", "").replace("_", "").isalnum() for v in made.values())
    assert env["SECRET_KEY"] == made["microblog_secret_key"] and len(set(made.values())) == 2
    password = made["microblog_database_password"]
    assert f"microblog:{password}@localhost" in env["DATABASE_URL"]
    sql = sql_path.read_text()
    assert "BAKERY_SECRET__" not in sql + env_path.read_text() and sql.count(f"'{password}'") == 2
    # Delivered again (a resumed first boot, new user-data): the same values, never new ones.
    deliver()
    subprocess.run(["bash", str(function)], check=True)
    assert dotenv_values(env_path) == env and sql_path.read_text() == sql


def certbot_words(plan) -> list[str]:
    """The certbot command line of the rendered Let's Encrypt script, as the shell splits it."""
    import shlex

    script = web.letsencrypt_files(plan)[0]["content"]
    command = script[script.index("certbot certonly"):].replace("\\\n", " ").split("\n", 1)[0]
    return shlex.split(command)


def test_certbot_asks_the_configured_acme_directory(tmp_path):
    require_tool("certbot")
    default = variant_plan(tmp_path, "postgresql-letsencrypt")
    assert "--server https://acme-v02.api.letsencrypt.org/directory " in web.letsencrypt_files(default)[0]["content"]
    # A directory nothing serves: certbot parses the rendered command line and
    # asks that directory, and only it, for its certificate.
    directory = "https://127.0.0.1:9/bakery-test/directory"
    plan = make_plan(tmp_path, web={"tls": "letsencrypt", "domain": "blog.example.com", "email": "ops@example.com",
                                    "acme_server": directory})
    words = certbot_words(plan)
    assert words[words.index("--server") + 1] == directory
    from bakery.layout import WEBROOT

    (tmp_path / "webroot").mkdir()
    words = [str(tmp_path / "webroot") if word == WEBROOT else word for word in words]
    dirs = [f"--{name}-dir={tmp_path / name}" for name in ("config", "work", "logs")]
    result = subprocess.run([words[0], *dirs, *words[1:]], capture_output=True, text=True, timeout=120)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "Requesting 127.0.0.1/bakery" in result.stderr and "Connection refused" in result.stderr, result.stderr
    assert f"Sending GET request to {directory}" in (tmp_path / "logs" / "letsencrypt.log").read_text()


def test_every_renewal_reloads_nginx(tmp_path):
    # certbot keeps a deploy hook in the certificate's renewal file and runs it
    # after each renewal (tests/e2e/test_letsencrypt.py renews for real): with
    # no reload, nginx would go on serving the old certificate until it expires.
    words = certbot_words(variant_plan(tmp_path, "postgresql-letsencrypt"))
    assert words.count("--deploy-hook") == 1
    assert words[words.index("--deploy-hook") + 1] == "systemctl reload nginx"


def _shell_function(script: str, name: str) -> str:
    """The definition of the shell function ``name`` in ``script``: one line, or up to its closing brace."""
    start = script.index(f"{name}() {{")
    first_line = script[start:script.index("\n", start)]
    end = start + len(first_line) if first_line.endswith("}") else script.index("\n}\n", start) + 2
    return script[start:end] + "\n"


def test_hsts_only_for_a_certificate_from_a_ca_the_server_trusts(tmp_path):
    # Let's Encrypt's staging CA (or a private CA left out of network.ca_certs)
    # issues certificates no browser trusts: with HSTS a browser would refuse
    # the site outright instead of warning.
    require_tool("openssl")
    from e2e.acmeserve import issue, pem

    root = issue("bakery test root", ca=True)
    intermediate = issue("bakery test intermediate", root, ca=True)
    live = tmp_path / "live"
    live.mkdir()
    (live / "cert.pem").write_bytes(pem(issue("blog.example.com", intermediate)[0]))
    (live / "chain.pem").write_bytes(pem(intermediate[0]))
    script = tmp_path / "hsts.sh"
    plan = variant_plan(tmp_path, "postgresql-letsencrypt")
    script.write_text("set -euo pipefail\n" + _shell_function(web.letsencrypt_files(plan)[0]["content"], "hsts_header")
                      + 'hsts_header "$1"\n')
    (tmp_path / "no-ca-dir").mkdir()

    def hsts_trusting(authority):
        # openssl's default trust store, as the server's /etc/ssl/certs would hold it.
        (tmp_path / "store.pem").write_bytes(pem(authority[0]))
        env = {"PATH": "/usr/bin:/bin", "SSL_CERT_FILE": str(tmp_path / "store.pem"),
               "SSL_CERT_DIR": str(tmp_path / "no-ca-dir")}
        return subprocess.run(["bash", str(script), str(live)], env=env, capture_output=True, text=True, check=True)

    trusted = hsts_trusting(root)
    assert trusted.stdout == 'add_header Strict-Transport-Security "max-age=63072000" always;\n', trusted.stderr
    untrusted = hsts_trusting(issue("another root", ca=True))
    assert untrusted.stdout == "" and "no HSTS" in untrusted.stderr, untrusted.stdout + untrusted.stderr


@pytest.mark.parametrize("obtained", [True, False], ids=["certificate obtained", "no certificate yet"])
def test_first_boot_starts_certbot_s_renewal_timer(tmp_path, obtained):
    # The packages step holds services back while it installs (policy-rc.d):
    # certbot's package enables its timer but cannot start it, so renewal
    # would wait for a reboot. systemctl is a stand-in recording its calls:
    # the test is about what the step asks systemd to do.
    from bakery.layout import paths

    plan = variant_plan(tmp_path, "postgresql-letsencrypt")
    where = paths(plan)
    where.letsencrypt = str(tmp_path / "letsencrypt.sh")
    Path(where.letsencrypt).write_text(f"#!/bin/sh\nexit {0 if obtained else 1}\n")
    Path(where.letsencrypt).chmod(0o755)
    script = firstboot.first_boot_script(plan, paths=where)
    calls = tmp_path / "systemctl.calls"
    harness = tmp_path / "step.sh"
    harness.write_text("set -euo pipefail\nlog() { echo \"$*\"; }\n"
                       f"systemctl() {{ echo \"$*\" >> {calls}; [ \"$1\" != is-enabled ]; }}\n"
                       + _shell_function(script, "enable_unit") + _shell_function(script, "step_letsencrypt")
                       + "step_letsencrypt\n")
    result = subprocess.run(["bash", str(harness)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    expected = ["is-enabled --quiet certbot.timer", "enable certbot.timer", "start certbot.timer"]
    if not obtained:
        expected.append("enable --now bakery-letsencrypt-microblog.timer")
    assert calls.read_text().splitlines() == expected


def test_a_dotenv_value_python_dotenv_would_expand_is_refused(tmp_path):
    from bakery.errors import ConfigError

    app = dict(MICROBLOG_APP, dotenv={"GREETING": "costs $${PRICE}"})  # $$: a literal $ in bakery.yaml
    with pytest.raises(ConfigError) as refused:
        make_plan(tmp_path, app=app)
    assert "app.dotenv.GREETING" in str(refused.value) and "cannot contain '${'" in str(refused.value)
