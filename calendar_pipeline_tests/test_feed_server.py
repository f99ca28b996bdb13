"""`calendar-pipeline serve-feeds`, over real HTTP on 127.0.0.1: the feed files with ETag,
Last-Modified and 304 answers; 404 for everything else (the state file, a directory, a
path outside `feeds/`, plain or percent-encoded, a symbolic link leading out); a bad
address is one line naming its variable."""

from __future__ import annotations

import email.utils
import http.client
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from calendar_pipeline import cli
from calendar_pipeline.feeds import serve
from calendar_pipeline.settings import SettingError
from calendar_pipeline_tests.dagster_dev import free_port

FEED = b"BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:-//t//EN\r\nEND:VCALENDAR\r\n"


@pytest.fixture
def served(tmp_path):
    data = tmp_path / "data"
    feeds = data / "feeds"
    feeds.mkdir(parents=True)
    (feeds / "all.ics").write_bytes(FEED)
    (feeds / "team.ics").write_bytes(FEED.replace(b"//t//", b"//team//"))
    (feeds / "state.json").write_text("{}")
    (feeds / "sub.ics").mkdir()  # a directory, even named like a feed
    (data / "secret.ics").write_bytes(b"outside feeds/")
    (data / "index").mkdir()
    (feeds / "link.ics").symlink_to(data / "secret.ics")
    server, thread = serve.start(feeds, "127.0.0.1:0")
    try:
        yield server, feeds
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


def get(server, path: str, headers: dict | None = None, method: str = "GET"):
    """One request with the path sent as written (no client-side normalisation)."""
    host, port = server.server_address[:2]
    conn = http.client.HTTPConnection(host, port, timeout=5)
    try:
        conn.putrequest(method, path, skip_accept_encoding=True)
        for key, value in (headers or {}).items():
            conn.putheader(key, value)
        conn.endheaders()
        response = conn.getresponse()
        return response.status, dict(response.getheaders()), response.read()
    finally:
        conn.close()


def test_a_feed_with_etag_and_304s(served):
    server, feeds = served
    status, headers, body = get(server, "/all.ics")
    assert status == 200 and body == FEED
    assert headers["Content-Type"] == "text/calendar; charset=utf-8"
    etag, modified = headers["ETag"], headers["Last-Modified"]
    assert etag.startswith('"') and etag.endswith('"')
    mtime = int(os.stat(feeds / "all.ics").st_mtime)
    assert email.utils.parsedate_to_datetime(modified).timestamp() == mtime
    assert get(server, "/all.ics?refresh=1")[0] == 200  # a query string changes nothing

    status, headers, body = get(server, "/all.ics", {"If-None-Match": etag})
    assert (status, body, headers["ETag"]) == (304, b"", etag)
    assert get(server, "/all.ics", {"If-None-Match": f'"x", {etag}'})[0] == 304
    assert get(server, "/all.ics", {"If-Modified-Since": modified})[0] == 304
    earlier = email.utils.formatdate(mtime - 60, usegmt=True)
    assert get(server, "/all.ics", {"If-Modified-Since": earlier})[0] == 200
    # If-None-Match wins over If-Modified-Since (RFC 9110)
    assert (
        get(server, "/all.ics", {"If-None-Match": '"other"', "If-Modified-Since": modified})[0]
        == 200
    )
    other = get(server, "/team.ics")
    assert other[0] == 200 and other[1]["ETag"] != etag  # a tag per content

    # a run rewrites the feed: a new ETag, the old one no longer matches
    (feeds / "all.ics").write_bytes(FEED.replace(b"VERSION", b"X-A:1\r\nVERSION"))
    status, headers, body = get(server, "/all.ics", {"If-None-Match": etag})
    assert status == 200 and headers["ETag"] != etag and b"X-A:1" in body
    status, headers, body = get(server, "/all.ics", method="HEAD")
    assert status == 200 and body == b"" and headers["Content-Length"] == str(len(FEED) + 7)


@pytest.mark.parametrize(
    "path",
    [
        "/",
        "/state.json",
        "/sub.ics",  # a directory
        "/sub.ics/",
        "/missing.ics",
        "/link.ics",  # a symbolic link to a file outside feeds/
        "/../secret.ics",
        "/%2e%2e/secret.ics",
        "/%2E%2E%2Fsecret.ics",
        "/..%2fsecret.ics",
        "/.%2e/secret.ics",
        "/feeds/../../secret.ics",
        "//etc/passwd",
        "/%2fetc%2fpasswd",
        "/.feeds.lock",
        "/all.ics%00.txt",
        "/%ff.ics",
        "all.ics",
    ],
)
def test_nothing_else_is_served(served, path):
    server, _ = served
    status, _, body = get(server, path)
    assert status == 404, path
    assert b"outside" not in body and b"VCALENDAR" not in body


def test_other_methods_are_refused(served):
    server, _ = served
    assert get(server, "/all.ics", method="POST")[0] == 501
    assert get(server, "/all.ics", method="PUT")[0] == 501


@pytest.mark.parametrize(
    "bad", ["8765", "localhost", "127.0.0.1:", "127.0.0.1:99999", ":80", "a b:1"]
)
def test_a_bad_address_names_its_variable(bad):
    with pytest.raises(SettingError) as info:
        serve.parse_address(bad)
    assert f"CALENDAR_FEEDS_ADDRESS={bad!r}" in str(info.value)


def test_addresses():
    assert serve.parse_address("127.0.0.1:8765") == ("127.0.0.1", 8765)
    assert serve.parse_address(" [::1]:0 ") == ("::1", 0)
    assert serve.parse_address("feeds.internal:80") == ("feeds.internal", 80)


def test_the_command_with_a_bad_address_is_one_line_exit_2(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("CALENDAR_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("CALENDAR_FEEDS_ADDRESS", "localhost")
    assert cli.main(["serve-feeds"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [
        "calendar-pipeline: CALENDAR_FEEDS_ADDRESS='localhost': expected HOST:PORT, "
        "e.g. 127.0.0.1:8765 or [::1]:8765"
    ]


def test_the_command_serves_the_data_dir(tmp_path):
    """`calendar-pipeline serve-feeds` as a user starts it, on CALENDAR_FEEDS_ADDRESS."""
    feeds = tmp_path / "data" / "feeds"
    feeds.mkdir(parents=True)
    (feeds / "all.ics").write_bytes(FEED)
    port = free_port()
    env = {
        **os.environ,
        "CALENDAR_DATA_DIR": str(tmp_path / "data"),
        "CALENDAR_FEEDS_ADDRESS": f"127.0.0.1:{port}",
    }
    binary = Path(sys.executable).parent / "calendar-pipeline"
    process = subprocess.Popen(
        [str(binary), "serve-feeds"], cwd=tmp_path, env=env, stderr=subprocess.PIPE, text=True
    )
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
                conn.request("GET", "/all.ics")
                response = conn.getresponse()
                break
            except OSError:
                assert process.poll() is None, process.stderr.read()
                assert time.monotonic() < deadline
                time.sleep(0.2)
        assert response.status == 200 and response.read() == FEED
        conn.close()
    finally:
        process.terminate()
        _, err = process.communicate(timeout=10)
    assert f"serving {feeds} at http://127.0.0.1:{port}/" in err
    assert f"http://127.0.0.1:{port}/all.ics" in err
