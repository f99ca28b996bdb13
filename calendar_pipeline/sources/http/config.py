"""HTTP settings: :class:`HttpConfig` (from code, or from the settings by
``UpstreamSources.http_config()``, which parses and names them), the proxy file and the
``User-Agent`` the client sends."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import httpx

from calendar_pipeline import __version__
from calendar_pipeline.retry_policy import DEFAULT_RETRY_POLICY, RetryPolicy
from calendar_pipeline.sources.http.redaction import redact

# Names the project and its version. A fork that talks to other people's servers should
# add a contact, e.g. f"calendar_pipeline/{__version__} (+mailto:ops@example.org)".
USER_AGENT = f"calendar_pipeline/{__version__} (Dagster calendar pipeline; httpx)"
MIB = 1024 * 1024
PROXY_SCHEMES = ("http", "https", "socks5", "socks5h")


@dataclass(frozen=True)
class HttpConfig:
    """How politely and how patiently the client talks to upstreams.

    ``UpstreamSources.http_config()`` fills the first six fields from the settings
    (``CALENDAR_RATE_LIMIT`` ...); the backoff fields exist so tests can make retries fast.
    """

    rate_limit: float = 2.0  # requests per second, per host
    max_concurrency: int = 4  # requests in flight, per host
    max_attempts: int = DEFAULT_RETRY_POLICY.max_attempts  # per request, the first included
    timeout: float = 20.0  # seconds per attempt (whole answer) and per connect/read
    max_response_bytes: int = 10 * MIB  # decoded body size at which a download is abandoned
    proxy_file: Path | None = None  # one proxy URL a line, used in rotation
    progress_every: int = 50  # log a progress line every N entities
    # The retry policy (``retry_policy``; the same defaults as Slack's, see RetryPolicy).
    backoff_base: float = DEFAULT_RETRY_POLICY.backoff_base
    backoff_max: float = DEFAULT_RETRY_POLICY.backoff_max
    max_retry_after: float = DEFAULT_RETRY_POLICY.max_retry_after

    def __post_init__(self) -> None:
        try:
            self.retry_policy  # noqa: B018 - building it checks the four retry fields
        except ValueError as exc:
            raise ValueError(f"HttpConfig.{exc}") from None
        for name in ("rate_limit", "timeout"):
            if not getattr(self, name) > 0:
                raise ValueError(f"HttpConfig.{name} must be positive, not {getattr(self, name)}")
        for name in ("max_concurrency", "max_response_bytes", "progress_every"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"HttpConfig.{name} must be a positive integer, not {value!r}")

    @property
    def retry_policy(self) -> RetryPolicy:
        """``max_attempts``, ``backoff_base``, ``backoff_max`` and ``max_retry_after``."""
        return RetryPolicy(
            self.max_attempts, self.backoff_base, self.backoff_max, self.max_retry_after
        )


def load_proxy_file(path: Path) -> tuple[str, ...]:
    """The proxy URLs of ``path``: one a line, blank lines and ``#`` comments skipped.

    Raises ValueError naming the line (never its credentials) when a line is not a
    proxy URL this installation can use.
    """
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = getattr(exc, "strerror", None) or exc
        raise ValueError(f"cannot read the proxy file ({reason})") from None
    proxies: list[str] = []
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.split(" #", 1)[0].strip()
        if not line or line.startswith("#"):
            continue
        try:
            url = httpx.URL(line)
        except httpx.InvalidURL:
            raise ValueError(f"line {number}: not a URL ({redact(line)!r})") from None
        if url.scheme not in PROXY_SCHEMES or not url.host:
            raise ValueError(
                f"line {number}: {redact(line)!r} is not a proxy URL "
                f"(expected {', '.join(PROXY_SCHEMES)}://[user:password@]host:port)"
            )
        if url.scheme.startswith("socks"):
            try:
                import socksio  # noqa: F401 - httpx needs it for SOCKS proxies
            except ImportError:
                raise ValueError(
                    f"line {number}: SOCKS proxies need the 'socksio' package "
                    "(pip install 'httpx[socks]')"
                ) from None
        proxies.append(line)
    if not proxies:
        raise ValueError("the proxy file lists no proxy")
    return tuple(proxies)
