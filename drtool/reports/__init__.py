"""Compliance reports: `compute` builds the document from the store's evidence (pure), `markdown`
and `html` render it (string.Template files in templates/, every store-derived value escaped)."""

from .compute import EVIDENCE_MAP, REPORT_FORMAT, REPORT_VERSION, build, build_policy
from .html import render_html
from .markdown import render_json, render_md

__all__ = [
    "EVIDENCE_MAP", "REPORT_FORMAT", "REPORT_VERSION", "build", "build_policy", "render_html", "render_json", "render_md",
]  # fmt: skip
