"""Tests for stir_lib.book (check, mathjax, site): the browser check on a tiny hand-written site (one good page,
one page broken on purpose per problem the check must name), the link and math rules on
their own, the pinned MathJax's digest check, and that _config.yml points where the
module installs MathJax.

The browser tests need Debian's chromium (``make setup`` installs it) and are skipped
without it; the synthetic site is checked once per module, in one browser session.
"""

from __future__ import annotations

import io
import struct
import tarfile
import zlib
from pathlib import Path

import pytest
import yaml

from stir_lib import paths
from stir_lib.book import check, mathjax, site
from stir_lib.paths import toc_notebooks

ROOT = Path(__file__).resolve().parents[1]
needs_chromium = pytest.mark.skipif(not check.CHROMIUM.exists(),
                                    reason=f"no {check.CHROMIUM}; run make setup")

WIDE_CELL = "a-long-unbreakable-cell-" * 12


def _png(width: int = 4, height: int = 3) -> bytes:
    """A valid grey PNG, written by hand so the test needs no imaging library."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return (struct.pack(">I", len(data)) + kind + data
                + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))
    rows = b"".join(b"\x00" + b"\x80" * width for _ in range(height))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height,
                                                             8, 0, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b""))


def _page(body: str, head: str = "") -> str:
    return (f"<!DOCTYPE html><html><head><meta charset='utf-8'>{head}</head><body>"
            f"<article style='width: 600px'>{body}</article></body></html>")


# One page per verdict: "good" must pass, every other page must fail naming its problem.
PAGES = {
    "good": _page(f"""
        <h1 id="top">Good</h1>
        <p>Plain text, a price of 5 $ and code with delimiters: <code>re.compile(r"\\(")</code></p>
        <img src="pic.png" alt="a picture">
        <p><a href="sub/other.html#section">a page and an anchor</a>, <a href="#top">this page</a>,
           <a href="sub/">a folder</a>, <a href="https://doi.org/10.0/x">a paper</a>,
           <a href="mailto:someone@example.org">mail</a></p>
        <div style="overflow-x: auto"><table><tr><td style="white-space: nowrap">{WIDE_CELL}
        </td></tr></table></div>
        <table style="display: block; overflow-x: auto"><tr><td style="white-space: nowrap">
        {WIDE_CELL}</td></tr></table>
        <pre style="overflow-x: auto">{WIDE_CELL}</pre>
        <script>console.log("a log line is not an error");</script>"""),
    "raw_math": _page("<p>The value \\(x^2\\) was never typeset.</p>"),
    "raw_display_math": _page("<p>$$ y = f(x) $$</p>"),
    "missing_image": _page('<img src="nowhere.png" alt="gone">'),
    "console_error": _page('<script>console.error("boom from the page");</script>'),
    "page_error": _page("<script>notAFunction();</script>"),
    "other_host": _page('<img src="http://example.com/a.png" alt="remote">'),
    "wide_table": _page(f"<table><tr><td style='white-space: nowrap'>{WIDE_CELL}</td></tr>"
                        f"</table>"),
    "wide_pre": _page(f"<pre style='overflow: visible'>{WIDE_CELL}</pre>"),
    "clipped_table": _page(f"<div style='overflow: hidden'><table><tr><td "
                           f"style='white-space: nowrap'>{WIDE_CELL}</td></tr></table></div>"),
    "broken_link": _page('<a href="sub/missing.html">gone</a>'),
    "broken_fragment": _page('<a href="sub/other.html#nowhere">no such anchor</a>'),
    "broken_self_fragment": _page('<h1 id="here">x</h1><a href="#not-here">no anchor</a>'),
    # Markup that would fetch from another host, though this visit does not.
    "remote_in_markup": _page('<template><img src="http://example.com/t.png"></template>'),
    # What the book did before: MathJax configured, its script on a CDN.
    "cdn_mathjax": _page("<p>\\(x\\)</p>", head=(
        "<script>window.MathJax = {}</script><script defer "
        "src='https://cdn.jsdelivr.net/npm/mathjax@3/es5/tex-mml-chtml.js'></script>")),
}
EXPECTED = {
    "raw_math": "unrendered math \\( in: ...The value \\(x^2\\) was never typeset",
    "raw_display_math": "unrendered math $$ in: ...$$ y = f(x) $$",
    "missing_image": "image did not load: nowhere.png",
    "console_error": "console error: boom from the page",
    "page_error": "page error: notAFunction is not defined",
    "other_host": "request to another host (blocked): http://example.com/a.png",
    "wide_table": "too wide: table",
    "wide_pre": "too wide: pre",
    "clipped_table": "too wide: table",
    "broken_link": "broken link sub/missing.html: no file sub/missing.html",
    "broken_fragment": "broken link sub/other.html#nowhere: no id 'nowhere' on sub/other.html",
    "broken_self_fragment": "no id 'not-here' on broken_self_fragment.html",
    "cdn_mathjax": "request to another host (blocked): https://cdn.jsdelivr.net/npm/mathjax@3",
    "remote_in_markup": "markup fetches from another host: http://example.com/t.png",
}
# Pages whose one fault shows as more than one problem, and the others it shows as.
ALSO = {
    "other_host": ["image did not load: http://example.com/a.png"],
    "cdn_mathjax": ["MathJax is configured but its script never ran", "unrendered math \\("],
}


def _write_site(folder: Path, with_mathjax: bool = False) -> list[str]:
    (folder / "sub").mkdir(parents=True)
    (folder / "pic.png").write_bytes(_png())
    (folder / "sub" / "other.html").write_text(_page('<h2 id="section">Section</h2>'))
    (folder / "sub" / "index.html").write_text(_page("<p>index</p>"))
    (folder / "unopened.html").write_text(_page("<p>not in the list</p>", head=(
        '<link rel="stylesheet" href="https://cdn.example.org/s.css">')))
    names = []
    for name, html in PAGES.items():
        (folder / f"{name}.html").write_text(html)
        names.append(name)
    if with_mathjax:
        mathjax.install_mathjax(folder)  # -> folder/book/_static/mathjax
        src = f"{mathjax.STATIC_DIR}/{mathjax.MATHJAX_STATIC}/{mathjax.MATHJAX_ENTRY}"
        (folder / "math.html").write_text(_page(
            '<p>Inline \\(x^2 + y^2\\) and display</p><p>\\[ \\sum_i a_i \\]</p>',
            head=f'<script defer src="{src}"></script>'))
        names.append("math")
    return names


@pytest.fixture(scope="module")
def reports(tmp_path_factory):
    folder = tmp_path_factory.mktemp("site")
    home = mathjax.mathjax_home()
    with_mathjax = (home / mathjax._MARKER).is_file()
    names = _write_site(folder, with_mathjax)
    shots = folder.parent / "shots"
    return {r.page: r for r in check.check_site(folder, names, screenshots=shots,
                                               mathjax_timeout_s=1.0)}


@needs_chromium
def test_good_page_passes_and_is_screenshotted(reports):
    good = reports["good"]
    assert good.problems == []
    assert good.counts["images"] == 1 and good.counts["tables"] == 2
    assert good.screenshot.is_file() and good.screenshot.read_bytes()[:4] == b"\x89PNG"


@needs_chromium
@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_broken_page_fails_naming_the_problem(reports, name):
    problems = reports[name].problems
    assert any(EXPECTED[name] in p for p in problems), problems


@needs_chromium
def test_each_broken_page_has_only_its_own_problems(reports):
    for name in EXPECTED:
        problems = reports[name].problems
        assert len(problems) == 1 + len(ALSO.get(name, [])), (name, problems)
        for also in ALSO.get(name, []):
            assert any(also in p for p in problems), (name, problems)


@needs_chromium
def test_pages_not_opened_are_still_read_for_remote_assets(reports):
    assert reports["unopened.html"].problems == [
        "markup fetches from another host: https://cdn.example.org/s.css"]
    assert "sub/other.html" not in reports  # nothing remote: no report


@needs_chromium
def test_mathjax_from_the_site_typesets(reports):
    if "math" not in reports:
        pytest.skip("MathJax is not installed in this environment; run make setup")
    assert reports["math"].problems == []
    assert reports["math"].counts["math"] == 2


@needs_chromium
def test_a_missing_page_is_a_problem_not_a_crash(tmp_path):
    (tmp_path / "a.html").write_text(_page("<p>a</p>"))
    reports = check.check_site(tmp_path, ["a", "book/absent"])
    assert reports[0].problems == []
    assert "no page book/absent.html" in reports[1].problems[0]


@needs_chromium
def test_a_chapter_page_without_its_build_stamp_fails(tmp_path):
    stamp = '<div class="build-stamp">Built from commit <code>abc</code> on today</div>'
    (tmp_path / "stamped.html").write_text(_page(f"<h1>A</h1>{stamp}<p>a</p>"))
    (tmp_path / "bare.html").write_text(_page("<h1>B</h1><p>b</p>"))
    reports = check.check_site(tmp_path, ["stamped", "bare"], stamped=["stamped", "bare"])
    assert reports[0].problems == []
    assert reports[1].problems and "no build stamp" in reports[1].problems[0]
    # a page not required to carry one (the front page) passes without it
    assert check.check_site(tmp_path, ["bare"])[0].problems == []


# ----------------------------------------------------------------------- without a browser


def test_external_assets_are_fetches_not_links():
    markup = """
        <a href="https://doi.org/10.0/x">paper</a>
        <link rel="canonical" href="https://example.org/page.html">
        <link rel="stylesheet" href="https://cdn.example.org/a.css">
        <script src="//cdn.example.org/b.js"></script><script src="_static/c.js"></script>
        <img src="d.png" srcset="e.png 1x, https://img.example.org/f.png 2x">
        <iframe src="http://127.0.0.1:8000/local.html"></iframe>"""
    assert check.external_assets(markup) == ["https://cdn.example.org/a.css",
                                            "//cdn.example.org/b.js",
                                            "https://img.example.org/f.png"]


def test_unrendered_math_ignores_single_dollars():
    assert check.unrendered_math(["costs 5 $ or 6 $", "typeset"]) == []
    found = check.unrendered_math(["before \\[ x \\] after", "and \\(y\\)"])
    assert len(found) == 2 and found[0].startswith("unrendered math \\[ in: ...before")


def test_broken_links_on_disk(tmp_path):
    (tmp_path / "a.html").write_text('<h1 id="top">a</h1><a name="old">x</a>')
    base = "http://127.0.0.1:1/"
    ok = [base + "a.html", base + "a.html#top", base + "a.html#old", base + "a.html#",
          "https://example.org/a.html#nothing", "mailto:x@example.org"]
    assert check.broken_links(tmp_path, base, ok) == []
    bad = check.broken_links(tmp_path, base, [base + "b.html", base + "a.html#none"])
    assert bad == ["broken link b.html: no file b.html",
                   "broken link a.html#none: no id 'none' on a.html"]


def test_toc_pages_are_the_books_pages_in_order():
    pages = paths.toc_pages(ROOT)
    assert pages[0] == yaml.safe_load((ROOT / "_toc.yml").read_text())["root"]
    assert [p.split("/", 1)[1] for p in pages if p.startswith("notebooks/")] \
        == toc_notebooks(ROOT)
    assert all((ROOT / f"{p}.md").is_file() for p in pages if p.startswith("book/"))


def test_config_loads_mathjax_and_css_from_where_the_site_puts_them():
    config = yaml.safe_load((ROOT / "_config.yml").read_text())["sphinx"]["config"]
    assert config["mathjax_path"] == f"{mathjax.MATHJAX_STATIC}/{mathjax.MATHJAX_ENTRY}"
    assert config["html_static_path"] == [mathjax.STATIC_DIR]
    for css in config["html_css_files"]:
        assert (ROOT / mathjax.STATIC_DIR / css).is_file()
    assert "sphinx_thebe" not in config["extensions"]


def _fake_mathjax(path: Path, entry: bytes = b"/* mathjax */") -> str:
    """A tarball laid out like the npm package (plus a file the book does not need)."""
    files = {f"package/es5/{mathjax.MATHJAX_ENTRY}": entry,
             "package/es5/output/chtml/fonts/woff-v2/MathJax_Main-Regular.woff": b"font",
             "package/es5/mml-svg.js": b"not needed",
             "package/LICENSE": b"Apache-2.0"}
    with tarfile.open(path, "w:gz") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return paths.sha256_file(path)


def test_mathjax_extract_takes_only_what_the_book_loads(tmp_path):
    tarball = tmp_path / "mathjax.tgz"
    digest = _fake_mathjax(tarball)
    dest = mathjax.extract_mathjax(tarball, tmp_path / "mj", sha256=digest)
    got = sorted(str(p.relative_to(dest)) for p in dest.rglob("*") if p.is_file())
    assert got == [mathjax._MARKER, "LICENSE", "output/chtml/fonts/woff-v2/MathJax_Main-Regular.woff",
                   mathjax.MATHJAX_ENTRY]
    assert (dest / mathjax._MARKER).read_text().strip() == digest
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mathjax.tgz", "mj"]  # no leftovers


def test_ensure_mathjax_fetches_only_when_the_install_is_not_the_pinned_one(tmp_path,
                                                                           monkeypatch):
    fetched = []
    monkeypatch.setattr(mathjax, "fetch_mathjax", lambda dest: fetched.append(dest) or dest)
    home = tmp_path / "mj"
    home.mkdir()
    assert mathjax.ensure_mathjax(home) == home and fetched == [home]  # no marker: partial
    (home / mathjax._MARKER).write_text("0" * 64 + "\n")
    mathjax.ensure_mathjax(home)
    assert fetched == [home, home]  # another release's marker
    (home / mathjax._MARKER).write_text(mathjax.MATHJAX_SHA256 + "\n")
    assert mathjax.ensure_mathjax(home) == home and len(fetched) == 2


def test_mathjax_with_the_wrong_digest_is_refused_and_not_used(tmp_path):
    good = tmp_path / "good.tgz"
    dest = mathjax.extract_mathjax(good, tmp_path / "mj", sha256=_fake_mathjax(good))
    before = (dest / mathjax.MATHJAX_ENTRY).read_bytes()
    corrupt = tmp_path / "corrupt.tgz"
    _fake_mathjax(corrupt, entry=b"/* tampered */")
    with pytest.raises(ValueError, match=r"expected SHA-256 .* got .*; the download is "
                                         r"corrupt"):
        mathjax.extract_mathjax(corrupt, dest, sha256=paths.sha256_file(good))
    assert (dest / mathjax.MATHJAX_ENTRY).read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["corrupt.tgz", "good.tgz", "mj"]
    with pytest.raises(ValueError, match="expected SHA-256 " + mathjax.MATHJAX_SHA256):
        mathjax.verify_tarball(corrupt)


def test_installed_mathjax_is_the_pinned_release():
    home = mathjax.mathjax_home()
    if not (home / mathjax._MARKER).is_file():
        pytest.skip("MathJax is not installed in this environment; run make setup")
    assert (home / mathjax._MARKER).read_text().strip() == mathjax.MATHJAX_SHA256
    assert (home / mathjax.MATHJAX_ENTRY).stat().st_size > 1_000_000
    assert list((home / "output" / "chtml" / "fonts" / "woff-v2").glob("*.woff"))


@needs_chromium
def test_cli_checks_the_pages_of_the_toc_and_exits_1_naming_the_problem(tmp_path, capsys):
    pages = paths.toc_pages(ROOT)
    stamp = '<div class="build-stamp">Built from commit <code>abc</code></div>'
    for name in pages:   # the chapters' pages carry the runner's build stamp
        (tmp_path / f"{name}.html").parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / f"{name}.html").write_text(_page(
            f"<h1>{name}</h1>" + (stamp if name.startswith("notebooks/") else "")))
    shots = tmp_path / "shots"
    site.main(["check", "--site", str(tmp_path), "--screenshots", str(shots)])
    assert f"{len(pages)} pages ok" in capsys.readouterr().out
    assert len(list(shots.glob("*.png"))) == len(pages)
    (tmp_path / f"{pages[-1]}.html").write_text(PAGES["raw_math"])
    with pytest.raises(SystemExit) as failed:
        site.main(["check", "--site", str(tmp_path), "--screenshots", str(shots)])
    assert f"check FAILED on 1 of {len(pages)} page(s)" in str(failed.value)
    assert f"{pages[-1]}:\n    - unrendered math \\(" in str(failed.value)
    (tmp_path / f"{pages[-1]}.html").write_text(_page("<h1>fixed</h1>"))
    (tmp_path / "notebooks" / "transfer.html").write_text(_page("<h1>no stamp</h1>"))
    with pytest.raises(SystemExit) as failed:   # a chapter page without its stamp fails
        site.main(["check", "--site", str(tmp_path), "--screenshots", str(shots)])
    assert "notebooks/transfer:\n    - no build stamp" in str(failed.value)
