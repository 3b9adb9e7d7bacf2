"""PDF documents (A4, Chinese and English) rendered from Jinja templates with WeasyPrint.

A template rendered here is ordinary HTML with autoescaping, so customer-typed text cannot
inject markup. WeasyPrint fetches nothing: file:, http(s): and every other URL is refused
(only inline data: URLs load), so a document cannot read the server's files or reach the
network. The print stylesheet below sets the page and the fonts; Chinese needs a CJK font
installed on the server (fonts-noto-cjk or fonts-wqy-microhei, see the Dockerfile).
"""
from __future__ import annotations

from flask import render_template
from weasyprint import CSS, HTML
from weasyprint.text.fonts import FontConfiguration

try:  # WeasyPrint 68+: a fetcher object that can be limited to some URL schemes
    from weasyprint.urls import URLFetcher
except ImportError:  # older WeasyPrint: a fetcher function
    URLFetcher = None
    from weasyprint import default_url_fetcher

PRINT_CSS = """
@page {
  size: A4;
  margin: 18mm 16mm 20mm 16mm;
  @bottom-right { content: counter(page) " / " counter(pages); font-size: 8pt; color: #666; }
  @bottom-left { content: element(doc-footer); }
}
html { font-family: "Noto Sans CJK SC", "Noto Sans SC", "WenQuanYi Micro Hei", "Source Han Sans SC",
       "Microsoft YaHei", "PingFang SC", sans-serif; font-size: 9.5pt; color: #111; line-height: 1.45; }
h1 { font-size: 16pt; margin: 0 0 2mm; }
h2 { font-size: 11.5pt; margin: 6mm 0 2mm; }
p { margin: 0 0 2mm; }
/* Put a line on every page's foot: <p class="doc-footer">Business · document · person</p> */
.doc-footer { position: running(doc-footer); font-size: 8pt; color: #666; }
.muted { color: #666; }
table { width: 100%; border-collapse: collapse; margin: 0 0 4mm; }
th, td { text-align: left; vertical-align: top; padding: 1.4mm 2mm; border-bottom: 0.3pt solid #bbb; }
thead th { border-bottom: 0.8pt solid #333; font-weight: 700; }
thead { display: table-header-group; }
tr { page-break-inside: avoid; }
.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
.nowrap { white-space: nowrap; }
dl.facts { margin: 0 0 4mm; }
dl.facts dt { float: left; clear: left; width: 38mm; color: #555; }
dl.facts dd { margin: 0 0 1mm 40mm; }
.totals td, .totals th { border-bottom: none; }
.totals tr.closing th, .totals tr.closing td { border-top: 0.8pt solid #333; font-weight: 700; }
"""


def _fetcher():
    """A URL fetcher that loads inline data: URLs only."""
    if URLFetcher is not None:
        return URLFetcher(allowed_protocols={"data"})

    def fetch(url: str, *args, **kwargs):
        if url.startswith("data:"):
            return default_url_fetcher(url, *args, **kwargs)
        raise ValueError("external resources are not loaded into PDFs")

    return fetch


def render_pdf(template: str, **context) -> bytes:
    """The template rendered to an A4 PDF with the shared print stylesheet."""
    html = render_template(template, **context)
    fonts = FontConfiguration()
    return HTML(string=html, url_fetcher=_fetcher()).write_pdf(
        stylesheets=[CSS(string=PRINT_CSS, font_config=fonts)], font_config=fonts)
