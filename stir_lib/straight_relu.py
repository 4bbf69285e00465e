"""The straight-through final ReLU of the public STIR code ("fake ReLU"), for inversion.

The robustness library (Engstrom et al. 2019), on which Nanda et al.'s (2022) public STIR
code builds, can run a model with ``fake_relu=True``: the final ReLU of the representation
is a ``FakeReLU``, relu(h) in the forward pass and the identity in the backward pass, so
that units the ReLU clips to zero still pass a gradient. The public code does so for every
model not named VGG, Inception or "sparse" (its ResNets, where it is the ReLU of the last
residual block). Measured on the CPU against the library's reference inversion
(``book/paper_targets.md`` section 6): on MNIST MLPs it moved STIR by up to 0.018 and cut
the IRIs' final distances by 5-10 %.

:func:`straight_through` gives a read function whose last ReLU call is straight-through.
The ReLU is found by *call*, not by module: a :class:`torch.overrides.TorchFunctionMode`
sees every ``torch.relu``, ``F.relu`` (which ``nn.ReLU`` calls), ``Tensor.relu`` and their
in-place forms, so a module ReLU (an ImageModel stage ``Sequential(Linear, ReLU)``,
torchvision's ``BasicBlock.relu``) and a functional one (this library's ``BasicBlock`` and
residual blocks call ``torch.relu``) are treated alike. The forward value is relu(h) to the
bit (h + (relu(h) - h) is exact in floating point), so distances are the true ones.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch.overrides import TorchFunctionMode

__all__ = ["straight_through", "AFTER_RELU"]

_RELUS = (torch.relu, torch.relu_, F.relu, F.relu_, torch.Tensor.relu, torch.Tensor.relu_)
_IN_PLACE = (torch.relu_, F.relu_, torch.Tensor.relu_)
#: What may run between the last ReLU and the read point for the layer to "end in" that
#: ReLU: reshapes, average pooling and means (linear, no parameters), dropout (the identity
#: in eval mode), copies and shape queries (``__get__`` is a property such as ``.ndim``).
AFTER_RELU = frozenset({"flatten", "view", "reshape", "contiguous", "clone", "mean",
                        "adaptive_avg_pool2d", "avg_pool2d", "dropout", "__get__", "dim",
                        "size", "numel"})


class _ReLUCalls(TorchFunctionMode):
    """Counts the ReLU calls of a pass and the operations after the last one; with
    ``straight=k``, call k returns h + (relu(h) - h).detach(): relu(h) forward, identity
    backward."""

    def __init__(self, straight: int | None = None):
        super().__init__()
        self.straight, self.relus, self.after = straight, 0, list[str]()

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if any(func is f for f in _RELUS):
            k, self.relus, self.after = self.relus, self.relus + 1, []
            if k != self.straight:
                return func(*args, **kwargs)
            h = args[0]
            delta = (torch.relu(h) - h).detach()         # the mode is off inside its handler
            in_place = any(func is f for f in _IN_PLACE) or kwargs.get("inplace", False)
            return h.add_(delta) if in_place else h + delta
        self.after.append(getattr(func, "__name__", repr(func)))
        return func(*args, **kwargs)


def straight_through(read: Callable[[torch.Tensor], torch.Tensor], probe: torch.Tensor,
                     label: str) -> Callable[[torch.Tensor], torch.Tensor]:
    """``read`` with the last ReLU it calls made straight-through (forward relu, backward
    identity), as the robustness library's ``FakeReLU``.

    Args:
        read: the representation of a batch, ``read(z) -> (B, D)``, run in eval mode.
        probe: a batch to find the last ReLU with: one pass counts the ReLU calls (their
            number must not depend on the input) and what runs after the last one.
        label: how error messages name the layer.

    Raises:
        ValueError: no ReLU runs before the read point, or something other than
            :data:`AFTER_RELU` runs after the last one (a Linear, a max pool, another
            nonlinearity): the layer does not end in a ReLU.
    """
    seen = _ReLUCalls()
    with torch.no_grad(), seen:
        read(probe)
    fix = ("read a layer that ends in a ReLU (an MLP stage Sequential(Linear, ReLU), a "
           "ResNet's 'layer4' or 'pool'), or pass fake_relu=False (the public STIR code's "
           "choice for VGG, Inception and 'sparse' models)")
    if seen.relus == 0:
        raise ValueError(f"fake_relu=True: expected the layer to end in a ReLU, got layer "
                         f"{label} with no ReLU call before it; {fix}")
    bad = sorted(set(seen.after) - AFTER_RELU)
    if bad:
        raise ValueError(f"fake_relu=True: expected the layer to end in a ReLU (then at most "
                         f"reshapes, average pooling or dropout), got layer {label} with "
                         f"{bad} after its last ReLU; {fix}")
    last = seen.relus - 1

    def read_straight(z: torch.Tensor) -> torch.Tensor:
        with _ReLUCalls(straight=last):
            return read(z)
    return read_straight
