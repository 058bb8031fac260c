"""Every single-line field of the schema (one with an anchored pattern)
refuses a value with a line break at its end, which a YAML block scalar
(``key: |``) adds: Python's ``$`` matches before a final line break, so
jsonschema's own ``pattern`` would let it through to the server.

The fields are found by walking the schema, so a field added later is
covered too; each gets a value drawn from its own pattern."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bakery.loader import Document
from bakery.schema import whole_text_regex, check_schema, load_schema


def pattern_fields(node: dict, path: tuple = ()):
    """(key path, pattern) of every string leaf with an anchored pattern;
    list items are at index 0."""
    if "pattern" in node and node["pattern"].endswith("$"):
        yield path, node["pattern"]
    for branch in node.get("anyOf", []) + node.get("oneOf", []):
        yield from pattern_fields(branch, path)
    for key, child in node.get("properties", {}).items():
        yield from pattern_fields(child, (*path, key))
    if isinstance(node.get("items"), dict):
        yield from pattern_fields(node["items"], (*path, 0))


FIELDS = sorted(dict(pattern_fields(load_schema())).items())


def nested(path: tuple, value):
    """A document holding ``value`` at ``path`` and nothing else."""
    for part in reversed(path):
        value = [value] if part == 0 else {part: value}
    return value


def problems_at(path: tuple, value) -> list:
    doc = Document("bakery.yaml", nested(path, value), {}, Path("."))
    return [p for p in check_schema(doc) if p.path == path]


def test_the_schema_has_single_line_fields_to_check():
    assert len(FIELDS) >= 25, FIELDS


@pytest.mark.parametrize("path, pattern", FIELDS, ids=[".".join(map(str, path)) for path, _ in FIELDS])
@settings(max_examples=10, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
@given(data=st.data())
def test_a_trailing_line_break_is_refused(path, pattern, data):
    value = data.draw(st.from_regex(whole_text_regex(pattern).pattern, fullmatch=True).filter(lambda v: "\n" not in v))
    assert problems_at(path, value) == []
    refused = problems_at(path, value + "\n")
    assert refused, f"{'.'.join(map(str, path))} accepted {value + chr(10)!r}"
