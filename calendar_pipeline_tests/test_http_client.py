"""The shared polite client against real local servers: politeness measured at the
server, retries, timeouts, size cap, decoding, conditional GET, proxies, redaction."""

from __future__ import annotations

import asyncio
import datetime as dt
import gzip
import logging
import socket
import threading
import time

import pytest

from calendar_pipeline import __version__
from calendar_pipeline.defs.resources import UpstreamSources
from calendar_pipeline.settings import SettingError
from calendar_pipeline.sources.http import (
    USER_AGENT,
    HttpClient,
    HttpConfig,
    HttpFetchError,
    HttpResponse,
    HttpStatusError,
    HttpTimeout,
    HttpTransportError,
    InvalidResponse,
    ResponseTooLarge,
    load_proxy_file,
    parse_retry_after,
    redact,
)
from calendar_pipeline_tests import upstream_server
from calendar_pipeline_tests.upstream_server import FakeProxy, Fault, MemoryCache, Reply

upstream = upstream_server.upstream  # fixtures used here
upstream_factory = upstream_server.upstream_factory

BODY = b'{"ok": true}'


def fast(**overrides) -> HttpConfig:
    """A config for tests: no politeness delay unless asked, tiny backoffs."""
    values = {
        "rate_limit": 1000.0,
        "max_attempts": 3,
        "timeout": 2.0,
        "backoff_base": 0.01,
        "backoff_max": 0.05,
    }
    return HttpConfig(**{**values, **overrides})


def get(client: HttpClient, url: str, **kwargs) -> HttpResponse:
    return client.run(lambda session: session.get(url, **kwargs))


def get_many(client: HttpClient, urls: list[str]) -> list[HttpResponse]:
    async def work(session):
        return await asyncio.gather(*(session.get(url) for url in urls))

    return client.run(work)


def max_in_any_second(times: list[float]) -> int:
    times = sorted(times)
    return max(sum(1 for t in times if start <= t < start + 1.0) for start in times)


# --- politeness ---------------------------------------------------------------------------


def test_rate_limit_is_measured_at_the_server(upstream):
    upstream.route("/r", Reply(body=BODY))
    client = HttpClient(fast(rate_limit=20.0, max_concurrency=8))
    get_many(client, [f"{upstream.url}/r"] * 30)
    arrivals = [r.arrived_at for r in upstream.requests]
    assert len(arrivals) == 30
    # evenly spaced: 29 gaps of 1/20 s, never a burst
    assert arrivals[-1] - arrivals[0] >= 29 / 20 * 0.95
    assert max_in_any_second(arrivals) <= 21
    gaps = [b - a for a, b in zip(sorted(arrivals), sorted(arrivals)[1:], strict=False)]
    assert min(gaps) > 0.5 / 20


def test_hosts_do_not_wait_for_each_other(upstream_factory):
    first, second = upstream_factory(), upstream_factory()
    for server in (first, second):
        server.route("/r", Reply(body=BODY))
    client = HttpClient(fast(rate_limit=10.0))
    started = time.monotonic()
    get_many(client, [f"{first.url}/r"] * 10 + [f"{second.url}/r"] * 10)
    elapsed = time.monotonic() - started
    assert elapsed < 1.6  # one host alone needs 0.9 s; two in sequence would need 1.9 s
    for server in (first, second):
        arrivals = sorted(r.arrived_at for r in server.requests)
        assert arrivals[-1] - arrivals[0] >= 9 / 10 * 0.95


def test_requests_in_flight_are_bounded(upstream_factory):
    server = upstream_factory(latency=0.15)
    server.route("/r", Reply(body=BODY))
    client = HttpClient(fast(max_concurrency=3))
    get_many(client, [f"{server.url}/r"] * 12)
    assert server.max_in_flight == 3


def test_user_agent_names_the_project_and_version(upstream):
    upstream.route("/r", Reply(body=BODY))
    get(HttpClient(fast()), f"{upstream.url}/r")
    user_agent = upstream.requests[0].header("User-Agent")
    assert user_agent == USER_AGENT
    assert user_agent.startswith(f"calendar_pipeline/{__version__} (")


# --- retries ------------------------------------------------------------------------------


def test_5xx_are_retried_until_the_data_comes(upstream):
    upstream.route("/r", Reply(body=BODY))
    for status in (503, 502, 500):
        upstream.fail_next(Fault.status_code(status))
    client = HttpClient(fast(max_attempts=4))
    response = get(client, f"{upstream.url}/r")
    assert response.json() == {"ok": True}
    assert [r.status for r in upstream.requests] == [503, 502, 500, 200]
    assert client.stats.retried == 3 and client.stats.requests == 4


def test_attempts_are_bounded_and_the_error_names_url_and_cause(upstream):
    upstream.route("/r", Reply(body=BODY))
    upstream.fail_next(Fault.status_code(503), times=10)
    with pytest.raises(HttpStatusError) as info:
        get(HttpClient(fast(max_attempts=3)), f"{upstream.url}/r")
    assert len(upstream.requests) == 3
    message = str(info.value)
    assert f"{upstream.url}/r" in message
    assert "HTTP 503" in message and "after 3 attempts" in message
    assert "Upstream trouble" in message  # the error page's words help the reader


def test_429_waits_at_least_retry_after(upstream):
    upstream.route("/r", Reply(body=BODY))
    upstream.fail_next(Fault.status_code(429, retry_after="1"))
    get(HttpClient(fast()), f"{upstream.url}/r")
    first, second = upstream.requests
    assert (first.status, second.status) == (429, 200)
    assert second.arrived_at - first.arrived_at >= 0.95


def test_a_retry_after_longer_than_we_wait_is_not_retried(upstream):
    upstream.route("/r", Reply(body=BODY))
    upstream.fail_next(Fault.status_code(503, retry_after="3600"))
    with pytest.raises(HttpStatusError, match=r"retry after 3600 s, longer than the 120 s"):
        get(HttpClient(fast()), f"{upstream.url}/r")
    assert len(upstream.requests) == 1


def test_parse_retry_after_accepts_seconds_and_http_dates():
    now = dt.datetime(2025, 3, 1, 12, 0, 0, tzinfo=dt.UTC)
    assert parse_retry_after("7", now) == 7.0
    assert parse_retry_after("Sat, 01 Mar 2025 12:00:30 GMT", now) == 30.0
    assert parse_retry_after("Sat, 01 Mar 2025 11:00:00 GMT", now) == 0.0
    assert parse_retry_after("soon", now) is None
    assert parse_retry_after(None, now) is None


@pytest.mark.parametrize("status", [400, 401, 403, 404, 410])
def test_other_4xx_are_final(upstream, status):
    upstream.fail_next(Fault.status_code(status))
    with pytest.raises(HttpStatusError) as info:
        get(HttpClient(fast()), f"{upstream.url}/r")
    assert len(upstream.requests) == 1
    assert info.value.status == status and f"HTTP {status}" in str(info.value)


def test_408_is_retried(upstream):
    upstream.route("/r", Reply(body=BODY))
    upstream.fail_next(Fault.status_code(408))
    assert get(HttpClient(fast()), f"{upstream.url}/r").status == 200
    assert [r.status for r in upstream.requests] == [408, 200]


def test_a_connection_reset_mid_body_is_retried(upstream):
    upstream.route("/r", Reply(body=b'{"items": "' + b"x" * 5000 + b'"}'))
    upstream.fail_next(Fault.reset_mid_body())
    upstream.fail_next(Fault.close())
    client = HttpClient(fast())
    assert len(get(client, f"{upstream.url}/r").body) == 5013
    assert [r.fault for r in upstream.requests] == ["reset", "close", None]


def test_resets_every_time_end_as_a_transport_error(upstream):
    upstream.route("/r", Reply(body=b"x" * 5000))
    upstream.fail_next(Fault.reset_mid_body(), times=3)
    with pytest.raises(HttpTransportError) as info:
        get(HttpClient(fast()), f"{upstream.url}/r")
    assert f"{upstream.url}/r" in str(info.value) and "after 3 attempts" in str(info.value)


def test_connection_refused_is_a_clear_error():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with pytest.raises(HttpTransportError, match=r"ConnectError") as info:
        get(HttpClient(fast(max_attempts=2)), f"http://127.0.0.1:{port}/r")
    assert f"127.0.0.1:{port}/r" in str(info.value)


# --- timeouts -----------------------------------------------------------------------------


def test_a_slow_answer_times_out_and_the_retry_recovers(upstream):
    upstream.route("/r", Reply(body=BODY))
    upstream.fail_next(Fault.delay(1.0))
    client = HttpClient(fast(timeout=0.3))
    started = time.monotonic()
    assert get(client, f"{upstream.url}/r").status == 200
    assert time.monotonic() - started < 0.9
    assert client.stats.retried == 1


def test_a_slow_drip_is_cut_by_the_total_deadline(upstream):
    """Each byte arrives well within the read timeout; the whole answer never does."""
    upstream.route("/r", Reply(body=b"x" * 200))
    upstream.fail_next(Fault.drip(0.02), times=2)
    started = time.monotonic()
    with pytest.raises(HttpTimeout, match=r"no complete answer within 0.4 s") as info:
        get(HttpClient(fast(timeout=0.4, max_attempts=2)), f"{upstream.url}/r")
    assert time.monotonic() - started < 1.5  # two attempts of 0.4 s, not 2 x 4 s of drip
    assert "after 2 attempts" in str(info.value)


# --- size cap and bodies ------------------------------------------------------------------


def test_a_declared_oversized_body_is_refused_without_retry(upstream):
    upstream.route("/big", Reply(body=b"x" * 200_000))
    with pytest.raises(ResponseTooLarge, match=r"200,000 bytes is larger than the 50,000-byte"):
        get(HttpClient(fast(max_response_bytes=50_000)), f"{upstream.url}/big")
    assert len(upstream.requests) == 1


def test_the_cap_is_enforced_while_streaming_a_compressed_bomb(upstream):
    """20 MB of zeros gzip to ~20 KB: the declared length is small, the decoded body is
    not. The download must stop at the cap instead of inflating everything."""
    bomb = gzip.compress(b"0" * 20_000_000, compresslevel=9)
    upstream.route("/bomb", Reply(body=bomb, headers={"Content-Encoding": "gzip"}))
    with pytest.raises(ResponseTooLarge, match=r"passed the 1,048,576-byte cap"):
        get(HttpClient(fast(max_response_bytes=1_048_576)), f"{upstream.url}/bomb")


def test_bodies_are_decoded_strictly(upstream):
    latin = "Réunion d'équipe".encode("latin-1")
    upstream.route("/bad", Reply(body=latin, content_type="text/plain"))
    upstream.route("/declared", Reply(body=latin, content_type="text/plain; charset=latin-1"))
    upstream.route("/bom", Reply(body="\ufeffhé".encode(), content_type="text/plain"))
    client = HttpClient(fast())
    with pytest.raises(InvalidResponse, match=r"/bad: body is not valid utf-8 text"):
        get(client, f"{upstream.url}/bad").text()
    assert get(client, f"{upstream.url}/declared").text() == "Réunion d'équipe"
    assert get(client, f"{upstream.url}/bom").text() == "hé"


def test_json_errors_say_what_came_instead(upstream):
    page = b"<html><head><title>Service temporarily unavailable</title></head></html>"
    upstream.route("/html", Reply(body=page, content_type="text/html"))
    upstream.route("/broken", Reply(body=b'{"a": [1, 2,'))
    client = HttpClient(fast())
    with pytest.raises(InvalidResponse, match=r"got an HTML page .*Service temporarily"):
        get(client, f"{upstream.url}/html").json()
    with pytest.raises(InvalidResponse, match=r"/broken: body is not valid JSON \(Expecting"):
        get(client, f"{upstream.url}/broken").json()


# --- conditional GET ----------------------------------------------------------------------


def test_etag_conditional_get_reuses_the_stored_body(upstream):
    upstream.route("/r", Reply(body=BODY))
    client = HttpClient(fast(), MemoryCache())
    url = f"{upstream.url}/r"
    first = client.run(lambda s: s.fetch(url, HttpResponse.json))[1]
    second_value, second = client.run(lambda s: s.fetch(url, HttpResponse.json))
    assert (first.status, first.from_cache) == (200, False)
    assert (second.status, second.from_cache, second_value) == (304, True, {"ok": True})
    assert upstream.requests[1].header("If-None-Match") == first.etag
    assert upstream.requests[1].bytes_sent < 200 < upstream.requests[0].bytes_sent
    assert client.stats.not_modified == 1


def test_last_modified_conditional_get(upstream):
    stamp = "Wed, 26 Feb 2025 10:00:00 GMT"
    upstream.route("/r", Reply(body=BODY, etag=False, last_modified=stamp))
    client = HttpClient(fast(), MemoryCache())
    url = f"{upstream.url}/r"
    client.run(lambda s: s.fetch(url, HttpResponse.json))
    _, again = client.run(lambda s: s.fetch(url, HttpResponse.json))
    assert upstream.requests[1].header("If-Modified-Since") == stamp
    assert again.status == 304 and again.body == BODY


def test_a_body_the_adapter_rejects_is_not_cached(upstream):
    upstream.route("/r", Reply(body=b"<html><title>Maintenance</title></html>"))
    cache = MemoryCache()
    client = HttpClient(fast(), cache)
    url = f"{upstream.url}/r"
    with pytest.raises(InvalidResponse, match="Maintenance"):
        client.run(lambda s: s.fetch(url, HttpResponse.json))
    assert cache.entries == {}
    with pytest.raises(InvalidResponse):
        client.run(lambda s: s.fetch(url, HttpResponse.json))
    assert upstream.requests[1].header("If-None-Match") is None


# --- proxies and secrets ------------------------------------------------------------------


def test_proxies_rotate_and_credentials_never_show(upstream, tmp_path, caplog):
    upstream.route("/r", Reply(body=BODY))
    with (
        FakeProxy("alice", "s3cr3t-pa55") as good,
        FakeProxy("bob", "an0ther-pa55") as other,
        FakeProxy("carol", "expected-pa55") as strict,
    ):
        proxy_file = tmp_path / "proxies.txt"
        proxy_file.write_text(
            f"# office proxies\n\n{good.url}\n   {other.url}  # second\n",
            encoding="utf-8",
        )
        client = HttpClient(fast(proxy_file=proxy_file))
        get_many(client, [f"{upstream.url}/r"] * 6)
        assert len(good.forwarded) == 3 and len(other.forwarded) == 3

        wrong = tmp_path / "wrong.txt"
        wrong.write_text(f"http://carol:WRONG-pa55@{strict.address}\n", encoding="utf-8")
        caplog.set_level(logging.DEBUG)
        with pytest.raises(HttpStatusError, match="HTTP 407") as info:
            get(HttpClient(fast(proxy_file=wrong)), f"{upstream.url}/r")
    assert strict.rejected == 1
    for secret in ("s3cr3t-pa55", "an0ther-pa55", "WRONG-pa55"):
        assert secret not in str(info.value)
        assert secret not in caplog.text


def test_a_dead_proxy_is_routed_around_and_never_named_with_its_password(upstream, tmp_path):
    upstream.route("/r", Reply(body=BODY))
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        dead_port = sock.getsockname()[1]
    with FakeProxy() as alive:
        proxy_file = tmp_path / "proxies.txt"
        proxy_file.write_text(
            f"http://dave:d34d-pa55@127.0.0.1:{dead_port}\n{alive.url}\n", encoding="utf-8"
        )
        client = HttpClient(fast(proxy_file=proxy_file))
        assert get(client, f"{upstream.url}/r").status == 200  # 1st via dead, retry via alive
        assert len(alive.forwarded) == 1
        only_dead = tmp_path / "dead.txt"
        only_dead.write_text(f"http://dave:d34d-pa55@127.0.0.1:{dead_port}\n", encoding="utf-8")
        with pytest.raises(HttpTransportError) as info:
            get(HttpClient(fast(proxy_file=only_dead)), f"{upstream.url}/r")
    assert "d34d-pa55" not in str(info.value)


def test_redact_hides_userinfo_tokens_and_given_secrets():
    text = (
        "via http://user:p%40ss@proxy:3128 to https://example.com/cal.ics?token=abc123&x=1 "
        "and https://calendar.google.com/calendar/ical/a%40b/private-9f8e7d/basic.ics key KEY42"
    )
    clean = redact(text, {"KEY42"})
    for secret in ("p%40ss", "user:", "abc123", "9f8e7d", "KEY42"):
        assert secret not in clean
    assert "x=1" in clean and "proxy:3128" in clean


def test_proxy_file_errors_name_the_line_not_the_credentials(tmp_path):
    path = tmp_path / "p.txt"
    path.write_text("# none\n\n", encoding="utf-8")
    with pytest.raises(ValueError, match="lists no proxy"):
        load_proxy_file(path)
    path.write_text("http://ok:1\nftp://eve:t0p-s3cret@host:21\n", encoding="utf-8")
    with pytest.raises(ValueError, match="line 2") as info:
        load_proxy_file(path)
    assert "t0p-s3cret" not in str(info.value)


# --- configuration ------------------------------------------------------------------------


def test_config_from_the_settings_defaults_and_values(tmp_path, monkeypatch):
    from calendar_pipeline.defs.resources import resource_from_env

    assert UpstreamSources().http_config() == HttpConfig()
    proxies = tmp_path / "proxies"
    proxies.write_text("http://127.0.0.1:3128\n", encoding="utf-8")
    for name, value in {
        "CALENDAR_RATE_LIMIT": "0.5",
        "CALENDAR_MAX_CONCURRENCY": "8",
        "CALENDAR_HTTP_MAX_ATTEMPTS": "2",
        "CALENDAR_HTTP_TIMEOUT": "7.5",
        "CALENDAR_MAX_RESPONSE_BYTES": "1000",
        "CALENDAR_PROXY_FILE": str(proxies),
    }.items():
        monkeypatch.setenv(name, value)
    config = resource_from_env("upstream").http_config()
    assert (config.rate_limit, config.max_concurrency, config.max_attempts) == (0.5, 8, 2)
    assert (config.timeout, config.max_response_bytes, config.proxy_file) == (7.5, 1000, proxies)


def test_http_and_slack_share_one_retry_policy():
    """HttpConfig's four retry fields are a RetryPolicy, the same as Slack's by default,
    and are checked by it."""
    from calendar_pipeline.alerts.slack_client import SlackPoster
    from calendar_pipeline.retry_policy import RetryPolicy

    config = HttpConfig(max_attempts=2, backoff_base=0.25, backoff_max=4, max_retry_after=9)
    assert config.retry_policy == RetryPolicy(2, 0.25, 4, 9)
    assert HttpConfig().retry_policy == SlackPoster("xoxb-x").retry_policy == RetryPolicy()
    with pytest.raises(ValueError, match=r"HttpConfig\.max_retry_after must be positive"):
        HttpConfig(max_retry_after=0)
    policy = RetryPolicy(backoff_base=1, backoff_max=3)
    waits = [policy.backoff(retry) for retry in (0, 1, 5) for _ in range(200)]
    assert all(0 <= w <= 1 for w in waits[:200]) and max(waits[:200]) > 0.5
    assert all(0 <= w <= 3 for w in waits[200:]) and max(waits[400:]) > 2  # capped


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("CALENDAR_RATE_LIMIT", "fast"),
        ("CALENDAR_RATE_LIMIT", "0"),
        ("CALENDAR_RATE_LIMIT", "nan"),
        ("CALENDAR_MAX_CONCURRENCY", "-1"),
        ("CALENDAR_HTTP_MAX_ATTEMPTS", "0"),
        ("CALENDAR_HTTP_TIMEOUT", "-3"),
        ("CALENDAR_MAX_RESPONSE_BYTES", "10MB"),
        ("CALENDAR_PROXY_FILE", "/nonexistent/proxies.txt"),
    ],
)
def test_config_errors_name_variable_and_value(name, value, monkeypatch):
    from calendar_pipeline.defs.resources import resource_from_env

    monkeypatch.setenv(name, value)
    with pytest.raises(SettingError) as info:
        resource_from_env("upstream").validate()
    assert name in str(info.value) and value in str(info.value)


# --- running from synchronous code --------------------------------------------------------


def test_runs_from_a_thread_and_from_inside_a_running_loop(upstream):
    upstream.route("/r", Reply(body=BODY))
    client = HttpClient(fast())
    url = f"{upstream.url}/r"
    results: list[int] = []
    thread = threading.Thread(target=lambda: results.append(get(client, url).status))
    thread.start()
    thread.join(10)

    async def inside_a_loop() -> int:
        return get(client, url).status  # a sync call from async code (a notebook, say)

    results.append(asyncio.run(inside_a_loop()))
    assert results == [200, 200]


def test_only_http_urls_are_fetched():
    with pytest.raises(HttpFetchError, match="only http and https"):
        get(HttpClient(fast()), "file:///etc/passwd")


def test_a_broken_cache_costs_only_the_saving(upstream, caplog):
    class BrokenCache:
        def get(self, url):
            raise OSError("disk full")

        def put(self, url, **kwargs):
            raise OSError("disk full")

    upstream.route("/r", Reply(body=BODY))
    client = HttpClient(fast(), BrokenCache())
    value, response = client.run(lambda s: s.fetch(f"{upstream.url}/r", HttpResponse.json))
    assert value == {"ok": True} and response.status == 200
    assert "HTTP cache read failed" in caplog.text and "HTTP cache write failed" in caplog.text


def test_a_stored_body_that_no_longer_parses_is_fetched_again(upstream):
    upstream.route("/r", Reply(body=BODY))
    cache = MemoryCache()
    client = HttpClient(fast(), cache)
    url = f"{upstream.url}/r"
    client.run(lambda s: s.fetch(url, HttpResponse.json))
    etag = cache.entries[url].etag
    cache.put(url, etag=etag, last_modified=None, body=b"{damaged")
    value, response = client.run(lambda s: s.fetch(url, HttpResponse.json))
    assert value == {"ok": True} and response.status == 200
    assert [r.status for r in upstream.requests] == [200, 304, 200]
    assert upstream.requests[2].header("If-None-Match") is None
    assert cache.entries[url].body == BODY
