"""Shared by the app-stack tests: a plan built through the real pipeline
from a small config, and the real-tool guard."""

from __future__ import annotations

from pathlib import Path

import yaml

from bakery.pipeline import render_config
from bakery.targets import get_target

from conftest import require_tool  # noqa: F401  (re-exported for the stack tests)


def public_key() -> str:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ed25519

    key = ed25519.Ed25519PrivateKey.from_private_bytes(bytes(32)).public_key()
    return key.public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH).decode() + " test@bakery"


MICROBLOG_APP = {
    "name": "microblog",
    "repo": "https://github.com/miguelgrinberg/microblog",
    "ref": "v0.17",
    "module": "microblog:app",
    "pip_packages": ["gunicorn", "pymysql", "cryptography"],
    "environment": {"FLASK_APP": "microblog.py"},
    "setup": ["flask translate compile"],
    "migrate": ["flask db upgrade"],
    "static": "app/static",
}


def make_plan(tmp_path: Path, target: str = "generic", memory_mib=None, **sections):
    """The plan for a config made of ``sections`` (app defaults to Microblog)."""
    config = {"admin": {"name": "ubuntu", "ssh_keys": [public_key()]}, "host": {"hostname": "web"}}
    config["app"] = sections.pop("app", MICROBLOG_APP)
    config.update(sections)
    folder = Path(tmp_path) / "config"
    folder.mkdir(exist_ok=True)
    path = folder / "bakery.yaml"
    path.write_text(yaml.safe_dump(config))
    rendered = render_config(path, get_target(target), memory_mib=memory_mib, environ={}, home=folder)
    return rendered.plan
