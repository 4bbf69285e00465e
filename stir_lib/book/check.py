"""The built site opened in a real browser: what only a browser shows.

A static site can be broken in ways only a browser shows: math left as raw TeX, images
that do not load, script errors, requests to other hosts, tables wider than the text
column with no way to scroll, links to pages or anchors that do not exist.
:func:`check_site` opens every page of ``_toc.yml`` in headless Chromium (Debian's
``/usr/bin/chromium``, driven by Playwright; ``make setup`` installs it), served from a
local HTTP server, with every request to another host blocked and reported. It saves a
full-page screenshot of each page and returns the problems per page.
"""

from __future__ import annotations

import contextlib
import sys
import functools
import html.parser
import http.server
import tempfile
import threading
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import unquote, urlsplit

__all__ = ["CHROMIUM", "CHROMIUM_ARGS", "VIEWPORT", "LOCAL_HOSTS", "serve", "browser",
           "is_local", "unrendered_math", "broken_links", "external_assets", "PageReport",
           "open_page", "check_page", "check_site", "failures", "MATH_DELIMITERS"]

# --------------------------------------------------------------------------- server + browser

LOCAL_HOSTS = ("127.0.0.1", "localhost")
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ("--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run",
                 "--disable-quic")
VIEWPORT = {"width": 1280, "height": 900}


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format, *args):  # noqa: A002 - the base class's name
        pass


class _QuietServer(http.server.ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request, client_address):
        # A browser that drops a connection (it often does for favicon.ico) is not news.
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)


@contextlib.contextmanager
def serve(folder: Path) -> Iterator[str]:
    """Serve ``folder`` on 127.0.0.1 (a free port) from a thread; yield its base URL."""
    if not folder.is_dir():
        raise FileNotFoundError(f"expected a built site in {folder}, got no such folder; "
                                f"run `make render` (or `make book`) first")
    handler = functools.partial(_QuietHandler, directory=str(folder))
    server = _QuietServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()


@contextlib.contextmanager
def browser() -> Iterator:
    """A headless Chromium context with a fresh profile, 1280 px wide."""
    if not CHROMIUM.exists():
        raise FileNotFoundError(f"expected Debian's chromium at {CHROMIUM}, got none; run "
                                f"`make setup` (it runs apt-get install chromium)")
    from playwright.sync_api import sync_playwright

    with tempfile.TemporaryDirectory(prefix="stir-chromium-") as profile, \
            sync_playwright() as pw:
        context = pw.chromium.launch_persistent_context(
            profile, executable_path=str(CHROMIUM), headless=True, args=list(CHROMIUM_ARGS),
            viewport=VIEWPORT, service_workers="block")
        try:
            yield context
        finally:
            context.close()


def is_local(url: str) -> bool:
    """True for URLs that do not leave the machine: the local server, data: and blob:."""
    parts = urlsplit(url)
    return parts.scheme in ("data", "blob", "about") or parts.hostname in LOCAL_HOSTS


# --------------------------------------------------------------------------- checks

# Text that MathJax should have replaced; a lone "$" is left alone (prices, shell prompts).
MATH_DELIMITERS = ("\\(", "\\[", "$$")


def unrendered_math(texts: list[str]) -> list[str]:
    """Problems for visible texts still holding a TeX delimiter, each with its context."""
    problems = []
    for text in texts:
        for delim in MATH_DELIMITERS:
            i = text.find(delim)
            if i >= 0:
                snippet = " ".join(text[max(0, i - 30):i + 50].split())
                problems.append(f"unrendered math {delim} in: ...{snippet}...")
                break
    return problems


class _Anchors(html.parser.HTMLParser):
    """Collect the ids (and ``<a name>``) a page defines: the targets of ``#fragment``."""

    def __init__(self):
        super().__init__()
        self.ids: set[str] = set()

    def handle_starttag(self, tag, attrs):
        for key, value in attrs:
            if value and (key == "id" or (key == "name" and tag == "a")):
                self.ids.add(value)


@functools.lru_cache(maxsize=256)
def _anchors_of(path: Path, mtime: float) -> frozenset[str]:
    parser = _Anchors()
    parser.feed(path.read_text(encoding="utf-8", errors="replace"))
    return frozenset(parser.ids)


def broken_links(site: Path, base_url: str, hrefs: list[str]) -> list[str]:
    """Problems for links (absolute URLs, as the browser resolved them) into the site that
    point at a missing file or at a ``#fragment`` the target page does not define.

    Checked on disk, so a link costs a stat (and one parse per target page), not a page
    load. Links to other hosts are not requests and are not followed.
    """
    problems, seen = [], set()
    origin = urlsplit(base_url)
    for href in hrefs:
        parts = urlsplit(href)
        if href in seen or parts.scheme not in ("http", "https") \
                or parts.netloc != origin.netloc:
            continue
        seen.add(href)
        rel = unquote(parts.path).removeprefix(origin.path or "/")
        target = site / rel
        if rel == "" or rel.endswith("/") or target.is_dir():
            target = target / "index.html"
        if not target.is_file():
            shown = target.relative_to(site) if target.is_relative_to(site) else target
            problems.append(f"broken link {href.removeprefix(base_url)}: no file {shown}")
            continue
        fragment = unquote(parts.fragment)
        if fragment and target.suffix == ".html" \
                and fragment not in _anchors_of(target, target.stat().st_mtime):
            problems.append(f"broken link {href.removeprefix(base_url)}: no id "
                            f"{fragment!r} on {target.relative_to(site)}")
    return problems


# Attributes through which a page makes the browser fetch something (links to read are not).
_FETCHING = {"script": ("src",), "img": ("src", "srcset"), "iframe": ("src",),
             "source": ("src", "srcset"), "video": ("src", "poster"), "audio": ("src",),
             "embed": ("src",), "object": ("data",), "input": ("src",), "track": ("src",)}
_FETCHING_LINKS = {"stylesheet", "icon", "preload", "modulepreload", "prefetch", "manifest",
                   "apple-touch-icon"}


class _Assets(html.parser.HTMLParser):
    """Collect the URLs a page's markup fetches from another host."""

    def __init__(self):
        super().__init__()
        self.remote: list[str] = []

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        names = _FETCHING.get(tag, ())
        if tag == "link" and _FETCHING_LINKS & set((attrs.get("rel") or "").lower().split()):
            names = ("href",)
        for name in names:
            for url in (attrs.get(name) or "").split(","):
                url = url.strip().split(" ")[0]
                if url.startswith("//") or (urlsplit(url).scheme in ("http", "https")
                                            and not is_local(url)):
                    self.remote.append(url)


def external_assets(markup: str) -> list[str]:
    """URLs on other hosts that the markup asks the browser to fetch (scripts, styles,
    images, frames, media), whether or not a visit happens to request them."""
    parser = _Assets()
    parser.feed(markup)
    return list(dict.fromkeys(parser.remote))


# Runs in the page once it has loaded and MathJax (if any) has typeset. Returns what the
# Python side judges: visible texts, broken images, overflowing boxes, link targets.
_PROBE = r"""
async () => {
  await document.fonts.ready;  // web fonts (MathJax's among them) requested and settled
  const imgs = Array.from(document.images);
  imgs.forEach(img => { if (img.loading === 'lazy') img.loading = 'eager'; });
  await Promise.race([
    Promise.all(imgs.filter(img => !img.complete).map(img => new Promise(done => {
      img.addEventListener('load', done); img.addEventListener('error', done); }))),
    new Promise(done => setTimeout(done, 10000))]);
  const brokenImages = imgs.filter(img => !(img.complete && img.naturalWidth > 0))
    .map(img => ({src: img.getAttribute('src') || img.outerHTML.slice(0, 80),
                  url: img.currentSrc || img.src}));

  // Text the reader sees: not code, not scripts, not MathJax's own output, not hidden.
  const skip = 'pre, code, script, style, noscript, textarea, template, mjx-container';
  const texts = [];
  const walker = document.createTreeWalker(document.body, NodeFilter.SHOW_TEXT);
  for (let n = walker.nextNode(); n; n = walker.nextNode()) {
    const el = n.parentElement;
    if (!el || el.closest(skip) || el.getClientRects().length === 0) continue;
    if (n.data.trim()) texts.push(n.data);
  }
  const mathErrors = Array.from(document.querySelectorAll('[data-mjx-error], mjx-merror'))
    .map(e => e.getAttribute('data-mjx-error') || e.textContent.slice(0, 60));

  // Boxes wider than the text column, or than themselves, with no scrolling box between
  // them and the article: their content is clipped or sticks out of the column.
  const column = document.querySelector('article') || document.querySelector('main')
    || document.body;
  const box = column.getBoundingClientRect(), pad = getComputedStyle(column);
  const col = {left: box.left + parseFloat(pad.paddingLeft) + parseFloat(pad.borderLeftWidth),
               right: box.right - parseFloat(pad.paddingRight) - parseFloat(pad.borderRightWidth)};
  col.width = col.right - col.left;  // the column's content box: where text runs
  const scrolls = el => ['auto', 'scroll'].includes(getComputedStyle(el).overflowX);
  const inside = r => r.left >= col.left - 1 && r.right <= col.right + 1;
  const name = el => el.tagName.toLowerCase() + (el.id ? '#' + el.id : '')
    + (el.className && typeof el.className === 'string'
       ? '.' + el.className.trim().split(/\s+/).slice(0, 2).join('.') : '');
  const overflowing = [];
  for (const el of column.querySelectorAll('table, pre, img, mjx-container[display="true"]')) {
    const r = el.getBoundingClientRect();
    if (r.width === 0 && r.height === 0) continue;
    if (el.scrollWidth <= el.clientWidth + 1 && inside(r)) continue;
    let ok = false;
    for (let n = el; n && n !== column; n = n.parentElement) {
      if (scrolls(n)) { ok = inside(n.getBoundingClientRect()); break; }
    }
    if (!ok) overflowing.push(`${name(el)} is ${Math.round(Math.max(r.width, el.scrollWidth))}`
      + ` px wide in a ${Math.round(col.width)} px column, with no scrolling container`
      + ` ("${(el.textContent || el.getAttribute('src') || '').replace(/\s+/g, ' ').trim()
              .slice(0, 40)}")`);
  }
  return {
    texts, brokenImages, mathErrors, overflowing,
    hrefs: Array.from(document.querySelectorAll('a[href]'), a => a.href),
    counts: {math: document.querySelectorAll('mjx-container').length, images: imgs.length,
             tables: column.querySelectorAll('table').length},
  };
}
"""

# Waits until MathJax (if the page loads it) has typeset; says why when it never starts.
_WAIT_MATHJAX = r"""
async (timeoutMs) => {
  const t0 = Date.now();
  while (window.MathJax && !(window.MathJax.startup && window.MathJax.startup.promise)) {
    if (Date.now() - t0 > timeoutMs) return 'MathJax is configured but its script never ran';
    await new Promise(done => setTimeout(done, 50));
  }
  if (!window.MathJax) return 'absent';
  try { await window.MathJax.startup.promise; } catch (e) { return 'MathJax failed: ' + e; }
  return 'typeset';
}
"""


@dataclass
class PageReport:
    """What the check found on one page."""

    page: str
    problems: list[str] = field(default_factory=list)
    seconds: float = 0.0
    counts: dict = field(default_factory=dict)
    screenshot: Path | None = None
    missing: dict = field(default_factory=dict)  # same-site URL -> HTTP status

    def line(self) -> str:
        counts = "  ".join(f"{k} {v}" for k, v in self.counts.items())
        n = len(self.problems)
        verdict = "ok  " if not n else f"FAIL ({n} problem{'s' if n > 1 else ''})"
        return f"[site] {verdict} {self.page}  {self.seconds:.1f} s  {counts}"


_BLOCKED = "request to another host (blocked): "
_REMOTE = "markup fetches from another host: "


def open_page(context, url: str, report: PageReport, mathjax_timeout_s: float = 5.0):
    """Load ``url`` in a new page with other hosts blocked; record requests and errors.

    Returns the page after the load event and MathJax's typesetting. Requests to another
    host, console errors and uncaught exceptions are appended to ``report.problems``;
    same-site files that failed to load (HTTP status >= 400) to ``report.missing``.
    """
    page = context.new_page()
    blocked: list[str] = []
    missing: list[str] = []

    def route(r):
        url = r.request.url
        if is_local(url):
            r.continue_()
            return
        if url not in blocked:
            blocked.append(url)
            report.problems.append(f"{_BLOCKED}{url}")
        r.abort("blockedbyclient")

    def console(msg):
        # A blocked or missing resource is reported once, as a request, not again here.
        where = (msg.location or {}).get("url", "")
        if msg.type == "error" and where not in blocked and where not in missing:
            report.problems.append(f"console error: {msg.text[:200]}")

    def response(resp):
        if resp.status >= 400:
            missing.append(resp.url)
            report.missing[resp.url] = resp.status

    page.route("**/*", route)
    page.on("console", console)
    page.on("pageerror", lambda err: report.problems.append(f"page error: {err}"))
    page.on("response", response)
    try:
        page.goto(url, wait_until="load")
        state = page.evaluate(_WAIT_MATHJAX, int(mathjax_timeout_s * 1000))
    except Exception:
        page.close()
        raise
    if state not in ("absent", "typeset"):
        report.problems.append(state)
    return page


def _add_load_failures(report: PageReport, broken_images: list[dict]) -> None:
    """One problem per image that did not load, one per other same-site file that failed."""
    for img in broken_images:
        status = report.missing.get(img["url"])
        report.problems.append(f"image did not load: {img['src']}"
                               + (f" (HTTP {status})" if status else ""))
    shown = {img["url"] for img in broken_images}
    report.problems.extend(f"failed to load (HTTP {status}): {url}"
                           for url, status in report.missing.items() if url not in shown)


def check_page(context, site: Path, base_url: str, page_name: str,
               screenshots: Path | None = None, mathjax_timeout_s: float = 5.0,
               stamped: bool = False) -> PageReport:
    """Open ``<page_name>.html`` and list every problem the module docstring names;
    ``stamped``: the page must also say what built it (the runner's build stamp)."""
    report = PageReport(page_name)
    t0 = time.perf_counter()
    rel = page_name if page_name.endswith(".html") else f"{page_name}.html"
    if not (site / rel).is_file():
        report.problems.append(f"no page {rel} in {site}; expected every page of _toc.yml "
                               f"to be built")
        return report
    markup = (site / rel).read_text(encoding="utf-8", errors="replace")
    if stamped and 'class="build-stamp"' not in markup:
        report.problems.append("no build stamp (commit, date, scale, device): execute the "
                               "notebook with python -m stir_lib.book.run, then render")
    from playwright.sync_api import Error as BrowserError

    try:
        page = open_page(context, base_url + rel, report, mathjax_timeout_s)
    except BrowserError as err:
        report.problems.append(f"page did not load: {str(err).splitlines()[0]}")
        return report
    try:
        found = page.evaluate(_PROBE)
        report.problems.extend(unrendered_math(found["texts"]))
        report.problems.extend(f"math error: {e}" for e in found["mathErrors"])
        _add_load_failures(report, found["brokenImages"])
        report.problems.extend(f"too wide: {o}" for o in found["overflowing"])
        report.problems.extend(broken_links(site, base_url, found["hrefs"]))
        blocked = {p.removeprefix(_BLOCKED) for p in report.problems if p.startswith(_BLOCKED)}
        report.problems.extend(f"{_REMOTE}{url}" for url in external_assets(markup)
                               if url not in blocked)
        report.counts = {**found["counts"], "links": len(found["hrefs"])}
        if screenshots is not None:
            screenshots.mkdir(parents=True, exist_ok=True)
            report.screenshot = screenshots / (rel.removesuffix(".html").replace("/", "_")
                                               + ".png")
            page.screenshot(path=str(report.screenshot), full_page=True)
    finally:
        page.close()
    report.seconds = time.perf_counter() - t0
    return report


def check_site(site: Path, pages: list[str], screenshots: Path | None = None,
               echo: bool = False, mathjax_timeout_s: float = 5.0,
               stamped: Iterable[str] = ()) -> list[PageReport]:
    """Check ``pages`` (paths below ``site`` without ``.html``) in one browser session;
    the pages in ``stamped`` must carry a build stamp.

    ``mathjax_timeout_s``: how long after the load event a page that configures MathJax
    may take to start it before the page fails (its script was blocked or missing).
    """
    if not pages:
        raise ValueError("expected at least one page to check, got none; pass the pages of "
                         "_toc.yml (see toc_pages)")
    site = Path(site).resolve()
    stamped = set(stamped)
    reports = []
    with serve(site) as base_url, browser() as context:
        for name in pages:
            report = check_page(context, site, base_url, name, screenshots,
                                mathjax_timeout_s, stamped=name in stamped)
            reports.append(report)
            if echo:
                print(report.line(), flush=True)
    # The pages not opened (search, index, ...) are read for remote assets all the same.
    opened = {f"{name.removesuffix('.html')}.html" for name in pages}
    for path in sorted(site.rglob("*.html")):
        rel = path.relative_to(site).as_posix()
        if rel in opened or rel.startswith("_"):  # _static, _sources: not pages
            continue
        remote = external_assets(path.read_text(encoding="utf-8", errors="replace"))
        if remote:
            reports.append(PageReport(rel, [f"{_REMOTE}{url}" for url in remote]))
            if echo:
                print(reports[-1].line(), flush=True)
    return reports


def failures(reports: list[PageReport]) -> str:
    """The problems of every failing page, one per line under its page; '' if none."""
    lines = []
    for r in reports:
        if r.problems:
            lines.append(f"  {r.page}:")
            lines.extend(f"    - {p}" for p in r.problems)
    return "\n".join(lines)


