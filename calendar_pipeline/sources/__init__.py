"""Source adapters (pure Python): one per upstream, behind the ``Source`` protocol.

``ADAPTERS`` is the one list of them; each adapter's ``name`` is the value of the
universe's ``source`` column that selects it (``SOURCE_NAMES``).
"""

from __future__ import annotations

from calendar_pipeline.sources.finnhub import FinnhubSource
from calendar_pipeline.sources.holidays_source import HolidaysSource
from calendar_pipeline.sources.ics import IcsSource
from calendar_pipeline.sources.model import Source
from calendar_pipeline.sources.nager import NagerSource

ADAPTERS = (HolidaysSource, NagerSource, IcsSource, FinnhubSource)
SOURCE_NAMES = tuple(adapter.name for adapter in ADAPTERS)


def default_sources() -> dict[str, Source]:
    """The adapters that need no network or settings (the embedded ``holidays`` data)."""
    return {HolidaysSource.name: HolidaysSource()}
