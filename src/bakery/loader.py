"""Reading bakery.yaml: YAML into plain data, remembering where every value
came from, and expanding ``${NAME}`` references to the workstation's
environment.

The document keeps a map from key path to (line, column) so that later checks
can point at the exact place of a problem.

The reader is bounded, as a config is kilobytes: the file's size, the depth
of nesting and the size of one value are limited, YAML aliases are refused
(an alias bomb cannot expand), and only plain YAML values are read (no
``!!python/...`` or local tags).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import yaml

from .errors import ConfigError, Problem

# ${NAME} or ${NAME:-default}; "$${" is a literal "${"; any other "${" is a mistake.
_ENV_REF = re.compile(r"\$\$\{|\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}|(\$\{)")

MAX_FILE_BYTES = 1024 * 1024
MAX_DEPTH = 32
MAX_SCALAR_CHARS = 64 * 1024
# The tags a plain YAML value resolves to; anything else is refused.
PLAIN_TAGS = frozenset(f"tag:yaml.org,2002:{name}" for name in ("str", "int", "float", "bool", "null", "map", "seq"))


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
    from .fsutil import TooLarge, read_small

    try:
        data = read_small(path, MAX_FILE_BYTES)
    except FileNotFoundError:
        raise ConfigError([Problem(name, 0, 0, (), "file not found; start one with: bakery init (or bakery init --from-app PATH/TO/YOUR/APP), or pass -c PATH")])
    except TooLarge:
        raise ConfigError([Problem(name, 0, 0, (), f"larger than {MAX_FILE_BYTES // 1024} KiB: a bakery config is a few kilobytes")])
    except OSError as exc:
        raise ConfigError([Problem(name, 0, 0, (), f"cannot read: {exc.strerror or exc}")])
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line, col = _line_col(data, exc.start)
        raise ConfigError([Problem(name, line, col, (), f"not UTF-8 text (byte 0x{data[exc.start]:02x}); save the file as UTF-8")])
    return parse_document(text, name, path.resolve().parent, os.environ if environ is None else environ)


def parse_document(text: str, name: str, base_dir: Path, environ: Mapping[str, str]) -> Document:
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.reader.ReaderError as exc:
        line, col = _line_col(text, exc.position)
        raise ConfigError([Problem(name, line, col, (), f"character #x{exc.character:04x} is not allowed in YAML text")])
    except yaml.YAMLError as exc:
        raise ConfigError([_syntax_problem(name, exc)])
    except RecursionError:
        raise ConfigError([Problem(name, 0, 0, (), f"nested too deeply: a bakery config is at most {MAX_DEPTH} levels deep")])
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


def _line_col(text, offset: int) -> tuple:
    """1-based line and column of ``offset`` in ``text`` (str or bytes)."""
    newline = b"\n" if isinstance(text, bytes) else "\n"
    line = text.count(newline, 0, offset) + 1
    return line, offset - (text.rfind(newline, 0, offset) + 1) + 1


def _syntax_problem(name: str, exc) -> Problem:
    """Point at the mark that helps: for a quote or bracket left open, where
    it opened, not the end of the file where the scanner gave up."""
    mark = getattr(exc, "problem_mark", None)
    context = getattr(exc, "context_mark", None)
    reason = getattr(exc, "problem", None) or str(exc)
    if context is not None and mark is not None and "end of stream" in reason:
        what = (getattr(exc, "context", None) or "").replace("while scanning a ", "").replace("while parsing a ", "")
        what = "quoted value" if "quoted" in what else (what or "value")
        return Problem(name, context.line + 1, context.column + 1, (),
                       f"YAML syntax error: the {what} that starts here is never closed")
    line, col = (mark.line + 1, mark.column + 1) if mark else (0, 0)
    return Problem(name, line, col, (), f"YAML syntax error: {reason}")


def _convert(node, path, doc: Document, problems: list, environ, seen=None) -> Any:
    seen = set() if seen is None else seen
    doc.positions[path] = (node.start_mark.line + 1, node.start_mark.column + 1)
    where = (node.start_mark.line + 1, node.start_mark.column + 1)
    if id(node) in seen:
        # An alias (*name) of a node already read: refused, so that an alias
        # bomb never expands and a recursive alias never loops.
        problems.append(Problem(doc.file, *where, path, "YAML aliases (*name) are not supported; write the value out"))
        return None
    seen.add(id(node))
    if len(path) > MAX_DEPTH:
        problems.append(Problem(doc.file, *where, path, f"nested too deeply: at most {MAX_DEPTH} levels"))
        return None
    if node.tag not in PLAIN_TAGS:
        problems.append(Problem(doc.file, *where, path, f"the YAML tag {node.tag!r} is not supported: write a plain value"))
        return None
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
            result[key] = _convert(value_node, path + (key,), doc, problems, environ, seen)
            # Point key-level problems (unknown key, wrong type) at the key itself.
            doc.positions[path + (key,)] = (key_node.start_mark.line + 1, key_node.start_mark.column + 1)
        return result
    if isinstance(node, yaml.SequenceNode):
        return [_convert(item, path + (i,), doc, problems, environ, seen) for i, item in enumerate(node.value)]
    if len(node.value) > MAX_SCALAR_CHARS:
        problems.append(Problem(doc.file, *where, path, f"a value of {len(node.value)} characters is too long "
                                f"(at most {MAX_SCALAR_CHARS // 1024} KiB)"))
        return None
    try:
        value = yaml.SafeLoader("").construct_object(node)
    except (yaml.YAMLError, ValueError) as exc:
        # e.g. !!int applied to text, or an integer too long to convert.
        reason = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        if "Exceeds the limit" in reason:
            reason = f"a number of {len(node.value)} digits is far too long"
        problems.append(Problem(doc.file, *where, path, f"cannot read this value as {node.tag.rsplit(':', 1)[-1]}: {reason}"))
        return None
    if isinstance(value, str):
        value = _expand(value, path, doc, problems, environ)
    return value


def _expand(value: str, path, doc: Document, problems: list, environ) -> str:
    def replace(match: re.Match) -> str:
        if match.group(0) == "$${":
            return "${"
        if match.group(3):
            problems.append(doc.problem(path, "a '${' that is not ${NAME} or ${NAME:-default} (NAME: letters, digits "
                                        "and _, not starting with a digit); write $${ for a literal '${'"))
            return match.group(0)
        name, default = match.group(1), match.group(2)
        if name in environ:
            return environ[name]
        if default is not None:
            return default
        problems.append(doc.problem(path, f"environment variable {name} is not set; export it, or write ${{{name}:-default}} to give a default"))
        return ""

    return _ENV_REF.sub(replace, value)
