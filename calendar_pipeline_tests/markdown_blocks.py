"""The fenced code blocks of the repository's Markdown, as the tests that run the docs
read them (README, RUNBOOK, SCALING). Parsed with markdown-it-py (CommonMark), so a block
inside a list item comes out dedented exactly as a reader sees it."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from markdown_it import MarkdownIt

REPO = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Block:
    doc: str  # path relative to the repository
    line: int  # of the opening fence, 1-based
    section: str  # the nearest ## heading
    text: str  # the block's lines, without the final newline
    language: str = ""

    @property
    def where(self) -> str:
        return f"{self.doc}:{self.line} ({self.section})"


def fenced_blocks(doc: str) -> list[Block]:
    """Every fenced block of ``doc`` (a path relative to the repository), in order."""
    tokens = MarkdownIt("commonmark").parse((REPO / doc).read_text(encoding="utf-8"))
    found, section = [], ""
    for i, token in enumerate(tokens):
        if token.type == "heading_open" and token.tag == "h2":
            section = tokens[i + 1].content.strip()
        elif token.type == "fence":
            language = token.info.strip().split(" ")[0]
            text = token.content[:-1] if token.content.endswith("\n") else token.content
            found.append(Block(doc, token.map[0] + 1, section, text, language))
    return found


def bash_blocks(doc: str) -> list[Block]:
    return [block for block in fenced_blocks(doc) if block.language == "bash"]
