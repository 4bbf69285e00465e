"""MathJax served by the site itself, so that its math renders with no network.

Sphinx loads MathJax from a CDN by default; the book is meant to be read (and checked) on a
machine with no network, so no page may fetch anything from another host. MathJax is
therefore a pinned npm release (``mathjax@3.2.2``), fetched with ``npm pack``, checked
against a SHA-256 pinned here and unpacked once under the virtual environment
(``<venv>/share/mathjax-3.2.2``). :func:`install_mathjax` copies it into the staged book, so
``_config.yml``'s ``mathjax_path`` resolves inside the site.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

from ..paths import sha256_file

__all__ = ["MATHJAX_VERSION", "MATHJAX_SHA256", "MATHJAX_ENTRY", "STATIC_DIR",
           "MATHJAX_STATIC", "mathjax_home", "verify_tarball", "extract_mathjax",
           "fetch_mathjax", "ensure_mathjax", "install_mathjax", "MATHJAX_MEMBERS"]

MATHJAX_VERSION = "3.2.2"
# SHA-256 of the npm tarball mathjax-3.2.2.tgz (its registry integrity, sha512-Bt+SSVU8...,
# was checked when this pin was written).
MATHJAX_SHA256 = "1b9c0a1c44df864e915690558e72adb9cc5203360daefd385084ced3b6c64c09"
# The one combined component the book loads: TeX input with every TeX extension built in
# (so nothing is autoloaded from elsewhere), CommonHTML output. Its web fonts are the only
# other files it fetches, relative to its own location.
MATHJAX_ENTRY = "tex-chtml-full.js"
MATHJAX_MEMBERS = ("package/LICENSE", f"package/es5/{MATHJAX_ENTRY}",
                   "package/es5/output/chtml/fonts/woff-v2/")
# Where the staged book holds its static files (_config.yml's html_static_path) and where
# MathJax goes inside them (_config.yml's mathjax_path is relative to _static).
STATIC_DIR = "book/_static"
MATHJAX_STATIC = "mathjax"
_MARKER = ".sha256"  # written last: an install without it is partial


def mathjax_home() -> Path:
    """The unpacked MathJax under the running environment (the venv): ``share/mathjax-X``."""
    return Path(sys.prefix) / "share" / f"mathjax-{MATHJAX_VERSION}"


def verify_tarball(tarball: Path, sha256: str = MATHJAX_SHA256) -> None:
    """Raise ValueError unless ``tarball``'s SHA-256 is the pinned one."""
    got = sha256_file(tarball)
    if got != sha256:
        raise ValueError(f"{tarball.name}: expected SHA-256 {sha256}, got {got}; the download "
                         f"is corrupt or not mathjax@{MATHJAX_VERSION}, so it was not used: "
                         f"run `make setup` again, and if the digest stays wrong, check which "
                         f"npm registry is configured (npm config get registry)")


def _wanted(name: str) -> bool:
    return any(name == m or (m.endswith("/") and name.startswith(m)) for m in MATHJAX_MEMBERS)


def extract_mathjax(tarball: Path, dest: Path, sha256: str = MATHJAX_SHA256) -> Path:
    """Verify ``tarball``, then unpack the files the book needs into ``dest`` (replaced).

    Only regular files under :data:`MATHJAX_MEMBERS` are taken, with the ``package/es5/``
    prefix dropped, so ``dest`` has MathJax's own layout (the entry script beside
    ``output/``). The files go to a private sibling folder renamed into place at the end,
    so a failure (or another process installing at the same time) never leaves a
    half-installed ``dest``.
    """
    verify_tarball(tarball, sha256)
    dest.parent.mkdir(parents=True, exist_ok=True)
    partial = Path(tempfile.mkdtemp(prefix=f".{dest.name}.partial-", dir=dest.parent))
    try:
        with tarfile.open(tarball, "r:gz") as tar:
            for member in tar.getmembers():
                if not (member.isfile() and _wanted(member.name)):
                    continue
                rel = member.name.removeprefix("package/es5/").removeprefix("package/")
                if ".." in Path(rel).parts:
                    raise ValueError(f"{tarball.name}: expected paths inside the package, got "
                                     f"{member.name!r}; the tarball is not a MathJax release")
                target = partial / rel
                target.parent.mkdir(parents=True, exist_ok=True)
                with tar.extractfile(member) as src, open(target, "wb") as out:
                    shutil.copyfileobj(src, out)
        if not (partial / MATHJAX_ENTRY).is_file():
            raise ValueError(f"{tarball.name}: expected package/es5/{MATHJAX_ENTRY}, got a "
                             f"tarball without it; it is not a MathJax 3 release")
        (partial / _MARKER).write_text(sha256 + "\n")
        marker = dest / _MARKER
        if marker.is_file() and marker.read_text().strip() == sha256:
            return dest  # the same release is in place already (another process won)
        shutil.rmtree(dest, ignore_errors=True)
        os.replace(partial, dest)
    finally:
        shutil.rmtree(partial, ignore_errors=True)
    return dest


def fetch_mathjax(dest: Path | None = None) -> Path:
    """``npm pack mathjax@X`` into a temporary folder, verify it and unpack it to ``dest``."""
    dest = dest or mathjax_home()
    npm = shutil.which("npm")
    if npm is None:
        raise FileNotFoundError(f"expected npm to fetch mathjax@{MATHJAX_VERSION}, got none on "
                                f"PATH; install Node.js and npm (Debian: apt-get install npm)")
    with tempfile.TemporaryDirectory(prefix="mathjax-") as tmp:
        proc = subprocess.run([npm, "pack", f"mathjax@{MATHJAX_VERSION}", "--silent",
                               "--pack-destination", tmp], capture_output=True, text=True)
        tarball = Path(tmp) / f"mathjax-{MATHJAX_VERSION}.tgz"
        if proc.returncode or not tarball.is_file():
            raise RuntimeError(f"npm pack mathjax@{MATHJAX_VERSION}: expected {tarball.name}, "
                               f"got exit {proc.returncode}: {proc.stderr.strip()[-500:]}; "
                               f"check that the npm registry is reachable")
        return extract_mathjax(tarball, dest)


def ensure_mathjax(home: Path | None = None) -> Path:
    """The unpacked pinned MathJax, fetched first if it is missing or partial."""
    home = home or mathjax_home()
    marker = home / _MARKER
    if marker.is_file() and marker.read_text().strip() == MATHJAX_SHA256:
        return home
    print(f"[site] fetching mathjax@{MATHJAX_VERSION} into {home}", flush=True)
    return fetch_mathjax(home)


def install_mathjax(stage: Path) -> Path:
    """Copy the pinned MathJax into the staged book's static files; return that folder."""
    target = stage / STATIC_DIR / MATHJAX_STATIC
    shutil.rmtree(target, ignore_errors=True)
    shutil.copytree(ensure_mathjax(), target, ignore=shutil.ignore_patterns(_MARKER))
    return target

