"""What can go wrong with a request: :class:`HttpFetchError` and its subclasses, which
statuses are worth a retry, and one-line causes for messages. (``Retry-After`` is read by
``retry_policy.parse_retry_after``, shared with Slack.)"""

from __future__ import annotations

from pydantic import ValidationError


class HttpFetchError(Exception):
    """A request that failed for good. ``str()`` names the (redacted) URL and the cause."""

    retryable = False

    def __init__(self, message: str, *, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.retry_after = retry_after
        self.attempts = 1

    def __str__(self) -> str:
        if self.attempts > 1:
            return f"{self.message} (after {self.attempts} attempts)"
        return self.message


class HttpStatusError(HttpFetchError):
    """The server answered with an error status (or a 304 we cannot use)."""

    def __init__(
        self,
        message: str,
        *,
        status: int,
        retryable: bool,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message, retry_after=retry_after)
        self.status = status
        self.retryable = retryable


class HttpTransportError(HttpFetchError):
    """No usable answer: connection refused or reset, protocol error, body cut short."""

    retryable = True


class HttpTimeout(HttpTransportError):
    """The answer did not arrive (completely) in time."""


class ResponseTooLarge(HttpFetchError):
    """The body passed the size cap; the download was abandoned."""


class InvalidResponse(HttpFetchError):
    """The server answered 2xx, but not with what the adapter can use (HTML instead of
    JSON, malformed JSON, the wrong shape, not UTF-8, a broken calendar…)."""


def is_retryable_status(status: int) -> bool:
    """408, 429 and 5xx are worth another attempt; other statuses are final."""
    return status in (408, 429) or 500 <= status <= 599


def describe_exception(exc: BaseException) -> str:
    """A one-line cause: pydantic errors as ``field: problem``, others as their text."""
    if isinstance(exc, ValidationError):
        return "; ".join(
            f"{'.'.join(str(part) for part in error['loc']) or 'value'}: {error['msg']}"
            for error in exc.errors()[:5]
        )
    text = str(exc).strip()
    return text or type(exc).__name__
