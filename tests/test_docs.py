"""The README's config reference is the schema's, and the schema documents
every key it defines."""

from __future__ import annotations

import json

from bakery.reference import BEGIN, END, markdown
from conftest import REPO


def test_readme_reference_matches_schema():
    readme = (REPO / "README.md").read_text()
    start, end = readme.index(BEGIN), readme.index(END) + len(END)
    assert readme[start:end] + "\n" == markdown(), "README config reference is stale: regenerate with python -m bakery.reference"


def _walk(node, path=""):
    yield path, node
    for key, sub in node.get("properties", {}).items():
        yield from _walk(sub, f"{path}.{key}" if path else key)


def test_every_schema_property_has_title_and_description():
    schema = json.loads((REPO / "schemas" / "bakery.schema.json").read_text())
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    for path, node in _walk(schema):
        assert node.get("title") and node.get("description"), f"{path or 'root'} lacks title/description"
        if node.get("type") == "object" and "properties" in node:
            assert node.get("additionalProperties") is False, f"{path}: unknown keys must be errors"
