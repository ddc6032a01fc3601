"""The static report pages' shared frame (trajectory and evaluation index.html).

A page is static (relative links, no network). Its inline script runs on `load` and records on <body> whether
every <img> decoded (`data-images-status="ok"`, `data-images-loaded`, `data-images-total`,
`data-images-broken`), which a headless browser test reads back, and shows the same as a line of text.
"""

from __future__ import annotations

import html
from collections.abc import Sequence

escape = html.escape

CHECK_SCRIPT = """
window.addEventListener("load", function () {
  var images = Array.prototype.slice.call(document.images);
  var ok = images.filter(function (i) { return i.complete && i.naturalWidth > 0; });
  var broken = images.filter(function (i) { return !(i.complete && i.naturalWidth > 0); });
  var body = document.body;
  body.setAttribute("data-images-total", String(images.length));
  body.setAttribute("data-images-loaded", String(ok.length));
  body.setAttribute("data-images-broken", broken.map(function (i) { return i.getAttribute("src"); }).join(" "));
  body.setAttribute("data-images-status", ok.length === images.length ? "ok" : "broken");
  var line = document.getElementById("image-status");
  if (line) { line.textContent = ok.length + " of " + images.length + " images loaded"; }
});
"""


def page_start(title: str, style: str) -> list[str]:
    """The lines up to and including the <h1>: doctype, head (title, `style`, the image check), body."""
    return [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{escape(title)}</title>",
        f"<style>{style}</style>",
        f"<script>{CHECK_SCRIPT}</script>",
        "</head><body>",
        f"<h1>{escape(title)}</h1>",
    ]


def page_end(parts: Sequence[str]) -> str:
    """The page's text: `parts` (from `page_start` on), then the image-status line and the closing tags."""
    return "\n".join([*parts, '<p id="image-status">checking images...</p>', "</body></html>"]) + "\n"
