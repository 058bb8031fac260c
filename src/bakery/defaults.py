"""The config with every default filled in, from the two places that own
defaults: the schema's ``default`` keywords, and the target's own row where a
default differs there (``Target.defaults``). The resolver reads only this
filled copy, and the README's reference is generated from the same sources,
so the two cannot disagree.

A section the schema gives ``default: {}`` (ssh, firewall, mail, ...) always
applies and is filled in when absent; a section without one (app, wifi) means
something by being there and is left out when the config leaves it out."""

from __future__ import annotations

import copy
import re
from functools import lru_cache
from typing import Any, Iterator

from .schema import load_schema
from .targets import TARGETS, Target


def fill(data: dict, target: Target) -> dict:
    """A copy of ``data`` with every applicable default in place: the
    schema's and the target's, then those derived from other keys."""
    filled = copy.deepcopy(data)
    _fill(filled, load_schema(), "", target)
    _derive(filled)
    return filled


def app_name_from_repo(url: str) -> str:
    """``microblog`` for ``https://github.com/you/microblog.git``."""
    name = re.split(r"[/:]", url.rstrip("/"))[-1]
    name = re.sub(r"\.git$", "", name).lower()
    name = re.sub(r"[^a-z0-9_-]", "-", name).strip("-_") or "app"
    return name if name[0].isalpha() else "app-" + name


def _derive(cfg: dict) -> None:
    """Defaults that follow from other keys, as the schema describes them."""
    app = cfg.get("app")
    if not isinstance(app, dict) or not isinstance(app.get("repo"), str):
        return
    name = app.setdefault("name", app_name_from_repo(app["repo"]))
    app.setdefault("user", name)
    app.setdefault("module", f"{name.replace('-', '_')}:app")
    ident = re.sub(r"[^A-Za-z0-9_]", "_", name)
    database = cfg["database"]
    database.setdefault("name", ident[:64])
    # MySQL's user names are at most 32 characters (PostgreSQL's 63).
    database.setdefault("user", ident[:32])
    database.setdefault("path", f"{name}.db")  # in the app's data folder, /var/lib/<app>


def _fill(node: dict, schema: dict, prefix: str, target: Target) -> None:
    for key, sub in schema.get("properties", {}).items():
        path = f"{prefix}{key}"
        if key not in node:
            if path in target.defaults:
                node[key] = copy.deepcopy(target.defaults[path])
            elif "default" in sub:
                node[key] = copy.deepcopy(sub["default"])
        value = node.get(key)
        if isinstance(value, float) and value.is_integer() and _whole_number(sub):
            # YAML's 2.0 passes the schema as an integer; gunicorn and openssl want 2.
            node[key] = int(value)
        if isinstance(value, dict) and "properties" in sub:
            _fill(value, sub, path + ".", target)


def _whole_number(schema: dict) -> bool:
    enum = schema.get("enum")
    return schema.get("type") == "integer" or bool(enum) and all(type(v) is int for v in enum)


def leaves(schema: dict | None = None, prefix: str = "") -> Iterator[tuple[str, dict]]:
    """(dotted key, schema) of every setting: the keys that are not sections."""
    schema = load_schema() if schema is None else schema
    for key, sub in schema.get("properties", {}).items():
        path = f"{prefix}{key}"
        if sub.get("type") == "object" and "properties" in sub:
            yield from leaves(sub, path + ".")
        else:
            yield path, sub


@lru_cache(maxsize=None)
def target_overrides() -> dict[str, dict[str, Any]]:
    """Dotted key -> {target name: its default}, for defaults that differ."""
    out: dict[str, dict[str, Any]] = {}
    for target in TARGETS.values():
        for key, value in target.defaults.items():
            out.setdefault(key, {})[target.name] = value
    return out
