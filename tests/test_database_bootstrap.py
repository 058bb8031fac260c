"""The rendered database bootstrap against a real MariaDB server that the
test starts in a temporary data directory, on a unix socket only: what it
creates, what it grants, that it can run twice, and that no password can
break out of its SQL string; and the update command's dump before
migrations, with the restore command it prints, on MariaDB and PostgreSQL."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bakery.layout import MYSQL_BOOT_ORDER, MYSQL_CONF, MYSQL_TLS_KEY_SCRIPT, MYSQL_TLS_KEY_UNIT
from bakery.steps import database
from bakery.templating import mysql_string, render

from stack_helpers import make_plan, require_tool


class MariaDB:
    def __init__(self, socket):
        self.socket = str(socket)

    def client(self, *args, user="root", password=None, sql=None, check=True):
        cmd = [shutil.which("mariadb") or shutil.which("mysql"), f"--socket={self.socket}", "-u", user,
               "--batch", "--binary-mode", "--skip-column-names", *args]
        env = dict(os.environ)
        if password is not None:
            env["MYSQL_PWD"] = password  # keeps it off the command line
        result = subprocess.run(cmd, input=sql.encode() if sql is not None else None, capture_output=True, env=env)
        if check:
            assert result.returncode == 0, result.stderr.decode()
        return result

    def query(self, sql, *args, **kw) -> list[str]:
        return self.client("-e", sql, *args, **kw).stdout.decode().splitlines()


@pytest.fixture(scope="module")
def mariadb(tmp_path_factory):
    server = require_tool("mariadbd")
    install = require_tool("mariadb-install-db")
    require_tool("mariadb")
    if os.geteuid() != 0:
        pytest.skip("the test server logs root in over the unix socket as the OS root user")
    base = tmp_path_factory.mktemp("mariadb")
    datadir, socket = base / "data", base / "mysqld.sock"
    subprocess.run([install, f"--datadir={datadir}", "--user=root", "--auth-root-authentication-method=socket",
                    "--skip-test-db"], check=True, capture_output=True)
    proc = subprocess.Popen([server, "--no-defaults", f"--datadir={datadir}", f"--socket={socket}", "--skip-networking",
                             "--user=root", f"--pid-file={base}/mysqld.pid", f"--log-error={base}/error.log"])
    try:
        for _ in range(300):
            if socket.exists():
                break
            if proc.poll() is not None:
                pytest.fail("mariadbd exited:\n" + (base / "error.log").read_text())
            time.sleep(0.1)
        db = MariaDB(socket)
        for _ in range(100):
            if db.client("-e", "SELECT 1", check=False).returncode == 0:
                break
            time.sleep(0.1)
        yield db
    finally:
        proc.terminate()
        proc.wait(timeout=60)


def bootstrap(tmp_path, **database_section):
    plan = make_plan(tmp_path, database=dict({"engine": "mysql"}, **database_section))
    return plan, database.bootstrap_sql(plan)


def test_bootstrap_creates_database_user_and_grants(tmp_path, mariadb):
    plan, sql = bootstrap(tmp_path, name="microblog", user="microblog")
    mariadb.client(sql=sql)
    db = plan.database
    assert mariadb.query("SELECT DEFAULT_CHARACTER_SET_NAME, DEFAULT_COLLATION_NAME FROM information_schema.SCHEMATA "
                         "WHERE SCHEMA_NAME='microblog'") == ["utf8mb4\tutf8mb4_bin"]
    # Local only: no other host may use the account.
    assert mariadb.query("SELECT Host FROM mysql.user WHERE User='microblog'") == ["localhost"]
    grants = mariadb.query("SHOW GRANTS FOR 'microblog'@'localhost'")
    assert any("GRANT ALL PRIVILEGES ON `microblog`.* TO `microblog`@`localhost`" in g for g in grants)
    assert not any(" ON *.* " in g and "USAGE" not in g for g in grants)
    # The generated password logs in and reaches its database, and only it.
    assert mariadb.query("SELECT DATABASE()", "microblog", user="microblog", password=db.password) == ["microblog"]
    other = mariadb.client("-e", "SELECT 1", "mysql", user="microblog", password=db.password, check=False)
    assert other.returncode != 0 and b"Access denied" in other.stderr
    wrong = mariadb.client("-e", "SELECT 1", user="microblog", password=db.password + "x", check=False)
    assert wrong.returncode != 0


def test_second_run_is_a_no_op(tmp_path, mariadb):
    plan, sql = bootstrap(tmp_path, name="twice", user="twice")
    mariadb.client(sql=sql)
    mariadb.client("-e", "CREATE TABLE twice.kept (id INT); INSERT INTO twice.kept VALUES (1)")
    before = mariadb.query("SHOW GRANTS FOR 'twice'@'localhost'")
    mariadb.client(sql=sql)
    assert mariadb.query("SELECT id FROM twice.kept") == ["1"]
    assert mariadb.query("SHOW GRANTS FOR 'twice'@'localhost'") == before
    assert mariadb.query("SELECT DATABASE()", "twice", user="twice", password=plan.database.password) == ["twice"]


def test_the_tutorials_utf8_utf8_bin(tmp_path, mariadb):
    _, sql = bootstrap(tmp_path, name="tutorial", user="tutorial", charset="utf8", collation="utf8_bin")
    mariadb.client(sql=sql)
    # MariaDB 10.6+ calls utf8 by its real name, utf8mb3.
    charset, collation = mariadb.query("SELECT DEFAULT_CHARACTER_SET_NAME, DEFAULT_COLLATION_NAME FROM "
                                       "information_schema.SCHEMATA WHERE SCHEMA_NAME='tutorial'")[0].split("\t")
    assert charset in ("utf8", "utf8mb3") and collation in ("utf8_bin", "utf8mb3_bin")


def test_password_full_of_quotes_and_backslashes(tmp_path, mariadb):
    plan, _ = bootstrap(tmp_path, name="nasty", user="nasty")
    plan.database.password = "a'b\"c\\d$e%f`g;--h\\'i\\\\j ${HOME} %(x)s\\"
    mariadb.client(sql=database.bootstrap_sql(plan))
    assert mariadb.query("SELECT CURRENT_USER()", user="nasty", password=plan.database.password) == ["nasty@localhost"]
    # A new password in the secrets store reaches the server on the next run.
    plan.database.password = "changed'\\"
    mariadb.client(sql=database.bootstrap_sql(plan))
    assert mariadb.client("-e", "SELECT 1", user="nasty", password=plan.database.password).returncode == 0


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(value=st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), max_size=30))
def test_any_text_round_trips_as_a_sql_string_literal(mariadb, value):
    out = mariadb.client("--raw", "--default-character-set=utf8mb4",
                         sql=f"SELECT HEX(CONVERT({mysql_string(value)} USING utf8mb4));\n").stdout.decode().strip()
    assert bytes.fromhex(out) == value.encode()


# --- PostgreSQL ---------------------------------------------------------------

@pytest.fixture(scope="module")
def postgres():
    import glob
    import pwd
    import tempfile

    bins = sorted(glob.glob("/usr/lib/postgresql/*/bin"))
    if not bins:
        require_tool("initdb", "PostgreSQL server binaries (apt-get install postgresql)")
    require_tool("psql")
    if os.geteuid() != 0:
        pytest.skip("the test server runs as the postgres user")
    try:
        pg = pwd.getpwnam("postgres")
    except KeyError:
        pytest.skip("no postgres user")
    # Outside pytest's root-only tmp folders: the server runs as postgres.
    base = Path(tempfile.mkdtemp(prefix="bakery-pg-"))
    os.chown(base, pg.pw_uid, pg.pw_gid)
    as_pg = ["runuser", "-u", "postgres", "--"]
    subprocess.run([*as_pg, f"{bins[-1]}/initdb", "-D", str(base / "data"), "-U", "postgres", "--auth-local=trust"],
                   check=True, capture_output=True)
    # Everyone but the superuser must log in with a password.
    (base / "data" / "pg_hba.conf").write_text("local all postgres trust\nlocal all all scram-sha-256\n")
    proc = subprocess.Popen([*as_pg, f"{bins[-1]}/postgres", "-D", str(base / "data"), "-k", str(base),
                             "-c", "listen_addresses="], stderr=subprocess.DEVNULL)
    try:
        for _ in range(200):
            if subprocess.run([*as_pg, "psql", "-h", str(base), "-c", "SELECT 1"], capture_output=True).returncode == 0:
                break
            time.sleep(0.1)
        yield base
    finally:
        proc.terminate()
        proc.wait(timeout=60)
        shutil.rmtree(base, ignore_errors=True)


def test_postgresql_bootstrap_twice_and_login(tmp_path, postgres):
    plan = make_plan(tmp_path, database={"engine": "postgresql", "name": "blog", "user": "blogger"})
    plan.database.password = "p'w\"\\$%`;--x"
    sql = database.bootstrap_sql(plan)
    as_pg = ["runuser", "-u", "postgres", "--", "psql", "-h", str(postgres), "-q", "-v", "ON_ERROR_STOP=1"]
    for _ in range(2):  # the second run must succeed and change nothing
        result = subprocess.run(as_pg, input=sql.encode(), capture_output=True, cwd="/")
        assert result.returncode == 0, result.stderr.decode()
    owner = subprocess.run([*as_pg, "-At", "-c", "SELECT pg_get_userbyid(datdba) FROM pg_database WHERE datname='blog'"],
                           capture_output=True, text=True, check=True, cwd="/").stdout.strip()
    assert owner == "blogger"
    login = subprocess.run(["psql", "-h", str(postgres), "-U", "blogger", "-d", "blog", "-At", "-c", "SELECT current_user"],
                           capture_output=True, text=True, env=dict(os.environ, PGPASSWORD=plan.database.password))
    assert login.returncode == 0 and login.stdout.strip() == "blogger", login.stderr
    wrong = subprocess.run(["psql", "-h", str(postgres), "-U", "blogger", "-d", "blog", "-c", "SELECT 1"],
                           capture_output=True, text=True, env=dict(os.environ, PGPASSWORD="nope"))
    assert wrong.returncode != 0


# --- the update command's dump before migrations, and its restore command ------

def dump_and_restore(plan) -> tuple[str, str]:
    """The update command's dump_db function and RESTORE_DB line, which the
    tests run for real: the dump gzipped into a file, then the restore command
    the update prints, with sudo taken off (the tests run as root)."""
    from bakery.steps import app as app_step

    script = app_step.update_script(plan)
    lines = script.splitlines()
    dump = next(line for line in lines if line.startswith("dump_db() {"))
    restore = next(line for line in lines if line.startswith("RESTORE_DB="))
    return dump, restore


def run_bash(text: str, env: dict) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", "-euo", "pipefail", "-c", text], capture_output=True, text=True, env=env, cwd="/")


def test_the_update_dump_restores_the_mysql_database_as_it_was(tmp_path, mariadb):
    plan, sql = bootstrap(tmp_path, name="dumped", user="dumped")
    mariadb.client(sql=sql)
    mariadb.client("dumped", sql="CREATE TABLE greeting (id INT PRIMARY KEY, text VARCHAR(20)); "
                                 "INSERT INTO greeting VALUES (1, 'before');")
    # The clients the script finds first on PATH: the real ones, on the test server's socket.
    wrappers = tmp_path / "bin"
    wrappers.mkdir()
    for name in ("mariadb", "mariadb-dump"):
        (wrappers / name).write_text(f'#!/bin/sh\nexec {require_tool(name)} --socket={mariadb.socket} "$@"\n')
        (wrappers / name).chmod(0o755)
    env = dict(os.environ, PATH=f"{wrappers}:{os.environ['PATH']}")
    dump, restore = dump_and_restore(plan)
    file = tmp_path / "dump.gz"
    made = run_bash(f"{dump}\ndump_db | gzip > {file}", env)
    assert made.returncode == 0, made.stderr
    # What a failed migration leaves: a changed row and a new table.
    mariadb.client("dumped", sql="UPDATE greeting SET text = 'after'; CREATE TABLE added (x INT);")
    command = run_bash(f'{restore}\necho "${{RESTORE_DB/DUMP/{file}}}"', env).stdout.strip()
    assert command == f"sudo zcat {file} | sudo {wrappers}/mariadb"
    done = run_bash(command.replace("sudo ", ""), env)
    assert done.returncode == 0, done.stderr
    assert mariadb.query("SELECT text FROM greeting", "dumped") == ["before"]
    assert mariadb.query("SHOW TABLES", "dumped") == ["greeting"]
    # The app's database only, and its user still reaches it.
    import gzip
    text = gzip.decompress(file.read_bytes()).decode()
    assert "CREATE DATABASE" in text and "`mysql`" not in text
    assert mariadb.query("SELECT COUNT(*) FROM greeting", "dumped", user="dumped", password=plan.database.password) == ["1"]


def test_the_update_dump_restores_the_postgresql_database_as_it_was(tmp_path, postgres):
    plan = make_plan(tmp_path, database={"engine": "postgresql", "name": "dumped", "user": "dumper"})
    as_pg = ["runuser", "-u", "postgres", "--", "psql", "-h", str(postgres), "-q", "-v", "ON_ERROR_STOP=1"]
    subprocess.run(as_pg, input=database.bootstrap_sql(plan).encode(), check=True, capture_output=True, cwd="/")

    def psql(sql: str, db: str = "dumped") -> str:
        return subprocess.run([*as_pg, "-At", "-d", db, "-c", sql], capture_output=True, text=True, check=True,
                              cwd="/").stdout.strip()

    psql("CREATE TABLE greeting (id INT PRIMARY KEY, text TEXT); INSERT INTO greeting VALUES (1, 'before'); "
         "ALTER TABLE greeting OWNER TO dumper")
    env = dict(os.environ, PGHOST=str(postgres))
    dump, restore = dump_and_restore(plan)
    file = tmp_path / "dump.gz"
    made = run_bash(f"{dump}\ndump_db | gzip > {file}", env)
    assert made.returncode == 0, made.stderr
    psql("UPDATE greeting SET text = 'after'; CREATE TABLE added (x INT)")
    command = run_bash(f'{restore}\necho "${{RESTORE_DB/DUMP/{file}}}"', env).stdout.strip()
    assert command == f"sudo zcat {file} | sudo -u postgres psql -q -d postgres"
    done = run_bash(command.replace("sudo -u postgres ", "runuser -u postgres -- ").replace("sudo ", ""), env)
    assert done.returncode == 0, done.stderr
    assert psql("SELECT text FROM greeting") == "before"
    assert psql("SELECT string_agg(tablename, ',') FROM pg_tables WHERE schemaname = 'public'") == "greeting"
    assert psql("SELECT pg_get_userbyid(datdba) FROM pg_database WHERE datname = 'dumped'", "postgres") == "dumper"


# --- MySQL's server settings ------------------------------------------------------

def stage_plan(tmp_path, stage: str, engine: str = "mysql"):
    import yaml

    from bakery.pipeline import render_config
    from bakery.targets import get_target
    from stack_helpers import MICROBLOG_APP, public_key

    path = tmp_path / f"{stage}-{engine}.yaml"
    path.write_text(yaml.safe_dump({"admin": {"name": "ubuntu", "ssh_keys": [public_key()]},
                                    "host": {"domain": "example.com"}, "app": MICROBLOG_APP,
                                    "database": {"engine": engine}}))
    return render_config(path, get_target("generic"), environ={}, home=tmp_path, stage=stage,
                         hostname="web1" if stage == "instance" else None, save_secrets=False).plan


@pytest.mark.parametrize("stage, engine, expected", [
    ("full", "mysql", True), ("image", "mysql", True),
    ("instance", "mysql", False),  # the image has it
    ("full", "postgresql", False),
])
def test_mysql_settings_and_boot_order_are_written_before_the_package_installs(tmp_path, stage, engine, expected):
    files = {f["path"]: f for f in database.build(stage_plan(tmp_path, stage, engine)).get("write_files", [])}
    assert (MYSQL_CONF in files) is expected
    assert (MYSQL_BOOT_ORDER in files) is expected
    # Only an image's servers start MySQL without the keys its package made.
    tls_key = expected and stage == "image"
    assert (MYSQL_TLS_KEY_SCRIPT in files) is tls_key and (MYSQL_TLS_KEY_UNIT in files) is tls_key
    if expected:
        assert files[MYSQL_CONF]["permissions"] == "0644" and "performance_schema = OFF" in files[MYSQL_CONF]["content"]
        # The service waits for what it needs, not for cloud-init's network
        # stage, and is still stopped before shutdown.
        unit = files[MYSQL_BOOT_ORDER]["content"].splitlines()
        assert {"[Unit]", "DefaultDependencies=no", "Conflicts=shutdown.target", "Before=shutdown.target"} <= set(unit)
        after = next(line for line in unit if line.startswith("After=")).split("=", 1)[1].split()
        assert {"local-fs.target", "apparmor.service", "network.target"} <= set(after)
        assert not {"sysinit.target", "basic.target", "cloud-init.service"} & set(after)
    if tls_key:
        # MySQL's TLS key is made before its server starts; a failure to make
        # it does not stop the server ("-").
        assert f"ExecStartPre=-/bin/sh {MYSQL_TLS_KEY_SCRIPT}" in files[MYSQL_TLS_KEY_UNIT]["content"].splitlines()
        assert files[MYSQL_TLS_KEY_SCRIPT]["content"] == render("mysql-tls-key.sh.j2")


def _tls_files(folder: Path) -> dict:
    return {name: (folder / name).read_bytes() for name in ("ca.pem", "server-cert.pem", "server-key.pem")
            if (folder / name).exists()}


def test_mysql_s_tls_key_is_made_before_its_server_starts_when_it_is_missing(tmp_path):
    """The script the drop-in runs, with the real sh and openssl, in a data
    folder of its own: a P-256 key and the self-signed certificate a client
    verifies the server by (127.0.0.1, localhost), made once, made again
    whole when one file is missing, never in a folder that is not MySQL 8's
    initialized one."""
    openssl = require_tool("openssl")
    script = tmp_path / "mysql-tls-key.sh"
    script.write_text(render("mysql-tls-key.sh.j2"))
    checked = subprocess.run([require_tool("shellcheck"), "--severity=style", str(script)], capture_output=True, text=True)
    assert checked.returncode == 0, checked.stdout
    datadir = tmp_path / "mysql"
    datadir.mkdir()

    def run():
        subprocess.run(["sh", str(script), str(datadir)], capture_output=True, text=True, check=True)

    run()
    assert _tls_files(datadir) == {}, "made in a folder mysqld --initialize has not filled"
    (datadir / "mysql.ibd").write_bytes(b"")
    run()
    made = _tls_files(datadir)
    assert set(made) == {"ca.pem", "server-cert.pem", "server-key.pem"} and made["ca.pem"] == made["server-cert.pem"]
    assert sorted(p.name for p in datadir.iterdir()) == ["ca.pem", "mysql.ibd", "server-cert.pem", "server-key.pem"]
    modes = {name: oct((datadir / name).stat().st_mode & 0o777) for name in made}
    assert modes == {"ca.pem": "0o644", "server-cert.pem": "0o644", "server-key.pem": "0o600"}
    key = subprocess.run([openssl, "pkey", "-in", datadir / "server-key.pem", "-noout", "-text"],
                         capture_output=True, text=True, check=True).stdout
    assert "ASN1 OID: prime256v1" in key
    # A client that checks the server by ca.pem, at the address it connects to.
    for name, check in (("127.0.0.1", "-verify_ip"), ("localhost", "-verify_hostname")):
        verified = subprocess.run([openssl, "verify", "-CAfile", datadir / "ca.pem", check, name,
                                   datadir / "server-cert.pem"], capture_output=True, text=True)
        assert verified.returncode == 0, verified.stdout + verified.stderr
    pair = [subprocess.run([openssl, *args], capture_output=True, text=True, check=True).stdout for args in (
        ["x509", "-noout", "-pubkey", "-in", datadir / "server-cert.pem"],
        ["pkey", "-pubout", "-in", datadir / "server-key.pem"])]
    assert pair[0] == pair[1]
    run()
    assert _tls_files(datadir) == made, "made again while all three were there"
    (datadir / "ca.pem").unlink()
    run()
    again = _tls_files(datadir)
    assert set(again) == set(made) and again["server-key.pem"] != made["server-key.pem"]
    assert again["ca.pem"] == again["server-cert.pem"] != made["server-cert.pem"]


def test_mariadb_s_server_takes_the_mysql_settings(tmp_path):
    """Debian's MariaDB reads the same folder as Ubuntu's MySQL; it knows
    every option set there (an unknown one stops the server from starting)."""
    server = require_tool("mariadbd")
    settings = tmp_path / "bakery.cnf"
    settings.write_text(database.MYSQL_SETTINGS)
    shown = subprocess.run([server, f"--defaults-file={settings}", "--help", "--verbose"],
                           capture_output=True, text=True)
    assert shown.returncode == 0, shown.stderr
    values = dict(line.split(None, 1) for line in shown.stdout.splitlines() if line.startswith("performance-schema "))
    assert values["performance-schema"].strip() == "FALSE"
    bad = tmp_path / "bad.cnf"
    bad.write_text(database.MYSQL_SETTINGS + "no_such_setting = 1\n")
    refused = subprocess.run([server, f"--defaults-file={bad}", "--help", "--verbose"], capture_output=True, text=True)
    assert refused.returncode != 0 and "no_such_setting" in refused.stderr


def maintenance_password_function(plan) -> str:
    """The first-boot script's new_maintenance_password, with its variables."""
    from bakery.steps import firstboot

    script = firstboot.first_boot_script(plan)
    start = script.index("MAINTENANCE_CNF=")
    end = script.index("\n}\n", script.index("new_maintenance_password() {")) + 3
    helpers = [line for line in script.splitlines() if line.startswith(("random_token() {", "db_root() {"))]
    return "\n".join(helpers) + "\n" + script[start:end]


def test_a_server_from_an_image_gives_the_maintenance_account_its_own_password(tmp_path, mariadb):
    """Ubuntu's MySQL package leaves debian-sys-maint's password in
    debian.cnf, the same on every server of an image: an instance's first
    boot changes it, on the server and in the file, and can do it again."""
    from bakery.steps import firstboot

    # A whole server's package made the password on the server itself.
    for stage in ("full", "image"):
        assert "new_maintenance_password" not in firstboot.first_boot_script(stage_plan(tmp_path, stage))
    baked = "Baked-In-Image-1"
    mariadb.client(sql=f"DROP USER IF EXISTS 'debian-sys-maint'@'localhost'; "
                       f"CREATE USER 'debian-sys-maint'@'localhost' IDENTIFIED BY '{baked}';")
    cnf = tmp_path / "debian.cnf"
    # Ubuntu's layout: the same account in two sections.
    cnf.write_text("".join(f"[{section}]\nhost     = localhost\nuser     = debian-sys-maint\npassword = {baked}\n"
                           f"socket   = {mariadb.socket}\n" for section in ("client", "mysql_upgrade")))
    cnf.chmod(0o600)
    wrappers = tmp_path / "bin"
    wrappers.mkdir()
    (wrappers / "mariadb").write_text(f'#!/bin/sh\nexec {require_tool("mariadb")} --socket={mariadb.socket} "$@"\n')
    (wrappers / "mariadb").chmod(0o755)
    env = dict(os.environ, PATH=f"{wrappers}:{os.environ['PATH']}")
    function = maintenance_password_function(stage_plan(tmp_path, "instance")).replace(
        "MAINTENANCE_CNF=/etc/mysql/debian.cnf", f"MAINTENANCE_CNF={cnf}")
    seen = []
    for _ in range(2):
        ran = run_bash(function + "\nnew_maintenance_password", env)
        assert ran.returncode == 0, ran.stderr
        assert ran.stdout == "" and baked not in ran.stderr
        passwords = {line.split("=", 1)[1].strip() for line in cnf.read_text().splitlines() if line.startswith("password")}
        assert len(passwords) == 1 and baked not in passwords and passwords.isdisjoint(seen)
        seen += passwords
        assert oct(cnf.stat().st_mode & 0o777) == "0o600" and not (tmp_path / "debian.cnf.new").exists()
        # The account logs in with the file, and with nothing else.
        login = subprocess.run([require_tool("mariadb"), f"--defaults-file={cnf}", "--batch", "--skip-column-names",
                                "-e", "SELECT CURRENT_USER()"], capture_output=True, text=True)
        assert login.stdout.strip() == "debian-sys-maint@localhost", login.stderr
    assert mariadb.client("-e", "SELECT 1", user="debian-sys-maint", password=baked, check=False).returncode != 0
    # Debian's MariaDB package: debian.cnf names root and no password; left alone.
    cnf.write_text(f"[client]\nhost     = localhost\nuser     = root\nsocket   = {mariadb.socket}\n")
    before = cnf.read_text()
    ran = run_bash(function + "\nnew_maintenance_password", env)
    assert ran.returncode == 0 and cnf.read_text() == before
