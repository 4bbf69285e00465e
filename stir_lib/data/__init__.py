"""Data sets, as float32 image tensors (N, C, H, W) in [0, 1] and int64 labels.

* :mod:`.mnist_sets`: MNIST and Fashion-MNIST, each from the first of several sources that
  works, every source checked against the same content digests; Szegedy et al.'s halves.
* :mod:`.cifar`: CIFAR-10/100 from torchvision's on-disk copies (nothing is downloaded).
* :mod:`.folders`: image folders (torchvision's ``ImageFolder`` layout), scikit-learn's
  digits, scikit-image's faces.
* :mod:`.transforms`: seeded subsets, the granularity transform.

The data folder is ``$STIR_DATA`` if set, else ``~/.cache/stir_lib/data``. Data sets known
by name are in one registry, :data:`DATASETS`; :func:`load` reads one of them.
"""

from __future__ import annotations

import os
from collections.abc import Callable

from ._sources import data_root
from .cifar import DatasetNotFoundError, cifar10, cifar100, cifar_classes
from .folders import IMG_EXTENSIONS, digits, image_folder, lfw_faces
from .mnist_sets import (FASHION_CLASSES, FashionMNISTUnavailableError, MNISTUnavailableError,
                         fashion_mnist, mnist, mnist_halves)
from .transforms import downscale, subset

__all__ = ["data_root", "mnist", "mnist_halves", "fashion_mnist", "FASHION_CLASSES",
           "FashionMNISTUnavailableError", "digits", "lfw_faces", "subset",
           "MNISTUnavailableError", "cifar10", "cifar100", "cifar_classes", "image_folder",
           "IMG_EXTENSIONS", "downscale", "DatasetNotFoundError", "DATASETS", "load"]

#: The data sets known by name (jobs, transfer tasks): name -> loader(split, root, verify).
#: ``verify`` checks a file's MD5 where the set has one (CIFAR); MNIST and Fashion-MNIST are
#: always checked against their content digests.
DATASETS: dict[str, Callable] = {
    "mnist": lambda split, root=None, verify=True: mnist(split, root),
    "fashion-mnist": lambda split, root=None, verify=True: fashion_mnist(split, root),
    "cifar10": lambda split, root=None, verify=True: cifar10(split, root, verify=verify),
    "cifar100": lambda split, root=None, verify=True: cifar100(split, root, verify=verify),
}


def load(name: str, split: str = "train", root: str | os.PathLike | None = None, *,
         verify: bool = True):
    """(images, labels) of the registered data set ``name`` (one of :data:`DATASETS`)."""
    if name not in DATASETS:
        raise ValueError(f"dataset: expected one of {sorted(DATASETS)}, got {name!r}; register "
                         f"a loader in stir_lib.data.DATASETS or use the loader directly")
    return DATASETS[name](split, root, verify)
