"""A network's layers as a table of operator norms, the grouping of Szegedy et al.'s Table 5
and the product bound."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

from .. import threads
from .layers import _as_shape, _norm_and_kind, reshaped_kernel_norm

__all__ = ["LayerRow", "layer_table", "group_rows", "lipschitz_table", "product_bound"]

# --------------------------------------------------------------------------- network tables
@dataclass(frozen=True)
class LayerRow:
    """One layer (or, after :func:`group_rows`, one group of layers) of a network."""

    name: str                        # dotted module name, e.g. "body.features.0"
    type: str                        # class name; "Conv2d+ReLU+MaxPool2d" for a group
    input_shape: tuple[int, ...]     # without the batch axis
    output_shape: tuple[int, ...]
    norm: float                      # operator norm / Lipschitz constant (see KINDS)
    kind: str                        # one of KINDS
    reshaped_norm: float | None = None  # convs: reshaped_kernel_norm, NOT the operator norm
    weight_layer: bool = False       # Conv/Linear: starts a group in group_rows


def _storage(t: torch.Tensor) -> int:
    return t.untyped_storage().data_ptr()


@threads.parallel
def layer_table(model: nn.Module, input_shape, *, strict: bool = True,
                tol: float | None = None, max_iter: int = 3000) -> list[LayerRow]:
    """One row per leaf-module call, in execution order, with each layer's norm.

    Runs one forward pass of a zero input of shape ``(1, *input_shape)`` with forward hooks
    on the leaf modules (modules without children) to record each call's input and output
    shapes, then computes :func:`operator_norm` for that input shape. The model is put in
    eval mode for the walk (the bound is about the eval-mode network) and every
    submodule's mode is restored afterwards.

    The product of the rows bounds the network's Lipschitz constant only for a
    feed-forward chain: each leaf's input must be the previous leaf's output (up to
    views such as ``flatten``). Skip connections, functional ops between leaves
    (``torch.relu``, ``x + y``, ``x * 2``) and modules called with several inputs break
    that; with ``strict=True`` (default) the walk checks the chain by tensor storage and
    raises ValueError at the first break. ``strict=False`` skips the check; the caller
    then vouches that whatever happens between leaves is 1-Lipschitz.

    Args:
        model: an ``nn.Module`` taking a batch ``(N, *input_shape)``.
        input_shape: one input's shape without the batch axis, e.g. (3, 224, 224).
        strict: check that the leaves form a chain.
        tol, max_iter: passed to :func:`operator_norm`.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model: expected an nn.Module, got {type(model).__name__}")
    shape = _as_shape(input_shape)
    param = next((p for p in model.parameters() if p.is_floating_point()), None)
    dtype = param.dtype if param is not None else torch.float32
    device = param.device if param is not None else torch.device("cpu")
    leaves = [(n, m) for n, m in model.named_modules() if not list(m.children())]
    records: list[dict] = []
    keep: list[torch.Tensor] = []  # hold every output so storages are never reused

    def hook(name):
        def fn(module, inputs, output):
            tensors = [t for t in inputs if isinstance(t, torch.Tensor)]
            out = output[0] if isinstance(output, (tuple, list)) else output
            keep.extend(tensors)
            if isinstance(out, torch.Tensor):
                keep.append(out)
            records.append({"name": name, "module": module, "inputs": tensors, "out": out})
        return fn

    modes = {m: m.training for m in model.modules()}
    handles = [m.register_forward_hook(hook(n)) for n, m in leaves]
    try:
        model.eval()
        x = torch.zeros((1, *shape), dtype=dtype, device=device)
        with torch.no_grad():
            try:
                y = model(x)
            except RuntimeError as err:
                raise ValueError(f"layer_table: expected an input shape the model accepts, "
                                 f"got {shape} (without the batch axis); the forward pass "
                                 f"failed with: {err}") from err
        for h in handles:   # before computing norms: the pooling norms call the modules
            h.remove()
        handles = []
        if strict:
            _check_chain(records, x, y)
        cache: dict[tuple, tuple[float, str]] = {}
        rows = []
        opts = {"max_iter": max_iter} if tol is None else {"tol": tol, "max_iter": max_iter}
        for r in records:
            m = r["module"]
            in_shape = tuple(r["inputs"][0].shape[1:]) if r["inputs"] else ()
            out_shape = tuple(r["out"].shape[1:]) if isinstance(r["out"], torch.Tensor) else ()
            key = (id(m), in_shape)
            if key not in cache:
                cache[key] = _norm_and_kind(m, in_shape, **opts)
            value, kind = cache[key]
            is_conv = isinstance(m, nn.modules.conv._ConvNd)
            rows.append(LayerRow(
                name=r["name"], type=type(m).__name__, input_shape=in_shape,
                output_shape=out_shape, norm=value, kind=kind,
                reshaped_norm=reshaped_kernel_norm(m) if is_conv else None,
                weight_layer=is_conv or isinstance(m, nn.Linear)))
        return rows
    finally:
        for h in handles:
            h.remove()
        for m, mode in modes.items():
            m.training = mode


def _check_chain(records, x, y) -> None:
    prev, prev_name = x, "the model input"
    for r in records:
        if len(r["inputs"]) != 1:
            raise ValueError(f"layer_table: expected each leaf to take one tensor, got "
                             f"{len(r['inputs'])} for '{r['name']}'; the product of leaf "
                             f"norms is not a bound for this model (strict=False skips "
                             f"the check)")
        if _storage(r["inputs"][0]) != _storage(prev):
            raise ValueError(
                f"layer_table: expected a feed-forward chain of leaf modules, got an input "
                f"of '{r['name']}' that is not the output of {prev_name}: a skip connection "
                f"or a functional op sits between them, and the product of leaf norms is "
                f"then no bound. Wrap the op in a module, or pass strict=False if it is "
                f"1-Lipschitz")
        prev, prev_name = r["out"], f"'{r['name']}'"
    if not isinstance(y, torch.Tensor) or _storage(y) != _storage(prev):
        raise ValueError(f"layer_table: expected the model output to be the output of "
                         f"{'the last leaf ' if records else ''}{prev_name}, got a tensor made "
                         f"after it by a functional op; pass strict=False if that op is "
                         f"1-Lipschitz")


def group_rows(rows: Sequence[LayerRow]) -> list[LayerRow]:
    """Fold each Conv/Linear row with the rows after it up to the next Conv/Linear.

    This is the grouping of Szegedy et al.'s Table 5 (one row per conv or FC layer, its
    activation, pooling and normalisation included). A group's number is the product of
    its members' (an upper bound on the group's Lipschitz constant; kind ``"product"``
    unless the group is a single exact layer). Rows before the first Conv/Linear form a
    group of their own.
    """
    groups: list[list[LayerRow]] = []
    for row in rows:
        if not isinstance(row, LayerRow):
            raise TypeError(f"rows: expected LayerRow items, got {type(row).__name__}")
        if row.weight_layer or not groups:
            groups.append([row])
        else:
            groups[-1].append(row)
    out = []
    for g in groups:
        head = g[0]
        kind = head.kind if len(g) == 1 else "product"
        out.append(LayerRow(name=head.name, type="+".join(r.type for r in g),
                            input_shape=head.input_shape, output_shape=g[-1].output_shape,
                            norm=math.prod(r.norm for r in g), kind=kind,
                            reshaped_norm=head.reshaped_norm, weight_layer=head.weight_layer))
    return out


def lipschitz_table(model: nn.Module, input_shape, **kwargs) -> list[LayerRow]:
    """:func:`layer_table` grouped as in Szegedy et al.'s Table 5 (:func:`group_rows`)."""
    return group_rows(layer_table(model, input_shape, **kwargs))


def product_bound(rows: Sequence[LayerRow]) -> float:
    """Product of the rows' numbers: an upper bound on the chain's L2 Lipschitz constant."""
    rows = list(rows)
    for row in rows:
        if not isinstance(row, LayerRow):
            raise TypeError(f"rows: expected LayerRow items, got {type(row).__name__}")
    return math.prod(r.norm for r in rows)
