"""The rendered database bootstrap against a real MariaDB server that the
test starts in a temporary data directory, on a unix socket only: what it
creates, what it grants, that it can run twice, and that no password can
break out of its SQL string."""

from __future__ import annotations

import os
import shutil
import subprocess
import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bakery.steps import database
from bakery.templating import mysql_string

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
