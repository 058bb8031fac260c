"""The Jinja2 environment for the files the server receives (cloudinit/*.j2).

Each output context has exactly one escape, exposed as a filter: templates
never paste a config value into shell, SQL, nginx, supervisor or .env text
without it. Undefined names are errors, and nothing is HTML-escaped.
"""

from __future__ import annotations

import re
import shlex
from functools import lru_cache

from .resources import data_path


class UnsafeValue(ValueError):
    """A value cannot be represented safely in the requested context."""


def shell_quote(value) -> str:
    """One shell word, whatever the value contains."""
    return shlex.quote(str(value))


def mysql_string(value) -> str:
    """A MySQL/MariaDB string literal (default sql_mode: backslash escapes)."""
    text = str(value)
    if "\x00" in text:
        raise UnsafeValue("NUL byte in SQL string")
    # Line breaks and Ctrl-Z are escaped too, so the literal survives any
    # client mode that would otherwise translate them.
    for raw, escaped in (("\\", "\\\\"), ("'", "\\'"), ("\n", "\\n"), ("\r", "\\r"), ("\x1a", "\\Z")):
        text = text.replace(raw, escaped)
    return "'" + text + "'"


def _sql_ident(value, quote: str) -> str:
    """Identifiers are restricted by the schema to [A-Za-z0-9_]; quoting them
    anyway keeps reserved words (e.g. a database called `order`) working."""
    text = str(value)
    if not re.fullmatch(r"[A-Za-z0-9_]+", text):
        raise UnsafeValue(f"not a safe SQL identifier: {text!r}")
    return quote + text + quote


def mysql_ident(value) -> str:
    return _sql_ident(value, "`")


def pg_string(value) -> str:
    """A PostgreSQL string literal (standard_conforming_strings on)."""
    text = str(value)
    if "\x00" in text:
        raise UnsafeValue("NUL byte in SQL string")
    return "'" + text.replace("'", "''") + "'"


def pg_ident(value) -> str:
    return _sql_ident(value, '"')


def dotenv_value(value) -> str:
    """A python-dotenv value: single quotes, so no ${} interpolation happens."""
    text = str(value)
    if "\n" in text or "\r" in text or "\x00" in text:
        raise UnsafeValue(".env values cannot contain line breaks")
    if text.endswith("\\"):
        # python-dotenv reads an escaped backslash before the closing quote as
        # an escaped quote.
        raise UnsafeValue(".env values cannot end with a backslash")
    if "${" in text:
        # python-dotenv expands ${NAME} even in single quotes (1.2.4), with no escape.
        raise UnsafeValue(".env values cannot contain '${'")
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


_NGINX_SAFE = re.compile(r"[A-Za-z0-9_./:*~-]+")


def nginx_value(value) -> str:
    """A bare nginx token; values outside the safe set are refused (the schema
    restricts names and paths to it, so this only guards the templates)."""
    text = str(value)
    if not _NGINX_SAFE.fullmatch(text):
        raise UnsafeValue(f"not a safe nginx value: {text!r}")
    return text


def supervisor_value(value) -> str:
    """A value in a supervisor .conf (ConfigParser: '%' is interpolation)."""
    text = str(value)
    if "\n" in text or "\r" in text:
        raise UnsafeValue("supervisor values cannot contain line breaks")
    return text.replace("%", "%%")


FILTERS = {
    "sh": shell_quote,
    "mysql_str": mysql_string,
    "mysql_ident": mysql_ident,
    "pg_str": pg_string,
    "pg_ident": pg_ident,
    "dotenv": dotenv_value,
    "nginx": nginx_value,
    "supervisor": supervisor_value,
}


@lru_cache(maxsize=1)
def environment():
    import jinja2

    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(data_path("cloudinit"))),
        undefined=jinja2.StrictUndefined,
        autoescape=False,
        keep_trailing_newline=True,
        trim_blocks=True,
        lstrip_blocks=True,
        bytecode_cache=_bytecode_cache(jinja2),
    )
    env.filters.update(FILTERS)
    return env


def _bytecode_cache(jinja2):
    """Compiled templates kept in the user's cache folder: compiling them is
    the largest part of a render. Jinja keys each entry on the template's
    source, so an edited template is recompiled. Without a writable cache
    folder templates are simply compiled every time."""
    import os
    import tempfile
    from pathlib import Path

    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    folder = Path(base) / "bakery" / "templates"
    try:
        folder.mkdir(parents=True, exist_ok=True)
        # Probe: Jinja does not handle a folder it cannot write to.
        with tempfile.NamedTemporaryFile(dir=folder):
            pass
    except OSError:
        return None
    return jinja2.FileSystemBytecodeCache(str(folder))


def render(template: str, **context) -> str:
    """Render ``cloudinit/<template>`` with ``context``."""
    return environment().get_template(template).render(**context)
