"""``--store DIR|URL`` (alias ``--state-dir``, default ``LLMFLOW_STORE`` or ``.llmflow``).

A directory is the embedded SQLite store; a ``postgresql://`` URL a store that every
process on every machine using the URL shares (one budget, several workers per run).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer

from llmflow.errors import RunStoreError

if TYPE_CHECKING:
    from llmflow.tracker import RunStore

DEFAULT_STORE = ".llmflow"
STORE_HELP = (
    "Run store: a directory (SQLite, the default; --state-dir is an alias) or a"
    " postgresql:// URL shared by every process and machine that uses it."
    " Default: $LLMFLOW_STORE, else .llmflow."
)


def store_option(help_text: str = STORE_HELP) -> Any:
    """The ``--store`` option, the same on every command that reads or writes runs."""
    return typer.Option(
        DEFAULT_STORE,
        "--store",
        "--state-dir",
        envvar="LLMFLOW_STORE",
        metavar="DIR|URL",
        help=help_text,
    )


def is_url(store: str) -> bool:
    return store.startswith(("postgresql://", "postgres://"))


def shown(store: str) -> str:
    """The store as messages may print it (a URL without its password)."""
    from llmflow.tracker.db import redact

    return redact(store) if is_url(store) else store


def without_password(store: str) -> str:
    """A store URL as a printed command may carry it: without its password, which
    libpq then takes from ``PGPASSWORD`` or ``~/.pgpass`` (directories are unchanged)."""
    if not is_url(store):
        return store
    from urllib.parse import urlsplit, urlunsplit

    parts = urlsplit(store)
    if parts.password is None:
        return store
    host = parts.hostname or ""
    if parts.port is not None:
        host += f":{parts.port}"
    netloc = f"{parts.username}@{host}" if parts.username else host
    return urlunsplit(parts._replace(netloc=netloc))


def store_exists(store: str) -> bool:
    """Whether there is a store to read (a URL always; a directory once it has one)."""
    from llmflow.tracker.store import DB_NAME

    return is_url(store) or (Path(store) / DB_NAME).is_file()


def open_store(store: str, *, existing: bool = False) -> RunStore:
    """Open the run store; with ``existing``, a directory without a store is an error
    (exit 2) instead of a new empty store (reports and listings only read)."""
    from llmflow.tracker.store import DB_NAME, RunStore

    if existing and not is_url(store) and not (Path(store) / DB_NAME).is_file():
        raise RunStoreError(
            f"no run store in {store} (no {DB_NAME}); point --store at the directory or"
            " postgresql:// URL `llmflow run` used; `llmflow runs --store STORE` lists its runs"
        )
    return RunStore.open(store)
