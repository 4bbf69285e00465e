"""Transfer learning from a source model to downstream tasks (Salman et al. 2020).

Salman, Ilyas, Engstrom, Kapoor & Madry (NeurIPS 2020), "Do adversarially robust
ImageNet models transfer better?", transfer a source model to a downstream task in two
ways, and so does this package:

* :mod:`.tasks`: the downstream :class:`Task` (train/val/test splits), :func:`class_task`
  (classes of MNIST or Fashion-MNIST), :func:`downscaled` (the granularity experiment,
  R3) and :func:`paper_task` (the paper's downstream sets);
* :mod:`.heads`: :func:`fixed_feature` and :func:`fine_tune`, with their hyper-parameters
  in one :class:`TransferHparams` (the paper's: :data:`PAPER_HPARAMS`).

Transfers as picklable jobs are :class:`stir_lib.jobs.Transfer`; released robust ImageNet
checkpoints load with :func:`stir_lib.checkpoints.load_robustness_checkpoint`.
"""

from __future__ import annotations

from .heads import PAPER_HPARAMS, TransferHparams, TransferResult, code_version, fine_tune, fixed_feature
from .tasks import (CLASS_TASK_DATASETS, PAPER_TASKS, Task, class_task, downscale_changes, downscaled,
                    paper_task)

__all__ = ["Task", "TransferResult", "TransferHparams", "class_task", "downscaled",
           "downscale_changes", "paper_task", "fixed_feature", "fine_tune", "PAPER_HPARAMS",
           "PAPER_TASKS", "CLASS_TASK_DATASETS", "code_version"]
