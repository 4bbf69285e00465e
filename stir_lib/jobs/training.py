"""Jobs that produce data, trained models and inversions: :class:`Data`, :class:`Train`,
:class:`Snapshot` and :class:`Invert`."""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache

import torch

from .. import cache, data
from ..models import create_model, resolve_device
from ..training import TrainConfig, model_key, trained_model
from ..validation import check_choice
from ..features import resolve_layer
from ..inversion import _DEFAULTS, inversion_key, invert
from ..training import TrainedModel
from .base import _key, macs_per_example

__all__ = ["Data", "Train", "Snapshot", "Invert", "DATASETS"]

DATASETS = ("mnist", "fashion-mnist", "cifar10")   # the registered sets (stir_lib.data) jobs use
_SIZES = {"mnist": {"train": 60000, "test": 10000}, "fashion-mnist": {"train": 60000, "test": 10000},
          "cifar10": {"train": 50000, "test": 10000}}


@lru_cache(maxsize=8)
def _load(name: str, split: str, root: str | None, verify: bool):
    return data.load(name, split, root, verify=verify)


@dataclass(frozen=True)
class Data:
    """Images and labels by description.

    Args:
        name: one of :data:`DATASETS`.
        split: "train" or "test".
        n: a stratified seeded subset of this size (:func:`stir_lib.data.subset`); None: all.
        seed: seeds the subset.
        classes: keep only these labels, renumbered 0..k-1 in the given order; None: all.
        first: nested subsets: the first ``first`` images of one seeded shuffle of the
            split (so first=5000 is inside first=10000); None: not used.
        root, verify: where the files are and whether to check their digests (CIFAR);
            not part of any key (the content's fingerprint is).
    """

    name: str
    split: str = "train"
    n: int | None = None
    seed: int = 0
    classes: tuple | None = None
    first: int | None = None
    root: str | None = field(default=None, compare=False)
    verify: bool = field(default=True, compare=False)

    def __post_init__(self):
        check_choice(self.name, "data name", DATASETS)
        check_choice(self.split, "split", ("train", "test"))

    def load(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(images, labels), memoised per process for the underlying split."""
        x, y = _load(self.name, self.split, self.root, self.verify)
        if self.classes is not None:
            keep = torch.isin(y, torch.tensor(self.classes))
            lookup = torch.full((int(y.max()) + 1,), -1, dtype=torch.int64)
            lookup[torch.tensor(self.classes)] = torch.arange(len(self.classes))
            x, y = x[keep], lookup[y[keep]]
        if self.first is not None:
            order = torch.randperm(len(x), generator=torch.Generator().manual_seed(self.seed))
            idx = order[:self.first]
            x, y = x[idx], y[idx]
        if self.n is not None:
            x, y = data.subset(x, y, self.n, self.seed)
        return x.contiguous(), y.contiguous()

    @property
    def images(self) -> torch.Tensor:
        return self.load()[0]

    def count(self) -> int:
        """Number of images, without loading when the files are absent (class subsets of
        these balanced data sets are estimated as k/10 of the split)."""
        try:
            return len(self.load()[0])
        except Exception:  # noqa: BLE001 - data not on this machine: estimate for the plan
            n = _SIZES[self.name][self.split]
            if self.classes is not None:
                n = n * len(self.classes) // 10
            for cap in (self.first, self.n):
                if cap is not None:
                    n = min(n, cap)
            return n


@dataclass(frozen=True)
class Train:
    """A model of the registry trained as ``config`` says on ``data`` (see
    :func:`stir_lib.training.trained_model`). ``init``: start from that job's final
    weights (fine-tuning, model updates). ``label`` is a display name only."""

    arch: str
    config: TrainConfig
    data: Data
    kwargs: tuple = ()
    init: Train | None = None
    label: str = field(default="", compare=False)

    kind = "model"

    def key_config(self) -> dict:
        x, y = self.data.load()
        return model_key(self.arch, x, y, self.config, dict(self.kwargs),
                         init_key=self.init.key() if self.init is not None else None)

    def key(self) -> str:
        return _key(self)

    def cached(self) -> bool:
        return cache.exists("model", self.key_config())

    def deps(self) -> tuple:
        return (self.init,) if self.init is not None else ()

    def _per_step(self) -> tuple[float, int]:
        """FLOPs per image of one optimiser step, in units of the forward MACs, and the
        forward passes (each with its backward) the step makes.

        A forward pass costs 2 FLOPs per MAC; its backward 4 when the weights' gradients
        are needed, 2 when only the input's are (an attack's step: 4 in all). With head-only
        training the body runs forward only."""
        c = self.config
        k = c.adv_steps if c.loss != "ce" and c.adv_eps > 0 else 0   # eps 0: no attack runs
        trained = 2.0 if c.train_params == "head" else 6.0           # one pass that is trained
        two = {"ce": 1, "pgd-at": 1, "pgd-mix": 2, "trades": 2, "mart": 2}[c.loss]
        clean = 1 if c.loss == "trades" else 0                       # TRADES' clean target pass
        return two * trained + 4.0 * k + 2.0 * clean, two + k + clean

    def calls(self) -> int:
        """Forward passes (each with its backward) over batches: the count that a step's
        fixed cost is paid per."""
        c = self.config
        per_epoch = -(-self.data.count() // c.batch_size)
        return (self._per_step()[1] * c.epochs + 1 * c.autoencoder_epochs) * per_epoch

    def flops(self) -> float:
        """Training cost as it runs: per image and step, the forward MACs times
        :meth:`_per_step`'s factor, times the epochs and the training images; autoencoder
        pre-training as one trained pass through encoder and decoder (twice the MACs)."""
        c = self.config
        macs, n = macs_per_example(self.arch, self.kwargs), self.data.count()
        return macs * n * (self._per_step()[0] * c.epochs + 12.0 * c.autoencoder_epochs)

    def run(self, device=None, progress=None):
        """Train (or load) the model; returns a :class:`~stir_lib.training.TrainedModel`."""
        x, y = self.data.load()
        init_key = None
        if self.init is not None:
            self.init.run(device, progress)          # loads it when cached
            init_key = self.init.key()
        return trained_model(self.arch, x, y, self.config, dict(self.kwargs),
                             init_key=init_key, device=device, progress=progress)

    def describe(self) -> str:
        c = self.config
        extra = f" from {self.init.label or self.init.arch}" if self.init is not None else ""
        return (f"train {self.label or self.arch}: {c.loss}, {c.epochs} epochs on "
                f"{self.data.count()} {self.data.name} images{extra}")


@dataclass(frozen=True)
class Snapshot:
    """The weights of a :class:`Train` run after ``epoch`` epochs (one of its
    ``config.snapshots``): no computation of its own, it is read from the run's entry."""

    train: Train
    epoch: int

    kind = "snapshot"

    @property
    def arch(self) -> str:
        return self.train.arch

    @property
    def kwargs(self) -> tuple:
        return self.train.kwargs

    @property
    def label(self) -> str:
        return f"{self.train.label or self.train.arch} @ epoch {self.epoch}"

    def __post_init__(self):
        if self.epoch not in self.train.config.snapshots:
            raise ValueError(f"snapshot epoch {self.epoch}: expected one of the run's "
                             f"snapshots {self.train.config.snapshots}")

    def key(self) -> str:
        return f"{self.train.key()}@{self.epoch}"

    def cached(self) -> bool:
        return self.train.cached()

    def deps(self) -> tuple:
        return (self.train,)

    def flops(self) -> float:
        return 0.0

    def calls(self) -> int:
        return 0

    def run(self, device=None, progress=None):
        trained = self.train.run(device, progress)
        model = create_model(self.arch, **dict(self.kwargs))
        model.load_state_dict(trained.history["snapshots"][self.epoch])
        model.to(resolve_device(device)).eval()
        cache.tag_model(model, self.key())
        return TrainedModel(model, {}, self.key())

    def describe(self) -> str:
        return f"snapshot {self.label}"


@dataclass(frozen=True)
class Invert:
    """The IRIs of ``model`` for the images of ``X`` (see :func:`stir_lib.inversion.invert`,
    with its defaults for ``steps``/``step_size`` when None). ``fake_relu`` and
    ``clamp_start`` are the public STIR code's choices (default: the paper's procedure);
    they enter the key only when not the default, as :func:`~stir_lib.inversion.inversion_key`
    does."""

    model: Train | Snapshot
    X: Data
    layer: str | None = None
    method: str = "reference"
    steps: int | None = None
    step_size: float | None = None
    seed: int = 0
    seed_kind: str = "noise"
    spatial: str = "flatten"
    fake_relu: bool = False
    clamp_start: bool = True

    kind = "inversion"

    def _resolved(self):
        d_steps, d_size = _DEFAULTS[self.method]
        layer = resolve_layer(create_model(self.model.arch, **dict(self.model.kwargs)), self.layer)
        return (layer, d_steps if self.steps is None else self.steps,
                float(d_size if self.step_size is None else self.step_size))

    def key_config(self) -> dict:
        layer, steps, step_size = self._resolved()
        return inversion_key(f"model:{self.model.key()}", self.X.images, layer,
                             spatial=self.spatial, method=self.method, steps=steps,
                             step_size=step_size, seed=self.seed, seed_kind=self.seed_kind,
                             box=(0.0, 1.0), fake_relu=self.fake_relu,
                             clamp_start=self.clamp_start)

    def key(self) -> str:
        return _key(self)

    def cached(self) -> bool:
        return cache.exists("inversion", self.key_config())

    def deps(self) -> tuple:
        # a snapshot is read from its run's entry: the run is what must be computed
        return (self.model.train,) if isinstance(self.model, Snapshot) else (self.model,)

    def flops(self) -> float:
        """Each step: a forward pass up to the layer and a backward pass for the input only
        (no weight gradients): 4 FLOPs per MAC of that part of the model, per image."""
        layer, steps, _ = self._resolved()
        macs = macs_per_example(self.model.arch, self.model.kwargs,
                                layer if isinstance(layer, str) else None)
        return 4.0 * macs * (steps + 1) * self.X.count()

    def calls(self) -> int:
        """Forward/backward passes over batches (500 images at a time, the default)."""
        _, steps, _ = self._resolved()
        return (steps + 1) * -(-self.X.count() // 500)

    def run(self, device=None, progress=None):
        model = self.model.run(device, progress).model
        return invert(model, self.X.images, self.layer, method=self.method, steps=self.steps,
                      step_size=self.step_size, seed=self.seed, seed_kind=self.seed_kind,
                      spatial=self.spatial, use_cache=True, progress=progress,
                      fake_relu=self.fake_relu, clamp_start=self.clamp_start)

    def describe(self) -> str:
        layer, steps, _ = self._resolved()
        authors = ((", straight-through ReLU" if self.fake_relu else "")
                   + ("" if self.clamp_start else ", unclamped start"))
        return (f"invert {self.model.label or self.model.arch} at {layer}: {self.X.count()} "
                f"images, {self.method} {steps} steps, seed {self.seed}{authors}")


