"""Transfer jobs: a source (a :class:`~stir_lib.jobs.Train` job or a released
:class:`Checkpoint`) transferred to a downstream task (:class:`TaskSpec`)."""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import torch

from .. import cache, models
from ..checkpoints import load_robustness_checkpoint
from ..models import ImageModel, resolve_device
from ..transfer import (Task, TransferHparams, TransferResult, class_task, code_version, downscaled,
                        fine_tune, fixed_feature, paper_task)
from ..validation import check_choice
from .base import macs_per_example

__all__ = ["TaskSpec", "Checkpoint", "Transfer"]

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
    task in one mode with given hyper-parameters (``hparams``: sorted (name, value) pairs of
    :class:`~stir_lib.transfer.TransferHparams` fields, over the library's defaults) and seed."""

    source: object
    task: TaskSpec
    mode: str
    hparams: tuple = ()
    seed: int = 0

    kind = "transfer"

    def _hp(self) -> dict:
        return TransferHparams.of(**dict(self.hparams), seed=self.seed).as_dict()

    def key_config(self) -> dict:
        src = (self.source.identity() if isinstance(self.source, Checkpoint)
               else f"model:{self.source.key()}")
        task = self.task.build()
        return {"mode": self.mode, "source": src, "task": task.name,
                "task_data": task.fingerprint(), "hparams": self._hp(),
                "code": code_version()}

    def key(self) -> str:
        return cache.config_key("transfer", self.key_config())

    def cached(self) -> bool:
        return cache.exists("transfer", self.key_config())

    def deps(self) -> tuple:
        return () if isinstance(self.source, Checkpoint) else (self.source,)

    def flops(self) -> float:
        """Fine-tuning: 6 x MACs per image, pass and learning rate over the training split,
        plus one forward pass of every split; fixed-feature: the forward passes (features
        are computed once) and, with augmentation, a forward pass per epoch and rate."""
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

    def calls(self) -> int:
        """Optimiser steps of every learning rate's run (a fixed-feature head's steps run on
        stored features, or on a forward pass with augmentation)."""
        hp = self._hp()
        try:
            n_train = len(self.task.build().x_train)
        except Exception:  # noqa: BLE001 - data absent: the paper sets' published sizes
            n_train = _PAPER_SIZES.get(self.task.dataset, (10000, 10000))[0]
        return hp["epochs"] * len(hp["lrs"]) * -(-n_train // hp["batch_size"])

    def source_model(self, device=None) -> ImageModel:
        if isinstance(self.source, Checkpoint):
            return self.source.load().to(resolve_device(device))
        return self.source.run(device).model

    def run(self, device=None, progress=None) -> TransferResult:
        check_choice(self.mode, "mode", _RUN)
        return _RUN[self.mode](self.source_model(device), self.task.build(), progress=progress,
                               **{**dict(self.hparams), "seed": self.seed})

    def describe(self) -> str:
        src = getattr(self.source, "label", "") or getattr(self.source, "arch", "source")
        return f"transfer {src} -> {self.task.name} ({self.mode}, seed {self.seed})"


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
