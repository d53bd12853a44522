"""The report rendered a policy at a time, so that a fleet's report never holds every policy's
section, nor a second rendered copy of it, at once: `body` renders each section as it comes, and
`frame` the rest of the document, which needs only the verdicts (the overall one comes first in
every format, so the caller keeps the rendered sections aside until it is known).

The bytes are those of render_json, render_md and render_html of the whole document
(tests/golden/report/ holds them)."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

from .html import html_empty, html_frame, html_section
from .markdown import json_close, json_frame, json_section, md_frame, md_section

FORMATS = ("json", "md", "html")


def body(fmt: str, sections: Iterable[dict[str, Any]]) -> Iterator[str]:
    """The policies' part of the report, one piece per section, rendered as each arrives.
    (For Markdown and HTML, an empty fleet's "No policies" line is in the frame or the last piece.)"""
    first = True
    for p in sections:
        if fmt == "json":
            yield json_section(p, first)
        elif fmt == "md":
            yield md_section(p)
        else:
            yield html_section(p, first)
        first = False
    if fmt == "json":
        yield json_close(empty=first)
    elif fmt == "html" and first:
        yield html_empty()


def frame(fmt: str, doc: dict[str, Any], *, empty: bool) -> tuple[str, str]:
    """(what comes before the policies, what comes after) for the document without them."""
    if fmt == "json":
        return json_frame(doc)
    if fmt == "md":
        return md_frame(doc, empty=empty)
    return html_frame(doc)


def render(fmt: str, doc: dict[str, Any]) -> str:
    """The whole document at once, through the same pieces (tests compare it with render_*)."""
    head, tail = frame(fmt, doc, empty=not doc["policies"])
    return head + "".join(body(fmt, doc["policies"])) + tail
