"""The parse of the shipped ``models.yaml``, cached the way Python caches bytecode.

ruamel.yaml parses in pure Python (~40 ms for the catalog, plus ~25 ms to import it),
which every command would pay at start-up. The parsed data (plain JSON types: strings,
integers, booleans, null) is kept as JSON beside the package's bytecode
(``__pycache__/models.yaml.<digest>.json``, or under ``sys.pycache_prefix``), named by
a digest of the YAML text: an edited catalog is parsed again, never read stale. It is
written only where and when Python writes bytecode (not under
``PYTHONDONTWRITEBYTECODE``), and only when JSON holds the data exactly; the YAML file
stays the one copy of the catalog.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import sys
from importlib.abc import Traversable
from importlib.util import cache_from_source
from pathlib import Path
from typing import Any

#: Bumped when what is cached changes meaning.
FORMAT = "1"


def cache_path(source: Path, text: str) -> Path:
    """Where the parse of ``text`` (the content of ``source``) is cached."""
    digest = hashlib.sha256(f"{FORMAT}\n{text}".encode()).hexdigest()[:20]
    return Path(cache_from_source(str(source))).with_name(f"{source.name}.{digest}.json")


def load_yaml_cached(source: Traversable) -> Any:
    """The data of the YAML file ``source``, from its cache when it has one."""
    text = source.read_text("utf-8")
    path = cache_path(source, text) if isinstance(source, Path) else None
    if path is not None:
        try:
            return json.loads(path.read_text("utf-8"))
        except (OSError, ValueError):
            pass  # none yet (or unreadable): parse
    from ruamel.yaml import YAML

    data = YAML(typ="safe").load(text)
    if path is not None and not sys.dont_write_bytecode:
        _write(path, data)
    return data


def _write(path: Path, data: Any) -> None:
    """Cache ``data`` at ``path`` if JSON holds it exactly (best effort, atomic)."""
    try:
        text = json.dumps(data, ensure_ascii=False)
    except (TypeError, ValueError):
        return  # dates, say: not plain JSON
    if json.loads(text) != data:
        return
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp.write_text(text, encoding="utf-8")
        tmp.replace(path)
    except OSError:
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)
