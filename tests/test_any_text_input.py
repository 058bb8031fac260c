"""Property tests: whatever string a user puts in a field, bakery either
refuses it with a located error or carries it into the rendered user-data
exactly as given (never broken YAML, never a changed value)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bakery.cloudconfig import assemble, to_yaml
from bakery.errors import ConfigError
from bakery.loader import parse_document
from bakery.plan import resolve
from bakery.schema import check_schema
from bakery.secrets_store import SecretStore
from bakery.targets import TARGETS
from conftest import first_boot_packages, make_public_key

PUBLIC_KEY, _ = make_public_key()

# Field -> how to find the value again in the parsed cloud-config.
FIELDS = {
    ("admin", "name"): lambda doc: doc["users"][0]["name"],
    ("host", "hostname"): lambda doc: doc["hostname"],
    ("host", "timezone"): lambda doc: doc["timezone"],
    # The whole list: a package bakery installs anyway is listed once.
    ("packages",): first_boot_packages,
    ("admin", "ssh_import_id"): lambda doc: doc["users"][0]["ssh_import_id"][0],
    ("admin", "shell"): lambda doc: doc["users"][0]["shell"],
}

texts = st.text(st.characters(blacklist_categories=("Cs",)), min_size=1, max_size=40) | st.sampled_from(
    ["web1", "ubuntu", "Europe/Berlin", "gh:alice", "htop", "/bin/zsh", "a: b", "- x", "'q'", '"dq"', "#c", "${X}",
     "multi\nline", "ok\x00nul", "yes", "0644", "!!python/object:os.system", "&anchor", "*alias", "% percent"])


def build(data: dict, tmp_path: Path):
    text = json.dumps(data)  # JSON is YAML: the value arrives exactly as generated
    doc = parse_document(text, "bakery.yaml", tmp_path, {})
    problems = check_schema(doc)
    if problems:
        raise ConfigError(problems)
    plan = resolve(doc, TARGETS["generic"], SecretStore(tmp_path / "s.yaml"))
    return to_yaml(assemble(plan))


@pytest.mark.parametrize("field", list(FIELDS), ids=lambda f: ".".join(f))
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(value=texts)
def test_value_is_refused_or_carried_exactly(field, value, tmp_path):
    data = {"admin": {"ssh_keys": [PUBLIC_KEY]}}
    node = data
    for part in field[:-1]:
        node = node.setdefault(part, {})
    node[field[-1]] = [value] if field[-1] in ("packages", "ssh_import_id") else value
    try:
        text = build(data, tmp_path)
    except ConfigError as exc:
        # Refused: every problem is located and names the field.
        assert exc.problems
        for problem in exc.problems:
            assert problem.line >= 1 and problem.file == "bakery.yaml"
            assert tuple(problem.path[: len(field)]) == field or problem.path == field[:1]
        return
    parsed = yaml.safe_load(text)
    assert text.startswith("#cloud-config\n")
    found = FIELDS[field](parsed)
    if field == ("packages",):
        assert value in found, found
    else:
        assert found == value
