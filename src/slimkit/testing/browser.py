"""Open an HTML page in headless Chromium and report what a person would see: which plots
rendered (SVG elements with a non-zero size), script and console errors, resources fetched,
and whether the page fits the window width; plus a screenshot.

Dependency-light on purpose: no DevTools websocket client. A probe script is injected at the top
of a copy of the page; it records errors and, once the page has loaded, writes its findings into
the DOM, which ``chromium --dump-dom`` prints.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome", "chrome")
FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
         "--no-first-run", "--disable-extensions",
         # the page must need no network: any host lookup fails
         "--host-resolver-rules=MAP * ~NOTFOUND")

PROBE = """<script>
(function () {
  var errors = [];
  window.addEventListener('error', function (e) {
    var t = e.target && e.target !== window ? (e.target.outerHTML || '').slice(0, 120) : '';
    errors.push('error: ' + (e.message || ('resource failed ' + t)));
  }, true);
  window.addEventListener('unhandledrejection', function (e) {
    errors.push('unhandled rejection: ' + e.reason);
  });
  document.addEventListener('securitypolicyviolation', function (e) {
    errors.push('csp: ' + e.violatedDirective);
  });
  ['error', 'warn'].forEach(function (level) {
    var original = console[level];
    console[level] = function () {
      errors.push('console.' + level + ': ' + Array.prototype.join.call(arguments, ' '));
      return original.apply(console, arguments);
    };
  });
  window.addEventListener('load', function () {
    var svgs = Array.prototype.map.call(document.querySelectorAll('svg'), function (s) {
      var r = s.getBoundingClientRect();
      return {label: s.getAttribute('aria-label') || '', width: r.width, height: r.height,
              shapes: s.querySelectorAll('path, rect, line, polyline, use').length};
    });
    var out = document.createElement('pre');
    out.id = '__slimkit_probe';
    out.textContent = JSON.stringify({
      errors: errors, svgs: svgs,
      resources: performance.getEntriesByType('resource').map(function (r) { return r.name; }),
      scroll_width: document.documentElement.scrollWidth, inner_width: window.innerWidth,
      page_height: document.documentElement.scrollHeight,
      headings: Array.prototype.map.call(document.querySelectorAll('h2'),
                                         function (h) { return h.textContent; }),
      missing: document.querySelectorAll('.missing').length
    });
    document.body.appendChild(out);
  });
})();
</script>"""


@dataclass
class PageCheck:
    """What headless Chromium saw on the page."""

    errors: list[str]
    svgs: list[dict[str, Any]]
    resources: list[str]
    scroll_width: int
    inner_width: int
    headings: list[str]
    missing: int
    screenshot: Path | None = None
    raw: dict[str, Any] = field(default_factory=dict)

    @property
    def rendered_plots(self) -> list[dict[str, Any]]:
        return [s for s in self.svgs if s["width"] > 0 and s["height"] > 0 and s["shapes"] > 0]


def find_chromium() -> str | None:
    """The path of a Chromium/Chrome binary, or None."""
    return next((p for p in map(shutil.which, CHROMIUM_NAMES) if p), None)


def check_page(html_path: str | Path, screenshot: str | Path | None = None,
               width: int = 1280, height: int = 900, timeout: float = 90.0) -> PageCheck:
    """Load ``html_path`` in headless Chromium at ``width`` x ``height``; optionally save a
    full-height screenshot of the unmodified page to ``screenshot`` (PNG)."""
    binary = find_chromium()
    if binary is None:
        raise FileNotFoundError("no chromium binary on PATH (tried " +
                                ", ".join(CHROMIUM_NAMES) + ")")
    page = Path(html_path).resolve()
    with tempfile.TemporaryDirectory(prefix="slimkit-browser-") as tmp:
        probed = Path(tmp) / page.name
        text = page.read_text(encoding="utf-8")
        probed.write_text(re.sub(r"<head>", "<head>" + PROBE, text, count=1), encoding="utf-8")
        base = [binary, *FLAGS, f"--user-data-dir={tmp}/profile",
                f"--window-size={width},{height}", "--virtual-time-budget=5000"]
        dom = subprocess.run([*base, "--dump-dom", probed.as_uri()], capture_output=True,
                             text=True, timeout=timeout, check=False)
        match = re.search(r'<pre id="__slimkit_probe">(.*?)</pre>', dom.stdout, re.S)
        if match is None:
            raise RuntimeError(f"the probe did not report (chromium exit {dom.returncode}): "
                               f"{dom.stderr[-800:]}")
        data = json.loads(_unescape(match.group(1)))
        shot = None
        if screenshot is not None:
            shot = Path(screenshot)
            tall = max(height, int(data.get("page_height", 0)) or 4000)
            subprocess.run([binary, *FLAGS, f"--user-data-dir={tmp}/profile2",
                            f"--window-size={width},{tall}", f"--screenshot={shot}",
                            page.as_uri()], capture_output=True, timeout=timeout, check=False)
    return PageCheck(data["errors"], data["svgs"], data["resources"], data["scroll_width"],
                     data["inner_width"], data["headings"], data["missing"], shot, data)


def _unescape(text: str) -> str:
    import html

    return html.unescape(text)
