"""Markdown for the Dagster UI's metadata previews, safe against hostile upstream text.

Event titles, entity names and error messages come from upstreams anyone can edit (an
iCalendar feed, an API). The UI renders `MetadataValue.md` as GitHub-flavoured markdown,
so a title `<https://evil.example|click>` would become a link and `<!channel>` would
vanish as HTML. `md_text` backslash-escapes every ASCII punctuation character (CommonMark
then shows each one literally, which also defeats autolinks such as `www.evil.example`)
and turns line breaks into spaces; `md_code_block` fences text with more backticks than
it contains.
"""

from __future__ import annotations

import re
import string
from collections.abc import Sequence

_PUNCTUATION = re.compile("([" + re.escape(string.punctuation) + "])")
_BACKTICK_RUN = re.compile("`+")


def md_text(text: object, max_len: int | None = None) -> str:
    """`text` shown literally in markdown (a table cell included), cut to `max_len`
    visible characters *before* escaping, so an escape is never cut in half."""
    plain = " ".join(str(text).split())
    if max_len is not None and len(plain) > max_len:
        plain = plain[: max_len - 1] + "…"
    return _PUNCTUATION.sub(r"\\\1", plain)


def md_code_block(text: str) -> str:
    """`text` in a fenced code block that no backtick run inside it can close."""
    longest = max((len(run) for run in _BACKTICK_RUN.findall(text)), default=0)
    fence = "`" * max(3, longest + 1)
    return f"{fence}\n{text}\n{fence}"


def md_table(header: Sequence[str], rows: Sequence[Sequence[object]], more: int = 0) -> str:
    """A markdown table of escaped cells; `more` rows left out are counted below it."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    if more > 0:
        lines.append(f"\n…and {more} more")
    return "\n".join(lines)
