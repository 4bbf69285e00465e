"""A chapter's heavy work as small, picklable job descriptions: a *plan*.

Every expensive result of the STIR and transfer chapters is a cache entry
(:mod:`stir_lib.cache`): a trained model, an inversion, a transfer. Each is described
here by a frozen dataclass that names its inputs, not their tensors:

* :class:`Data`: a data set by name, split, subset size and seed;
* :class:`Train`: a model trained from an architecture, keyword arguments, a
  :class:`~stir_lib.training.TrainConfig` and a :class:`Data` (optionally starting from
  another :class:`Train`'s weights);
* :class:`Invert`: the IRIs of a :class:`Train` model for a :class:`Data` of images;
* :class:`Transfer` (in :mod:`stir_lib.transfer`): a source transferred to a task.

Each job knows its cache key (``key()``, computable before anything is trained, because
a dependent job is keyed by its dependency's key, not its weights), whether it is cached
(``cached()``), what it depends on (``deps()``), a rough cost in floating-point
operations (``flops()``) and how to compute itself (``run(device)``), which goes
through the same library call a notebook makes, so the entry it writes is the one the
notebook reads. A chapter's plan (``stir_lib.chapters.<chapter>.plan``) lists them; the
notebook builds its zoo from the same functions, so the two cannot drift apart.
:func:`levels` orders a plan so that every job comes after what it needs;
:mod:`stir_lib.cluster` runs plans on a SLURM cluster or as local processes.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from functools import lru_cache

import torch
from torch import nn

from . import cache, data
from .models import create_model
from .training import TrainConfig, model_key, trained_model
from .validation import check_choice

__all__ = ["Data", "Train", "Snapshot", "Invert", "levels", "missing", "run_job", "macs_per_example",
           "DATASETS"]

DATASETS = ("mnist", "fashion-mnist", "cifar10")
_SIZES = {"mnist": {"train": 60000, "test": 10000}, "fashion-mnist": {"train": 60000, "test": 10000},
          "cifar10": {"train": 50000, "test": 10000}}


@lru_cache(maxsize=8)
def _load(name: str, split: str, root: str | None, verify: bool):
    if name == "mnist":
        return data.mnist(split, root)
    if name == "fashion-mnist":
        return data.fashion_mnist(split, root)
    return data.cifar10(split, root, verify=verify)


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


def macs_per_example(arch: str, kwargs: tuple = ()) -> int:
    """Multiply-accumulates of one forward pass of a registry model (convolutions and
    linear layers), counted by forward hooks on one dummy input."""
    model = create_model(arch, **dict(kwargs))
    total = [0]

    def hook(module, inputs, output):
        if isinstance(module, nn.Conv2d):
            k = module.in_channels // module.groups * module.kernel_size[0] * module.kernel_size[1]
            total[0] += output.numel() * k
        elif isinstance(module, nn.Linear):
            total[0] += output.numel() * module.in_features

    handles = [m.register_forward_hook(hook) for m in model.modules()
               if isinstance(m, (nn.Conv2d, nn.Linear))]
    with torch.no_grad():
        model.eval()(torch.zeros(1, *model.input_shape))
    for h in handles:
        h.remove()
    return total[0]


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

    def flops(self) -> float:
        """Training cost: 3 x forward MACs x 2 (FLOPs) per example and pass, times the PGD
        steps of adversarial losses, the epochs and the training images."""
        passes = 1 + (self.config.adv_steps if self.config.loss != "ce" else 0)
        return (6.0 * macs_per_example(self.arch, self.kwargs) * passes * self.config.epochs
                * self.data.count())

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


@lru_cache(maxsize=4096)
def _key(job) -> str:
    return cache.config_key(job.kind, job.key_config())


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

    def run(self, device=None, progress=None):
        from .models import resolve_device
        from .training import TrainedModel
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
    with its defaults for ``steps``/``step_size`` when None)."""

    model: Train | Snapshot
    X: Data
    layer: str | None = None
    method: str = "reference"
    steps: int | None = None
    step_size: float | None = None
    seed: int = 0
    seed_kind: str = "noise"
    spatial: str = "flatten"

    kind = "inversion"

    def _resolved(self):
        from .inversion import _DEFAULTS
        from .features import resolve_layer
        d_steps, d_size = _DEFAULTS[self.method]
        layer = resolve_layer(create_model(self.model.arch, **dict(self.model.kwargs)), self.layer)
        return (layer, d_steps if self.steps is None else self.steps,
                float(d_size if self.step_size is None else self.step_size))

    def key_config(self) -> dict:
        from .inversion import inversion_key
        layer, steps, step_size = self._resolved()
        return inversion_key(f"model:{self.model.key()}", self.X.images, layer,
                             spatial=self.spatial, method=self.method, steps=steps,
                             step_size=step_size, seed=self.seed, seed_kind=self.seed_kind,
                             box=(0.0, 1.0))

    def key(self) -> str:
        return _key(self)

    def cached(self) -> bool:
        return cache.exists("inversion", self.key_config())

    def deps(self) -> tuple:
        # a snapshot is read from its run's entry: the run is what must be computed
        return (self.model.train,) if isinstance(self.model, Snapshot) else (self.model,)

    def flops(self) -> float:
        _, steps, _ = self._resolved()
        return 6.0 * macs_per_example(self.model.arch, self.model.kwargs) * steps * self.X.count()

    def run(self, device=None, progress=None):
        from .inversion import invert
        model = self.model.run(device, progress).model
        return invert(model, self.X.images, self.layer, method=self.method, steps=self.steps,
                      step_size=self.step_size, seed=self.seed, seed_kind=self.seed_kind,
                      spatial=self.spatial, use_cache=True, progress=progress)

    def describe(self) -> str:
        layer, steps, _ = self._resolved()
        return (f"invert {self.model.label or self.model.arch} at {layer}: {self.X.count()} "
                f"images, {self.method} {steps} steps, seed {self.seed}")


def _unique(jobs) -> list:
    seen, out = set(), []
    for j in jobs:
        k = (j.kind, j.key())
        if k not in seen:
            seen.add(k)
            out.append(j)
    return out


def levels(jobs) -> list[list]:
    """The jobs and everything they depend on, in waves: every job's dependencies are in
    earlier waves. Duplicates (the same cache entry) appear once."""
    everything, stack = {}, list(jobs)
    while stack:
        j = stack.pop()
        k = (j.kind, j.key())
        if k in everything:
            continue
        everything[k] = j
        stack.extend(j.deps())
    depth: dict = {}

    def level(j) -> int:
        k = (j.kind, j.key())
        if k not in depth:
            depth[k] = 1 + max((level(d) for d in j.deps()), default=-1)
        return depth[k]

    waves: list[list] = []
    for k, j in everything.items():
        lv = level(j)
        while len(waves) <= lv:
            waves.append([])
        waves[lv].append(j)
    order = {k: i for i, k in enumerate(everything)}
    return [sorted(w, key=lambda j: order[(j.kind, j.key())]) for w in waves]


def missing(jobs) -> list:
    """The jobs (and dependencies) whose cache entries are absent, in dependency order."""
    return [j for wave in levels(jobs) for j in wave if not j.cached()]


def run_job(job, device="auto", progress=False) -> str:
    """Compute one job's cache entry (the function a cluster job runs); returns its key.

    ``device="auto"``: CUDA when the worker has a GPU, else the CPU.
    """
    job.run(device, progress)
    return job.key()


def describe_plan(jobs, flops_per_second: float) -> list[dict]:
    """One row per job: wave, kind, description, cached (None: unknown, the data are not on
    this machine), estimated FLOPs and seconds at ``flops_per_second``.

    Without the data the waves cannot be computed (keys need the data's fingerprints);
    the jobs are then listed in plan order, dependencies first, as wave None.
    """
    try:
        waves = list(enumerate(levels(jobs)))
    except Exception:  # noqa: BLE001 - no data: list without keys
        seen, flat = set(), []
        def add(j):
            for d in j.deps():
                add(d)
            if j not in seen:
                seen.add(j)
                flat.append(j)
        for j in jobs:
            add(j)
        waves = [(None, flat)]
    rows = []
    for wave, js in waves:
        for j in js:
            try:
                done, key = j.cached(), j.key()
            except Exception:  # noqa: BLE001
                done, key = None, None
            f = j.flops()
            rows.append({"wave": wave, "kind": j.kind, "job": j.describe(), "cached": done,
                         "key": key, "flops": f, "seconds": 0.0 if done else f / flops_per_second})
    return rows


def fmt_flops(f: float) -> str:
    if f <= 0:
        return "0"
    e = int(math.floor(math.log10(f) / 3))
    return f"{f / 10 ** (3 * e):.3g}{['', 'K', 'M', 'G', 'T', 'P', 'E'][max(0, min(e, 6))]}"


def config_dict(job) -> dict:
    """The job's fields as plain data (for logs)."""
    return asdict(job)
