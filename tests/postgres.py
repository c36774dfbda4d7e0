"""A real PostgreSQL server for the tests: ``LLMFLOW_TEST_PG_URL``, or one ``pgserver``
starts (a throwaway server from its wheel, run as the current user). Never a mock,
never skipped: without either, the tests that need it fail saying why.

Each test gets its own schema on that server (``search_path`` set in the URL), so
tests cannot see each other's runs.
"""

from __future__ import annotations

import os
import secrets
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from urllib.parse import quote

_server: object | None = None
_url: str | None = None


def server_url() -> str:
    """The URL of the tests' PostgreSQL server (started once per process)."""
    global _server, _url
    if _url is not None:
        return _url
    given = os.environ.get("LLMFLOW_TEST_PG_URL")
    if given:
        _url = given
        return _url
    os.environ.setdefault("XDG_RUNTIME_DIR", tempfile.gettempdir())  # pgserver asks for it
    import pgserver  # type: ignore[import-untyped]

    _server = pgserver.get_server(tempfile.mkdtemp(prefix="llmflow-pg-"), cleanup_mode="stop")
    _url = str(_server.get_uri())  # type: ignore[attr-defined]
    return _url


def with_schema(url: str, schema: str) -> str:
    """``url`` whose sessions use ``schema`` first."""
    option = quote(f"-csearch_path={schema}")
    return f"{url}{'&' if '?' in url else '?'}options={option}"


@contextmanager
def fresh_schema() -> Iterator[str]:
    """A URL whose sessions see an empty schema of their own, dropped afterwards."""
    import psycopg

    base = server_url()
    schema = f"t_{secrets.token_hex(6)}"
    with psycopg.connect(base, autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {schema}")
    try:
        yield with_schema(base, schema)
    finally:
        with psycopg.connect(base, autocommit=True) as conn:
            conn.execute(f"DROP SCHEMA {schema} CASCADE")
