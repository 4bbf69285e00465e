"""Released model checkpoints loaded into the library's models: MadryLab's ``robustness``
format (Salman et al. 2020's robust ImageNet models) into torchvision's ResNets."""

from __future__ import annotations

import pickle
from collections.abc import Mapping, Sequence
from pathlib import Path

import torch

from . import models
from .models import IMAGENET_MEAN, IMAGENET_SHAPE, IMAGENET_STD, ImageModel
from .validation import (check_choice, check_positive)

__all__ = ["load_robustness_checkpoint", "check_checkpoints"]

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



