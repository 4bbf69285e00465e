"""Images from folders (torchvision's ``ImageFolder`` layout, ``root/<class>/<image>``) and
the small data sets that ship inside packages (scikit-learn's digits, scikit-image's
``lfw_subset``)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch

from ..progress import bar
from .cifar import DatasetNotFoundError

__all__ = ["image_folder", "IMG_EXTENSIONS", "digits", "lfw_faces"]

IMG_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")


def _size_pair(size, name: str = "size") -> tuple[int, int]:
    """An int n -> (n, n); a pair (h, w) -> (h, w); both positive."""
    def is_int(v):
        return isinstance(v, (int, np.integer)) and not isinstance(v, bool)

    if is_int(size):
        size = (size, size)
    if not (isinstance(size, (tuple, list)) and len(size) == 2 and all(map(is_int, size))):
        raise TypeError(f"{name}: expected an int or a pair (h, w) of ints, got {size!r}")
    if min(size) < 1:
        raise ValueError(f"{name}: expected sizes >= 1 pixel, got {tuple(size)}")
    return int(size[0]), int(size[1])


def _image_files(folder: Path) -> list[Path]:
    """Image files under ``folder`` (recursively), in torchvision's order; hidden ones skipped."""
    found = []
    for dirpath, dirnames, fnames in os.walk(folder, followlinks=True):
        dirnames[:] = [d for d in dirnames if not d.startswith(".")]
        found.append((dirpath, sorted(f for f in fnames if not f.startswith(".")
                                      and f.lower().endswith(IMG_EXTENSIONS))))
    return [Path(d) / f for d, fnames in sorted(found) for f in fnames]


def image_folder(root: str | os.PathLike, size=None, classes=None, *,
                 progress: bool | None = None):
    """Images in torchvision's ``ImageFolder`` layout, ``root/<class>/<image>``, in memory.

    Each class is a sub-folder; its label is the class's index in ``classes``, by
    default all sub-folders sorted by name (as torchvision numbers them). Images are
    read with PIL, converted to RGB and, if ``size`` is given, resized with bilinear
    resampling. Files are taken in torchvision's order; extensions are torchvision's
    (``IMG_EXTENSIONS``, any case). Unlike torchvision, hidden files and folders (names
    starting with ".", e.g. ``.ipynb_checkpoints`` or macOS ``._x.jpg``) are skipped.

    Args:
        root: the folder holding one sub-folder per class.
        size: output size in pixels, an int n for n x n or a pair (h, w); None keeps
            the files' size, which must then be the same for all.
        classes: class folder names to read, in label order (label i = classes[i]);
            default all sub-folders, sorted.
        progress: progress bar; None shows it only on a terminal.

    Returns:
        images: float32 tensor (N, 3, H, W), pixel = byte / 255, in [0, 1].
        labels: int64 tensor (N,).
        class_names: list of the class folder names, class_names[label].
    """
    from PIL import Image

    root = Path(root).expanduser()
    hw = None if size is None else _size_pair(size)
    if not root.is_dir():
        raise DatasetNotFoundError(f"image_folder: expected a folder {root} with one sub-folder "
                                   f"of images per class (root/<class>/<image>), found no such "
                                   f"folder; check the path")
    found = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not found:
        loose = sum(p.suffix.lower() in IMG_EXTENSIONS for p in root.iterdir())
        raise DatasetNotFoundError(f"image_folder: expected one sub-folder per class in {root} "
                                   f"(root/<class>/<image>), found no sub-folders (and {loose} "
                                   f"image files directly in it); put each class's images in "
                                   f"a folder named after the class")
    if classes is None:
        names = found
    else:
        if isinstance(classes, (str, bytes)):
            raise TypeError(f"classes: expected a list of class folder names, got the string "
                            f"{classes!r}; wrap it in a list")
        names = list(classes)
        unknown = [c for c in names if c not in found]
        if not names or unknown or len(set(names)) != len(names):
            raise ValueError(f"classes: expected distinct names of class folders in {root} "
                             f"(one or more of {found}), got {names}"
                             + (f" with unknown {unknown}" if unknown else ""))
    files, labels = [], []
    for label, name in enumerate(names):
        got = _image_files(root / name)
        if not got:
            held = sorted(p.name for p in (root / name).iterdir())
            raise DatasetNotFoundError(f"image_folder: expected image files "
                                       f"({' '.join(IMG_EXTENSIONS)}) in the class folder "
                                       f"{root / name}, found none (it holds "
                                       f"{held[:5]}); add images or leave the class out with "
                                       f"classes=[...]")
        files += got
        labels += [label] * len(got)
    arrays = []
    for path in bar(files, desc=f"reading {root.name}", progress=progress):
        try:
            with Image.open(path) as im:
                im = im.convert("RGB")
                if hw is not None and im.size != (hw[1], hw[0]):  # PIL sizes are (w, h)
                    im = im.resize((hw[1], hw[0]), Image.Resampling.BILINEAR)
                arrays.append(np.asarray(im, dtype=np.uint8))  # (H, W, 3)
        except OSError as err:
            raise ValueError(f"{path}: expected an image file PIL can read, got "
                             f"{type(err).__name__}: {err}; remove or replace it") from err
    sizes: dict = {}
    for a, path in zip(arrays, files):
        sizes.setdefault(a.shape[:2], path)
    if len(sizes) > 1:
        listing = "; ".join(f"{h}x{w} e.g. {p}" for (h, w), p in list(sizes.items())[:4])
        raise ValueError(f"image_folder: expected images of one size (h x w), got {len(sizes)} "
                         f"sizes: {listing}; pass size=(h, w) or size=n to resize them")
    x = np.ascontiguousarray(np.stack(arrays).transpose(0, 3, 1, 2))  # (N, 3, H, W)
    return (torch.from_numpy(x).float().div_(255.0), torch.tensor(labels, dtype=torch.int64),
            list(names))




def digits():
    """scikit-learn's 8x8 digits (1,797 images, 10 classes; UCI, Alpaydin & Kaynak 1998).

    Returns images (1797, 1, 8, 8) float32 in [0, 1] (value / 16) and int64 labels.
    """
    from sklearn.datasets import load_digits

    bunch = load_digits()
    x = torch.from_numpy(bunch.images.astype(np.float32) / 16.0).unsqueeze(1)
    return x, torch.from_numpy(bunch.target.astype(np.int64))


def lfw_faces():
    """scikit-image's ``lfw_subset``: 100 faces and 100 non-faces, 25x25 grey.

    Returns images (200, 1, 25, 25) float32 in [0, 1] and labels (1 = face, 0 = not),
    the first 100 being faces as the data set stores them.
    """
    from skimage.data import lfw_subset

    x = torch.from_numpy(lfw_subset().astype(np.float32)).unsqueeze(1).clamp(0, 1)
    y = torch.cat([torch.ones(100, dtype=torch.int64), torch.zeros(100, dtype=torch.int64)])
    return x, y


