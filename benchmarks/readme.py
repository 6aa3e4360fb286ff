"""Splice a benchmark's Markdown table into README.md between its markers.

Tables in the README are written by the scripts that measure them, never typed in: each script
calls `write_section("name", markdown)`, which replaces the text between
`<!-- BEGIN name -->` and `<!-- END name -->` (appending the markers before the Tests section if
they are missing).
"""

from __future__ import annotations

from pathlib import Path

README = Path(__file__).resolve().parent.parent / "README.md"


def write_section(name: str, markdown: str, *, heading: str | None = None) -> None:
    """Replace (or add) the README section `name` with `markdown`."""
    text = README.read_text()
    begin, end = f"<!-- BEGIN {name} -->", f"<!-- END {name} -->"
    block = f"{begin}\n{markdown.strip()}\n{end}"
    if begin in text and end in text:
        head, rest = text.split(begin, 1)
        _, tail = rest.split(end, 1)
        text = head + block + tail
    else:
        title = f"## {heading}\n\n" if heading else ""
        anchor = "## Tests"
        text = (
            text.replace(anchor, f"{title}{block}\n\n{anchor}", 1)
            if anchor in text
            else text + "\n" + title + block + "\n"
        )
    README.write_text(text)
