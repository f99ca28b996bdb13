"""`calendar-pipeline serve-feeds`: the `.ics` files of `{data_dir}/feeds/` over HTTP,
read-only, on CALENDAR_FEEDS_ADDRESS (default `127.0.0.1:8765`).

Only `GET` and `HEAD` of `/<name>.ics`, a regular file directly in `feeds/`, are answered
200 (or 304); everything else is 404: no listing, no other file of the directory
(`state.json` is not served), no subdirectory, no path outside it (`..`, encoded or not,
or a symbolic link leading out). Each answer carries a strong `ETag` (a hash of the
content) and `Last-Modified`; `If-None-Match` (which wins when both are sent) and
`If-Modified-Since` get `304 Not Modified`, so calendar apps polling every few minutes
download a feed only when it changed. Files are read when asked for: a feed rewritten by
a run is served at once, whole (the files are replaced atomically).
"""

from __future__ import annotations

import email.utils
import hashlib
import os
import re
import socket
import sys
import threading
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urlsplit

from calendar_pipeline.settings import SettingError, parse_address

ADDRESS_VARIABLE = "CALENDAR_FEEDS_ADDRESS"
DEFAULT_ADDRESS = "127.0.0.1:8765"
_NAME = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9._-]*\.ics")


def feed_file(directory: Path, request_path: str) -> Path | None:
    """The file `request_path` (the path of a request, query included) names in
    `directory`, or None when it names nothing that is served."""
    path = unquote(urlsplit(request_path).path, errors="strict")
    if not path.startswith("/"):
        return None
    name = path[1:]
    if not _NAME.fullmatch(name):  # no `/`, no `..`, no leading dot, ends in .ics
        return None
    root = directory.resolve()
    candidate = root / name
    try:
        real = candidate.resolve(strict=True)
    except (OSError, RuntimeError):
        return None
    if real.parent != root or not real.is_file():
        return None
    return real


class FeedHandler(BaseHTTPRequestHandler):
    """Answers GET and HEAD for the feed files of `server.directory`; 404 otherwise."""

    server_version = "calendar-pipeline-feeds"
    sys_version = ""
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        self._answer(body=True)

    def do_HEAD(self) -> None:
        self._answer(body=False)

    def _answer(self, body: bool) -> None:
        try:
            path = feed_file(self.server.directory, self.path)  # type: ignore[attr-defined]
        except UnicodeDecodeError:
            path = None
        if path is None:
            self._plain(HTTPStatus.NOT_FOUND, b"not found\n", body)
            return
        try:
            content = path.read_bytes()
            mtime = int(os.stat(path).st_mtime)
        except OSError:
            self._plain(HTTPStatus.NOT_FOUND, b"not found\n", body)
            return
        etag = '"' + hashlib.sha256(content).hexdigest()[:32] + '"'
        modified = email.utils.formatdate(mtime, usegmt=True)
        headers = {
            "ETag": etag,
            "Last-Modified": modified,
            "Cache-Control": "no-cache",  # revalidate each time: a 304 costs nothing
        }
        if self._not_modified(etag, mtime):
            self.send_response(HTTPStatus.NOT_MODIFIED)
            for key, value in headers.items():
                self.send_header(key, value)
            self.end_headers()
            return
        self.send_response(HTTPStatus.OK)
        self.send_header("Content-Type", "text/calendar; charset=utf-8")
        self.send_header("Content-Length", str(len(content)))
        self.send_header("Content-Disposition", f'inline; filename="{path.name}"')
        for key, value in headers.items():
            self.send_header(key, value)
        self.end_headers()
        if body:
            self.wfile.write(content)

    def _not_modified(self, etag: str, mtime: int) -> bool:
        match = self.headers.get("If-None-Match")
        if match is not None:  # RFC 9110 13.1.2: If-Modified-Since is then ignored
            tags = {tag.strip().removeprefix("W/") for tag in match.split(",")}
            return "*" in tags or etag in tags
        since = self.headers.get("If-Modified-Since")
        if since is None:
            return False
        try:
            when = email.utils.parsedate_to_datetime(since)
        except (TypeError, ValueError, IndexError):
            return False
        return when is not None and mtime <= int(when.timestamp())

    def _plain(self, status: HTTPStatus, text: bytes, body: bool) -> None:
        self.send_response(status)
        self.send_header("Content-Type", "text/plain; charset=utf-8")
        self.send_header("Content-Length", str(len(text)))
        self.end_headers()
        if body:
            self.wfile.write(text)

    def log_message(self, format: str, *args) -> None:
        if getattr(self.server, "quiet", False):
            return
        super().log_message(format, *args)


class FeedServer(ThreadingHTTPServer):
    """A threading HTTP server of the feed files of `directory`."""

    daemon_threads = True

    def __init__(self, address: tuple[str, int], directory: Path, quiet: bool = False) -> None:
        if ":" in address[0]:
            self.address_family = socket.AF_INET6
        super().__init__(address, FeedHandler)
        self.directory = Path(directory)
        self.quiet = quiet

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{f'[{host}]' if ':' in str(host) else host}:{port}"


def start(directory: Path, address: str, quiet: bool = True) -> tuple[FeedServer, threading.Thread]:
    """A running server on a thread (for tests and embedding); `server.shutdown()` stops it."""
    server = FeedServer(parse_address(address), directory, quiet=quiet)
    thread = threading.Thread(target=server.serve_forever, daemon=True, name="feed-server")
    thread.start()
    return server, thread


def serve_feeds(data_dir: Path, configured: str, address: str | None = None) -> int:
    """`calendar-pipeline serve-feeds`: serve `{data_dir}/feeds/` until stopped (Ctrl-C:
    exit 0) on `address` (`--address`), else `configured` (CALENDAR_FEEDS_ADDRESS). A bad
    address raises `SettingError` naming the variable (or `--address`)."""
    from calendar_pipeline.feeds.publish import feeds_dir

    text = address if address is not None else configured
    where = parse_address(text, "--address" if address is not None else ADDRESS_VARIABLE)
    directory = feeds_dir(data_dir)
    try:
        server = FeedServer(where, directory)
    except OSError as exc:
        name = "--address" if address is not None else ADDRESS_VARIABLE
        raise SettingError(name, text, f"cannot listen there: {exc.strerror or exc}") from None
    feeds = sorted(p.name for p in directory.glob("*.ics")) if directory.is_dir() else []
    print(f"calendar-pipeline: serving {directory} at {server.url}/", file=sys.stderr)
    if feeds:
        for name in feeds:
            print(f"  {server.url}/{name}", file=sys.stderr)
    else:
        print(
            "  no feed yet: `calendar-pipeline run` writes all.ics (served as "
            f"{server.url}/all.ics)",
            file=sys.stderr,
        )
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0
