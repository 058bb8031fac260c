"""The one-direction pipeline: load -> validate -> resolve -> build ->
assemble. Every command that needs user-data goes through render_config."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Optional

from .config import load_config
from .plan import Plan, resolve
from .secrets_store import SecretStore, default_secrets_path
from .targets import Target


@dataclass
class Rendered:
    plan: Plan
    cloud_config: dict


def render_config(config_path: Path, target: Target, *, memory_mib: Optional[int] = None,
                  secrets_path: Optional[Path] = None, environ: Optional[Mapping[str, str]] = None,
                  home: Optional[Path] = None, save_secrets: bool = True, stage: str = "full",
                  hostname: Optional[str] = None) -> Rendered:
    from .cloudconfig import assemble

    doc = load_config(config_path, environ)
    store = SecretStore(secrets_path or default_secrets_path(Path(config_path)))
    plan = resolve(doc, target, store, memory_mib=memory_mib, home=home, stage=stage, hostname=hostname)
    cloud_config = assemble(plan)
    if save_secrets:
        # Only after everything rendered: a failing render writes nothing.
        store.save()
    return Rendered(plan, cloud_config)
