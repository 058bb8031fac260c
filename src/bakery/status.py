"""``bakery status``: a server's first boot (or its last update), watched from
the workstation over SSH as the admin, read-only.

Owns what is read on the server and what it means: the one small script run
per poll (the state line first boot or the update command writes, when it was
written, the machine's uptime, and with ``-v`` the new lines of its log), the
judgement of a reading (still running, ready, failed, or a failure left by an
earlier boot that this boot carries on), the watch loop with its timeout, and
the verdict with its exit status. How it is shown is ``status_view``'s; the
SSH connection is ``remote``'s.
"""

from __future__ import annotations

import os
import re
import shlex
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator, Mapping, Optional

from .errors import BakeryError, ConfigError, UsageError
from .layout import FIRST_BOOT_LOG, FIRST_BOOT_STATUS, UPDATE_LOG, update_command, update_status
from .remote import Connection, Destination, known_hosts_file
from .steps.firstboot import SCRIPT as FIRST_BOOT_SCRIPT

BOOT_FINISHED = "/var/lib/cloud/instance/boot-finished"  # cloud-init's own mark
EXIT = {"ready": 0, "failed": 1, "running": 3, "waiting": 3}
LOG_TAIL = 20  # lines of a failed step's log shown with the verdict
# A poll through the kept connection opens none; without one, each attempt is
# a new connection, and the server's firewall refuses an address more than 6
# new SSH connections in 30 s (ufw limit) for as long as it keeps trying that
# often. An attempt refused at once was one connection: the next one comes
# 6.5 s after it started. An attempt that hung until ssh gave up may have been
# several: the client's kernel sends an unanswered SYN again, and a port
# forward (Vagrant's, QEMU's user network) accepts at once and retries the
# server on its own. Then 30 s pass before the next, so the firewall's window
# empties and an address it refuses is not kept refused by the watch itself.
RECONNECT_SECONDS = 6.5
SLOW_FAILURE_SECONDS = 3
RECONNECT_AFTER_SLOW_FAILURE_SECONDS = 30
LOG_CHUNK = 256 * 1024  # at most this much new log per poll
# Runs the script on standard input, as root when the state is root's to
# read: directly when the login is root, else through sudo -n (never a
# password prompt). Any login shell passes this on unchanged.
AS_ROOT = "sh -c 'if [ \"$(id -u)\" = 0 ]; then exec sh -s; else exec sudo -n sh -s; fi'"
AS_ADMIN = "sh -s"


@dataclass(frozen=True)
class Watched:
    """What is watched on the server: first boot, or the update command."""

    title: str  # "first boot", "microblog-update"
    status: str  # the one-line state file
    log: str
    header: str  # the text that starts a section of the log: a step, or an update
    retry: str  # the command that runs it again
    root_only: bool  # its state is readable by root only
    since_power_on: bool  # first boot counts from power-on; an update from its start
    finished: str = BOOT_FINISHED
    command: str = ""  # a command that must exist there (the update command)


FIRST_BOOT = Watched("first boot", FIRST_BOOT_STATUS, FIRST_BOOT_LOG, " == step ", FIRST_BOOT_SCRIPT,
                     root_only=False, since_power_on=True)


def update_watched(app: str) -> Watched:
    return Watched(f"{app}-update", update_status(app), UPDATE_LOG, f" {app}-update: updating to ",
                   update_command(app), root_only=True, since_power_on=False, command=update_command(app))


@dataclass(frozen=True)
class State:
    """A state line as the server writes it: ``running N/T STEP`` (the
    update's ``N/T`` is optional), ``ready`` (the update's ``ready COMMIT``),
    ``failed STEP``; ``waiting`` is bakery's word for no state yet."""

    word: str
    step: str = ""
    number: int = 0
    total: int = 0
    commit: str = ""
    line: str = "waiting"


STATE_LINE = re.compile(r"running (?:(\d+)/(\d+) )?([\w.-]+)|ready(?: ([0-9a-f]{7,64}))?|failed ([\w.-]+)")
WAITING = State("waiting")


def parse_state(line: str) -> Optional[State]:
    """The State of a status line, or None when it is not one."""
    line = line.strip()
    match = STATE_LINE.fullmatch(line)
    if not match:
        return None
    number, total, running, commit, failed = match.groups()
    if running:
        return State("running", running, int(number or 0), int(total or 0), line=line)
    if failed:
        return State("failed", failed, line=line)
    return State("ready", commit=commit or "", line=line)


@dataclass
class Reading:
    """One poll's answer: the server's clock, its uptime, the state line and
    when it was written, when cloud-init finished, and the log's new bytes."""

    now: int = 0
    boot: Optional[int] = None  # seconds since power-on; None when the server did not say
    state: Optional[str] = None
    written: Optional[int] = None
    finished: Optional[int] = None
    started: Optional[int] = None
    missing: Optional[str] = None
    log_from: Optional[int] = None
    log: str = ""

    @property
    def boot_started(self) -> int:
        """When this boot began (without the uptime: as if long ago, so every
        state counts as this boot's)."""
        return self.now - self.boot if self.boot is not None else 0


def parse_reading(text: str) -> Reading:
    head, marker, log = text.partition("--- log\n")
    reading = Reading(log=log if marker else "")
    for line in head.splitlines():
        key, _, value = line.partition(" ")
        if key in ("now", "boot", "written", "finished", "started") and value.strip().isdigit():
            setattr(reading, key, int(value))
        elif key == "state":
            reading.state = value
        elif key == "missing":
            reading.missing = value
        elif key == "log" and value.split()[:1] and value.split()[0].isdigit():
            reading.log_from = int(value.split()[0])
    return reading


def poll_script(watched: Watched, log_from: Optional[int] = None) -> str:
    """The script one poll runs there (read-only). ``log_from``: None for no
    log, -1 for the log from the start of its current section, else a byte offset."""
    q = shlex.quote
    lines = [
        "export LC_ALL=C",
        f"status={q(watched.status)} log={q(watched.log)} finished={q(watched.finished)}",
        'echo "now $(date +%s)"',
        "echo \"boot $(ps -o etimes= -p 1 | tr -d ' ')\"",
        'if [ -f "$status" ]; then echo "written $(stat -c %Y "$status")"; echo "state $(head -n 1 "$status")"; fi',
        '[ ! -e "$finished" ] || echo "finished $(stat -c %Y "$finished")"',
    ]
    if watched.command:
        lines.append(f"[ -x {q(watched.command)} ] || echo missing {q(watched.command)}")
    if not watched.since_power_on:
        lines += [f"start=$(grep -a -F -- {q(watched.header)} \"$log\" 2>/dev/null | tail -n 1 | cut -d' ' -f1)",
                  '[ -z "$start" ] || echo "started $(date -d "$start" +%s)"']
    if log_from is not None:
        start = (f"$(grep -a -b -F -- {q(watched.header)} \"$log\" 2>/dev/null | tail -n 1 | cut -d: -f1)"
                 if log_from < 0 else str(log_from))
        lines += ['size=$(stat -c %s "$log" 2>/dev/null || echo 0)', f"from={start}", "from=${from:-0}",
                  '[ "$from" -le "$size" ] || from=0', 'echo "log $from $size"', "echo '--- log'",
                  f'tail -c +$((from + 1)) "$log" 2>/dev/null | head -c {LOG_CHUNK}']
    return "\n".join(lines) + "\n"


def details_script(watched: Watched, step: str) -> str:
    """The last lines of the failed step's part of the log: first boot's from
    the step's last start to its failure, the update's from its last start."""
    q = shlex.quote
    if watched.since_power_on:
        section = (f"awk -v step={q(step)} 'index($0, \" == step \") && $NF == step {{ n = 0; on = 1 }} "
                   "on { lines[n++] = $0 } on && index($0, \" step \" step \" FAILED\") { on = 0 } "
                   "END { for (i = 0; i < n; i++) print lines[i] }'")
    else:
        section = (f"awk -v header={q(watched.header)} 'index($0, header) {{ n = 0; on = 1 }} on {{ lines[n++] = $0 }} "
                   "END { for (i = 0; i < n; i++) print lines[i] }'")
    return f"export LC_ALL=C\n{section} {q(watched.log)} 2>/dev/null | tail -n {LOG_TAIL}\n"


@dataclass(frozen=True)
class Judgement:
    """What a reading means: the state, whether it is the last word, the
    seconds it has been going (or took), and a note when it needs one."""

    state: State
    final: bool
    elapsed: Optional[int] = None
    note: str = ""


def judge(watched: Watched, reading: Reading) -> Judgement:
    if reading.missing:
        raise BakeryError(f"there is no {reading.missing} on the server: is the app called otherwise? "
                          "(--app NAME, or the config's app.name)")
    if reading.state is None:
        if watched.since_power_on and (reading.finished or -1) >= reading.boot_started:
            raise BakeryError(f"cloud-init finished without bakery's first boot (no {watched.status}): "
                              "was the server started with bakery's user-data?")
        note = "its steps have not started yet" if watched.since_power_on else "no update has run yet"
        return Judgement(WAITING, False, reading.boot if watched.since_power_on else None, note)
    state = parse_state(reading.state)
    if state is None:
        raise BakeryError(f"{watched.status} holds {reading.state.strip()[:80]!r}, which is not a state bakery knows")
    this_boot = (reading.written or 0) >= reading.boot_started
    if watched.since_power_on:
        if state.word == "failed" and not this_boot and (reading.finished or -1) < reading.boot_started:
            # An earlier boot failed; this boot carries first boot on.
            return Judgement(WAITING, False, reading.boot,
                             f"it carries on at this boot (an earlier boot failed at step {state.step})")
        final = state.word != "running"
        elapsed = reading.boot
        if final:
            elapsed = reading.written - reading.boot_started if this_boot and reading.boot is not None else None
        return Judgement(state, final, elapsed)
    started = reading.started
    final = state.word != "running"
    if started is None:
        elapsed = None
    elif final:
        elapsed = reading.written - started if reading.written is not None and reading.written >= started else None
    else:
        elapsed = max(0, reading.now - started)
    return Judgement(state, final, elapsed)


class LogFollower:
    """The new lines of a log, poll after poll: the byte offset reached, and
    a line not yet ended kept until it is."""

    def __init__(self):
        self.offset = -1  # the first poll starts at the current section
        self._partial = ""

    def feed(self, reading: Reading) -> list[str]:
        if reading.log_from is None:
            return []
        if reading.log_from != self.offset and self.offset >= 0:
            self._partial = ""  # the log was rotated or truncated
        data = reading.log.encode("utf-8", "surrogateescape")
        self.offset = reading.log_from + len(data)
        text = self._partial + reading.log
        *lines, self._partial = text.split("\n")
        return lines


# --- the watch ----------------------------------------------------------------


@dataclass
class Waiting:
    """SSH did not answer (yet)."""

    reason: str
    seconds: float


@dataclass
class Progress:
    title: str
    judgement: Judgement


@dataclass
class LogLines:
    lines: list[str]


@dataclass
class Note:
    text: str


@dataclass
class Tick:
    """Time passes between polls (a spinner turns)."""


@dataclass
class Interrupted:
    """The watch was stopped (Ctrl-C)."""


@dataclass
class Verdict:
    """The end of a watch: its word (ready, failed, running, waiting), the
    line for standard output, the exit status, and what to tell the user."""

    word: str
    line: str
    exit_code: int
    title: str = ""
    destination: str = ""
    judgement: Optional[Judgement] = None
    log: str = ""
    log_tail: list[str] = field(default_factory=list)
    retry: list[str] = field(default_factory=list)
    reason: str = ""  # why SSH never answered
    timeout: float = 0


Show = Callable[[object], None]


def watch(connection: Connection, watched: Watched, *, timeout: float, interval: float, verbose: bool,
          show: Show, clock: Callable[[], float] = time.monotonic,
          sleep: Callable[[float], None] = time.sleep) -> Verdict:
    """Poll every ``interval`` seconds until a final state or ``timeout``."""
    started = clock()
    follower = LogFollower() if verbose else None
    command = AS_ROOT if watched.root_only or verbose else AS_ADMIN
    last: Optional[Judgement] = None
    reason = ""
    while True:
        polled = clock()
        answer = connection.run(command, poll_script(watched, follower.offset if follower else None))
        if answer.ok:
            fingerprint = connection.pinned_now()
            if fingerprint:
                show(Note(f"pinned the host key of {connection.destination.host} ({fingerprint}) in "
                          f"{connection.known_hosts}: only this key is accepted for it from now on"))
            reading = parse_reading(answer.stdout)
            # An empty state line: the poll came between the shell's emptying
            # the status file and its writing the next state. No news: the
            # next poll reads it.
            news = reading.state is None or reading.state.strip() != ""
            if news:
                last = judge(watched, reading)
            if follower:
                show(LogLines(follower.feed(reading)))
            if news:
                show(Progress(watched.title, last))
                if last.final:
                    return _final(connection, watched, last)
        elif answer.code != 255:
            raise BakeryError(f"reading {watched.title}'s state on {connection.destination} failed: {answer.reason}")
        else:
            reason = answer.reason
            show(Waiting(reason, clock() - started))
        deadline = started + timeout
        upcoming = next_poll(polled, clock(), answer.ok, interval)
        # No new connection attempt squeezed in before the deadline.
        if clock() >= deadline or (not answer.ok and upcoming > deadline):
            _pause(deadline, clock, sleep, show)
            return _timed_out(connection, watched, last, reason, timeout)
        _pause(min(upcoming, deadline), clock, sleep, show)


def next_poll(polled: float, now: float, answered: bool, interval: float) -> float:
    """When to poll next, after an attempt that started at ``polled`` and ended ``now``."""
    if answered:
        return polled + interval
    if now - polled >= SLOW_FAILURE_SECONDS:
        return now + max(interval, RECONNECT_AFTER_SLOW_FAILURE_SECONDS)
    return polled + max(interval, RECONNECT_SECONDS)


def _pause(until: float, clock: Callable[[], float], sleep: Callable[[float], None], show: Show) -> None:
    """Wait until ``until``, a tick every tenth of a second."""
    while clock() < until:
        sleep(min(0.1, max(0.0, until - clock())))
        show(Tick())


def _final(connection: Connection, watched: Watched, judgement: Judgement) -> Verdict:
    state = judgement.state
    verdict = Verdict(state.word, state.line, EXIT[state.word], watched.title, str(connection.destination),
                      judgement, watched.log)
    if state.word == "failed":
        answer = connection.run(AS_ROOT, details_script(watched, state.step))
        verdict.log_tail = answer.stdout.splitlines() if answer.ok else [f"(could not read it: {answer.reason})"]
        verdict.retry = retry_commands(connection.destination, watched, verdict.log_tail)
    return verdict


def _timed_out(connection: Connection, watched: Watched, last: Optional[Judgement], reason: str,
               timeout: float) -> Verdict:
    word = last.state.word if last else "waiting"
    line = last.state.line if last else "waiting"
    return Verdict(word, line, EXIT[word], watched.title, str(connection.destination), last, watched.log,
                   reason="" if last else reason, timeout=timeout)


def retry_commands(destination: Destination, watched: Watched, log_tail: list[str]) -> list[str]:
    """The commands that run it again, as the user types them."""
    if watched.since_power_on:
        # The whole script: each step is safe to run again, and it carries on
        # past the one that failed (run alone, a step after the failed one
        # is not run, and a step before it leaves the rest undone).
        return [destination.command_line(f"sudo {watched.retry}")]
    ref = ""
    for line in log_tail:
        if watched.header in line:
            ref = line.rsplit(" ", 1)[-1]
    return [destination.command_line(f"sudo {watched.retry} {shlex.quote(ref)}" if ref else f"sudo {watched.retry}")]


# --- the command --------------------------------------------------------------


def parse_duration(text: str, option: str) -> float:
    """``90``, ``90s``, ``15m``, ``1h`` -> seconds."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smh]?)\s*", str(text))
    if not match:
        raise UsageError(f"{option}: expected seconds or a duration such as 90s, 15m or 1h, got {text!r}")
    return float(match.group(1)) * {"": 1, "s": 1, "m": 60, "h": 3600}[match.group(2)]


class _Unset(Mapping):
    """The environment with a stand-in for every variable that is not set."""

    def __contains__(self, name) -> bool:
        return True

    def __getitem__(self, name: str) -> str:
        return os.environ.get(name, "unset")

    def __iter__(self) -> Iterator[str]:
        return iter(os.environ)

    def __len__(self) -> int:
        return len(os.environ)


ADMIN_NAME = re.compile(r"[a-z_][a-z0-9_-]{0,31}")  # as the schema has it
APP_NAME = re.compile(r"[a-z][a-z0-9_-]{0,31}")


def config_names(config: Optional[Path], target: str) -> tuple[Optional[str], Optional[str]]:
    """(admin name, app name) from ``config`` (default: ./bakery.yaml when it
    exists); (None, None) without a config. Only these two are read, so the
    rest of the config is not validated (which would cost most of the
    command's start-up)."""
    from .defaults import app_name_from_repo, fill
    from .loader import load_document
    from .targets import get_target

    path = config or Path("bakery.yaml")
    if config is None and not path.exists():
        return None, None
    try:
        doc = load_document(path)
    except ConfigError as error:
        if not all("environment variable" in problem.message for problem in error.problems):
            raise
        # Only variables that are not set here: the two names read here
        # hardly ever come from one, so a stand-in will do.
        doc = load_document(path, _Unset())
    data = doc.data if isinstance(doc.data, dict) else {}
    admin = data.get("admin") if isinstance(data.get("admin"), dict) else {}
    app = data.get("app") if isinstance(data.get("app"), dict) else {}
    admin_name = admin.get("name", fill({}, get_target(target))["admin"]["name"])
    app_name = app.get("name") or (app_name_from_repo(app["repo"]) if isinstance(app.get("repo"), str) else None)
    problems = [doc.problem(key, f"{value!r} is not a name bakery accepts; fix it (bakery validate checks it all)")
                for key, value, pattern in ((("admin", "name"), admin_name, ADMIN_NAME), (("app", "name"), app_name, APP_NAME))
                if value is not None and not (isinstance(value, str) and pattern.fullmatch(value))]
    if problems:
        raise ConfigError(problems)
    return admin_name, app_name


def run(destination: str, *, show: Show, port: Optional[int] = None, identity: Optional[Path] = None,
        config: Optional[Path] = None, target: str = "generic", after_update: bool = False,
        app: Optional[str] = None, timeout: float = 1800, interval: float = 2,
        verbose: bool = False) -> Verdict:
    """``bakery status``: watch first boot (or the update) on ``destination``."""
    admin, app_name = config_names(config, target)
    if after_update:
        app = app or app_name
        if not app:
            raise UsageError("--after-update needs the app's name: --app NAME, or -c bakery.yaml with an app section")
        if not APP_NAME.fullmatch(app):
            raise UsageError(f"--app: {app!r} is not an app name (a lower-case letter, then letters, digits, - and _)")
    if interval <= 0:
        raise UsageError("--interval must be more than 0 seconds")
    watched = update_watched(app) if after_update else FIRST_BOOT
    where = Destination.parse(destination, default_user=admin, port=port, identity=identity)
    with Connection(where, known_hosts_file()) as connection:
        try:
            verdict = watch(connection, watched, timeout=timeout, interval=interval, verbose=verbose, show=show)
        except KeyboardInterrupt:
            show(Interrupted())
            raise
    show(verdict)
    return verdict
