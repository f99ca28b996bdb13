"""Source adapters (pure Python): one per upstream, behind the ``Source`` protocol."""

from __future__ import annotations

from calendar_pipeline.sources.holidays_source import HolidaysSource
from calendar_pipeline.sources.model import Source


def default_sources() -> dict[str, Source]:
    """The adapters this build knows, by the name used in the universe's ``source`` column."""
    return {"holidays": HolidaysSource()}
