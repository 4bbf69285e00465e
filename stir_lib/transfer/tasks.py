"""Downstream tasks of a transfer: train/validation/test splits of labelled images.

The ci-scale tasks are real, offline 28 x 28 grey data sets (:func:`class_task`: classes
of MNIST or Fashion-MNIST, with thousands of test images each); :func:`downscaled` is the
paper's granularity experiment (R3); :func:`paper_task` reads the paper's downstream sets.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F

from .. import data
from ..training import data_fingerprint
from ..validation import (check_choice, check_image_batch, check_int, check_labels)

__all__ = ["Task", "class_task", "downscaled", "downscale_changes", "paper_task", "PAPER_TASKS",
           "CLASS_TASK_DATASETS"]


# The paper's 12 downstream sets, as paper_task names (Section 3; folders root/<name>/).
PAPER_TASKS = ("aircraft", "birdsnap", "caltech101", "caltech256", "cifar10", "cifar100",
               "dtd", "flowers", "food", "pets", "stanford_cars", "sun397")

_MNIST_SIZE = (28, 28)
#: the registered data sets (stir_lib.data.DATASETS) that class_task builds tasks from
CLASS_TASK_DATASETS = ("mnist", "fashion-mnist")


# ----------------------------------------------------------------------------- tasks
@dataclass(frozen=True, eq=False)
class Task:
    """A downstream classification task: three labelled splits of images in [0, 1].

    ``x_val``/``y_val`` choose hyper-parameters; ``x_test``/``y_test`` give the final
    number only.

    Args:
        name: short name, also part of cache keys.
        x_train, x_val, x_test: float images (N, C, H, W) in [0, 1], one shape for all.
        y_train, y_val, y_test: int64 labels (N,) in [0, num_classes).
        num_classes: number of classes.
        tests: what the task probes, in one sentence.
        input_size: side in pixels the images are resized to (bilinear) when a model
            reads them, or None to use them as stored. Lets large sets stay small in
            memory (CIFAR is stored at 32 and read at 224).
        source_index: split -> int64 indices of its examples in the original data set
            (for provenance and tests); "test" may index a different set than "train".
    """

    name: str
    x_train: torch.Tensor
    y_train: torch.Tensor
    x_val: torch.Tensor
    y_val: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    num_classes: int
    tests: str = ""
    input_size: int | None = None
    source_index: dict = field(default_factory=dict)

    def __post_init__(self):
        if isinstance(self.num_classes, bool) or not isinstance(self.num_classes, int) \
                or self.num_classes < 2:
            raise ValueError(f"task {self.name!r}: expected num_classes an int >= 2, got "
                             f"{self.num_classes!r}")
        shape = tuple(self.x_train.shape[1:]) if isinstance(self.x_train, torch.Tensor) else None
        for split in ("train", "val", "test"):
            x, y = getattr(self, f"x_{split}"), getattr(self, f"y_{split}")
            check_image_batch(x, f"task {self.name!r} x_{split}")
            if tuple(x.shape[1:]) != shape:
                raise ValueError(f"task {self.name!r}: expected every split's images of shape "
                                 f"{shape} (as x_train), got x_{split} {tuple(x.shape[1:])}")
            if len(x) == 0:
                raise ValueError(f"task {self.name!r}: expected a non-empty {split} split, "
                                 f"got 0 examples")
            check_labels(y, len(x), self.num_classes, f"task {self.name!r} y_{split}")
        if self.input_size is not None:
            check_int(self.input_size, f"task {self.name!r} input_size")

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """(C, H, W) of the images as a model reads them (after ``input_size``)."""
        c, h, w = self.x_train.shape[1:]
        return (c, h, w) if self.input_size is None else (c, self.input_size, self.input_size)

    def split(self, name: str) -> tuple[torch.Tensor, torch.Tensor]:
        """(images, labels) of "train", "val" or "test"."""
        check_choice(name, "split", ("train", "val", "test"))
        return getattr(self, f"x_{name}"), getattr(self, f"y_{name}")

    def fingerprint(self) -> str:
        """Hash of every split's images and labels, num_classes and input_size (not the name)."""
        return data_fingerprint(*(t for s in ("train", "val", "test") for t in self.split(s))) \
            + f"-{self.num_classes}-{self.input_size}"

    def __repr__(self) -> str:
        sizes = ", ".join(f"{s}={len(self.split(s)[0])}" for s in ("train", "val", "test"))
        return (f"Task({self.name!r}, {sizes}, classes={self.num_classes}, "
                f"image_shape={self.image_shape})")


def _check_classes(classes, name: str = "classes") -> tuple[int, ...]:
    classes = tuple(classes)
    if (len(classes) < 2 or len(set(classes)) != len(classes)
            or not all(isinstance(c, int) and not isinstance(c, bool) and 0 <= c <= 9
                       for c in classes)):
        raise ValueError(f"{name}: expected at least two distinct MNIST digits (ints in 0..9), "
                         f"got {classes}")
    return classes


def _remap(y: torch.Tensor, classes: Sequence[int]) -> torch.Tensor:
    """Labels ``classes[i]`` -> ``i``."""
    lookup = torch.full((int(max(classes)) + 1,), -1, dtype=torch.int64)
    lookup[torch.tensor(classes)] = torch.arange(len(classes))
    return lookup[y]


def _stratified_split(y: torch.Tensor, fractions: Sequence[float], seed: int):
    """Indices (train, *parts): each class is shuffled (seeded) and cut so that part k gets
    ``round(n_c * fractions[k])`` of its ``n_c`` examples and train the rest; sorted."""
    for v in fractions:
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0 < v < 1:
            raise ValueError(f"split fractions: expected values in (0, 1), got {tuple(fractions)}")
    if sum(fractions) >= 1:
        raise ValueError(f"split fractions: expected a sum < 1 (something left to train on), got "
                         f"{tuple(fractions)}")
    g = torch.Generator().manual_seed(seed)
    parts: list[list[torch.Tensor]] = [[] for _ in range(len(fractions) + 1)]
    for c in torch.unique(y):
        pool = torch.nonzero(y == c).flatten()
        pool = pool[torch.randperm(len(pool), generator=g)]
        cuts = [round(len(pool) * f) for f in fractions]
        if min(cuts + [len(pool) - sum(cuts)]) < 1:
            raise ValueError(f"class {int(c)} has {len(pool)} examples: too few for one in each "
                             f"split with fractions {tuple(fractions)}")
        start = 0
        for part, n in zip(parts[1:], cuts):
            part.append(pool[start:start + n])
            start += n
        parts[0].append(pool[start:])
    return tuple(torch.cat(p).sort().values for p in parts)


def _resize(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Bilinear resize (antialiased when shrinking) to ``size``, clamped to [0, 1]."""
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    shrink = size[0] < x.shape[-2] or size[1] < x.shape[-1]
    return F.interpolate(x, size=size, mode="bilinear", align_corners=False,
                         antialias=shrink).clamp_(0, 1)


def _task_from_split(name, x, y, idx, num_classes, tests, input_size=None) -> Task:
    tr, va, te = idx
    return Task(name, x[tr], y[tr], x[va], y[va], x[te], y[te], num_classes, tests,
                input_size, {"train": tr, "val": va, "test": te})


def _dataset(name: str, split: str, root=None):
    check_choice(name, "dataset", CLASS_TASK_DATASETS)
    return data.load(name, split, root)


def class_task(name: str, dataset: str, classes: Sequence[int] | None = None, *,
               n_train: int | None = None, per_class: int | None = None, n_val: int = 2000,
               seed: int = 0, tests: str = "", root=None) -> Task:
    """A downstream task from an offline 28x28 data set (MNIST or Fashion-MNIST).

    Training and validation images are drawn (seeded, stratified, disjoint) from the data
    set's training split, restricted to ``classes`` (labels renumbered ``classes[i]`` ->
    i); the test split is *every* test image of those classes, so that a transfer
    accuracy is measured on thousands of images.

    Args:
        name: the task's name (part of cache keys).
        dataset: "mnist" or "fashion-mnist".
        classes: labels to keep; None for all ten.
        n_train: training images (stratified); or ``per_class`` labelled images per class
            (a low-data task). Exactly one of the two.
        n_val: validation images (stratified), for choosing learning rates and eps.
        seed: seeds the draws.
    """
    if (n_train is None) == (per_class is None):
        raise ValueError(f"task {name!r}: expected exactly one of n_train and per_class, got "
                         f"n_train={n_train}, per_class={per_class}")
    classes = tuple(range(10)) if classes is None else _check_classes(classes)
    x, y = _dataset(dataset, "train", root)
    xt, yt = _dataset(dataset, "test", root)
    keep, keep_t = torch.isin(y, torch.tensor(classes)), torch.isin(yt, torch.tensor(classes))
    pool_idx, test_idx = torch.nonzero(keep).flatten(), torch.nonzero(keep_t).flatten()
    yp = y[pool_idx]
    g = torch.Generator().manual_seed(seed)
    k = len(classes)
    n_tr = per_class * k if per_class is not None else check_int(n_train, "n_train")
    n_val = check_int(n_val, "n_val")
    tr, va = [], []
    for i, c in enumerate(classes):
        members = pool_idx[yp == c]
        members = members[torch.randperm(len(members), generator=g)]
        t = per_class if per_class is not None else n_tr // k + (i < n_tr % k)
        v = n_val // k + (i < n_val % k)
        if t + v > len(members):
            raise ValueError(f"task {name!r}: class {c} has {len(members)} training images, "
                             f"fewer than {t} + {v} for train and validation")
        tr.append(members[:t])
        va.append(members[t:t + v])
    tr, va = torch.cat(tr).sort().values, torch.cat(va).sort().values
    return Task(name, x[tr], _remap(y[tr], classes), x[va], _remap(y[va], classes),
                xt[test_idx], _remap(yt[test_idx], classes), k, tests,
                source_index={"train": tr, "val": va, "test": test_idx})


def downscaled(task: Task, size: int) -> Task:
    """Salman et al.'s granularity transform (R3): every split through ``data.downscale``.

    Each stored image is resized down to ``size`` x ``size`` (bilinear, antialiased) and
    back up to its own size, so shapes stay and fine detail goes; ``size`` equal to the
    stored side returns the images unchanged. Labels and ``input_size`` are kept.
    """
    xs = {s: data.downscale(task.split(s)[0], size) for s in ("train", "val", "test")}
    return Task(f"{task.name}@{size}px", xs["train"], task.y_train, xs["val"], task.y_val,
                xs["test"], task.y_test, task.num_classes,
                f"{task.tests}; downscaled to {size}x{size} and back", task.input_size,
                dict(task.source_index))


def downscale_changes(task: Task, size: int, tol: float = 1e-3) -> float:
    """Mean absolute pixel change that :func:`downscaled` makes to the task's test images.

    Below ``tol`` the coarse copy carries the same information as the original (the
    images hold no detail finer than ``size`` pixels, e.g. 8x8 digits upsampled), so the
    granularity experiment cannot test anything on it.
    """
    x = task.x_test
    return float((data.downscale(x, size) - x).abs().mean())


def paper_task(name: str, root=None, *, size: int = 224, val_fraction: float = 0.1,
               seed: int = 0, verify: bool = True, progress: bool | None = None) -> Task:
    """One of the paper's downstream sets (``PAPER_TASKS``), read at ``size`` x ``size``.

    CIFAR-10/100 come from :func:`stir_lib.data.cifar10`/``cifar100`` (``root`` holding
    ``cifar-10-batches-py``/``cifar-100-python``) and stay 32x32 in memory; a model reads
    them resized to ``size`` (bilinear). Every other set is read with
    :func:`stir_lib.data.image_folder` from ``root/<name>/train/<class>/*`` and
    ``root/<name>/test/<class>/*``, resized to ``size`` on loading and held in memory
    (N x 3 x size x size float32: 0.6 MB an image at 224). In both cases a stratified
    ``val_fraction`` of the training images is held out for choosing the learning rate.

    Args:
        name: one of ``PAPER_TASKS``.
        root: data folder; default :func:`stir_lib.data.data_root`.
        size: side in pixels the model sees (the paper: 224).
        val_fraction: share of each class's training images used for validation.
        seed: seeds the validation split.
        verify: check the CIFAR files against torchvision's MD5s (off only for synthetic
            test data).

    Raises:
        DatasetNotFoundError: the set is not under ``root`` (the message gives the layout).
    """
    check_choice(name, "task name", PAPER_TASKS)
    size = check_int(size, "size", 8)
    root_path = Path(root).expanduser() if root is not None else data.data_root()
    tests = f"Salman et al.'s downstream set {name} at {size}x{size}"
    if name in ("cifar10", "cifar100"):
        load = getattr(data, name)
        x, y = load("train", root, verify=verify)
        xt, yt = load("test", root, verify=verify)
        num_classes = 10 if name == "cifar10" else 100
    else:
        folder = root_path / name
        for split in ("train", "test"):
            if not (folder / split).is_dir():
                raise data.DatasetNotFoundError(
                    f"{name}: expected the folders {folder / 'train'} and {folder / 'test'} with "
                    f"one sub-folder of images per class, found no {folder / split}; download "
                    f"the data set and arrange its train/test split so")
        x, y, names = data.image_folder(folder / "train", size=size, progress=progress)
        xt, yt, _ = data.image_folder(folder / "test", size=size, classes=names, progress=progress)
        num_classes = len(names)
    tr, va = _stratified_split(y, (val_fraction,), seed)
    return Task(name, x[tr], y[tr], x[va], y[va], xt, yt, num_classes, tests, size,
                {"train": tr, "val": va, "test": torch.arange(len(xt))})


