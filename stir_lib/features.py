"""Named intermediate outputs of any PyTorch model, for inversion, STIR and CKA.

Two kinds of model are read the same way:

* a :class:`stir_lib.models.ImageModel`: its stages by name (``model.layer_names``); with
  no layer given, the penultimate stage (the paper's default representation);
* any other ``torch.nn.Module`` (a torchvision or timm model, a plain ``nn.Sequential``):
  its submodules by their path as ``named_modules()`` spells them (``"layer4.1.conv2"``,
  ``"3"``), plus ``"output"`` for what the model returns; with no layer given, the
  output. The named module's output is captured by a forward hook, and the rest of the
  forward pass is skipped.

An unknown name is a ValueError that lists the valid ones. Inputs are images in the
``box`` the caller states (default [0, 1]); any normalisation stays inside the model.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from .models import ImageModel
from .validation import check_choice, check_finite, check_tensor

__all__ = ["OUTPUT", "layer_names", "default_layer", "resolve_layer", "layer_output",
           "check_model", "check_input"]

OUTPUT = "output"


def check_model(model, name: str = "model") -> nn.Module:
    """``model`` if it is a torch.nn.Module, else a TypeError saying what to pass."""
    if not isinstance(model, nn.Module):
        raise TypeError(f"{name}: expected a torch.nn.Module (a stir_lib ImageModel, a "
                        f"torchvision model, an nn.Sequential, ...), got {type(model).__name__}")
    return model


def layer_names(model: nn.Module) -> list[str]:
    """The names :func:`layer_output` accepts, input to output."""
    if isinstance(model, ImageModel):
        return model.layer_names
    return [n for n, _ in model.named_modules() if n] + [OUTPUT]


def default_layer(model: nn.Module) -> str:
    """The penultimate stage of an ImageModel, the output of any other module."""
    return model.penultimate if isinstance(model, ImageModel) else OUTPUT


def resolve_layer(model: nn.Module, layer: str | None, name: str = "layer") -> str:
    """``layer`` checked against :func:`layer_names`; None gives :func:`default_layer`."""
    if layer is None:
        return default_layer(model)
    if isinstance(model, ImageModel):
        check_choice(layer, name, model.layer_names)
        return layer
    if layer != OUTPUT and layer not in dict(model.named_modules()):
        names = layer_names(model)
        shown = names if len(names) <= 40 else names[:20] + ["..."] + names[-19:]
        raise ValueError(f"{name}: expected a module path of the model (as named_modules() "
                         f"spells it) or {OUTPUT!r}, got {layer!r}; valid: {shown}")
    return layer


class _Stop(Exception):
    """Raised by the hook once the wanted output is captured: skips the rest of the pass."""


def layer_output(model: nn.Module, x: torch.Tensor, layer: str) -> torch.Tensor:
    """The output of ``layer`` for input ``x`` (differentiable; layer already resolved)."""
    if isinstance(model, ImageModel):
        return model.features(x, layer)
    if layer == OUTPUT:
        out = model(x)
    else:
        captured = []

        def hook(_module, _inputs, output):
            captured.append(output)
            raise _Stop

        handle = dict(model.named_modules())[layer].register_forward_hook(hook)
        try:
            model(x)
        except _Stop:
            pass
        finally:
            handle.remove()
        if not captured:
            raise RuntimeError(f"layer {layer!r} was not called in the forward pass; pick a "
                               f"module that the model's forward() uses")
        out = captured[0]
    if not isinstance(out, torch.Tensor):
        raise TypeError(f"layer {layer!r}: expected a tensor output, got {type(out).__name__}; "
                        f"pick a module that returns one tensor")
    return out


def check_input(model: nn.Module, x, name: str = "x",
                box: Sequence[float] = (0.0, 1.0)) -> torch.Tensor:
    """Validate an input batch: an ImageModel's own check, else a finite float tensor with a
    batch axis whose values lie in ``box``."""
    lo, hi = float(box[0]), float(box[1])
    if not lo < hi:
        raise ValueError(f"box: expected (low, high) with low < high, got {tuple(box)}")
    if isinstance(model, ImageModel):
        if (lo, hi) != (0.0, 1.0):
            raise ValueError(f"box: a stir_lib ImageModel takes images in [0, 1] (it "
                             f"normalises inside), got box {tuple(box)}")
        return model.check_input(x, name)
    check_tensor(x, name)
    if not x.is_floating_point() or x.ndim < 2:
        raise ValueError(f"{name}: expected a floating-point batch (N, ...), got {x.dtype} of "
                         f"shape {tuple(x.shape)}")
    check_finite(x, name)
    if len(x) and (float(x.min()) < lo - 1e-6 or float(x.max()) > hi + 1e-6):
        raise ValueError(f"{name}: expected values in the box [{lo:g}, {hi:g}], got range "
                         f"[{float(x.min()):.4g}, {float(x.max()):.4g}]; pass box=(low, high) "
                         f"for other input ranges and keep normalisation inside the model")
    return x
