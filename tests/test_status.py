"""``bakery status`` without a guest: the state lines and what they mean
(including a failure an earlier boot left, which this boot carries on), the
script each poll runs, run for real by ``sh`` on a server tree made here, the
log followed across polls, the display on a terminal and in plain text, and
the SSH side against a real ``sshd`` on 127.0.0.1: the host key pinned on
first contact and said so, a changed key refused with what to do, and whole
watches that end ready, failed and still running."""

from __future__ import annotations

import dataclasses
import io
import os
import re
import socket
import subprocess
import threading
import time
from pathlib import Path

import pytest

from bakery import remote, status
from bakery.errors import BakeryError, ConfigError, UsageError
from bakery.status import (FIRST_BOOT, Judgement, LogFollower, Progress, Reading, State, Verdict, judge,
                           parse_reading, parse_state, update_watched)
from bakery.status_view import Display, bar, clean, clock, verdict_lines

from conftest import require_tool, run_bakery

ESCAPES = re.compile(r"[\x1b\r]")


# --- state lines -------------------------------------------------------------

@pytest.mark.parametrize("line, state", [
    ("running 6/9 app", State("running", "app", 6, 9, line="running 6/9 app")),
    ("running 2/6 install\n", State("running", "install", 2, 6, line="running 2/6 install")),
    ("running fetch", State("running", "fetch", line="running fetch")),
    ("ready", State("ready", line="ready")),
    ("ready 0123abcd" * 1, State("ready", commit="0123abcd", line="ready 0123abcd")),
    ("failed app", State("failed", "app", line="failed app")),
])
def test_state_lines_are_read_as_the_server_writes_them(line, state):
    assert parse_state(line) == state


@pytest.mark.parametrize("line", ["", "running", "ready now", "failed", "done", "running 6/9 app extra"])
def test_anything_else_is_not_a_state(line):
    assert parse_state(line) is None


def reading(**values) -> Reading:
    values.setdefault("now", 10_000)
    values.setdefault("boot", 100)
    return Reading(**values)


def test_first_boot_running_counts_from_power_on():
    judged = judge(FIRST_BOOT, reading(state="running 3/9 firewall", written=9_990))
    assert judged == Judgement(State("running", "firewall", 3, 9, line="running 3/9 firewall"), False, 100)


def test_ready_and_failed_written_this_boot_are_final_with_the_time_since_power_on():
    ready = judge(FIRST_BOOT, reading(state="ready", written=9_942))
    assert ready.final and ready.state.word == "ready" and ready.elapsed == 42
    failed = judge(FIRST_BOOT, reading(state="failed app", written=9_960))
    assert failed.final and failed.state.step == "app" and failed.elapsed == 60


def test_a_failure_from_an_earlier_boot_is_carried_on_at_this_one():
    # Written before this boot began, and cloud-init has not finished this boot.
    judged = judge(FIRST_BOOT, reading(state="failed app", written=5_000))
    assert not judged.final and judged.state.word == "waiting"
    assert "earlier boot failed at step app" in judged.note
    # Once cloud-init has finished this boot without running it, it is final.
    assert judge(FIRST_BOOT, reading(state="failed app", written=5_000, finished=9_950)).final


def test_without_the_uptime_every_state_is_this_boots():
    judged = judge(FIRST_BOOT, Reading(now=10_000, state="failed app", written=5_000))
    assert judged.final and judged.state.step == "app" and judged.elapsed is None
    assert judge(FIRST_BOOT, Reading(now=10_000, state="running 1/9 ssh", written=9_000)).elapsed is None


def test_ready_from_an_earlier_boot_is_final_without_a_time():
    judged = judge(FIRST_BOOT, reading(state="ready", written=5_000))
    assert judged.final and judged.elapsed is None


def test_no_state_yet_is_waiting_until_cloud_init_finishes_without_it():
    judged = judge(FIRST_BOOT, reading())
    assert judged.state.word == "waiting" and not judged.final and "not started" in judged.note
    with pytest.raises(BakeryError, match="without bakery's first boot"):
        judge(FIRST_BOOT, reading(finished=9_950))


def test_an_unknown_state_is_an_error():
    with pytest.raises(BakeryError, match="not a state bakery knows"):
        judge(FIRST_BOOT, reading(state="exploded", written=9_990))


def test_the_update_counts_from_its_start():
    update = update_watched("fixture")
    running = judge(update, reading(state="running 2/6 install", written=9_990, started=9_970))
    assert not running.final and running.elapsed == 30
    ready = judge(update, reading(state="ready " + "ab" * 20, written=9_995, started=9_970))
    assert ready.final and ready.elapsed == 25 and ready.state.commit == "ab" * 20
    assert judge(update, reading()).note == "no update has run yet"
    with pytest.raises(BakeryError, match="no /usr/local/bin/fixture-update"):
        judge(update, reading(missing="/usr/local/bin/fixture-update"))


def test_a_reading_is_key_lines_then_the_log():
    text = "now 10\nboot 3\nwritten 9\nstate running 1/9 ssh\nfinished 8\nlog 120 400\n--- log\nline one\nline two\n"
    got = parse_reading(text)
    assert (got.now, got.boot, got.written, got.state, got.finished, got.log_from) == (10, 3, 9, "running 1/9 ssh", 8, 120)
    assert got.log == "line one\nline two\n"
    assert parse_reading("now 10\nboot 3\n").state is None


# --- the poll script, run by sh on a server tree -------------------------------

class Tree:
    """A server's state and log files under a temporary folder."""

    def __init__(self, root: Path, update: bool = False):
        watched = update_watched("fixture") if update else FIRST_BOOT
        self.status, self.log, self.finished = root / "status", root / "log", root / "boot-finished"
        self.watched = dataclasses.replace(watched, status=str(self.status), log=str(self.log),
                                           finished=str(self.finished))

    def poll(self, log_from=None) -> Reading:
        script = status.poll_script(self.watched, log_from)
        result = subprocess.run(["sh", "-s"], input=script, capture_output=True, text=True, errors="surrogateescape")
        assert result.returncode == 0, result.stderr
        return parse_reading(result.stdout)

    def details(self, step: str) -> list[str]:
        script = status.details_script(self.watched, step)
        return subprocess.run(["sh", "-s"], input=script, capture_output=True, text=True, check=True).stdout.splitlines()


FIRST_BOOT_LOG = """\
2026-01-01T00:00:01Z == step 1/3 ssh
2026-01-01T00:00:02Z -- step ssh done in 1s
2026-01-01T00:00:02Z == step 2/3 app
pip: no such package
2026-01-01T00:00:09Z step app FAILED (exit 1) after 7s; its log: /var/log/bakery/first-boot.log
2026-01-01T00:00:09Z -- step 3/3 verdict
"""


def test_a_poll_reads_the_state_the_clock_and_the_log_from_the_current_step(tmp_path):
    tree = Tree(tmp_path)
    empty = tree.poll()
    assert empty.state is None and empty.now >= int(time.time()) - 5 and empty.boot >= 0 and empty.finished is None
    tree.status.write_text("running 2/3 app\n")
    tree.log.write_text(FIRST_BOOT_LOG[: FIRST_BOOT_LOG.index("pip:")])
    tree.finished.touch()
    got = tree.poll(-1)
    assert got.state == "running 2/3 app" and got.written >= int(time.time()) - 5 and got.finished is not None
    # -1: from the start of the step that runs now.
    assert got.log == "2026-01-01T00:00:02Z == step 2/3 app\n"
    follower = LogFollower()
    assert follower.feed(got) == ["2026-01-01T00:00:02Z == step 2/3 app"]
    with tree.log.open("a") as log:
        log.write("pip: no such")
    assert follower.feed(tree.poll(follower.offset)) == []  # a line not ended yet is kept
    with tree.log.open("a") as log:
        log.write(" package\nnext\n")
    assert follower.feed(tree.poll(follower.offset)) == ["pip: no such package", "next"]
    # A log rotated (shorter than the offset) is read from its start.
    tree.log.write_text("fresh\n")
    assert follower.feed(tree.poll(follower.offset)) == ["fresh"]


def test_the_details_are_the_failed_steps_part_of_the_log(tmp_path):
    tree = Tree(tmp_path)
    # Two runs: the step's last run is the one shown, up to its failure.
    tree.log.write_text(FIRST_BOOT_LOG.replace("pip: no such package", "an older run") + FIRST_BOOT_LOG)
    assert tree.details("app") == [
        "2026-01-01T00:00:02Z == step 2/3 app",
        "pip: no such package",
        "2026-01-01T00:00:09Z step app FAILED (exit 1) after 7s; its log: /var/log/bakery/first-boot.log",
    ]
    tree.log.write_text("2026-01-01T00:00:02Z == step 2/3 app\n" + "".join(f"line {n}\n" for n in range(50)))
    assert tree.details("app") == [f"line {n}" for n in range(30, 50)]


def test_the_update_poll_finds_when_the_last_update_started(tmp_path):
    tree = Tree(tmp_path, update=True)
    tree.log.write_text("2026-01-01T10:00:00Z fixture-update: updating to v1\nold\n"
                        "2026-01-01T10:05:00Z fixture-update: updating to main\nCollecting flask\n")
    tree.status.write_text("failed install\n")
    got = tree.poll(-1)
    assert got.started == 1767261900  # 2026-01-01T10:05:00Z
    assert got.log.startswith("2026-01-01T10:05:00Z fixture-update: updating to main\n")
    assert got.missing == "/usr/local/bin/fixture-update"  # not installed on this machine
    details = tree.details("install")
    assert details == ["2026-01-01T10:05:00Z fixture-update: updating to main", "Collecting flask"]
    where = remote.Destination("203.0.113.5", "admin", 2222)
    assert status.retry_commands(where, tree.watched, details) == [
        "ssh -p 2222 admin@203.0.113.5 sudo /usr/local/bin/fixture-update main"]


# --- the display ---------------------------------------------------------------

def running(number: int, step: str) -> Progress:
    line = f"running {number}/9 {step}"
    return Progress("first boot", Judgement(State("running", step, number, 9, line=line), False, 40 + number))


def test_on_a_terminal_one_line_is_redrawn_with_a_bar_and_colour():
    out = io.StringIO()
    show = Display(out, tty=True, columns=lambda: 120)
    show(status.Waiting("Connection refused", 3))
    show(status.Tick())
    show(running(4, "services"))
    show(status.LogLines(["\x1b[31mred\x1b[0m text\r"]))
    text = out.getvalue()
    assert "\r\x1b[K| waiting for SSH (Connection refused)" in text and "\r\x1b[K/ waiting" in text
    assert f"first boot {bar(4, 9)} 3/9 done, now services  0:44" in text
    assert "\r\x1b[K  red text\n" in text  # the server's escapes are not passed on
    verdict = Verdict("ready", "ready", 0, "first boot", "admin@web1",
                      Judgement(State("ready"), True, 83))
    show(verdict)
    assert out.getvalue().endswith("bakery: first boot on admin@web1 is \x1b[1;32mready\x1b[0m after 1:23\n")


def test_without_a_terminal_plain_lines_say_each_change_once():
    out = io.StringIO()
    show = Display(out, tty=False)
    for event in (status.Waiting("Connection refused", 1), status.Waiting("Connection refused", 3), status.Tick(),
                  running(1, "ssh"), running(1, "ssh"), running(2, "packages"),
                  status.LogLines(["50%\r100%", "done"])):
        show(event)
    show(Verdict("failed", "failed packages", 1, "first boot", "admin@web1",
                 Judgement(State("failed", "packages", line="failed packages"), True, 61),
                 "/var/log/bakery/first-boot.log", ["the end"], ["ssh admin@web1 sudo x"]))
    text = out.getvalue()
    assert not ESCAPES.search(text)
    assert text.splitlines() == [
        "bakery: waiting for SSH: Connection refused (0:01)",
        "bakery: first boot: step 1/9 ssh (0:41)",
        "bakery: first boot: step 2/9 packages (0:42)",
        "  100%",
        "  done",
        "bakery: first boot on admin@web1 FAILED at step packages after 1:01",
        "bakery: the end of its log (/var/log/bakery/first-boot.log):",
        "  the end",
        "bakery: fix the cause, then run it again: ssh admin@web1 sudo x",
        "bakery: a reboot carries first boot on too",
    ]


def test_the_verdict_at_the_timeout_says_what_still_runs_or_that_ssh_never_answered():
    running_judgement = running(6, "app").judgement
    lines = verdict_lines(Verdict("running", "running 6/9 app", 3, "first boot", "w", running_judgement, timeout=30))
    assert lines == ["bakery: first boot on w is still running at --timeout (0:30): step 6/9 app"]
    lines = verdict_lines(Verdict("waiting", "waiting", 3, "first boot", "w", None, reason="Connection refused",
                                  timeout=90))
    assert lines == ["bakery: no SSH on w after 1:30 (--timeout): Connection refused"]


def test_clock_and_clean():
    assert (clock(None), clock(5), clock(62), clock(3723)) == ("?", "0:05", "1:02", "1:02:03")
    assert clean("a\x07b\x1b[2Kc") == "abc" and clean(b"caf\xc3".decode("utf-8", "surrogateescape")) == "caf\ufffd"


# --- the command line ----------------------------------------------------------

@pytest.mark.parametrize("text, seconds", [("90", 90), ("90s", 90), ("15m", 900), ("1h", 3600), ("0.5", 0.5)])
def test_durations(text, seconds):
    assert status.parse_duration(text, "--timeout") == seconds


def test_destinations():
    assert remote.Destination.parse("admin@web1", port=2222) == remote.Destination("web1", "admin", 2222)
    assert remote.Destination.parse("web1", default_user="pi").user == "pi"
    for bad in ("-oProxyCommand=x", "a@", "us er@web1", "web1/x"):
        with pytest.raises(UsageError):
            remote.Destination.parse(bad)


def test_the_names_come_from_the_config_even_with_unset_variables(tmp_path, monkeypatch):
    config = tmp_path / "bakery.yaml"
    config.write_text("admin: {ssh_keys: ['${NO_SUCH_KEY_VARIABLE}']}\n"
                      "app: {repo: 'https://example.com/you/shop.git', ref: v1, dotenv: {K: '${NO_SUCH_VARIABLE}'}}\n")
    assert status.config_names(config, "generic") == ("ubuntu", "shop")
    assert status.config_names(config, "raspberry-pi")[0] == "pi"
    monkeypatch.chdir(tmp_path / "..")
    assert status.config_names(None, "generic") == (None, None)
    config.write_text("admin: {name: 'Bad Name'}\n")
    with pytest.raises(ConfigError, match=r"bakery.yaml:1:9: admin.name: 'Bad Name' is not a name"):
        status.config_names(config, "generic")


def test_after_update_without_an_app_name_is_a_usage_error(tmp_path, workstation):
    result = run_bakery(["status", "--after-update", "web1"], home=workstation, cwd=tmp_path)
    assert result.returncode == 2 and b"--after-update needs the app's name" in result.stderr
    result = run_bakery(["status", "--timeout", "soon", "web1"], home=workstation, cwd=tmp_path)
    assert result.returncode == 2 and b"--timeout: expected" in result.stderr


# --- against a real sshd ---------------------------------------------------------

def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def sshd(tmp_path_factory):
    """sshd on 127.0.0.1 letting this user in with a key made here."""
    binary = require_tool("sshd")
    require_tool("ssh")
    if os.geteuid() != 0:
        pytest.skip("the test sshd runs as root")
    os.makedirs("/run/sshd", mode=0o755, exist_ok=True)  # sshd's privilege separation folder
    folder = tmp_path_factory.mktemp("sshd")
    for name in ("host", "client"):
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", folder / name], check=True)
    (folder / "authorized_keys").write_text((folder / "client.pub").read_text())
    port = free_port()
    (folder / "sshd_config").write_text(
        f"Port {port}\nListenAddress 127.0.0.1\nHostKey {folder}/host\nAuthorizedKeysFile {folder}/authorized_keys\n"
        f"StrictModes no\nUsePAM no\nPasswordAuthentication no\nPermitRootLogin prohibit-password\n"
        f"PidFile {folder}/sshd.pid\nLogLevel ERROR\n")
    process = subprocess.Popen([binary, "-D", "-e", "-f", folder / "sshd_config"], stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            time.sleep(0.1)
    yield remote.Destination("127.0.0.1", "root", port, folder / "client"), folder
    process.terminate()
    process.wait(10)


@pytest.fixture
def known_hosts(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    return tmp_path / "config" / "bakery" / "known_hosts"


def test_the_host_key_is_pinned_on_first_contact_and_said_once(sshd, known_hosts):
    where, folder = sshd
    own = Path(os.path.expanduser("~/.ssh/known_hosts"))
    before = own.read_bytes() if own.exists() else None
    with remote.Connection(where, remote.known_hosts_file()) as connection:
        assert connection.run("sh -s", "echo hi\n").stdout == "hi\n"
        fingerprint = connection.pinned_now()
        assert fingerprint and fingerprint.startswith("ED25519 SHA256:")
        host = subprocess.run(["ssh-keygen", "-l", "-f", folder / "host.pub"], capture_output=True, text=True).stdout
        assert fingerprint.split()[1] == host.split()[1]
        assert connection.pinned_now() is None
    assert known_hosts.exists() and oct(known_hosts.parent.stat().st_mode & 0o777) == "0o700"
    with remote.Connection(where, remote.known_hosts_file()) as connection:
        assert connection.run("sh -s", "true\n").ok and connection.pinned_now() is None
    # The user's own known_hosts is read, never written.
    assert (own.read_bytes() if own.exists() else None) == before


def test_a_changed_host_key_is_refused_with_what_to_do(sshd, known_hosts, tmp_path):
    where, _ = sshd
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", tmp_path / "other"], check=True)
    known_hosts.parent.mkdir(parents=True)
    known_hosts.write_text(f"[127.0.0.1]:{where.port} {(tmp_path / 'other.pub').read_text()}")
    with remote.Connection(where, remote.known_hosts_file()) as connection:
        with pytest.raises(remote.HostKeyError) as error:
            connection.run("sh -s", "true\n")
    message = str(error.value)
    assert f"ssh-keygen -R '[127.0.0.1]:{where.port}' -f {known_hosts}" in message
    assert "console" in message and "ED25519 SHA256:" in message


def test_a_server_that_does_not_answer_is_waited_for(known_hosts):
    where = remote.Destination("127.0.0.1", "root", free_port())
    with remote.Connection(where, remote.known_hosts_file()) as connection:
        answer = connection.run("sh -s", "true\n")
    assert not answer.ok and answer.code == 255 and "Connection refused" in answer.reason


class Counted(remote.Connection):
    """A connection that remembers when it ran each command."""

    def run(self, command, script, timeout=remote.CONNECT_TIMEOUT + 50):
        self.times = getattr(self, "times", []) + [time.monotonic()]
        return super().run(command, script, timeout)


def watch(tree: Tree, where, **options):
    out = io.StringIO()
    options.setdefault("interval", 0.3)
    options.setdefault("verbose", False)
    with Counted(where, remote.known_hosts_file()) as connection:
        verdict = status.watch(connection, tree.watched, show=Display(out, tty=False), **options)
    Display(out, tty=False)(verdict)
    verdict.times = connection.times
    return verdict, out.getvalue()


def at_step_one(tmp_path) -> Tree:
    tree = Tree(tmp_path)
    tree.status.write_text("running 1/3 ssh\n")
    tree.log.write_text("2026-01-01T00:00:01Z == step 1/3 ssh\n")
    return tree


def wait_for_the_watch(known_hosts) -> None:
    """A first boot moves on once the watch is in (its first contact pins
    the host key): on a busy machine connecting can take longer than a step."""
    deadline = time.monotonic() + 60
    while not (known_hosts.is_file() and known_hosts.stat().st_size) and time.monotonic() < deadline:
        time.sleep(0.1)


def test_a_watch_follows_first_boot_forward_to_its_verdict(sshd, known_hosts, tmp_path):
    tree = at_step_one(tmp_path)

    def first_boot():
        wait_for_the_watch(known_hosts)
        for step, line in ((2, "app"), (3, "verdict")):
            time.sleep(0.8)
            with tree.log.open("a") as log:
                log.write(f"2026-01-01T00:00:0{step}Z == step {step}/3 {line}\n")
            tree.status.write_text(f"running {step}/3 {line}\n")
        time.sleep(0.8)
        tree.status.write_text("ready\n")

    worker = threading.Thread(target=first_boot)
    worker.start()
    verdict, text = watch(tree, sshd[0], timeout=30, verbose=True)
    worker.join()
    assert (verdict.word, verdict.line, verdict.exit_code) == ("ready", "ready", 0)
    steps = [int(n) for n in re.findall(r"^bakery: first boot: step (\d)/3", text, re.M)]
    assert steps == sorted(steps) and len(set(steps)) >= 2, text
    assert "  2026-01-01T00:00:02Z == step 2/3 app" in text  # -v: the log, as it grows
    assert "pinned the host key of 127.0.0.1" in text
    assert re.search(r"first boot on root@127.0.0.1:\d+ is ready after", text)
    assert not ESCAPES.search(text)


def test_a_status_file_caught_while_it_is_rewritten_is_no_news(sshd, known_hosts, tmp_path):
    """The shell's `echo STATE > status` empties the file before it writes
    it: a poll in between reads nothing, and waits for the next state."""
    tree = at_step_one(tmp_path)

    def first_boot():
        wait_for_the_watch(known_hosts)
        tree.status.write_text("")
        time.sleep(2.5)  # polled every 0.3 s: several polls read it empty
        tree.status.write_text("ready\n")

    worker = threading.Thread(target=first_boot)
    worker.start()
    verdict, text = watch(tree, sshd[0], timeout=30)
    worker.join()
    assert (verdict.word, verdict.line, verdict.exit_code) == ("ready", "ready", 0), text
    assert "not a state bakery knows" not in text


def test_a_watch_ends_with_the_failed_steps_log_and_how_to_retry(sshd, known_hosts, tmp_path):
    tree = Tree(tmp_path)
    tree.status.write_text("failed app\n")
    tree.log.write_text(FIRST_BOOT_LOG)
    verdict, text = watch(tree, sshd[0], timeout=30)
    assert (verdict.word, verdict.line, verdict.exit_code) == ("failed", "failed app", 1)
    assert "  pip: no such package\n" in text
    assert f"run it again: ssh -p {sshd[0].port} -i {sshd[1]}/client root@127.0.0.1 sudo /usr/local/lib/bakery/first-boot.sh\n" in text
    assert "--step" not in text  # run alone, a step marked failed is not run
    assert "bakery: a reboot carries first boot on too" in text


def test_a_watch_still_running_at_the_timeout_exits_3(sshd, known_hosts, tmp_path):
    tree = Tree(tmp_path)
    tree.status.write_text("running 2/3 app\n")
    started = time.monotonic()
    verdict, text = watch(tree, sshd[0], timeout=1.5)
    assert time.monotonic() - started < 10
    assert (verdict.word, verdict.line, verdict.exit_code) == ("running", "running 2/3 app", 3)
    assert "is still running at --timeout (0:01): step 2/3 app" in text


def test_no_ssh_until_the_timeout_exits_3_and_it_tries_under_the_rate_limit(known_hosts, tmp_path):
    verdict, text = watch(Tree(tmp_path), remote.Destination("127.0.0.1", "root", free_port()), timeout=8)
    assert (verdict.word, verdict.line, verdict.exit_code) == ("waiting", "waiting", 3)
    assert "bakery: waiting for SSH: " in text and "Connection refused" in text
    assert re.search(r"no SSH on root@127.0.0.1:\d+ after 0:08 \(--timeout\): .*Connection refused", text)
    # Each attempt is a new connection: never more than 6 in 30 s (ufw limit), whatever --interval says.
    assert len(verdict.times) == 2 and verdict.times[1] - verdict.times[0] >= status.RECONNECT_SECONDS


def test_an_attempt_that_hangs_is_followed_by_a_long_pause_so_the_firewall_window_empties(known_hosts, tmp_path):
    # A port forward (Vagrant's, QEMU's user network) accepts the connection at
    # once and retries the server behind it on its own: ssh waits for a banner
    # that does not come, and the server's firewall may count several attempts.
    listener = socket.create_server(("127.0.0.1", 0))
    held = []

    def hold():
        try:
            while True:
                held.append(listener.accept()[0])
        except OSError:  # the listener is shut down: the test is over
            pass

    holder = threading.Thread(target=hold, daemon=True)
    holder.start()
    skipped = [0.0]  # the pauses pass on a clock of their own; the attempts take real time

    def clock():
        return time.monotonic() + skipped[0]

    def sleep(seconds):
        skipped[0] += seconds

    class Timed(remote.Connection):
        times: list = []

        def run(self, command, script, timeout=remote.CONNECT_TIMEOUT + 50):
            self.times.append(clock())
            return super().run(command, script, timeout)

    where = remote.Destination("127.0.0.1", "root", listener.getsockname()[1])
    with Timed(where, remote.known_hosts_file()) as connection:
        verdict = status.watch(connection, Tree(tmp_path).watched, timeout=45, interval=0.3, verbose=False,
                               show=lambda item: None, clock=clock, sleep=sleep)
    listener.shutdown(socket.SHUT_RDWR)  # wakes the accept() the holder waits in (Linux)
    holder.join(timeout=5)
    assert not holder.is_alive()
    listener.close()
    for held_connection in held:
        held_connection.close()
    assert verdict.word == "waiting" and "banner exchange" in verdict.reason, verdict
    # The first attempt hung until ssh's ConnectTimeout; the next came 30 s after it ended.
    first, second = connection.times
    assert second - first >= remote.CONNECT_TIMEOUT + status.RECONNECT_AFTER_SLOW_FAILURE_SECONDS, connection.times
