"""Statistics: :class:`HttpStats` running totals of a client and the
:class:`BatchProgress` reports sent while a batch runs."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass


@dataclass(frozen=True)
class HttpStats:
    """Running totals of one :class:`HttpClient` (snapshots; subtract two for a delta)."""

    done: int = 0  # entities fetched successfully
    failed: int = 0  # entities that ended as an error
    requests: int = 0  # HTTP attempts sent (retries included)
    retried: int = 0  # attempts that were retries
    not_modified: int = 0  # 304 answers (body reused from the cache)
    bytes: int = 0  # response body bytes received over the wire

    def __sub__(self, other: HttpStats) -> HttpStats:
        mine, theirs = self.as_dict(), other.as_dict()
        return HttpStats(**{name: mine[name] - theirs[name] for name in mine})

    def as_dict(self) -> dict[str, int]:
        return asdict(self)

    def summary(self) -> str:
        return (
            f"{self.done} done, {self.failed} failed, {self.requests} requests, "
            f"{self.retried} retried, {self.not_modified} not modified (304), "
            f"{_human_bytes(self.bytes)}"
        )


def _human_bytes(count: int) -> str:
    size = float(count)
    for unit in ("B", "KiB", "MiB"):
        if size < 1024 or unit == "MiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{count} B"  # pragma: no cover


@dataclass(frozen=True)
class BatchProgress:
    """What :attr:`HttpClient.on_progress` receives every N entities and at the end."""

    source: str
    entities_done: int  # answered so far in this batch (ok or failed)
    entities_total: int
    stats: HttpStats  # the client's running totals
    final: bool


ProgressCallback = Callable[[BatchProgress], None]
