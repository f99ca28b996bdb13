"""The one polite HTTP client every HTTP adapter shares (httpx + aiolimiter + tenacity).

One module per job:

- ``config``: :class:`HttpConfig` (politeness and patience settings), the proxy file,
  ``USER_AGENT``;
- ``redaction``: :func:`redact`, keeping credentials out of messages and httpx logs;
- ``errors``: :class:`HttpFetchError` and its subclasses, which statuses are retried,
  ``Retry-After``, one-line exception causes;
- ``response``: :class:`HttpResponse`, a complete answer and how to read its body;
- ``stats``: :class:`HttpStats` running totals and :class:`BatchProgress` reports;
- ``client``: :class:`HttpClient`, shared by a run's adapters, runs their async batches;
- ``session``: :class:`HttpSession`, one batch's requests: rate limits, retries,
  timeouts, size cap, conditional GET, proxies;
- ``source``: :class:`HttpSource`, the base of the HTTP adapters.

The public names are re-exported here.
"""

from calendar_pipeline.retry_policy import parse_retry_after
from calendar_pipeline.sources.http.client import FetchOne, HttpClient, Outcome
from calendar_pipeline.sources.http.config import USER_AGENT, HttpConfig, load_proxy_file
from calendar_pipeline.sources.http.errors import (
    HttpFetchError,
    HttpStatusError,
    HttpTimeout,
    HttpTransportError,
    InvalidResponse,
    ResponseTooLarge,
    describe_exception,
    is_retryable_status,
)
from calendar_pipeline.sources.http.redaction import REDACTED, redact
from calendar_pipeline.sources.http.response import HttpResponse
from calendar_pipeline.sources.http.session import HttpSession
from calendar_pipeline.sources.http.source import HttpSource
from calendar_pipeline.sources.http.stats import BatchProgress, HttpStats, ProgressCallback

__all__ = [
    "REDACTED",
    "USER_AGENT",
    "BatchProgress",
    "FetchOne",
    "HttpClient",
    "HttpConfig",
    "HttpFetchError",
    "HttpResponse",
    "HttpSession",
    "HttpSource",
    "HttpStats",
    "HttpStatusError",
    "HttpTimeout",
    "HttpTransportError",
    "InvalidResponse",
    "Outcome",
    "ProgressCallback",
    "ResponseTooLarge",
    "describe_exception",
    "is_retryable_status",
    "load_proxy_file",
    "parse_retry_after",
    "redact",
]
