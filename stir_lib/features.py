"""Named intermediate outputs of any PyTorch model, for inversion, STIR and CKA.

Two kinds of model are read the same way:

* a :class:`stir_lib.models.ImageModel`: its stages by name (``model.layer_names``); with
  no layer given, the penultimate stage (the paper's default representation);
* any other ``torch.nn.Module`` (a torchvision or timm model, a plain ``nn.Sequential``):
  its submodules by their path as ``named_modules()`` spells them (``"layer4.1.conv2"``,
  ``"3"``), plus ``"output"`` for what the model returns; with no layer given, the input
  of its final ``nn.Linear`` (:func:`default_layer`). The named module is read by a hook,
  and the rest of the forward pass is skipped.

A layer is named by a plain string (the module's output, from its one call in the pass) or
by a :class:`Layer`, which adds three choices a string cannot make:

* ``call``: which call of a module that runs more than once in one pass (the ``relu`` of
  torchvision's ``BasicBlock`` runs twice). A module that runs more than once is refused
  unless a call is chosen: reading its first call silently would read the wrong tensor.
* ``select``: which tensor of an output that is not one: an index into a tuple or list
  (``nn.MultiheadAttention`` returns ``(output, weights)``), a key of a dict or of an
  attribute-style output (Hugging Face's ``ModelOutput``), or a function of the output.
* ``read="input"``: the module's first positional input instead of its output, for
  representations that are no module's output (torchvision's ResNet flattens its pooled
  features with ``torch.flatten`` on the way into ``fc``).

A dataclass is used rather than a string syntax (``"relu#1"``) so that a selector can be a
function and nothing needs parsing or escaping; a string stays the short form of the common
case. ``call_counts(model, x)`` shows which modules run more than once.

An unknown name is a ValueError that lists the valid ones. Inputs are images in the
``box`` the caller states (default [0, 1]); any normalisation stays inside the model.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, fields, is_dataclass

import torch
from torch import nn

from .models import ImageModel
from .validation import check_choice, check_finite, check_tensor

__all__ = ["OUTPUT", "READS", "Layer", "LayerSpec", "layer_names", "default_layer",
           "resolve_layer", "layer_output", "layer_key", "first_call", "call_counts",
           "check_model", "check_input"]

OUTPUT = "output"              # the name of what the whole model returns
READS = ("output", "input")    # what of a module a Layer reads


@dataclass(frozen=True, repr=False)
class Layer:
    """A layer of any ``nn.Module``, named with more precision than a string.

    Args:
        name: the module's path as ``model.named_modules()`` spells it, or ``"output"``
            (what the model returns).
        call: which call of the module to read, counted from 0 in the order of the forward
            pass; None: the module must run exactly once per pass (else it is refused).
        select: how to get a tensor from an output that is not one: an int indexes a tuple
            or list, a str is a key of a dict/Mapping or an attribute of an object (a
            dataclass, a Hugging Face ``ModelOutput``), a callable is applied to the output.
            None: the output must be a tensor.
        read: ``"output"`` (what the module returns, by a forward hook) or ``"input"``
            (its first positional input, by a forward pre-hook; the module itself does not
            run then). ``select`` applies to what is read.

    ``Layer("fc")`` is the same layer as the string ``"fc"``; :func:`resolve_layer` turns it
    into the string, so both give the same cache key. Example: the second ReLU of
    torchvision ResNet's first block, ``Layer("layer1.0.relu", call=1)``; the attention
    output of a ViT block, ``Layer("encoder.layers.encoder_layer_0.self_attention",
    select=0)``.
    """
    name: str
    call: int | None = None
    select: int | str | Callable | None = None
    read: str = "output"

    def __post_init__(self):
        if not isinstance(self.name, str) or not self.name:
            raise TypeError(f"Layer.name: expected a module path (a non-empty str) or "
                            f"{OUTPUT!r}, got {self.name!r}")
        if self.call is not None and (isinstance(self.call, bool) or not isinstance(
                self.call, int) or self.call < 0):
            raise ValueError(f"Layer.call: expected None or an int >= 0 (the call's index in "
                             f"the forward pass), got {self.call!r}")
        if self.select is not None and (isinstance(self.select, bool) or not (
                isinstance(self.select, (int, str)) or callable(self.select))):
            raise TypeError(f"Layer.select: expected None, an int (tuple index), a str (key "
                            f"or attribute) or a callable, got {type(self.select).__name__}")
        check_choice(self.read, "Layer.read", READS)

    def __repr__(self) -> str:
        parts = [repr(self.name)]
        if self.call is not None:
            parts.append(f"call={self.call}")
        if self.select is not None:
            sel = self.select
            shown = getattr(sel, "__qualname__", sel) if callable(sel) else repr(sel)
            parts.append(f"select={shown}")
        if self.read != "output":
            parts.append(f"read={self.read!r}")
        return f"Layer({', '.join(parts)})"


LayerSpec = str | Layer
# a Layer with an int or str selector can be stored in files read with weights_only=True
# (STIR results, cache entries); a function cannot, by design
torch.serialization.add_safe_globals([Layer])


def check_model(model, name: str = "model") -> nn.Module:
    """``model`` if it is a torch.nn.Module, else a TypeError saying what to pass."""
    if not isinstance(model, nn.Module):
        raise TypeError(f"{name}: expected a torch.nn.Module (a stir_lib ImageModel, a "
                        f"torchvision model, an nn.Sequential, ...), got {type(model).__name__}")
    return model


def layer_names(model: nn.Module) -> list[str]:
    """The names :func:`layer_output` accepts, input to output (module paths in registration
    order for a plain ``nn.Module``; :func:`call_counts` says how often each one runs)."""
    if isinstance(model, ImageModel):
        return model.layer_names
    return [n for n, _ in model.named_modules() if n] + [OUTPUT]


def default_layer(model: nn.Module) -> LayerSpec:
    """The paper's default representation: the penultimate layer, the input of the head.

    An :class:`ImageModel`: its penultimate stage (whose flattened output is its head's
    input). Any other model: ``Layer(name, read="input")`` for its final ``nn.Linear`` (the
    last one in registration order, ``named_modules()``, leaving out the ``out_proj`` of
    ``nn.MultiheadAttention``, which that module uses without calling it). Classifiers
    register their head last, so this is the input of the classifier: torchvision's ResNets
    ``fc`` (the pooled features, flattened by ``torch.flatten`` in ``forward``, no module's
    output), VGG and AlexNet ``classifier.6`` (the second 4096-wide fully connected layer
    after its ReLU, and for VGG its dropout, the identity in eval mode), ViT ``heads.head``
    (the class token after the encoder's final LayerNorm); likewise ConvNeXt, EfficientNet,
    MobileNet and Swin. The model's output (the logits) would be a 10- or 1000-dimensional
    representation that the paper does not use. A model that registers a Linear after its
    head, or calls its head more than once, needs its layer named.

    Raises:
        ValueError: the model has no ``nn.Linear``; pass a layer explicitly.
    """
    if isinstance(model, ImageModel):
        return model.penultimate
    attention = [n for n, m in model.named_modules() if isinstance(m, nn.MultiheadAttention)]
    linear = [n for n, m in model.named_modules() if n and isinstance(m, nn.Linear)
              and not any(n.startswith(a + ".") for a in attention)]
    if not linear:
        raise ValueError(f"model: expected an nn.Linear head for the default layer (the input "
                         f"of the final linear layer), got a {type(model).__name__} with none; "
                         f"pass a layer: a module path from layer_names(model), "
                         f"Layer(path, read='input') or {OUTPUT!r}")
    return Layer(linear[-1], read="input")


def _module_error(model: nn.Module, layer, name: str) -> ValueError:
    names = layer_names(model)
    shown = names if len(names) <= 40 else names[:20] + ["..."] + names[-19:]
    return ValueError(f"{name}: expected a module path of the model (as named_modules() "
                      f"spells it) or {OUTPUT!r}, got {layer!r}; valid: {shown}")


def resolve_layer(model: nn.Module, layer: LayerSpec | None, name: str = "layer") -> LayerSpec:
    """``layer`` checked against the model; None gives :func:`default_layer`.

    A :class:`Layer` that adds nothing to its name (no call, no selector, the output) comes
    back as the plain string, so both spellings are one layer (one cache key).
    """
    if layer is None:
        return default_layer(model)
    if isinstance(layer, Layer):
        if layer.call is None and layer.select is None and layer.read == "output":
            layer = layer.name
        else:
            return _check_layer(model, layer, name)
    if not isinstance(layer, str):
        raise TypeError(f"{name}: expected a layer name (str), a stir_lib.features.Layer or "
                        f"None, got {type(layer).__name__}")
    if isinstance(model, ImageModel):
        check_choice(layer, name, model.layer_names)
        return layer
    if layer != OUTPUT and layer not in dict(model.named_modules()):
        raise _module_error(model, layer, name)
    return layer


def _check_layer(model: nn.Module, layer: Layer, name: str) -> Layer:
    if isinstance(model, ImageModel):
        raise ValueError(f"{name}: an ImageModel is read by stage name {model.layer_names}, "
                         f"got {layer!r}; a Layer's call, select and read apply to other "
                         f"nn.Modules: pass a stage name, or the wrapped torchvision model")
    if layer.name == OUTPUT:
        if layer.call is not None or layer.read != "output":
            raise ValueError(f"{name}: {OUTPUT!r} is what the model returns, once per pass, "
                             f"got {layer!r}; only select applies to it")
    elif layer.name not in dict(model.named_modules()):
        raise _module_error(model, layer.name, name)
    return layer


def layer_key(layer: LayerSpec) -> str | dict:
    """The resolved layer as a cache key: a string as itself, a :class:`Layer` as its fields.

    Raises:
        ValueError: the Layer selects with a function, which has no stable key (its code
            and the values it closes over are not part of it).
    """
    if isinstance(layer, str):
        return layer
    if callable(layer.select):
        raise ValueError(f"{layer!r}: a selector function has no stable cache key; pass "
                         f"use_cache=False, or select with an int or a str")
    return {f.name: getattr(layer, f.name) for f in fields(layer)}


def first_call(model: nn.Module, layer: LayerSpec) -> LayerSpec:
    """``layer`` read at call 0 when it names a module and chooses no call: the same tensor
    as ``layer`` for a module that runs once per pass, read with the early stop after it
    (without a call chosen, :func:`layer_output` runs the whole pass to count the calls).
    Use it only after :func:`layer_output` read ``layer`` once and so checked that count."""
    if isinstance(model, ImageModel) or layer == OUTPUT:
        return layer
    if isinstance(layer, str):
        return Layer(layer, call=0)
    if layer.name == OUTPUT or layer.call is not None:
        return layer
    return Layer(layer.name, call=0, select=layer.select, read=layer.read)


class _Stop(Exception):
    """Raised by the hook once the wanted call is read: skips the rest of the pass."""


def _label(layer: LayerSpec) -> str:
    """How messages name a layer: as the user would have written it."""
    if isinstance(layer, Layer) and (layer.call, layer.select, layer.read) == (None, None,
                                                                                "output"):
        return repr(layer.name)
    return repr(layer)


def _options(out) -> str:
    """What a selector can pick from ``out``, for error messages."""
    if isinstance(out, (tuple, list)):
        items = ", ".join(type(v).__name__ for v in out)
        return f"an int index 0..{len(out) - 1} (items: {items})"
    if isinstance(out, Mapping):
        return f"a str key among {list(out.keys())}"
    if is_dataclass(out):
        return f"a str attribute among {[f.name for f in fields(out)]}"
    attrs = [k for k in getattr(out, "__dict__", {}) if not k.startswith("_")]
    return f"a str attribute among {attrs}" if attrs else "a function"


def _select(out, layer: LayerSpec, what: str) -> torch.Tensor:
    """The tensor ``layer`` picks from a module's output (or input)."""
    sel = layer.select if isinstance(layer, Layer) else None
    name = layer.name if isinstance(layer, Layer) else layer
    lab = _label(layer)
    if sel is None:
        value = out
    elif callable(sel):
        value = sel(out)
    elif isinstance(sel, int):
        if not isinstance(out, (tuple, list)):
            raise TypeError(f"{lab}: an int select indexes a tuple or list, got a "
                            f"{type(out).__name__} {what}; select {_options(out)}")
        if not -len(out) <= sel < len(out):
            raise ValueError(f"{lab}: expected an index in 0..{len(out) - 1}, got {sel}; "
                             f"the {what} is a {type(out).__name__} of {len(out)}")
        value = out[sel]
    elif isinstance(out, Mapping):
        if sel not in out:
            raise ValueError(f"{lab}: expected a key among {list(out.keys())}, got {sel!r}")
        value = out[sel]
    elif hasattr(out, sel):
        value = getattr(out, sel)
    else:
        raise ValueError(f"{lab}: the {what} (a {type(out).__name__}) has no key or "
                         f"attribute {sel!r}; select {_options(out)}")
    if isinstance(value, torch.Tensor):
        return value
    if sel is None:
        raise TypeError(f"layer {lab}: expected a tensor {what}, got a {type(out).__name__}; "
                        f"choose one with Layer({name!r}, select=...): {_options(out)} "
                        f"(or a function of the {what})")
    raise TypeError(f"{lab}: expected the selector to give a tensor, got a "
                    f"{type(value).__name__}; select {_options(out)}")


def _hooked(model: nn.Module, x: torch.Tensor, layer: Layer) -> torch.Tensor:
    """Read call ``layer.call`` of a module (stopping the pass there), or with no call chosen
    its only call (running the whole pass, to count them)."""
    module = dict(model.named_modules())[layer.name]
    what = "output" if layer.read == "output" else "input"
    calls, got = [0], []                   # calls so far; the read tensor or the error

    def take(value):
        k, calls[0] = calls[0], calls[0] + 1
        if k != (layer.call or 0):
            return
        try:
            h = _select(value, layer, what)
            # the pass goes on without a call chosen, and later in-place operations (an
            # nn.ReLU(inplace=True) after a BatchNorm) would change what was read
            got.append(h.clone() if layer.call is None else h)
        except (TypeError, ValueError, IndexError, KeyError) as err:
            got.append(err)
        if layer.call is not None:
            raise _Stop

    if layer.read == "input":
        def pre_hook(_module, args):
            if not args:
                got.append(ValueError(f"{_label(layer)}: the module was called without a "
                                      f"positional input; read its output instead"))
                raise _Stop
            take(args[0])
        handle = module.register_forward_pre_hook(pre_hook)
    else:
        handle = module.register_forward_hook(lambda _m, _args, out: take(out))
    try:
        model(x)
    except _Stop:
        pass
    finally:
        handle.remove()
    n = calls[0]
    if n == 0:
        raise RuntimeError(f"layer {layer.name!r} was not called in the forward pass; pick a "
                           f"module that the model's forward() uses (call_counts(model, x) "
                           f"lists how often each one runs)")
    if layer.call is None and n > 1:
        raise ValueError(f"layer {layer.name!r}: expected a module that runs once per forward "
                         f"pass, got {n} calls (a module reused in forward()); choose one "
                         f"with Layer({layer.name!r}, call=k), k in 0..{n - 1}")
    if not got:                            # the pass ended before the chosen call
        raise ValueError(f"{_label(layer)}: the module ran {n} time(s) in the forward pass; "
                         f"expected call in 0..{n - 1}")
    if isinstance(got[0], Exception):
        raise got[0]
    return got[0]


def layer_output(model: nn.Module, x: torch.Tensor, layer: LayerSpec) -> torch.Tensor:
    """The tensor ``layer`` reads for input ``x`` (differentiable; layer already resolved by
    :func:`resolve_layer`).

    A module with a chosen ``call`` is read by a hook that stops the forward pass right after
    that call (or before it runs, for ``read="input"``). A module without one (a plain
    string) runs the whole pass, so that a second call is noticed and refused; see
    :func:`first_call` for reading it fast once it is known to run once.
    """
    if isinstance(model, ImageModel):
        if not isinstance(layer, str):         # resolve_layer refuses a Layer for an ImageModel
            raise TypeError(f"layer: an ImageModel is read by stage name, got {layer!r}")
        return model.features(x, layer)
    if isinstance(layer, str):
        layer = Layer(layer)
    if layer.name == OUTPUT:
        return _select(model(x), layer, "output")
    return _hooked(model, x, layer)


@torch.no_grad()
def call_counts(model: nn.Module, x: torch.Tensor) -> dict[str, int]:
    """How many times each module (by ``named_modules()`` path) runs in one forward pass of
    ``x``, in eval mode (the model's mode is restored). A module with a count other than 1
    needs ``Layer(path, call=k)``; 0 means ``forward()`` does not use it."""
    check_model(model)
    counts = {n: 0 for n, _ in model.named_modules() if n}
    handles = []
    for n, m in model.named_modules():
        if n:
            handles.append(m.register_forward_pre_hook(
                lambda _m, _a, n=n: counts.__setitem__(n, counts[n] + 1)))
    was_training = model.training
    model.eval()
    try:
        model(x)
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    return counts


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
