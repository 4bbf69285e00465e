"""The two transfers of Salman et al. 2020 and their hyper-parameters.

* :func:`fixed_feature`: a fresh linear head on the frozen penultimate features
  (:meth:`ImageModel.embed`), the body untouched, BatchNorm statistics included;
* :func:`fine_tune`: a fresh head, then every weight trained.

Both use SGD with momentum, a step learning-rate schedule and weight decay
(:class:`TransferHparams`), pick the learning rate on the task's validation split and
report test accuracy for that learning rate only. Results are cached, keyed by the source's
weights, the task's data, the hyper-parameters and :func:`code_version`.
"""

from __future__ import annotations

import copy
import sys
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, fields

import torch
import torch.nn.functional as F
from torch import nn

from .. import cache, models, threads
from ..models import ImageModel, device_of
from ..progress import bar
from ..validation import (check_int, check_positive)
from .tasks import Task, _resize

__all__ = ["TransferHparams", "PAPER_HPARAMS", "TransferResult", "fixed_feature", "fine_tune",
           "code_version"]


@dataclass(frozen=True)
class TransferHparams:
    """The hyper-parameters of a transfer, both modes (:func:`fixed_feature`,
    :func:`fine_tune`). Defaults are this library's; :data:`PAPER_HPARAMS` holds the paper's.

    Salman et al. 2020, appendix (transfer set-up), for both modes: SGD with momentum 0.9,
    batch 64, 150 epochs, learning rate divided by 10 every 50 epochs, weight decay 5e-4,
    learning rate chosen from {0.01, 0.001} on validation.
    """

    lrs: tuple = (0.1, 0.01, 0.001)  # learning rates tried; the best on validation is kept (paper: 0.01, 0.001)
    epochs: int = 30                 # passes over the training split (paper: 150)
    batch_size: int = 64             # images per SGD step (paper: 64)
    momentum: float = 0.9            # SGD momentum, in [0, 1) (paper: 0.9)
    weight_decay: float = 5e-4       # SGD weight decay, added as wd * p to each gradient (paper: 5e-4)
    lr_step: int | None = 10         # epochs between divisions of the rate by 10; None: constant (paper: 50)
    seed: int = 0                    # the head's initialisation and the batch order
    augment: bool = False            # the paper's random resized crops and flips (paper: yes)

    def __post_init__(self):
        lrs = self.lrs
        if isinstance(lrs, (int, float)) or not isinstance(lrs, Sequence) or len(lrs) == 0:
            raise ValueError(f"lrs: expected a non-empty sequence of learning rates, got {lrs!r}; "
                             f"pass e.g. lrs=(0.01, 0.001)")
        lrs = tuple(check_positive(v, "lrs entry") for v in lrs)
        if len(set(lrs)) != len(lrs):
            raise ValueError(f"lrs: expected distinct learning rates, got {lrs}")
        momentum = check_positive(self.momentum, "momentum", allow_zero=True)
        if momentum >= 1:
            raise ValueError(f"momentum: expected a value in [0, 1), got {momentum}")
        checked = dict(lrs=lrs, epochs=check_int(self.epochs, "epochs"),
                       batch_size=check_int(self.batch_size, "batch_size"), momentum=momentum,
                       weight_decay=check_positive(self.weight_decay, "weight_decay",
                                                   allow_zero=True),
                       lr_step=None if self.lr_step is None else check_int(self.lr_step, "lr_step"),
                       seed=check_int(self.seed, "seed", 0), augment=bool(self.augment))
        for k, v in checked.items():
            object.__setattr__(self, k, v)

    @classmethod
    def of(cls, base: TransferHparams | None = None, **overrides) -> TransferHparams:
        """``base`` (default: the library's defaults) with ``overrides`` by field name; an
        unknown name is an error that lists the fields."""
        names = [f.name for f in fields(cls)]
        unknown = sorted(set(overrides) - set(names))
        if unknown:
            raise TypeError(f"unknown transfer hyper-parameter(s) {unknown}; expected some of "
                            f"{names}")
        return cls(**{**asdict(base or cls()), **overrides})

    def as_dict(self) -> dict:
        return asdict(self)


#: Salman et al. 2020's hyper-parameters (both modes); use as ``fixed_feature(model, task,
#: PAPER_HPARAMS)``.
PAPER_HPARAMS = TransferHparams(lrs=(0.01, 0.001), epochs=150, batch_size=64, momentum=0.9,
                                weight_decay=5e-4, lr_step=50)


def code_version() -> str:
    """The version of the code a transfer's result depends on (this module and the models):
    part of every transfer's cache key, here and in :class:`stir_lib.jobs.Transfer`."""
    return cache.code_version(models, sys.modules[__name__])

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
           "code": code_version()}
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
def fixed_feature(model: ImageModel, task: Task, hparams: TransferHparams | None = None, *,
                  use_cache: bool = True, progress: bool | None = None,
                  **overrides) -> TransferResult:
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
        hparams: the :class:`TransferHparams` (default: the library's; the paper's are
            :data:`PAPER_HPARAMS`); weight decay applies to the head's weight and bias.
            With ``augment`` (the paper's random resized crops and flips) the head is
            trained through the frozen body (eval mode) on fresh crops every epoch, and
            validation and test features are computed once from the plain images.
        **overrides: fields of :class:`TransferHparams` replacing those of ``hparams``
            (``lrs=(0.01,)``, ``epochs=5``, ...).
        use_cache: load/store the result in the cache (:mod:`stir_lib.cache`), keyed by
            the source's weights, the task's data and the hyper-parameters.
        progress: progress bar; None shows it only on a terminal.

    Returns:
        :class:`TransferResult` whose model is a copy of the source with the chosen head.
    """
    hp = TransferHparams.of(hparams, **overrides).as_dict()

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
def fine_tune(model: ImageModel, task: Task, hparams: TransferHparams | None = None, *,
              use_cache: bool = True, progress: bool | None = None,
              **overrides) -> TransferResult:
    """Full-network transfer: a copy of the source with a fresh head, every weight trained.

    For each learning rate, a fresh copy of the source gets a new linear head (same
    seeded initialisation) and all its parameters are trained with SGD in train mode
    (BatchNorm statistics update); the rate with the best validation accuracy is chosen
    and only its test accuracy is measured. Arguments and result as
    :func:`fixed_feature`; weight decay applies to every parameter; ``augment`` crops and
    flips each training batch (the paper's augmentation).
    """
    hp = TransferHparams.of(hparams, **overrides).as_dict()

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


