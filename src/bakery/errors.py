"""The errors bakery reports to people, and how they are printed.

A config problem carries its file, line, column and key path so that it can be
printed as ``FILE:LINE:COL: key.path: message``; the CLI turns ConfigError and
UsageError into exit status 2 and BakeryError into 1, without a traceback.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Sequence


class BakeryError(Exception):
    """A runtime failure the user can act on (exit 1)."""

    exit_code = 1


class UsageError(BakeryError):
    """Bad options or arguments (exit 2)."""

    exit_code = 2


@dataclass(frozen=True)
class Problem:
    file: str
    line: int  # 1-based; 0 when unknown
    column: int  # 1-based; 0 when unknown
    path: tuple  # key path, e.g. ("app", "repo")
    message: str

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}:{self.column}" if self.line else self.file
        key = dotted(self.path)
        return f"{where}: {key}: {self.message}" if key else f"{where}: {self.message}"


class ConfigError(BakeryError):
    """One or more problems in the config (exit 2)."""

    exit_code = 2

    def __init__(self, problems: Iterable[Problem]):
        self.problems: Sequence[Problem] = sorted(problems, key=lambda p: (p.file, p.line, p.column, p.message))
        super().__init__("\n".join(str(p) for p in self.problems))


def dotted(path: Iterable) -> str:
    """Format a key path the way a user writes it: ``app.setup[0]``."""
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out
