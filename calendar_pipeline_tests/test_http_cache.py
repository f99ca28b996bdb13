"""The conditional-GET store on SQLite and on a real PostgreSQL, alone and under the client."""

from __future__ import annotations

import hashlib

from sqlalchemy import inspect

from calendar_pipeline.sources.http import HttpClient, HttpConfig, HttpResponse
from calendar_pipeline.sources.http_cache import SqlHttpCache, create_http_cache_table
from calendar_pipeline_tests import upstream_server
from calendar_pipeline_tests.upstream_server import Reply

upstream = upstream_server.upstream  # fixture


def test_table_is_created_idempotently_with_its_columns(engine):
    create_http_cache_table(engine)
    create_http_cache_table(engine)
    columns = {c["name"] for c in inspect(engine).get_columns("http_cache")}
    assert columns == {"url", "etag", "last_modified", "body", "content_sha256", "fetched_at"}


def test_put_get_replace_and_delete(engine):
    create_http_cache_table(engine)
    cache = SqlHttpCache(engine)
    url = "https://date.nager.at/api/v3/PublicHolidays/2025/DE"
    assert cache.get(url) is None
    body = bytes(range(256)) * 4096  # 1 MiB, every byte value (not text)
    stored = cache.put(url, etag='"v1"', last_modified=None, body=body)
    got = cache.get(url)
    assert got is not None and got.body == body and got.etag == '"v1"'
    assert got.content_sha256 == hashlib.sha256(body).hexdigest() == stored.content_sha256
    assert got.fetched_at.tzinfo is not None or engine.dialect.name == "sqlite"
    cache.put(url, etag=None, last_modified="Wed, 26 Feb 2025 10:00:00 GMT", body=b"[]")
    again = cache.get(url)
    assert (again.etag, again.last_modified, again.body) == (
        None,
        "Wed, 26 Feb 2025 10:00:00 GMT",
        b"[]",
    )
    assert len(cache) == 1
    cache.delete(url)
    assert cache.get(url) is None and len(cache) == 0


def test_conditional_get_through_the_sql_cache(engine, upstream):
    create_http_cache_table(engine)
    upstream.route("/holidays", Reply.json([{"date": "2025-12-25"}]))
    url = f"{upstream.url}/holidays"
    client = HttpClient(HttpConfig(rate_limit=100.0), SqlHttpCache(engine))
    first_value, first = client.run(lambda s: s.fetch(url, HttpResponse.json))
    # a second client (a later run) with the same database
    later = HttpClient(HttpConfig(rate_limit=100.0), SqlHttpCache(engine))
    second_value, second = later.run(lambda s: s.fetch(url, HttpResponse.json))
    assert first_value == second_value == [{"date": "2025-12-25"}]
    assert (first.status, second.status, second.from_cache) == (200, 304, True)
    assert later.stats.not_modified == 1
    assert SqlHttpCache(engine).get(url).etag == first.etag
