"""The conditional-GET store: what each URL answered last time, kept in the SQL database.

For every URL fetched with a validator (``ETag`` or ``Last-Modified``) the table keeps
the validators and the body. The next request for that URL sends ``If-None-Match`` /
``If-Modified-Since``; a ``304 Not Modified`` then reuses the stored body, so an
unchanged upstream costs a few header bytes instead of the whole document.

SQLAlchemy Core with its own ``MetaData`` (the table is created by
:func:`create_http_cache_table`, independently of the alert tables); the same code runs
on SQLite and PostgreSQL. Every write is one transaction, an upsert keyed by URL.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from dataclasses import dataclass
from typing import Protocol

from sqlalchemy import (
    Column,
    DateTime,
    Engine,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    delete,
    func,
    select,
)
from sqlalchemy.dialects import postgresql, sqlite

metadata = MetaData()

http_cache = Table(
    "http_cache",
    metadata,
    Column("url", String(2048), primary_key=True),
    Column("etag", Text, nullable=True),
    Column("last_modified", Text, nullable=True),
    Column("body", LargeBinary, nullable=False),
    Column("content_sha256", String(64), nullable=False),
    Column("fetched_at", DateTime(timezone=True), nullable=False),
)


@dataclass(frozen=True)
class CachedResponse:
    """One stored answer: the validators to send next time and the body to reuse."""

    url: str
    etag: str | None
    last_modified: str | None
    body: bytes
    content_sha256: str
    fetched_at: dt.datetime


class HttpCache(Protocol):
    """What the HTTP client needs from a cache (``SqlHttpCache``, or a dict in tests)."""

    def get(self, url: str) -> CachedResponse | None: ...

    def put(
        self, url: str, *, etag: str | None, last_modified: str | None, body: bytes
    ) -> CachedResponse: ...


def create_http_cache_table(engine: Engine) -> None:
    """Create the ``http_cache`` table if it does not exist (idempotent)."""
    metadata.create_all(engine)


class SqlHttpCache:
    """The ``http_cache`` table behind a small get/put interface; safe across threads."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def get(self, url: str) -> CachedResponse | None:
        """The stored answer for ``url``, or None."""
        with self.engine.connect() as conn:
            row = conn.execute(select(http_cache).where(http_cache.c.url == url)).one_or_none()
        if row is None:
            return None
        return CachedResponse(
            url=row.url,
            etag=row.etag,
            last_modified=row.last_modified,
            body=bytes(row.body),
            content_sha256=row.content_sha256,
            fetched_at=row.fetched_at,
        )

    def put(
        self, url: str, *, etag: str | None, last_modified: str | None, body: bytes
    ) -> CachedResponse:
        """Store (insert or replace) the answer for ``url`` in one transaction."""
        entry = CachedResponse(
            url=url,
            etag=etag,
            last_modified=last_modified,
            body=body,
            content_sha256=hashlib.sha256(body).hexdigest(),
            fetched_at=dt.datetime.now(dt.UTC),
        )
        values = {
            "url": url,
            "etag": etag,
            "last_modified": last_modified,
            "body": body,
            "content_sha256": entry.content_sha256,
            "fetched_at": entry.fetched_at,
        }
        dialect = sqlite if self.engine.dialect.name == "sqlite" else postgresql
        insert = dialect.insert(http_cache).values(**values)
        upsert = insert.on_conflict_do_update(
            index_elements=[http_cache.c.url],
            set_={name: insert.excluded[name] for name in values if name != "url"},
        )
        with self.engine.begin() as conn:
            conn.execute(upsert)
        return entry

    def delete(self, url: str) -> None:
        """Forget ``url`` (its next request is unconditional)."""
        with self.engine.begin() as conn:
            conn.execute(delete(http_cache).where(http_cache.c.url == url))

    def __len__(self) -> int:
        with self.engine.connect() as conn:
            return int(conn.execute(select(func.count()).select_from(http_cache)).scalar_one())
