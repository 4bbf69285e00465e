"""A chapter's heavy work as small, picklable job descriptions: a *plan*.

Every expensive result of the STIR and transfer chapters is a cache entry
(:mod:`stir_lib.cache`): a trained model, an inversion, a transfer. Each is described
here by a frozen dataclass that names its inputs, not their tensors:

* :class:`Data`: a data set by name, split, subset size and seed;
* :class:`Train`: a model trained from an architecture, keyword arguments, a
  :class:`~stir_lib.training.TrainConfig` and a :class:`Data` (optionally starting from
  another :class:`Train`'s weights);
* :class:`Invert`: the IRIs of a :class:`Train` model for a :class:`Data` of images;
* :class:`Transfer` (with :class:`TaskSpec` and :class:`Checkpoint`): a source
  transferred to a task.

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

from .base import Job, config_dict, fmt_flops, macs_per_example
from .plan import describe_plan, levels, missing, run_job
from .training import DATASETS, Data, Invert, Snapshot, Train
from .transfer import Checkpoint, TaskSpec, Transfer

__all__ = ["Job", "Data", "Train", "Snapshot", "Invert", "TaskSpec", "Checkpoint", "Transfer",
           "levels", "missing", "run_job", "macs_per_example", "describe_plan", "fmt_flops",
           "config_dict", "DATASETS"]
