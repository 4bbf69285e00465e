"""Transfer learning from a source model to downstream tasks (Salman et al. 2020).

Salman, Ilyas, Engstrom, Kapoor & Madry (NeurIPS 2020), "Do adversarially robust
ImageNet models transfer better?", transfer a source model to a downstream task in
two ways, and so does this module:

* :func:`fixed_feature`: a fresh linear head on the frozen penultimate features
  (:meth:`ImageModel.embed`), the body untouched, BatchNorm statistics included;
* :func:`fine_tune`: a fresh head, then every weight trained.

Both use SGD with momentum, a step learning-rate schedule and weight decay, pick the
learning rate on the task's validation split and report test accuracy for that
learning rate only. Neither augments the data (the paper uses random crops and flips).

A downstream :class:`Task` holds train/val/test splits. The ci-scale tasks are real,
offline 28 x 28 grey data sets (:func:`class_task`: classes of MNIST or Fashion-MNIST,
with thousands of test images each). :func:`downscaled` is the paper's granularity
experiment (R3). :class:`TaskSpec` and :class:`Transfer` describe tasks and transfer
runs as picklable jobs (see :mod:`stir_lib.jobs`). At paper scale,
:func:`paper_task` reads the downstream sets and :func:`load_robustness_checkpoint`
reads the released robust ImageNet models (MadryLab's ``robustness`` format).
"""

from __future__ import annotations

import copy
import pickle
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType

import torch
import torch.nn.functional as F
from torch import nn

from . import cache, data, models, threads
from .models import IMAGENET_MEAN, IMAGENET_SHAPE, IMAGENET_STD, ImageModel, device_of
from .progress import bar
from .training import data_fingerprint
from .validation import (check_choice, check_image_batch, check_int, check_labels, check_positive,
                         check_tensor)

__all__ = ["Task", "TransferResult", "class_task", "TaskSpec", "Transfer", "Checkpoint",
           "downscaled", "downscale_changes", "paper_task", "fixed_feature",
           "fine_tune", "load_robustness_checkpoint", "check_checkpoints", "PAPER_HPARAMS",
           "PAPER_TASKS"]

# Salman et al. 2020, appendix (transfer set-up), for both fixed-feature and full-network
# transfer: SGD with momentum 0.9, batch 64, 150 epochs, learning rate divided by 10 every
# 50 epochs, weight decay 5e-4, learning rate chosen from {0.01, 0.001}.
# Use as fixed_feature(model, task, **PAPER_HPARAMS).
PAPER_HPARAMS = MappingProxyType(dict(lrs=(0.01, 0.001), epochs=150, batch_size=64,
                                      momentum=0.9, weight_decay=5e-4, lr_step=50))

# The paper's 12 downstream sets, as paper_task names (Section 3; folders root/<name>/).
PAPER_TASKS = ("aircraft", "birdsnap", "caltech101", "caltech256", "cifar10", "cifar100",
               "dtd", "flowers", "food", "pets", "stanford_cars", "sun397")

_MNIST_SIZE = (28, 28)


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
    if name == "mnist":
        return data.mnist(split, root)
    if name == "fashion-mnist":
        return data.fashion_mnist(split, root)
    raise ValueError(f"dataset: expected 'mnist' or 'fashion-mnist', got {name!r}")


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


# ----------------------------------------------------------------------------- transfer
@dataclass
class TransferResult:
    """Output of :func:`fixed_feature` and :func:`fine_tune`.

    Attributes:
        mode: "fixed-feature" or "fine-tune".
        task: the task's name.
        lr: the learning rate chosen on validation accuracy.
        val_acc: learning rate -> validation accuracy (fraction), for every rate tried.
        test_acc: test accuracy (fraction) at ``lr``; the only number read from test.
        model: the transferred model (a copy; the source is untouched), in eval mode.
        loss: learning rate -> mean training loss per epoch.
        hparams: the hyper-parameters used.
        key: the cache key.
    """

    mode: str
    task: str
    lr: float
    val_acc: dict
    test_acc: float
    model: ImageModel
    loss: dict
    hparams: dict
    key: str = ""


def _hparams(lrs, epochs, batch_size, momentum, weight_decay, lr_step, seed,
             augment=False) -> dict:
    if isinstance(lrs, (int, float)) or not isinstance(lrs, Sequence) or len(lrs) == 0:
        raise ValueError(f"lrs: expected a non-empty sequence of learning rates, got {lrs!r}; "
                         f"pass e.g. lrs=(0.01, 0.001)")
    lrs = tuple(check_positive(v, "lrs entry") for v in lrs)
    if len(set(lrs)) != len(lrs):
        raise ValueError(f"lrs: expected distinct learning rates, got {lrs}")
    momentum = check_positive(momentum, "momentum", allow_zero=True)
    if momentum >= 1:
        raise ValueError(f"momentum: expected a value in [0, 1), got {momentum}")
    return dict(lrs=lrs, epochs=check_int(epochs, "epochs"),
                batch_size=check_int(batch_size, "batch_size"), momentum=momentum,
                weight_decay=check_positive(weight_decay, "weight_decay", allow_zero=True),
                lr_step=None if lr_step is None else check_int(lr_step, "lr_step"),
                seed=check_int(seed, "seed", 0), augment=bool(augment))


def _sgd(hp: dict) -> dict:
    """The keyword arguments of :func:`_fit` that come from the hyper-parameters."""
    return {k: hp[k] for k in ("epochs", "batch_size", "momentum", "weight_decay", "lr_step",
                               "seed")}


def _augmenter(size: int):
    """The paper's training augmentation, per image of a batch on its own device:
    torchvision's ``RandomResizedCrop(size)`` (scale 0.08-1, ratio 3/4-4/3) and a horizontal
    flip with probability 1/2, drawn from torch's global generator (seeded per run)."""
    from torchvision.transforms import v2

    crop = v2.RandomResizedCrop(size, antialias=True)
    flip = v2.RandomHorizontalFlip()
    return lambda xb: torch.stack([flip(crop(img)) for img in xb]).clamp_(0, 1)


def _check_fits(model: ImageModel, task: Task) -> None:
    if not isinstance(model, ImageModel):
        raise TypeError(f"model: expected a stir_lib.models.ImageModel, got "
                        f"{type(model).__name__}")
    if not isinstance(task, Task):
        raise TypeError(f"task: expected a stir_lib.transfer.Task, got {type(task).__name__}")
    if task.image_shape != tuple(model.input_shape):
        raise ValueError(f"task {task.name!r} gives images of shape {task.image_shape}, but the "
                         f"model expects {tuple(model.input_shape)}; build the task in the "
                         f"model's input format (channels and size, e.g. paper_task(size=...))")


def _reader(task: Task, device) -> Callable[[torch.Tensor], torch.Tensor]:
    """Batch as stored -> batch as the model reads it, on ``device``."""
    size = None if task.input_size is None else (task.input_size, task.input_size)
    return lambda xb: xb.to(device) if size is None else _resize(xb.to(device), size)


@torch.no_grad()
def _apply(fn: Callable, x: torch.Tensor, read, batch_size: int = 256) -> torch.Tensor:
    """fn(read(batch)) over x, batched, concatenated on the CPU (callers set eval mode)."""
    return torch.cat([fn(read(x[i:i + batch_size])).cpu() for i in range(0, len(x), batch_size)])


def _accuracy(module: nn.Module, x, y, read) -> float:
    module.eval()
    return float((_apply(module, x, read).argmax(1) == y).float().mean())


def _fit(module: nn.Module, x: torch.Tensor, y: torch.Tensor, read, *, lr: float, epochs: int,
         batch_size: int, momentum: float, weight_decay: float, lr_step: int | None, seed: int,
         progress, desc: str, train_mode: bool = True) -> list[float]:
    """Cross-entropy SGD on (read(x), y) in train mode; returns the mean loss of each epoch.

    torch's SGD ``weight_decay`` adds ``weight_decay * p`` to every trained parameter's
    gradient (biases and BatchNorm included, as in the paper's code). The learning rate
    is divided by 10 every ``lr_step`` epochs (None: constant).
    """
    g = torch.Generator().manual_seed(seed)
    opt = torch.optim.SGD([p for p in module.parameters() if p.requires_grad], lr=lr,
                          momentum=momentum, weight_decay=weight_decay)
    device = device_of(module)
    module.train(train_mode)
    losses = []
    for epoch in bar(range(epochs), desc=desc, progress=progress):
        if lr_step and epoch and epoch % lr_step == 0:
            for group in opt.param_groups:
                group["lr"] *= 0.1
        total = 0.0
        for idx in torch.randperm(len(x), generator=g, device="cpu").split(batch_size):
            loss = F.cross_entropy(module(read(x[idx])), y[idx].to(device))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total += float(loss.detach()) * len(idx)
        losses.append(total / len(x))
    module.eval()
    return losses


def _transfer(mode: str, model: ImageModel, task: Task, hp: dict, use_cache: bool, progress,
              run: Callable[[], dict]) -> TransferResult:
    _check_fits(model, task)
    key = {"mode": mode, "source": cache.model_identity(model), "task": task.name,
           "task_data": task.fingerprint(), "hparams": hp,
           "code": cache.code_version(models, sys.modules[__name__])}
    entry = cache.get_or_create("transfer", key, run) if use_cache else run()
    out = copy.deepcopy(model).replace_head(task.num_classes).to(device_of(model))
    if mode == "fixed-feature":
        out.head.load_state_dict(entry["state"])
    else:
        out.load_state_dict(entry["state"])
    out.eval()
    lrs = hp["lrs"]
    return TransferResult(mode, task.name, float(entry["lr"]), dict(zip(lrs, entry["val"])),
                          float(entry["test"]), out, dict(zip(lrs, entry["loss"])), dict(hp),
                          cache.config_key("transfer", key))


def _best(val: list[float], lrs: tuple) -> int:
    """Index of the best validation accuracy; ties go to the earlier learning rate."""
    return max(range(len(lrs)), key=lambda i: (val[i], -i))


class _Probe(nn.Module):
    """A frozen body (eval mode, no gradients) and a trainable linear head."""

    def __init__(self, body: ImageModel, head: nn.Module):
        super().__init__()
        self.body, self.head = body, head

    def forward(self, x):
        with torch.no_grad():
            z = self.body.embed(x)
        return self.head(z)


@threads.parallel
def fixed_feature(model: ImageModel, task: Task, *, lrs: Sequence[float] = (0.1, 0.01, 0.001),
                  epochs: int = 30, batch_size: int = 64, momentum: float = 0.9,
                  weight_decay: float = 5e-4, lr_step: int | None = 10, seed: int = 0,
                  augment: bool = False, use_cache: bool = True,
                  progress: bool | None = None) -> TransferResult:
    """Fixed-feature transfer: a fresh linear head on the frozen penultimate features.

    The penultimate features (:meth:`ImageModel.embed`) of every split are computed once,
    in eval mode (BatchNorm uses its running statistics, dropout is off), and the head is
    trained on them. With no data augmentation this is the same as training the head
    through the frozen body every epoch, and much cheaper. For each learning rate a head
    (same seeded initialisation, same batch order) is trained with SGD; the rate with the
    best validation accuracy is chosen and only its test accuracy is measured.

    Args:
        model: the source; not modified (the result holds a copy).
        task: the downstream task, in the model's input format.
        lrs: learning rates to try (the paper: 0.01, 0.001).
        epochs: passes over the training split (the paper: 150).
        batch_size: examples per SGD step (the paper: 64).
        momentum: SGD momentum (the paper: 0.9).
        weight_decay: SGD weight decay on the head's weight and bias (the paper: 5e-4).
        lr_step: divide the learning rate by 10 every ``lr_step`` epochs; None: constant
            (the paper: 50).
        seed: seeds the head's initialisation and the batch order.
        augment: the paper's training augmentation (:func:`_augmenter`: random resized
            crops and flips); the head is then trained through the frozen body (eval mode)
            on fresh crops every epoch, and validation and test features are computed
            once from the plain images.
        use_cache: load/store the result in the cache (:mod:`stir_lib.cache`), keyed by
            the source's weights, the task's data and the hyper-parameters.
        progress: progress bar; None shows it only on a terminal.

    Returns:
        :class:`TransferResult` whose model is a copy of the source with the chosen head.
    """
    hp = _hparams(lrs, epochs, batch_size, momentum, weight_decay, lr_step, seed, augment)

    def run():
        frozen = copy.deepcopy(model).eval()
        for p in frozen.parameters():
            p.requires_grad_(False)
        read = _reader(task, device_of(frozen))
        splits = ("val", "test") if hp["augment"] else ("train", "val", "test")
        feats = {s: _apply(frozen.embed, task.split(s)[0], read) for s in splits}
        device = device_of(frozen)
        on_device = (lambda f: f.to(device))  # noqa: E731 - features are stored on the CPU
        if hp["augment"]:  # the head trains through the frozen body on fresh crops
            aug = _augmenter(task.image_shape[1])
        dim = feats["val"].shape[1]
        heads, val, losses = [], [], []
        for lr in hp["lrs"]:
            torch.manual_seed(hp["seed"])
            head = nn.Linear(dim, task.num_classes, device=device)
            if hp["augment"]:   # through the frozen body (eval mode) on fresh crops
                module, x_fit, read_fit, train_mode = (_Probe(frozen, head), task.x_train,
                                                       lambda xb: aug(read(xb)), False)
            else:               # on the features computed once
                module, x_fit, read_fit, train_mode = head, feats["train"], on_device, True
            losses.append(_fit(module, x_fit, task.y_train, read_fit, lr=lr, **_sgd(hp),
                               progress=progress, desc=f"fixed-feature lr={lr:g}",
                               train_mode=train_mode))
            val.append(_accuracy(head, feats["val"], task.y_val, on_device))
            heads.append(head)
        best = _best(val, hp["lrs"])
        test = _accuracy(heads[best], feats["test"], task.y_test, on_device)
        state = {k: v.detach().cpu().clone() for k, v in heads[best].state_dict().items()}
        return {"lr": hp["lrs"][best], "val": val, "test": test, "loss": losses, "state": state}

    return _transfer("fixed-feature", model, task, hp, use_cache, progress, run)


@threads.parallel
def fine_tune(model: ImageModel, task: Task, *, lrs: Sequence[float] = (0.1, 0.01, 0.001),
              epochs: int = 30, batch_size: int = 64, momentum: float = 0.9,
              weight_decay: float = 5e-4, lr_step: int | None = 10, seed: int = 0,
              augment: bool = False, use_cache: bool = True,
              progress: bool | None = None) -> TransferResult:
    """Full-network transfer: a copy of the source with a fresh head, every weight trained.

    For each learning rate, a fresh copy of the source gets a new linear head (same
    seeded initialisation) and all its parameters are trained with SGD in train mode
    (BatchNorm statistics update); the rate with the best validation accuracy is chosen
    and only its test accuracy is measured. Arguments and result as
    :func:`fixed_feature`; weight decay applies to every parameter; ``augment`` crops and
    flips each training batch (the paper's augmentation).
    """
    hp = _hparams(lrs, epochs, batch_size, momentum, weight_decay, lr_step, seed, augment)

    def run():
        read = _reader(task, device_of(model))
        if hp["augment"]:
            aug = _augmenter(task.image_shape[1])
        read_train = (lambda xb: aug(read(xb))) if hp["augment"] else read
        best_net, val, losses = None, [], []
        for lr in hp["lrs"]:
            torch.manual_seed(hp["seed"])
            net = copy.deepcopy(model).replace_head(task.num_classes).to(device_of(model))
            for p in net.parameters():
                p.requires_grad_(True)
            losses.append(_fit(net, task.x_train, task.y_train, read_train, lr=lr, **_sgd(hp),
                               progress=progress, desc=f"fine-tune lr={lr:g}"))
            val.append(_accuracy(net, task.x_val, task.y_val, read))
            if _best(val, hp["lrs"][:len(val)]) == len(val) - 1:
                best_net = net  # keep one trained copy at a time
            del net
        best = _best(val, hp["lrs"])
        test = _accuracy(best_net, task.x_test, task.y_test, read)
        state = {k: v.detach().cpu().clone() for k, v in best_net.state_dict().items()}
        return {"lr": hp["lrs"][best], "val": val, "test": test, "loss": losses, "state": state}

    return _transfer("fine-tune", model, task, hp, use_cache, progress, run)


# ----------------------------------------------------------------------------- checkpoints
_RELEASE = ("Salman et al.'s robust ImageNet models are released at "
            "github.com/microsoft/robust-models-transfer")


def load_robustness_checkpoint(path, arch: str = "resnet50", num_classes: int = 1000, *,
                               input_shape: Sequence[int] = IMAGENET_SHAPE,
                               map_location="cpu") -> ImageModel:
    """A classifier from a checkpoint of MadryLab's ``robustness`` library.

    Such a file (Salman et al.'s released models among them) is a dict whose ``"model"``
    entry (``"state_dict"`` in old files) is the state dict of the library's
    ``AttackerModel`` under ``DataParallel``: the classifier under ``module.model.``, the
    same weights again under ``module.attacker.model.``, and the input normalisation as
    ``module.normalizer.new_mean``/``new_std`` buffers. The ``module.model.`` entries
    (torchvision ResNet key names) are loaded into :func:`stir_lib.models.imagenet_resnet`
    and the normaliser's mean and std become the model's (ImageNet's if absent). The file
    is read with ``torch.load(weights_only=True)``: no pickled code runs.

    Args:
        path: the checkpoint file.
        arch: "resnet18", "resnet50", "wide_resnet50_2" or "wide_resnet50_4".
        num_classes: rows of the classifier (1000 for ImageNet).
        input_shape: (C, H, W) the model will be given (224 x 224 in the paper).
        map_location: passed to ``torch.load``.

    Returns:
        The :class:`ImageModel` in eval mode; ``embed`` gives the pooled features
        (512-d for ResNet-18, 2048-d for the others).

    Raises:
        FileNotFoundError: no such file.
        ValueError: not a robustness checkpoint, or not one of ``arch``/``num_classes``
            (missing/unexpected keys and wrong shapes listed).
    """
    check_choice(arch, "arch", models.IMAGENET_RESNETS)
    path = Path(path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"{path}: expected a robustness-library checkpoint file, found "
                                f"none; {_RELEASE} (e.g. resnet50_l2_eps3.ckpt), download one "
                                f"and pass its path")
    try:
        obj = torch.load(path, map_location=map_location, weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, OSError) as err:
        raise ValueError(
            f"{path}: expected a checkpoint torch.load(weights_only=True) can read (tensors "
            f"and plain containers), got {type(err).__name__}: {str(err).splitlines()[0][:200]}; "
            f"if the file holds other pickled objects and you trust it, keep only its weights "
            f"once: torch.save({{'model': torch.load(p, weights_only=False)['model']}}, p2)"
        ) from err
    if not isinstance(obj, dict) or not ({"model", "state_dict"} & obj.keys()):
        got = (f"a dict with keys {sorted(map(str, obj))[:8]}" if isinstance(obj, dict)
               else f"a {type(obj).__name__}")
        raise ValueError(f"{path}: expected a robustness checkpoint, a dict with key 'model' "
                         f"(or 'state_dict') holding keys 'module.model.*', got {got}")
    where = "model" if "model" in obj else "state_dict"
    state = obj[where]
    for prefix in ("module.", ""):  # saved under DataParallel (the library's way) or not
        weights = {k[len(prefix + "model."):]: v for k, v in state.items()
                   if isinstance(k, str) and k.startswith(prefix + "model.")} \
            if isinstance(state, dict) else {}
        if weights:
            break
    if not weights:
        got = list(state)[:4] if isinstance(state, dict) else type(state).__name__
        raise ValueError(f"{path}: expected the {where!r} entry to hold the classifier under "
                         f"'module.model.*' (with copies under 'module.attacker.model.*' and "
                         f"normalisation buffers 'module.normalizer.new_mean/new_std'), got "
                         f"{got}; for a plain torchvision state dict use "
                         f"stir_lib.models.load_torchvision_resnet")
    norm = [state.get(f"{prefix}normalizer.{b}") for b in ("new_mean", "new_std")]
    mean, std = IMAGENET_MEAN, IMAGENET_STD
    if all(isinstance(t, torch.Tensor) and t.numel() == input_shape[0] for t in norm):
        mean, std = (tuple(t.flatten().tolist()) for t in norm)
    model = models.load_torchvision_resnet(weights, arch, num_classes, input_shape=input_shape,
                                           mean=mean, std=std,
                                           source=f"{path} ({where!r} entries {prefix}model.*)")
    return model.eval()


def check_checkpoints(paths: Mapping) -> dict[float, Path]:
    """Check a set of checkpoints {eps: path} before any work; return them sorted by eps.

    Raises:
        ValueError: empty mapping, or an eps that is not a number >= 0.
        FileNotFoundError: one or more files are missing (all are listed).
    """
    if not isinstance(paths, Mapping) or not paths:
        raise ValueError(f"paths: expected a non-empty dict {{eps: checkpoint path}}, got "
                         f"{paths!r}")
    out = {}
    for eps, p in paths.items():
        out[check_positive(eps, "eps", allow_zero=True)] = Path(p).expanduser()
    missing = [f"eps {eps:g}: {p}" for eps, p in sorted(out.items()) if not p.is_file()]
    if missing:
        raise FileNotFoundError(f"expected {len(out)} checkpoint files, {len(missing)} missing: "
                                + "; ".join(missing) + f". {_RELEASE}; download them or drop "
                                f"those eps")
    return dict(sorted(out.items()))



# ----------------------------------------------------------------------------- jobs
_TASK_MEMO: dict = {}


@dataclass(frozen=True)
class TaskSpec:
    """A downstream task by description (picklable; built once per process).

    ``dataset`` "mnist" or "fashion-mnist" builds :func:`class_task` with ``classes``,
    ``n_train`` or ``per_class``, ``n_val`` and ``seed``; any name of ``PAPER_TASKS``
    builds :func:`paper_task` from ``root`` at ``size``. ``coarse``: the granularity copy
    (:func:`downscaled` to that side), or None.
    """

    name: str
    dataset: str
    classes: tuple | None = None
    n_train: int | None = None
    per_class: int | None = None
    n_val: int = 2000
    seed: int = 0
    coarse: int | None = None
    tests: str = field(default="", compare=False)
    size: int = 224
    root: str | None = field(default=None, compare=False)
    verify: bool = field(default=True, compare=False)

    def build(self) -> Task:
        if self not in _TASK_MEMO:
            if self.dataset in ("mnist", "fashion-mnist"):
                task = class_task(self.name, self.dataset, self.classes, n_train=self.n_train,
                                  per_class=self.per_class, n_val=self.n_val, seed=self.seed,
                                  tests=self.tests, root=self.root)
            else:
                task = paper_task(self.dataset, self.root, size=self.size, seed=self.seed,
                                  verify=self.verify)
            _TASK_MEMO[self] = downscaled(task, self.coarse) if self.coarse else task
        return _TASK_MEMO[self]

    def full(self) -> TaskSpec:
        """The same task at its native resolution."""
        from dataclasses import replace
        return replace(self, coarse=None)


@dataclass(frozen=True)
class Checkpoint:
    """A released robustness-library checkpoint as a transfer source (paper scale)."""

    path: str
    arch: str = "resnet50"
    image_size: int = 224
    label: str = field(default="", compare=False)

    def load(self) -> ImageModel:
        return load_robustness_checkpoint(self.path, arch=self.arch,
                                          input_shape=(3, self.image_size, self.image_size))

    def identity(self) -> str:
        return cache.model_identity(self.load())


_RUN = {"fixed-feature": lambda *a, **k: fixed_feature(*a, **k),
        "fine-tune": lambda *a, **k: fine_tune(*a, **k)}


@dataclass(frozen=True)
class Transfer:
    """A source (a :class:`stir_lib.jobs.Train` or a :class:`Checkpoint`) transferred to a
    task in one mode with given hyper-parameters (``hparams``: sorted (name, value) pairs
    of :func:`fixed_feature` / :func:`fine_tune` arguments) and seed."""

    source: object
    task: TaskSpec
    mode: str
    hparams: tuple = ()
    seed: int = 0

    kind = "transfer"

    def _hp(self) -> dict:
        return _hparams(**{**_DEFAULT_HP, **dict(self.hparams)}, seed=self.seed)

    def key_config(self) -> dict:
        src = (f"model:{self.source.key()}" if hasattr(self.source, "key")
               else self.source.identity())
        task = self.task.build()
        return {"mode": self.mode, "source": src, "task": task.name,
                "task_data": task.fingerprint(), "hparams": self._hp(),
                "code": cache.code_version(models, sys.modules[__name__])}

    def key(self) -> str:
        return cache.config_key("transfer", self.key_config())

    def cached(self) -> bool:
        return cache.exists("transfer", self.key_config())

    def deps(self) -> tuple:
        return (self.source,) if hasattr(self.source, "deps") else ()

    def flops(self) -> float:
        """Fine-tuning: 6 x MACs per image, pass and learning rate over the training split,
        plus one forward pass of every split; fixed-feature: the forward passes (features
        are computed once) and, with augmentation, a forward pass per epoch and rate."""
        from .jobs import macs_per_example
        hp = self._hp()
        if isinstance(self.source, Checkpoint):
            macs = _torchvision_macs(self.source.arch, self.source.image_size)
        else:
            macs = macs_per_example(self.source.arch, self.source.kwargs)
        try:
            task = self.task.build()
            n_train, n_all = len(task.x_train), len(task.x_train) + len(task.x_val) + len(task.x_test)
        except Exception:  # noqa: BLE001 - data absent: the paper sets' published sizes
            n_train, n_test = _PAPER_SIZES.get(self.task.dataset, (10000, 10000))
            n_all = n_train + n_test
        runs = hp["epochs"] * len(hp["lrs"])
        if self.mode == "fixed-feature":   # with augmentation, a forward pass per epoch and rate
            return 2.0 * macs * (n_all + (n_train * runs if hp["augment"] else 0))
        return 6.0 * macs * n_train * runs + 2.0 * macs * n_all

    def source_model(self, device=None) -> ImageModel:
        if hasattr(self.source, "run"):
            return self.source.run(device).model
        return self.source.load().to(models.resolve_device(device))

    def run(self, device=None, progress=None) -> TransferResult:
        check_choice(self.mode, "mode", _RUN)
        return _RUN[self.mode](self.source_model(device), self.task.build(), progress=progress,
                               **{**dict(self.hparams), "seed": self.seed})

    def describe(self) -> str:
        src = getattr(self.source, "label", "") or getattr(self.source, "arch", "source")
        return f"transfer {src} -> {self.task.name} ({self.mode}, seed {self.seed})"


_DEFAULT_HP = dict(lrs=(0.1, 0.01, 0.001), epochs=30, batch_size=64, momentum=0.9,
                   weight_decay=5e-4, lr_step=10, augment=False)
# (train, test) images of the paper's sets, as published (for cost estimates without data)
_PAPER_SIZES = {"cifar10": (50000, 10000), "cifar100": (50000, 10000), "pets": (3680, 3669),
                "flowers": (2040, 6149), "aircraft": (6667, 3333), "birdsnap": (32677, 8171),
                "caltech101": (3030, 5647), "caltech256": (15420, 15187), "dtd": (3760, 1880),
                "food": (75750, 25250), "stanford_cars": (8144, 8041), "sun397": (19850, 19850)}


def _torchvision_macs(arch: str, side: int) -> float:
    """Multiply-accumulates of one forward pass of torchvision's ``arch`` at side x side."""
    import torch.nn as nn_
    with torch.device("meta"):
        net = models.IMAGENET_RESNETS[arch]()
    total = [0]

    def hook(module, inputs, output):
        if isinstance(module, nn_.Conv2d):
            total[0] += output.numel() * module.in_channels // module.groups * \
                module.kernel_size[0] * module.kernel_size[1]
        elif isinstance(module, nn_.Linear):
            total[0] += output.numel() * module.in_features

    handles = [m.register_forward_hook(hook) for m in net.modules()
               if isinstance(m, (nn_.Conv2d, nn_.Linear))]
    with torch.no_grad():
        net.eval()(torch.zeros(1, 3, side, side, device="meta"))
    for h in handles:
        h.remove()
    return float(total[0])
