"""Loading bakery.yaml: YAML with positions, then the JSON Schema contract.
Raises ConfigError listing every problem with file, line and key path."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Mapping, Optional

from .errors import ConfigError
from .loader import Document, load_document
from .schema import check_schema


def load_config(path: os.PathLike | str, environ: Optional[Mapping[str, str]] = None) -> Document:
    doc = load_document(Path(path), environ)
    if not isinstance(doc.data, dict):
        raise ConfigError([doc.problem((), "the config must be a mapping of sections (admin:, host:, app:, ...)")])
    problems = check_schema(doc)
    if problems:
        raise ConfigError(problems)
    return doc
