"""Tests for the paper-scale loaders in stir_lib.data: CIFAR-10/100, image folders, downscale.

The CIFAR files are tiny fakes written the way the originals were: Python 2 pickles
(protocol 2) of dicts with byte-string keys and a uint8 numpy array, so they reference
the same three numpy globals and nothing else. Pixel positions are checked against the
layout CIFAR documents (red plane, green plane, blue plane; each row-major), not against
the loader's own reshape.
"""

from __future__ import annotations

import hashlib
import io
import os
import pickle
import pickletools
import struct
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from stir_lib import data
from stir_lib.data import (DatasetNotFoundError, cifar10, cifar100, cifar_classes, downscale,
                           image_folder)

N = 4  # rows per fake batch
CIFAR10_NAMES = ["airplane", "automobile", "bird", "cat", "deer",
                 "dog", "frog", "horse", "ship", "truck"]
NUMPY_GLOBALS = {"numpy.core.multiarray _reconstruct", "numpy ndarray", "numpy dtype"}


# ------------------------------------------------------------------ writing fake CIFAR
class Py2Pickler(pickle._Pickler):
    """Writes what Python 2's cPickle wrote: str/bytes as byte strings, numpy's old module name.

    Python 3 at protocol 2 would wrap every bytes object in ``_codecs.encode``, which the
    original CIFAR files never reference.
    """

    dispatch = dict(pickle._Pickler.dispatch)

    def save_py2_str(self, obj):
        raw = obj.encode("latin-1") if isinstance(obj, str) else obj
        if len(raw) < 256:
            self.write(pickle.SHORT_BINSTRING + bytes([len(raw)]) + raw)
        else:
            self.write(pickle.BINSTRING + struct.pack("<i", len(raw)) + raw)
        self.memoize(obj)

    dispatch[bytes] = save_py2_str
    dispatch[str] = save_py2_str

    def save_global(self, obj, name=None):
        module, name = obj.__module__, name or obj.__qualname__
        module = {"numpy._core.multiarray": "numpy.core.multiarray"}.get(module, module)
        self.write(pickle.GLOBAL + f"{module}\n{name}\n".encode())
        self.memoize(obj)


def py2_pickle(obj) -> bytes:
    buf = io.BytesIO()
    Py2Pickler(buf, protocol=2).dump(obj)
    return buf.getvalue()


def batch_rows(batch: int, n: int = N) -> np.ndarray:
    """(n, 3072) uint8 rows; the last entry (blue, h=31, w=31) says which batch and row."""
    rng = np.random.default_rng(batch)
    rows = rng.integers(0, 256, size=(n, 3072), dtype=np.uint8)
    rows[:, 3071] = 10 * batch + np.arange(n)
    return rows


def batch_labels(batch: int, num_classes: int, n: int = N) -> list[int]:
    return [(7 * batch + 3 * i) % num_classes for i in range(n)]


def write_cifar10(root: Path, rows=None) -> Path:
    """Fake cifar-10-batches-py: batches 1..5 and the test batch (batch number 6)."""
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    for b, name in enumerate([f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"], 1):
        entry = {b"batch_label": f"batch {b}".encode(), b"labels": batch_labels(b, 10),
                 b"data": batch_rows(b) if rows is None else rows,
                 b"filenames": [f"img_{b}_{i}.png".encode() for i in range(N)]}
        (folder / name).write_bytes(py2_pickle(entry))
    meta = {b"label_names": [n.encode() for n in CIFAR10_NAMES], b"num_cases_per_batch": N,
            b"num_vis": 3072}
    (folder / "batches.meta").write_bytes(py2_pickle(meta))
    return folder


def write_cifar100(root: Path) -> Path:
    folder = root / "cifar-100-python"
    folder.mkdir(parents=True)
    for b, name in ((1, "train"), (2, "test")):
        entry = {b"batch_label": name.encode(), b"data": batch_rows(b),
                 b"fine_labels": batch_labels(b, 100), b"coarse_labels": batch_labels(b, 20),
                 b"filenames": [b"x.png"] * N}
        (folder / name).write_bytes(py2_pickle(entry))
    meta = {b"fine_label_names": [f"fine{i}".encode() for i in range(100)],
            b"coarse_label_names": [f"coarse{i}".encode() for i in range(20)]}
    (folder / "meta").write_bytes(py2_pickle(meta))
    return folder


def rewrite_batch(folder: Path, name: str, **changes) -> None:
    """Replace entries of one batch (keys as str)."""
    entry = {b"data": batch_rows(1), b"labels": batch_labels(1, 10)}
    entry.update({k.encode(): v for k, v in changes.items()})
    entry = {k: v for k, v in entry.items() if v is not None}
    (folder / name).write_bytes(py2_pickle(entry))


def test_fake_pickles_reference_only_numpy_globals_like_the_originals(tmp_path):
    folder = write_cifar10(tmp_path)
    blob = (folder / "data_batch_1").read_bytes()
    ops = [(op.name, arg) for op, arg, _ in pickletools.genops(blob)]
    assert ops[0] == ("PROTO", 2)
    assert {arg for name, arg in ops if "GLOBAL" in name} == NUMPY_GLOBALS
    assert not any("UNICODE" in name for name, _ in ops)  # Python 2 wrote byte strings


# ------------------------------------------------------------------ CIFAR-10
@pytest.mark.parametrize("split, batches", [("train", [1, 2, 3, 4, 5]), ("test", [6])])
def test_cifar10_shapes_dtype_range_and_batch_order(tmp_path, split, batches):
    write_cifar10(tmp_path)
    x, y = cifar10(split, tmp_path, verify=False)
    assert x.shape == (N * len(batches), 3, 32, 32) and x.dtype == torch.float32
    assert y.shape == (N * len(batches),) and y.dtype == torch.int64
    assert x.is_contiguous() and 0 <= float(x.min()) and float(x.max()) <= 1
    # the marker pixel and the labels say which batch and row each image came from
    marker = torch.round(x[:, 2, 31, 31] * 255).long().tolist()
    assert marker == [10 * b + i for b in batches for i in range(N)]
    assert y.tolist() == [lab for b in batches for lab in batch_labels(b, 10)]


def test_cifar10_pixels_are_bytes_over_255(tmp_path):
    write_cifar10(tmp_path)
    x, _ = cifar10("test", tmp_path, verify=False)
    rows = batch_rows(6)
    assert torch.equal(torch.round(x * 255).to(torch.uint8).flatten(1), torch.from_numpy(rows))
    assert torch.equal(x.flatten(1), torch.from_numpy(rows.astype(np.float32) / np.float32(255)))


def test_cifar10_channel_planes_and_row_major_order(tmp_path):
    rows = np.zeros((N, 3072), dtype=np.uint8)
    rows[0, :1024] = 255                    # image 0: red plane full, others 0
    rows[1, 1024:2048] = 255                # image 1: green plane full
    rows[2, :32] = np.arange(32) * 8        # image 2: first 32 entries = red, top image row
    rows[3, 2048 + 5 * 32 + 7] = 200        # image 3: one blue pixel at h=5, w=7
    write_cifar10(tmp_path, rows=rows)
    x, _ = cifar10("test", tmp_path, verify=False)
    assert torch.all(x[0, 0] == 1) and torch.all(x[0, 1:] == 0)
    assert torch.all(x[1, 1] == 1) and torch.all(x[1, [0, 2]] == 0)
    assert torch.equal(torch.round(x[2, 0, 0] * 255), torch.arange(32.0) * 8)
    assert x[2].count_nonzero() == 31
    assert torch.nonzero(x[3]).tolist() == [[2, 5, 7]] and x[3, 2, 5, 7] == np.float32(200 / 255)


def test_cifar10_classes(tmp_path):
    write_cifar10(tmp_path)
    assert cifar_classes("cifar10", tmp_path, verify=False) == CIFAR10_NAMES


def test_cifar10_default_root_is_stir_data(tmp_path, monkeypatch):
    write_cifar10(tmp_path)
    monkeypatch.setenv("STIR_DATA", str(tmp_path))
    x, _ = cifar10("test", verify=False)
    assert x.shape == (N, 3, 32, 32)


# ------------------------------------------------------------------ CIFAR-100
@pytest.mark.parametrize("split, batch", [("train", 1), ("test", 2)])
@pytest.mark.parametrize("label, num_classes", [("fine", 100), ("coarse", 20)])
def test_cifar100_splits_and_label_sets(tmp_path, split, batch, label, num_classes):
    write_cifar100(tmp_path)
    x, y = cifar100(split, tmp_path, label=label, verify=False)
    assert x.shape == (N, 3, 32, 32) and x.dtype == torch.float32 and y.dtype == torch.int64
    assert torch.equal(torch.round(x * 255).to(torch.uint8).flatten(1),
                       torch.from_numpy(batch_rows(batch)))
    assert y.tolist() == batch_labels(batch, num_classes)
    names = cifar_classes("cifar100", tmp_path, label=label, verify=False)
    assert names == [f"{label}{i}" for i in range(num_classes)]


def test_cifar100_bad_arguments(tmp_path):
    write_cifar100(tmp_path)
    with pytest.raises(ValueError, match="label"):
        cifar100("train", tmp_path, label="superclass", verify=False)
    with pytest.raises(ValueError, match="split"):
        cifar100("validation", tmp_path, verify=False)
    with pytest.raises(ValueError, match="label"):
        cifar_classes("cifar10", tmp_path, label="coarse")  # CIFAR-10 has one label set
    with pytest.raises(ValueError, match="name"):
        cifar_classes("cifar1000", tmp_path)


# ------------------------------------------------------------------ checksums
def test_verify_rejects_files_that_are_not_the_originals(tmp_path):
    folder = write_cifar10(tmp_path)
    want = "c99cafc152244af753f735de768cd75f"  # data_batch_1, as torchvision lists it
    with pytest.raises(ValueError, match=rf"MD5 {want}.*verify=False") as err:
        cifar10("train", tmp_path)
    assert str(folder / "data_batch_1") in str(err.value)
    with pytest.raises(ValueError, match="MD5"):
        cifar_classes("cifar10", tmp_path)


def test_verify_accepts_files_with_the_listed_md5(tmp_path, monkeypatch):
    folder = write_cifar10(tmp_path)
    for f in folder.iterdir():
        monkeypatch.setitem(data.cifar.CIFAR_MD5, f"cifar-10-batches-py/{f.name}",
                            hashlib.md5(f.read_bytes()).hexdigest())
    x, _ = cifar10("train", tmp_path)
    assert x.shape == (5 * N, 3, 32, 32)
    assert cifar_classes("cifar10", tmp_path) == CIFAR10_NAMES


# ------------------------------------------------------------------ safety and errors
class RunsShell:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


class CallsNumpyLoad:
    def __reduce__(self):
        return np.load, ("/nonexistent.npy",)


@pytest.mark.parametrize("make, refused", [
    (lambda m: py2_pickle({b"data": RunsShell(m), b"labels": [0]}), "posix.system"),
    (lambda m: pickle.dumps({"data": RunsShell(m), "labels": [0]}, protocol=2), "posix.system"),
    (lambda m: py2_pickle({b"data": CallsNumpyLoad(), b"labels": [0]}), "numpy.load"),
    # Python 3's protocol 2 wraps bytes in _codecs.encode: not an original CIFAR file
    (lambda m: pickle.dumps({b"data": batch_rows(1), b"labels": [0] * N}, protocol=2),
     "_codecs.encode"),
], ids=["os.system", "os.system-py3", "numpy.load", "_codecs.encode"])
def test_pickle_with_a_forbidden_global_is_refused(tmp_path, make, refused):
    folder = write_cifar10(tmp_path)
    marker = tmp_path / "ran"
    (folder / "test_batch").write_bytes(make(marker))
    with pytest.raises(ValueError, match=f"refusing to load {refused}") as err:
        cifar10("test", tmp_path, verify=False)
    assert str(folder / "test_batch") in str(err.value)
    assert not marker.exists()


def test_missing_folder_names_the_path_and_how_to_get_it(tmp_path):
    with pytest.raises(DatasetNotFoundError) as err:
        cifar10("train", tmp_path, verify=False)
    msg = str(err.value)
    assert isinstance(err.value, FileNotFoundError)
    assert str(tmp_path / "cifar-10-batches-py") in msg
    assert "torchvision.datasets.CIFAR10(root, download=True)" in msg and "$STIR_DATA" in msg
    with pytest.raises(DatasetNotFoundError, match=r"cifar-100-python.*CIFAR100\(root"):
        cifar100("test", tmp_path, verify=False)


def test_missing_file_names_the_file(tmp_path):
    folder = write_cifar10(tmp_path)
    (folder / "data_batch_3").unlink()
    cifar10("test", tmp_path, verify=False)  # the test split does not need it
    with pytest.raises(DatasetNotFoundError, match=str(folder / "data_batch_3")):
        cifar10("train", tmp_path, verify=False)
    (folder / "batches.meta").unlink()
    with pytest.raises(DatasetNotFoundError, match="batches.meta"):
        cifar_classes("cifar10", tmp_path, verify=False)


@pytest.mark.parametrize("changes, pattern", [
    ({"data": np.zeros((N, 3000), np.uint8)}, r"\(N, 3072\).*uint8 array of shape \(4, 3000\)"),
    ({"data": np.zeros((N, 3072), np.float32)}, r"uint8.*float32"),
    ({"data": [[0] * 3072] * N}, r"uint8 array.*got a list"),
    ({"labels": None, "fine_labels": [0] * N}, r"keys b'data' and b'labels'.*fine_labels"),
    ({"labels": [0] * (N - 1)}, r"4 integer labels.*shape \(3,\)"),
    ({"labels": [0, 1, 2, 10]}, r"\[0, 10\).*\[0, 10\]"),
    ({"labels": [0, 1, 2, -1]}, r"\[0, 10\).*\[-1, 2\]"),
])
def test_wrong_structure_is_a_value_error_saying_what_was_found(tmp_path, changes, pattern):
    folder = write_cifar10(tmp_path)
    rewrite_batch(folder, "test_batch", **changes)
    with pytest.raises(ValueError, match=pattern):
        cifar10("test", tmp_path, verify=False)


def test_truncated_or_non_dict_pickles_are_value_errors(tmp_path):
    folder = write_cifar10(tmp_path)
    blob = (folder / "test_batch").read_bytes()
    (folder / "test_batch").write_bytes(blob[: len(blob) // 2])
    with pytest.raises(ValueError, match="could not read it"):
        cifar10("test", tmp_path, verify=False)
    (folder / "test_batch").write_bytes(py2_pickle([1, 2, 3]))
    with pytest.raises(ValueError, match="expected a pickled dict, got list"):
        cifar10("test", tmp_path, verify=False)


# ------------------------------------------------------------------ image folders
def save(path: Path, array: np.ndarray) -> None:
    """Write a PNG: (h, w) uint8 is grey, (h, w, 3) RGB, (h, w, 4) RGBA."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)


def solid(value, h: int = 6, w: int = 5) -> np.ndarray:
    return np.full((h, w, 3), value, dtype=np.uint8)


def test_image_folder_labels_follow_sorted_class_names(tmp_path):
    # classes written out of order; within a class, files sort as strings ("10" < "2")
    for cls, base in (("zebra", 200), ("apple", 10), ("mango", 100)):
        save(tmp_path / cls / "2.png", solid(base))
        save(tmp_path / cls / "10.png", solid(base + 1))
    (tmp_path / ".ipynb_checkpoints").mkdir()  # hidden: not a class
    x, y, names = image_folder(tmp_path)
    assert names == ["apple", "mango", "zebra"]
    assert y.tolist() == [0, 0, 1, 1, 2, 2] and y.dtype == torch.int64
    assert x.shape == (6, 3, 6, 5) and x.dtype == torch.float32
    assert torch.round(x[:, 0, 0, 0] * 255).tolist() == [11, 10, 101, 100, 201, 200]


def test_image_folder_reads_exact_pixels_in_channel_first_order(tmp_path):
    rgb = np.random.default_rng(0).integers(0, 256, size=(7, 9, 3), dtype=np.uint8)
    save(tmp_path / "a" / "img.png", rgb)
    save(tmp_path / "b" / "grey.png", np.full((7, 9), 128, np.uint8))
    rgba = np.dstack([solid(50, 7, 9), np.full((7, 9), 255, np.uint8)])
    save(tmp_path / "b" / "rgba.png", rgba)
    x, y, _ = image_folder(tmp_path)
    assert x.is_contiguous()
    assert torch.equal(x[0], torch.from_numpy(rgb.transpose(2, 0, 1).astype(np.float32) / 255))
    assert torch.all(torch.round(x[1] * 255) == 128)  # grey -> three equal channels
    assert torch.all(torch.round(x[2] * 255) == 50)   # alpha dropped
    assert y.tolist() == [0, 1, 1]


def test_image_folder_resizes_to_size(tmp_path):
    save(tmp_path / "a" / "big.png", solid(40, 12, 20))
    save(tmp_path / "b" / "small.png", solid(90, 3, 4))
    checker = (np.indices((8, 8)).sum(0) % 2 * 255).astype(np.uint8)
    save(tmp_path / "b" / "zz_checker.png", np.dstack([checker] * 3))
    x, _, _ = image_folder(tmp_path, size=(6, 10))
    assert x.shape == (3, 3, 6, 10)
    assert torch.all(torch.round(x[0] * 255) == 40) and torch.all(torch.round(x[1] * 255) == 90)
    assert 0.3 < float(x[2].mean()) < 0.7 and float(x[2].std()) < 0.5  # resampled, not cropped
    x, _, _ = image_folder(tmp_path, size=5)
    assert x.shape == (3, 3, 5, 5)


def test_image_folder_classes_pick_and_order_labels(tmp_path):
    for cls, v in (("apple", 10), ("mango", 100), ("zebra", 200)):
        save(tmp_path / cls / "x.png", solid(v))
    x, y, names = image_folder(tmp_path, classes=["zebra", "apple"])
    assert names == ["zebra", "apple"] and y.tolist() == [0, 1]
    assert torch.round(x[:, 0, 0, 0] * 255).tolist() == [200, 10]
    with pytest.raises(ValueError, match=r"unknown \['pear'\]"):
        image_folder(tmp_path, classes=["pear"])
    with pytest.raises(ValueError, match="distinct"):
        image_folder(tmp_path, classes=["apple", "apple"])
    with pytest.raises(TypeError, match="list"):
        image_folder(tmp_path, classes="apple")


def test_image_folder_errors(tmp_path):
    with pytest.raises(DatasetNotFoundError, match=str(tmp_path / "nope")):
        image_folder(tmp_path / "nope")
    save(tmp_path / "flat" / "a.png", solid(1))
    with pytest.raises(DatasetNotFoundError, match=r"no sub-folders \(and 1 image files"):
        image_folder(tmp_path / "flat")
    root = tmp_path / "r"
    save(root / "a" / "x.png", solid(1, 4, 4))
    save(root / "b" / "y.png", solid(1, 5, 4))
    with pytest.raises(ValueError, match=r"one size.*4x4.*5x4.*size="):
        image_folder(root)
    (root / "c").mkdir()
    (root / "c" / "notes.txt").write_text("not an image")
    with pytest.raises(DatasetNotFoundError, match=rf"{root / 'c'}.*notes\.txt"):
        image_folder(root)
    (root / "c" / "broken.png").write_bytes(b"not a png")
    with pytest.raises(ValueError, match="broken.png"):
        image_folder(root, size=4)
    for bad, err in ((0, ValueError), ((4, 0), ValueError), (2.5, TypeError),
                     ((4, 4, 4), TypeError), (True, TypeError)):
        with pytest.raises(err, match="size"):
            image_folder(root, size=bad)


# ------------------------------------------------------------------ downscale
def test_downscale_preserves_shape_dtype_and_range():
    g = torch.Generator().manual_seed(0)
    x = (torch.rand(3, 3, 16, 12, generator=g) > 0.5).float()  # extremes only: 0 and 1
    out = downscale(x, 5)
    assert out.shape == x.shape and out.dtype == x.dtype
    assert 0 <= float(out.min()) and float(out.max()) <= 1
    assert not torch.equal(downscale(x, 12), x)  # non-square: 12 x 12 changes the height
    sq = torch.rand(2, 3, 8, 8, generator=g)
    assert torch.allclose(downscale(sq, 8), sq, atol=1e-6)  # size = H = W: unchanged


def test_downscale_leaves_a_constant_image_unchanged():
    x = torch.full((2, 3, 32, 32), 0.37)
    for size in (1, 7, 16):
        assert torch.allclose(downscale(x, size), x, atol=1e-6)


def test_downscale_removes_detail():
    checker = (torch.arange(32)[:, None] + torch.arange(32)[None, :]) % 2  # 1-pixel squares
    x = checker.float().expand(1, 3, 32, 32).contiguous()
    out = downscale(x, 8)
    assert float(out.var()) < 0.01 * float(x.var())
    assert torch.allclose(out.mean(), x.mean(), atol=1e-3)


def test_downscale_averages_rather_than_skips_pixels():
    # period-4 stripes (1, 0, 0, 0): a 32 -> 8 resize without antialiasing samples
    # between pixels 1 and 2 of each period and sees only zeros; with it the mean survives
    stripes = (torch.arange(32) % 4 == 0).float()
    x = stripes.expand(1, 1, 32, 32).contiguous()
    assert torch.allclose(downscale(x, 8).mean(), torch.tensor(0.25), atol=0.02)


def test_downscale_checks_its_inputs():
    x = torch.rand(1, 3, 8, 8)
    with pytest.raises(ValueError, match=r"\[1, 8\]"):
        downscale(x, 9)
    with pytest.raises(ValueError, match=r"\[1, 8\]"):
        downscale(x, 0)
    with pytest.raises(TypeError, match="size"):
        downscale(x, 4.0)
    with pytest.raises(ValueError, match="N, C, H, W"):
        downscale(x[0], 4)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        downscale(x * 255, 4)
