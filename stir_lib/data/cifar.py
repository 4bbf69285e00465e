"""CIFAR-10 and CIFAR-100 from torchvision's on-disk copies (nothing is downloaded): the
``cifar-10-batches-py`` / ``cifar-100-python`` pickles, read by a numpy-only unpickler and
checked against torchvision's MD5s."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np
import torch

from ..validation import check_choice
from ._sources import _NumpyOnlyUnpickler, data_root

__all__ = ["cifar10", "cifar100", "cifar_classes", "DatasetNotFoundError", "CIFAR_MD5"]

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


