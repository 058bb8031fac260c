"""How ``bakery status`` shows a watch, on standard error: on a terminal one
line redrawn in place (a spinner while SSH is not up, then a progress bar:
steps done of all, the current step, the time) with colour; anywhere else
plain lines, one per change, with no bar, colour or carriage return. Log
lines from the server are shown with their control characters removed."""

from __future__ import annotations

import re
import shutil
import time
from typing import Callable, Optional, TextIO

from .status import Interrupted, Judgement, LogLines, Note, Progress, Tick, Verdict, Waiting

FRAMES = "|/-\\"
BAR = 20
COLOURS = {"ready": "32", "failed": "31", "running": "33", "waiting": "33"}
CONTROL = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]|[\x00-\x08\x0a-\x1f\x7f]")


def clock(seconds: Optional[float]) -> str:
    """``1:02``, ``1:02:03``; ``?`` when unknown."""
    if seconds is None:
        return "?"
    seconds = max(0, int(seconds))
    hours, rest = divmod(seconds, 3600)
    return f"{hours}:{rest // 60:02d}:{rest % 60:02d}" if hours else f"{rest // 60}:{rest % 60:02d}"


def clean(line: str) -> str:
    """A line of the server's log, safe to print: no escape sequences, no
    carriage returns (apt's progress), undecodable bytes replaced."""
    line = line.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
    # What a terminal would show of a line redrawn with carriage returns.
    pieces = [piece for piece in line.split("\r") if piece]
    return CONTROL.sub("", pieces[-1] if pieces else "")


def bar(number: int, total: int, width: int = BAR) -> str:
    """The bar while step ``number`` of ``total`` runs: the steps before it done."""
    done = min(width, width * max(0, number - 1) // total) if total else 0
    return "[" + "#" * done + "-" * (width - done) + "]"


def describe(title: str, judgement: Judgement) -> str:
    """One line for a state: ``first boot: step 4/9 services``."""
    state = judgement.state
    if state.word == "running":
        where = f"step {state.number}/{state.total} {state.step}" if state.total else f"step {state.step}"
        return f"{title}: {where}"
    if state.word == "waiting":
        return f"{title}: {judgement.note or 'waiting'}"
    return f"{title}: {state.line}"


class Display:
    """Called with each event of a watch, then with its Verdict."""

    def __init__(self, stream: TextIO, tty: bool, colour: bool = True,
                 columns: Callable[[], int] = lambda: shutil.get_terminal_size().columns):
        self.stream = stream
        self.tty = tty
        self.colour = tty and colour
        self.columns = columns
        self._frame = 0
        self._live = ""  # the in-place line (terminal), without spinner and clock
        self._elapsed: Optional[float] = None
        self._since = time.monotonic()
        self._said = ""  # the last plain line, to print only changes

    def __call__(self, event) -> None:
        kind = type(event)
        if kind is Tick:
            self._frame += 1
            self._redraw()
        elif kind is Waiting:
            self._show(f"waiting for SSH ({event.reason})", event.seconds, plain=f"waiting for SSH: {event.reason}")
        elif kind is Progress:
            self._progress(event.title, event.judgement)
        elif kind is LogLines:
            self._print(*("  " + clean(line) for line in event.lines))
        elif kind is Note:
            self._print(f"bakery: {event.text}")
        elif kind is Verdict:
            self._verdict(event)
        elif kind is Interrupted:
            self._verdict(None)

    # --- the in-place line ----------------------------------------------------

    def _show(self, text: str, elapsed: Optional[float], plain: str = "") -> None:
        if self.tty:
            self._live, self._elapsed, self._since = text, elapsed, time.monotonic()
            self._redraw()
            return
        plain = plain or text
        if plain != self._said:
            self._said = plain
            self._print(f"bakery: {plain}" + (f" ({clock(elapsed)})" if elapsed is not None else ""))

    def _progress(self, title: str, judgement: Judgement) -> None:
        state = judgement.state
        if judgement.final:
            return  # the verdict says it
        text = describe(title, judgement)
        if self.tty and state.word == "running" and state.total:
            text = f"{title} {bar(state.number, state.total)} {state.number - 1}/{state.total} done, now {state.step}"
        self._show(text, judgement.elapsed, plain=describe(title, judgement))

    def _redraw(self) -> None:
        if not self.tty or not self._live:
            return
        elapsed = "" if self._elapsed is None else "  " + clock(self._elapsed + time.monotonic() - self._since)
        line = f"{FRAMES[self._frame % len(FRAMES)]} {self._live}{elapsed}"
        self.stream.write("\r\x1b[K" + line[: max(10, self.columns() - 1)])
        self.stream.flush()

    def _print(self, *lines: str) -> None:
        if self.tty and self._live:
            self.stream.write("\r\x1b[K")
        for line in lines:
            self.stream.write(line + "\n")
        self.stream.flush()
        self._redraw()

    def _paint(self, word: str, text: str) -> str:
        return f"\x1b[1;{COLOURS[word]}m{text}\x1b[0m" if self.colour else text

    # --- the end --------------------------------------------------------------

    def _verdict(self, verdict: Optional[Verdict]) -> None:
        if self.tty and self._live:
            self.stream.write("\r\x1b[K")
            self.stream.flush()
        self._live = ""
        if verdict:
            self._print(*verdict_lines(verdict, self._paint))


def verdict_lines(verdict: Verdict, paint: Callable[[str, str], str] = lambda word, text: text) -> list[str]:
    """What the user is told at the end (standard error)."""
    judgement = verdict.judgement
    after = f" after {clock(judgement.elapsed)}" if judgement and judgement.elapsed is not None else ""
    what = f"{verdict.title} on {verdict.destination}"
    if verdict.word == "ready":
        commit = f" at {judgement.state.commit[:12]}" if judgement.state.commit else ""
        return [f"bakery: {what} is {paint('ready', 'ready')}{commit}{after}"]
    if verdict.word == "failed":
        lines = [f"bakery: {what} {paint('failed', 'FAILED')} at step {judgement.state.step}{after}",
                 f"bakery: the end of its log ({verdict.log}):"]
        lines += ["  " + clean(line) for line in verdict.log_tail] or ["  (empty)"]
        lines.append(f"bakery: fix the cause, then run it again: {verdict.retry[0]}")
        if verdict.title == "first boot":
            lines.append("bakery: a reboot carries first boot on too")
        return lines
    if judgement is None:
        return [f"bakery: {paint('waiting', 'no SSH')} on {verdict.destination} after {clock(verdict.timeout)} "
                f"(--timeout): {verdict.reason or 'no answer'}"]
    return [f"bakery: {what} is {paint('running', 'still running')} at --timeout "
            f"({clock(verdict.timeout)}): {describe(verdict.title, judgement).split(': ', 1)[1]}"]
