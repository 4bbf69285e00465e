"""Representation inversion: identically represented inputs (IRIs).

Given a model m, a layer and images x, an IRI is an image x' in [0, 1] with
m(x') ~= m(x) at that layer. It is found by minimising, per sample, the
relative distance

    d(x', x) = ||m(x') - m(x)||_2 / ||m(x)||_2                               (1)

from a starting point x'_0 (a "seed": noise, another image, ...), the
representation inversion of Mahendran & Vedaldi (2015), "Understanding Deep
Image Representations by Inverting Them" (CVPR), without their image prior, as
Nanda et al. (2022), "Measuring Representational Robustness of Neural Networks
Through Shared Invariances" (ICML), use it to build STIR (see
:mod:`stir_lib.stir`).

Representations (:func:`representation`): the named layer's output (an
:class:`~stir_lib.models.ImageModel` stage, or any module of any ``nn.Module`` by its
``named_modules()`` path, or a :class:`~stir_lib.features.Layer`: a chosen call, a tensor
selected from a tuple or dict, a module's input; see :mod:`stir_lib.features`), flattened
to (N, D): the full representation. The default is the penultimate layer (an ImageModel's
penultimate stage; any other model's final ``nn.Linear``'s input). ``spatial="mean"``
averages 4-D activations (N, C, H, W) over the *spatial* axes to (N, C) instead (the
public STIR code averages over channels and height, which mixes channels; we do not).

Two optimisers (:func:`invert`):

* ``"reference"``: the paper's procedure. Normalised-gradient steps
  x' <- clip(x' - eta g / ||g||_2, 0, 1) per sample, eta = 0.5 ([0, 1] pixel
  units, L2 over the whole image), 1000 iterations, each sample's best iterate
  kept.
* ``"fast"`` (opt-in): Adam (Kingma & Ba 2015) on x' with projection onto the box;
  each sample's learning rate is cut (x0.3) when its distance stops
  improving, and after three cuts the sample stops. On MNIST ReLU MLPs
  (vanilla and L2-adversarially trained; benchmarks/bench_stir.py) it gives STIR
  within 0.002 of the reference with 1/8 of its model evaluations. It is not a
  drop-in replacement: on sigmoid MLPs it stops at about twice the reference's
  representation distance and scores STIR 0.01-0.10 lower, and on small ReLU MLPs of
  8x8 digits it goes further than the reference's 1,000 steps and scores 0.012 higher
  (0.992 vs 0.980; tests/test_inversion_stir.py). STIR rises as the inversion
  converges, so the stopping rule changes the measure: check the fast method against
  the reference on every kind of model it is used on (the book uses the reference
  throughout). Alternatives
  measured: normalised-gradient steps with a geometrically decaying step
  stall at 1.5x the reference's distance after 200 steps (the problem is
  badly conditioned across pixels, many of which sit at the box bounds;
  Adam's per-pixel scaling absorbs that); Adam with a cosine schedule over a
  fixed budget does as well on penultimate layers, but with early stopping it
  halts at the noise floor of its still-large learning rate on the pooled
  conv layer (5-10x the reference's distance there).

Opt-in, the public code's two departures from the paper's section 3 (the defaults are the
paper's; measured in ``book/paper_targets.md`` section 6): ``fake_relu=True``, a straight-
through final ReLU during the steps (STIR moved by up to 0.018 on MNIST MLPs), and
``clamp_start=False``, the first step from the raw Gaussian start (up to 0.007).

Every function takes images in [0, 1] of shape (N, C, H, W), runs the model in
eval mode and restores its mode afterwards.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from . import cache, features, straight_relu, threads
from .attacks import eval_mode
from .models import device_of
from .progress import bar
from .validation import check_choice, check_int, check_positive

__all__ = ["InversionResult", "SEED_KINDS", "METHODS", "SPATIAL", "invert",
           "relative_distance", "representation", "resolve_layer", "seeds", "inversion_key"]

SEED_KINDS = ("noise", "uniform", "shuffle", "pool", "constant")
METHODS = ("reference", "fast")
SPATIAL = ("flatten", "mean")   # how 4-D activations become (N, D) representations

# defaults per method: (steps, step_size)
_DEFAULTS = {
    "reference": (1000, 0.5),   # Nanda et al. 2022: 1000 iterations, step 0.5 (L2, pixel units)
    "fast": (200, 0.2),         # at most 200 Adam steps, initial learning rate 0.2 (pixel units)
}
_LR_FACTOR = 0.3                # fast: learning-rate cut on a plateau
_LR_CUTS = 3                    # fast: cuts before a sample stops (the 4th plateau stops it)
_EPS = 1e-12                    # floor of ||m(x)|| in eq. (1), so a dead representation is no 0/0


# --------------------------------------------------------------------------- checks
_check_model = features.check_model
resolve_layer = features.resolve_layer


# --------------------------------------------------------------------------- representations
def _rep(model, x: torch.Tensor, layer: features.LayerSpec,
         spatial: str = "flatten") -> torch.Tensor:
    """Differentiable representation (N, D): the layer's output flattened, or for 4-D
    outputs with ``spatial="mean"`` their mean over the spatial axes."""
    h = features.layer_output(model, x, layer)
    if h.ndim == 4 and spatial == "mean":               # (N, C, H, W) -> (N, C)
        return h.mean(dim=(2, 3))
    return h.flatten(1)


def representation(model: nn.Module, x: torch.Tensor, layer: features.LayerSpec | None = None, *,
                   spatial: str = "flatten", box: Sequence[float] = (0.0, 1.0),
                   batch_size: int = 1000) -> torch.Tensor:
    """The representation m(x) used by inversion and STIR, (N, D).

    Args:
        model: any ``nn.Module`` (see :mod:`stir_lib.features` for layer names).
        x: input images in ``box`` (for an ImageModel: (N, C, H, W) in [0, 1]).
        layer: a layer name or a :class:`~stir_lib.features.Layer`; None for the default
            (an ImageModel's penultimate stage, any other model's final Linear's input).
        spatial: "flatten" (the full layer) or "mean" (4-D outputs averaged over H, W).
        box: the range of valid inputs (the user's normalisation stays in the model).
        batch_size: images per forward pass (memory only; the result does not depend on it).

    Returns:
        (N, D) float tensor on the model's device.
    """
    _check_model(model)
    features.check_input(model, x, "x", box)
    layer = resolve_layer(model, layer)
    check_choice(spatial, "spatial", SPATIAL)
    check_int(batch_size, "batch_size")
    dev = device_of(model)
    with eval_mode(model), torch.no_grad(), threads.use("parallel"):
        return torch.cat([_rep(model, x[i:i + batch_size].to(dev), layer, spatial)
                          for i in range(0, len(x), batch_size)])


def _distance(read, z, target, target_norm) -> torch.Tensor:
    """Eq. (1) for a batch, (B,), differentiable in z; ``read(z)`` is the representation."""
    return (read(z) - target).norm(dim=1) / target_norm


def relative_distance(model: nn.Module, x_prime: torch.Tensor, x: torch.Tensor,
                      layer: features.LayerSpec | None = None, *, spatial: str = "flatten",
                      box: Sequence[float] = (0.0, 1.0),
                      batch_size: int = 1000) -> torch.Tensor:
    """Per-sample ||m(x') - m(x)||_2 / ||m(x)||_2, eq. (1), shape (N,).

    Both batches are images in ``box``; the representation is that of
    :func:`representation`. ``||m(x)||`` is floored at 1e-12.
    """
    _check_model(model)
    features.check_input(model, x_prime, "x_prime", box)
    if x_prime.shape != x.shape:
        raise ValueError(f"x_prime: expected the shape of x {tuple(x.shape)}, got "
                         f"{tuple(x_prime.shape)}; pass one x' per x")
    r = representation(model, x, layer, spatial=spatial, box=box, batch_size=batch_size)
    rp = representation(model, x_prime, layer, spatial=spatial, box=box, batch_size=batch_size)
    return (rp - r).norm(dim=1) / r.norm(dim=1).clamp_min(_EPS)


# --------------------------------------------------------------------------- seeds
def _derangement(n: int, g: torch.Generator) -> torch.Tensor:
    """A random permutation with no fixed point: one random n-cycle (n >= 2)."""
    p = torch.randperm(n, generator=g, device="cpu")
    d = torch.empty(n, dtype=torch.long, device="cpu")
    d[p] = p.roll(-1)                                   # p[i] -> p[i + 1]
    return d


def seeds(kind: str, x: torch.Tensor, seed: int = 0, pool: torch.Tensor | None = None,
          box: Sequence[float] = (0.0, 1.0), clamp: bool = True) -> torch.Tensor:
    """Starting points x'_0 for the inversion of ``x``, same shape, in ``box`` (default [0, 1]).

    Kinds:

    * ``"noise"``: standard Gaussian noise clipped to [0, 1] (half the pixels 0,
      ~16 % at 1). This is the public STIR code's default seed ("super-noise",
      ``torch.randn``) after its first projection onto [0, 1]; Nanda et al. (2022) call
      it random noise.
    * ``"uniform"``: i.i.d. uniform noise on [0, 1].
    * ``"shuffle"``: other images of ``x``, a random derangement, so no sample starts
      from itself (needs N >= 2).
    * ``"pool"``: images drawn uniformly with replacement from ``pool`` (M, C, H, W),
      e.g. held-out data.
    * ``"constant"``: a flat grey image per sample, its level uniform on [0, 1].

    For another box [lo, hi] the [0, 1] draws are mapped to lo + (hi - lo) * u.
    ``clamp=False`` ("noise" only): the raw standard Gaussian draw, not clipped (mapped to
    lo + (hi - lo) z), the public code's start before its first step (see ``invert``'s
    ``clamp_start``); it lies outside the box.

    The draw uses its own ``torch.Generator`` seeded with ``seed`` (on the CPU,
    so a seed gives the same start on every device and CPU and GPU runs of STIR
    agree) and does not touch torch's global RNG. Returns a tensor on ``x``'s device
    with ``x``'s dtype.
    """
    check_choice(kind, "seed_kind", SEED_KINDS)
    _check_clamp(kind, clamp)
    if not isinstance(x, torch.Tensor) or not x.is_floating_point() or x.ndim < 2:
        raise TypeError(f"x: expected a floating-point batch (N, ...), got "
                        f"{type(x).__name__}{'' if not isinstance(x, torch.Tensor) else ' ' + str(x.dtype)}")
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise TypeError(f"seed: expected an int, got {type(seed).__name__}")
    lo, hi = float(box[0]), float(box[1])
    if not lo < hi:
        raise ValueError(f"box: expected (low, high) with low < high, got {tuple(box)}")
    g = torch.Generator().manual_seed(seed)
    shape, n = x.shape, x.shape[0]
    if kind in ("noise", "uniform", "constant"):
        return _in_box(_unit_starts(kind, shape, g, clamp=clamp), lo, hi, x)
    if kind == "shuffle":
        if n < 2:
            raise ValueError(f"seed_kind='shuffle': expected at least 2 images to shuffle, "
                             f"got {n}; use seed_kind='noise' or 'pool'")
        return x[_derangement(n, g).to(x.device)].clone()
    else:  # pool
        if pool is None:
            raise ValueError("seed_kind='pool': expected a pool of images (M, C, H, W), got "
                             "None; pass pool=held_out_images")
        if not isinstance(pool, torch.Tensor) or tuple(pool.shape[1:]) != tuple(shape[1:]):
            raise ValueError(f"pool: expected images of shape (M, {', '.join(map(str, shape[1:]))})"
                             f", got {getattr(pool, 'shape', type(pool).__name__)}")
        if len(pool) == 0:
            raise ValueError("pool: expected at least one image, got an empty batch")
        return _pool_starts(pool, n, g, x)


# The draws behind seeds(), shared with stir_batches.Starts, which continues them batch by
# batch on one generator: every kind draws value after value (an image index for "pool").
def _check_clamp(kind: str, clamp: bool) -> None:
    """``clamp=False`` is for "noise", the one start drawn outside the box."""
    if not isinstance(clamp, bool):
        raise TypeError(f"clamp: expected a bool, got {type(clamp).__name__}")
    if not clamp and kind != "noise":
        raise ValueError(f"an unclamped start: expected seed_kind='noise' (the only start "
                         f"drawn outside the box), got {kind!r}, whose starts lie in the box "
                         f"already; use seed_kind='noise' or keep the start clamped")


def _unit_starts(kind: str, shape: torch.Size, g: torch.Generator,
                 normal: Callable[[torch.Size], torch.Tensor] | None = None,
                 clamp: bool = True) -> torch.Tensor:
    """Starts of kind "noise", "uniform" or "constant" in [0, 1], drawn on the CPU from ``g``
    (``normal(shape)``: the standard normals of "noise"; default ``torch.randn`` from g;
    ``clamp=False``: those normals unclipped)."""
    if kind == "noise":
        z = normal(shape) if normal is not None else torch.randn(shape, generator=g, device="cpu")
        return z.clamp_(0, 1) if clamp else z
    if kind == "uniform":
        return torch.rand(shape, generator=g, device="cpu")
    return torch.rand((shape[0],) + (1,) * (len(shape) - 1), generator=g,
                      device="cpu").expand(shape).clone()


def _pool_starts(pool: torch.Tensor, n: int, g: torch.Generator,
                 like: torch.Tensor) -> torch.Tensor:
    """``n`` images drawn uniformly with replacement from ``pool``, on ``like``'s device and dtype."""
    idx = torch.randint(len(pool), (n,), generator=g, device="cpu")
    return pool[idx.to(pool.device)].to(device=like.device, dtype=like.dtype).clone()


def _in_box(out: torch.Tensor, lo: float, hi: float, like: torch.Tensor) -> torch.Tensor:
    """[0, 1] draws mapped to [lo, hi] (lo + (hi - lo) u), on ``like``'s device and dtype."""
    out = lo + (hi - lo) * out if (lo, hi) != (0.0, 1.0) else out
    return out.to(device=like.device, dtype=like.dtype)


# --------------------------------------------------------------------------- inversion
@dataclass(frozen=True)
class InversionResult:
    """Output of :func:`invert`.

    Attributes:
        x_prime: (N, C, H, W) IRIs in [0, 1], each sample's best iterate.
        distance: (N,) eq. (1) at ``x_prime`` (the best distance found).
        initial_distance: (N,) eq. (1) at the start x'_0 (with ``clamp_start=False``: at
            the start clamped onto the box, as with the default).
        history: (T,) mean over all N samples of the best distance so far after
            t + 1 evaluations (a sample that stopped early keeps its final value);
            history[0] is the mean initial distance.
        evaluations: (N,) int64 model evaluations per sample: forward passes, each
            with a backward pass except the last (which only scores the final
            iterate).
        method: "reference" or "fast".
        layer: the layer inverted, resolved (a str or a :class:`~stir_lib.features.Layer`).
        seed_kind: the kind of start (see :func:`seeds`), or "start" for explicit starts.
        seed: the seed of the start.
    """
    x_prime: torch.Tensor
    distance: torch.Tensor
    initial_distance: torch.Tensor
    history: torch.Tensor
    evaluations: torch.Tensor
    method: str
    layer: features.LayerSpec
    seed_kind: str
    seed: int


class _Tracker:
    """Best iterate and best distance per sample (eq. 1), updated in place."""

    def __init__(self, z0: torch.Tensor):
        self.best = z0.clone()                                       # (B, C, H, W)
        self.dist = torch.full((len(z0),), math.inf, device=z0.device, dtype=z0.dtype)
        self.initial: torch.Tensor | None = None                     # distance at z0

    def update(self, rows: torch.Tensor, z: torch.Tensor, d: torch.Tensor) -> None:
        better = d < self.dist[rows]
        r = rows[better]
        self.best[r] = z[better]
        self.dist[r] = d[better]


def _value_and_grad(read, z, target, target_norm):
    z = z.detach().requires_grad_(True)
    d = _distance(read, z, target, target_norm)                      # (B,)
    # samples are independent (eval mode), so the gradient of the sum is per sample
    (g,) = torch.autograd.grad(d.sum(), z)
    return d.detach(), g


def _per_sample_norm(g: torch.Tensor) -> torch.Tensor:
    return g.flatten(1).norm(dim=1).clamp_min(1e-12).view(-1, *[1] * (g.ndim - 1))


def _reference(read, z0, target, tnorm, steps, step_size, tick, box, raw_start=False):
    """Nanda et al.'s loop: ``steps`` normalised-gradient steps, then score the last iterate.

    ``raw_start``: z0 may lie outside the box; the first step is taken from it, but it is no
    IRI, so the tracker starts from its projection onto the box (one more evaluation)."""
    n = len(z0)
    rows = torch.arange(n, device=z0.device)
    z, hist, zc = z0.clone(), [], z0.clamp(*box) if raw_start else z0
    track = _Tracker(zc)
    if raw_start:
        with torch.no_grad():
            track.initial = _distance(read, zc, target, tnorm)
        track.update(rows, zc, track.initial)
        hist.append(float(track.dist.sum()))
    for t in range(steps):
        d, g = _value_and_grad(read, z, target, tnorm)
        if not (raw_start and t == 0):                   # the raw start is outside the box
            track.update(rows, z, d)
            if track.initial is None:
                track.initial = d.clone()
            hist.append(float(track.dist.sum()))
        z = (z - step_size * g / _per_sample_norm(g)).clamp_(*box)
        tick()
    with torch.no_grad():
        track.update(rows, z, _distance(read, z, target, tnorm))
    hist.append(float(track.dist.sum()))
    evals = torch.full((n,), steps + 1 + raw_start, dtype=torch.long, device="cpu")
    return track, evals, hist


def _fast(read, z0, target, tnorm, steps, lr, tol, patience, tick, box,
          betas=(0.9, 0.999), adam_eps=1e-8):
    """Projected Adam with a per-sample learning rate cut on plateaus, then early stopping.

    Every ``patience`` steps, a sample whose best distance fell by at most a
    fraction ``tol`` over those steps restarts from its best iterate with its
    learning rate times ``_LR_FACTOR``; after ``_LR_CUTS`` cuts, the next
    plateau retires it (its state is dropped, so later steps only pay for the
    samples still moving). A fixed learning rate stalls at a noise floor set by
    the rate, and a schedule tied to ``steps`` cannot stop early; cutting on a
    plateau does both jobs.
    """
    n = len(z0)
    b1, b2 = betas
    dev = z0.device
    track = _Tracker(z0)
    rows = torch.arange(n, device=dev)                           # samples still moving
    z, m, v = z0.clone(), torch.zeros_like(z0), torch.zeros_like(z0)
    tgt, tn = target, tnorm
    rate = torch.full((n,), lr, device=dev)                      # per-sample learning rate
    cuts = torch.zeros(n, dtype=torch.long, device=dev)
    mark = torch.full((n,), math.inf, device=dev, dtype=z0.dtype)  # best at the last check
    evals = torch.zeros(n, dtype=torch.long, device="cpu")
    hist = []
    for t in range(steps):
        d, g = _value_and_grad(read, z, tgt, tn)
        evals[rows.cpu()] += 1
        track.update(rows, z, d)
        if track.initial is None:                                # t = 0: every sample
            track.initial = d.clone()
        hist.append(float(track.dist.sum()))
        m.mul_(b1).add_(g, alpha=1 - b1)
        v.mul_(b2).addcmul_(g, g, value=1 - b2)
        step = (m / (1 - b1 ** (t + 1))) / ((v / (1 - b2 ** (t + 1))).sqrt_().add_(adam_eps))
        z = (z - rate[rows].view(-1, *[1] * (z.ndim - 1)) * step).clamp_(*box)
        tick()
        if (t + 1) % patience == 0:
            best = track.dist[rows]
            slow = (mark[rows] - best) <= tol * mark[rows].clamp_max(1e30)
            mark[rows] = best
            if bool(slow.any()):
                z[slow] = track.best[rows[slow]]                 # restart from the best
                cuts[rows[slow]] += 1
                rate[rows[slow]] *= _LR_FACTOR
                keep = cuts[rows] <= _LR_CUTS
                if not bool(keep.all()):
                    rows, z, m, v, tgt, tn = (a[keep] for a in (rows, z, m, v, tgt, tn))
                    if len(rows) == 0:
                        break
    if len(rows):
        with torch.no_grad():
            track.update(rows, z, _distance(read, z, tgt, tn))
        evals[rows.cpu()] += 1
        hist.append(float(track.dist.sum()))
    return track, evals, hist


def inversion_key(identity: str, x: torch.Tensor, layer: features.LayerSpec, *, spatial: str,
                  method: str,
                  steps: int, step_size: float, seed: int, seed_kind: str, box,
                  pool: torch.Tensor | None = None, tol: float = 0.1, patience: int = 10,
                  fake_relu: bool = False, clamp_start: bool = True) -> dict:
    """The cache configuration of one inversion: the model's identity
    (:func:`stir_lib.cache.model_identity`), the images, the layer and every option.

    The layer keys as :func:`stir_lib.features.layer_key` spells it: a string as itself (keys
    made before :class:`~stir_lib.features.Layer` existed stay valid), a Layer by its fields;
    a Layer that selects with a function is refused (it has no stable key). The authors'
    options are keyed only when not the default (``fake_relu`` by the code that does it)."""
    key = {"model": identity, "x": cache.fingerprint(x), "layer": features.layer_key(layer),
            "spatial": spatial,
            "method": method, "steps": steps, "step_size": step_size, "seed": seed,
            "seed_kind": seed_kind, "box": [float(box[0]), float(box[1])],
            "pool": cache.fingerprint(pool) if pool is not None and seed_kind == "pool" else None,
            "fast": [tol, patience] if method == "fast" else None,
            "code": cache.code_version(sys.modules[__name__], features)}
    if fake_relu:
        key["fake_relu"] = cache.code_version(straight_relu)
    if not clamp_start:
        key["clamp_start"] = False
    return key


def invert(model: nn.Module, x: torch.Tensor, layer: features.LayerSpec | None = None, *,
           seed_kind: str = "noise", method: str = "reference", steps: int | None = None,
           step_size: float | None = None, seed: int = 0, pool: torch.Tensor | None = None,
           start: torch.Tensor | None = None, tol: float = 0.1, patience: int = 10,
           spatial: str = "flatten", box: Sequence[float] = (0.0, 1.0), use_cache: bool = False,
           batch_size: int = 500, progress: bool | None = None, fake_relu: bool = False,
           clamp_start: bool = True) -> InversionResult:
    """Identically represented inputs: argmin over x' in the box of eq. (1), per sample.

    Representation inversion (Mahendran & Vedaldi 2015) as Nanda et al. (2022)
    use it for STIR: each x' starts from a seed x'_0 (:func:`seeds`) and
    descends d(x', x) = ||m(x') - m(x)||_2 / ||m(x)||_2 at ``layer``; the best
    iterate of each sample is returned.

    Args:
        model: any ``nn.Module`` (an :class:`~stir_lib.models.ImageModel`, a torchvision
            model, ...); run in eval mode on its own device, its mode restored.
        x: target inputs in ``box`` (for an ImageModel: (N, C, H, W) in [0, 1]).
        layer: a layer name or a :class:`~stir_lib.features.Layer`; None for the default
            (an ImageModel's penultimate stage, any other model's final Linear's input).
        seed_kind: the start x'_0, one of :data:`SEED_KINDS` (see :func:`seeds`).
        method: "reference" (default: the paper's normalised-gradient descent) or
            "fast" (opt-in: projected Adam, learning rate cut on plateaus, early
            stopping; see the module docstring for where it differs).
        steps: gradient steps per sample; default 1000 (reference, the paper's)
            or at most 200 (fast).
        step_size: reference: the L2 length of each step over the whole input,
            in the box's units, default 0.5 (the paper's, for [0, 1] pixels). fast:
            Adam's initial learning rate, default 0.2.
        seed: seeds the start (an int; see :func:`seeds`).
        pool: images to draw starts from when ``seed_kind="pool"``.
        start: explicit starts in the box, shaped like ``x``; overrides ``seed_kind``/``seed``.
        tol, patience: fast only: every ``patience`` steps, a sample whose best
            distance fell by at most the fraction ``tol`` (relative) over those
            steps restarts from its best iterate at 0.3x its learning rate; its
            fourth such plateau stops it. ``tol=0`` reacts only to no progress
            at all.
        spatial: "flatten" (default: the whole layer) or "mean" (4-D outputs averaged
            over the spatial axes), as :func:`representation`.
        box: (low, high) of valid inputs; iterates are clamped to it.
        use_cache: load/store the result in the cache (:mod:`stir_lib.cache`), keyed by
            :func:`inversion_key` (not with an explicit ``start``, nor a Layer that
            selects with a function).
        batch_size: samples optimised together (memory only: samples are independent).
        progress: progress bar; None shows it only on a terminal.
        fake_relu: the public STIR code's straight-through final ReLU (default False: the
            paper's procedure): during the steps, the last ReLU the layer runs passes its
            gradient through as the identity (the robustness library's FakeReLU; see
            :mod:`stir_lib.straight_relu`); the target, the distances and the tracked best
            are the true ones. The layer must end in a ReLU (then at most reshapes, average
            pooling, dropout), else ValueError. Moved STIR by up to 0.018 on MNIST MLPs.
        clamp_start: False: the public code's start, reference method only: the first step
            is taken from the start as drawn (for "noise" the raw standard Gaussian,
            :func:`seeds` with ``clamp=False``; an explicit ``start`` may then lie outside
            the box) and every later iterate is clamped. The unclamped start is no IRI:
            the best iterate is tracked from its projection onto the box (to which
            ``initial_distance`` refers, one evaluation more). Moved STIR by up to 0.007.

    Returns:
        :class:`InversionResult` (x_prime on ``x``'s device).
    """
    _check_model(model)
    features.check_input(model, x, "x", box)
    layer = resolve_layer(model, layer)
    check_choice(method, "method", METHODS)
    check_choice(spatial, "spatial", SPATIAL)
    box = (float(box[0]), float(box[1]))
    d_steps, d_size = _DEFAULTS[method]
    steps = check_int(d_steps if steps is None else steps, "steps")
    step_size = check_positive(d_size if step_size is None else step_size, "step_size")
    tol = check_positive(tol, "tol", allow_zero=True)
    patience = check_int(patience, "patience")
    batch_size = check_int(batch_size, "batch_size")
    for flag, flag_name in ((fake_relu, "fake_relu"), (clamp_start, "clamp_start")):
        if not isinstance(flag, bool):
            raise TypeError(f"{flag_name}: expected a bool, got {type(flag).__name__}")
    if not clamp_start and method != "reference":
        raise ValueError(f"clamp_start=False: expected method='reference' (the public code's "
                         f"loop), got {method!r}; pass clamp_start=True with 'fast'")
    authors: dict[str, Any] = dict(fake_relu=fake_relu, clamp_start=clamp_start)
    if use_cache and start is None:
        key = inversion_key(cache.model_identity(model), x, layer, spatial=spatial,
                            method=method, steps=steps, step_size=step_size, seed=seed,
                            seed_kind=seed_kind, box=box, pool=pool, tol=tol, patience=patience,
                            **authors)
        entry = cache.get_or_create("inversion", key, lambda: _as_payload(invert(
            model, x, layer, seed_kind=seed_kind, method=method, steps=steps,
            step_size=step_size, seed=seed, pool=pool, tol=tol, patience=patience,
            spatial=spatial, box=box, batch_size=batch_size, progress=progress, **authors)),
            device=device_of(model))
        return _from_payload(entry, x.device, layer)
    kind_used = seed_kind if start is None else "start"
    if start is None:
        start = seeds(seed_kind, x, seed, pool, box, clamp=clamp_start)
    else:           # an unclamped start: any finite values (its projection is checked)
        features.check_input(model, start.clamp(*box) if not clamp_start and isinstance(
            start, torch.Tensor) else start, "start", box)
        if start.shape != x.shape:
            raise ValueError(f"start: expected the shape of x {tuple(x.shape)}, got "
                             f"{tuple(start.shape)}; pass one start per image")
    dev, n = device_of(model), len(x)
    x_prime = torch.empty_like(x)
    dist, init = torch.empty(n, device="cpu"), torch.empty(n, device="cpu")
    evals = torch.zeros(n, dtype=torch.long, device="cpu")
    hist_rows: list[list[float]] = []
    n_batches = math.ceil(n / batch_size)
    pbar = bar(total=n_batches * steps, desc=f"inversion ({method})", progress=progress)

    # the target pass reads ``layer`` as asked (a module without a chosen call runs the whole
    # pass, which checks that it runs once); the steps then read that one call and stop there
    fast = features.first_call(model, layer)

    def read(z):
        return _rep(model, z, fast, spatial)

    with eval_mode(model), torch.enable_grad(), threads.use("parallel"):
        if fake_relu and n:
            read = straight_relu.straight_through(read, x[:1].to(dev), repr(layer))
        for i in range(0, n, batch_size):
            threads.refresh()
            xb = x[i:i + batch_size].to(dev)
            z0 = start[i:i + batch_size].to(dev)
            with torch.no_grad():
                target = _rep(model, xb, layer, spatial)                # (B, D)
                tnorm = target.norm(dim=1).clamp_min(_EPS)              # (B,)
            if method == "reference":
                track, ev, hist = _reference(read, z0, target, tnorm, steps, step_size,
                                             pbar.update, box, raw_start=not clamp_start)
            else:
                track, ev, hist = _fast(read, z0, target, tnorm, steps, step_size, tol,
                                        patience, pbar.update, box)
            init[i:i + len(xb)] = track.initial.cpu()
            x_prime[i:i + len(xb)] = track.best.to(x.device)
            dist[i:i + len(xb)] = track.dist.cpu()
            evals[i:i + len(xb)] = ev
            hist_rows.append(hist)
    pbar.close()
    length = max(len(h) for h in hist_rows)            # batches that stopped early hold still
    history = torch.tensor([sum(h[min(t, len(h) - 1)] for h in hist_rows) / n
                            for t in range(length)], device="cpu")
    return InversionResult(x_prime=x_prime, distance=dist, initial_distance=init,
                           history=history, evaluations=evals, method=method, layer=layer,
                           seed_kind=kind_used, seed=seed)


def _as_payload(r: InversionResult) -> dict:
    return {"x_prime": r.x_prime.cpu(), "distance": r.distance, "initial_distance":
            r.initial_distance, "history": r.history, "evaluations": r.evaluations,
            "method": r.method, "layer": features.layer_key(r.layer), "seed_kind": r.seed_kind,
            "seed": r.seed}


def _from_payload(p: dict, device, layer: features.LayerSpec) -> InversionResult:
    # the layer is the caller's (equal to the stored one by the key), not its stored key form
    return InversionResult(x_prime=p["x_prime"].to(device), distance=p["distance"],
                           initial_distance=p["initial_distance"], history=p["history"],
                           evaluations=p["evaluations"], method=p["method"], layer=layer,
                           seed_kind=p["seed_kind"], seed=int(p["seed"]))
