"""Checking a loaded document against schemas/bakery.schema.json, the single
definition of bakery.yaml, and turning every violation into a Problem a
person can act on (with the closest valid key for a typo)."""

from __future__ import annotations

import difflib
import json
from functools import lru_cache
from typing import Any

from .errors import Problem
from .loader import Document
from .resources import data_path

_TYPE_NAMES = {"string": "a string", "integer": "a whole number", "number": "a number",
               "boolean": "true or false", "array": "a list", "object": "a mapping of keys"}


@lru_cache(maxsize=1)
def load_schema() -> dict:
    return json.loads((data_path("schemas") / "bakery.schema.json").read_text(encoding="utf-8"))


@lru_cache(maxsize=None)
def whole_text_regex(pattern: str):
    """``pattern`` compiled so that a ``$`` ending it (or one of its
    alternatives) means the end of the text."""
    import re

    return re.compile(re.sub(r"(?<!\\)\$(?=\||\)|$)", r"\\Z", pattern))


def _whole_text_pattern(validator, pattern, instance, schema):
    """jsonschema's ``pattern``, except that an anchored pattern must match
    the whole text: Python's ``$`` also matches before a final line break, so
    a block scalar (``key: |``) would pass every single-line field."""
    from jsonschema.exceptions import ValidationError

    if validator.is_type(instance, "string") and not whole_text_regex(pattern).search(instance):
        yield ValidationError(f"{instance!r} does not match {pattern!r}")


@lru_cache(maxsize=1)
def _validator_class():
    from jsonschema import Draft202012Validator, validators

    return validators.extend(Draft202012Validator, {"pattern": _whole_text_pattern})


def check_schema(doc: Document) -> list[Problem]:
    """Every schema violation in ``doc``, as located problems."""
    schema = load_schema()
    validator = _validator_class()(schema)
    problems = []
    for error in validator.iter_errors(doc.data):
        problems.extend(_explain(error, doc, schema))
    # One line per place and message, even when a schema reports it twice.
    return list(dict.fromkeys(problems))


def _describe(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "nothing (null)"
    if isinstance(value, (dict, list)):
        return "a mapping" if isinstance(value, dict) else "a list"
    if isinstance(value, str):
        return repr(value) if len(value) <= 60 else repr(value[:57] + "...")
    return repr(value)


def _subschema(schema: dict, path) -> dict:
    node = schema
    for part in path:
        if isinstance(part, int):
            node = node.get("items", {})
        else:
            props = node.get("properties", {})
            node = props.get(part) or (node.get("additionalProperties") if isinstance(node.get("additionalProperties"), dict) else {})
    return node


def _explain(error, doc: Document, schema: dict) -> list[Problem]:
    """The problem(s) a schema error means, with the value described unless
    the field is secret (``writeOnly``: a passphrase, a .env value)."""
    path = tuple(error.absolute_path)
    kind = error.validator
    sub = _subschema(schema, path)
    hint = sub.get("description", "")
    if sub.get("writeOnly"):
        return [_explain_secret(doc, path, error)]
    if kind == "additionalProperties":
        allowed = sorted(error.schema.get("properties", {}))
        extra = [k for k in error.instance if k not in error.schema.get("properties", {})]
        out = []
        for key in extra:
            close = difflib.get_close_matches(key, allowed, n=1, cutoff=0.6)
            suggestion = f"did you mean '{close[0]}'?" if close else f"valid keys here: {', '.join(allowed)}"
            out.append(doc.problem(path + (key,), f"unknown key '{key}'; {suggestion}"))
        return out
    if kind == "required":
        missing = error.message.split("'")[1] if "'" in error.message else error.message
        return [doc.problem(path, f"missing required key '{missing}'")]
    if kind == "type":
        expected = error.validator_value
        names = " or ".join(_TYPE_NAMES.get(t, t) for t in (expected if isinstance(expected, list) else [expected]))
        msg = f"expected {names}, got {_describe(error.instance)}"
        if expected == "string" and isinstance(error.instance, int) and not isinstance(error.instance, bool):
            msg += " (put the value in quotes)"
        return [doc.problem(path, msg)]
    if kind == "enum":
        choices = [str(c) for c in error.validator_value]
        close = difflib.get_close_matches(str(error.instance), choices, n=1, cutoff=0.6)
        msg = f"expected one of {', '.join(choices)}; got {_describe(error.instance)}"
        if close:
            msg += f"; did you mean '{close[0]}'?"
        return [doc.problem(path, msg)]
    if kind in ("pattern", "anyOf", "const", "format", "propertyNames"):
        if kind == "propertyNames":
            return [doc.problem(path, f"{_describe(error.instance)} is not a valid variable name (letters, digits and _, not starting with a digit)")]
        title = sub.get("title", "value")
        return [doc.problem(path, f"{_describe(error.instance)} is not a valid {title.lower()}: {hint}")]
    if kind in ("minimum", "maximum"):
        return [doc.problem(path, f"{_describe(error.instance)} is out of range ({error.message.split(' is ', 1)[-1]})")]
    if kind in ("minLength", "maxLength", "minItems", "maxItems"):
        return [doc.problem(path, f"{_describe(error.instance)} is too {'short' if kind.startswith('min') else 'long'} ({kind} {error.validator_value})")]
    return [doc.problem(path, error.message)]


def _explain_secret(doc: Document, path: tuple, error) -> Problem:
    """What is wrong with a secret field's value, never the value itself."""
    kind, limit, value = error.validator, error.validator_value, error.instance
    if kind in ("minLength", "maxLength") and isinstance(value, str):
        return doc.problem(path, f"the value (not shown) has {len(value)} characters; "
                                 f"{'at least' if kind == 'minLength' else 'at most'} {limit} are needed")
    if kind == "type":
        expected = limit if isinstance(limit, list) else [limit]
        return doc.problem(path, f"expected {' or '.join(_TYPE_NAMES.get(t, t) for t in expected)} (the value is not shown)")
    return doc.problem(path, f"the value (not shown) is not valid here ({kind})")
