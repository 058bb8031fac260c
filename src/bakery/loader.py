"""Reading bakery.yaml: YAML into plain data, remembering where every value
came from, and expanding ``${NAME}`` references to the workstation's
environment.

The document keeps a map from key path to (line, column) so that later checks
can point at the exact place of a problem.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import yaml

from .errors import ConfigError, Problem

# ${NAME} or ${NAME:-default}; "$${" is a literal "${".
_ENV_REF = re.compile(r"\$\$\{|\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


@dataclass
class Document:
    """A loaded config: its data and where each key path sits in the file."""

    file: str
    data: Any
    positions: dict = field(default_factory=dict)  # path tuple -> (line, col), 1-based
    base_dir: Path = Path(".")

    def where(self, path: tuple) -> tuple:
        """Best known (line, col) for ``path``: the deepest recorded ancestor."""
        path = tuple(path)
        while path:
            if path in self.positions:
                return self.positions[path]
            path = path[:-1]
        return self.positions.get((), (1, 1))

    def problem(self, path: tuple, message: str) -> Problem:
        line, col = self.where(path)
        return Problem(self.file, line, col, tuple(path), message)


def load_document(path: os.PathLike | str, environ: Mapping[str, str] | None = None) -> Document:
    """Load ``path``; raise ConfigError listing every problem found."""
    path = Path(path)
    name = str(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError([Problem(name, 0, 0, (), "file not found; create it (see examples/microblog.yaml) or pass -c PATH")])
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError([Problem(name, 0, 0, (), f"cannot read: {exc}")])
    return parse_document(text, name, path.resolve().parent, os.environ if environ is None else environ)


def parse_document(text: str, name: str, base_dir: Path, environ: Mapping[str, str]) -> Document:
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line, col = (mark.line + 1, mark.column + 1) if mark else (0, 0)
        reason = getattr(exc, "problem", None) or str(exc)
        raise ConfigError([Problem(name, line, col, (), f"YAML syntax error: {reason}")])
    doc = Document(name, None, {}, base_dir)
    problems: list[Problem] = []
    if node is None:
        doc.data = {}
        doc.positions[()] = (1, 1)
        return doc
    doc.data = _convert(node, (), doc, problems, environ)
    if problems:
        raise ConfigError(problems)
    return doc


def _convert(node, path, doc: Document, problems: list, environ) -> Any:
    doc.positions[path] = (node.start_mark.line + 1, node.start_mark.column + 1)
    if isinstance(node, yaml.MappingNode):
        result = {}
        for key_node, value_node in node.value:
            if not isinstance(key_node, yaml.ScalarNode):
                problems.append(Problem(doc.file, key_node.start_mark.line + 1, key_node.start_mark.column + 1, path, "keys must be plain names"))
                continue
            key = key_node.value
            if key == "<<":
                problems.append(Problem(doc.file, key_node.start_mark.line + 1, key_node.start_mark.column + 1, path, "YAML merge keys (<<) are not supported; write the keys out"))
                continue
            if key in result:
                problems.append(Problem(doc.file, key_node.start_mark.line + 1, key_node.start_mark.column + 1, path + (key,), "duplicate key; each key may appear once"))
                continue
            result[key] = _convert(value_node, path + (key,), doc, problems, environ)
            # Point key-level problems (unknown key, wrong type) at the key itself.
            doc.positions[path + (key,)] = (key_node.start_mark.line + 1, key_node.start_mark.column + 1)
        return result
    if isinstance(node, yaml.SequenceNode):
        return [_convert(item, path + (i,), doc, problems, environ) for i, item in enumerate(node.value)]
    value = yaml.SafeLoader("").construct_object(node)
    if isinstance(value, str):
        value = _expand(value, path, doc, problems, environ)
    return value


def _expand(value: str, path, doc: Document, problems: list, environ) -> str:
    def replace(match: re.Match) -> str:
        if match.group(0) == "$${":
            return "${"
        name, default = match.group(1), match.group(2)
        if name in environ:
            return environ[name]
        if default is not None:
            return default
        problems.append(doc.problem(path, f"environment variable {name} is not set; export it, or write ${{{name}:-default}} to give a default"))
        return ""

    return _ENV_REF.sub(replace, value)
