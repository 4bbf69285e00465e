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

Representations (:func:`representation`): the named stage's output; 4-D
activations (N, C, H, W) are averaged over the *spatial* axes (H, W) to
(N, C) (the public STIR code averages over channels and height instead, which
mixes channels; we do not), anything else is flattened to (N, D).

Two optimisers (:func:`invert`):

* ``"reference"``: the paper's procedure. Normalised-gradient steps
  x' <- clip(x' - eta g / ||g||_2, 0, 1) per sample, eta = 0.5 ([0, 1] pixel
  units, L2 over the whole image), 1000 iterations, each sample's best iterate
  kept.
* ``"fast"``: Adam (Kingma & Ba 2015) on x' with projection onto [0, 1];
  each sample's learning rate is cut (x0.3) when its distance stops
  improving, and after three cuts the sample stops. Chosen by measurement
  (benchmarks/bench_stir.py, and the same comparison on a small conv net):
  it ends *below* the reference's distance with 1/7 to 1/9 of its model
  evaluations, on MNIST MLPs (vanilla and L2-adversarially trained) and at a
  conv net's penultimate and spatially pooled conv layers. Alternatives
  measured: normalised-gradient steps with a geometrically decaying step
  stall at 1.5x the reference's distance after 200 steps (the problem is
  badly conditioned across pixels, many of which sit at the box bounds;
  Adam's per-pixel scaling absorbs that); Adam with a cosine schedule over a
  fixed budget does as well on penultimate layers, but with early stopping it
  halts at the noise floor of its still-large learning rate on the pooled
  conv layer (5-10x the reference's distance there).

Every function takes images in [0, 1] of shape (N, C, H, W), runs the model in
eval mode and restores its mode afterwards.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from .attacks import eval_mode
from .models import ImageModel, device_of
from .progress import bar
from .validation import check_choice, check_image_batch, check_int, check_positive

__all__ = ["InversionResult", "SEED_KINDS", "METHODS", "invert", "relative_distance",
           "representation", "resolve_layer", "seeds"]

SEED_KINDS = ("noise", "uniform", "shuffle", "pool", "constant")
METHODS = ("reference", "fast")

# defaults per method: (steps, step_size)
_DEFAULTS = {
    "reference": (1000, 0.5),   # Nanda et al. 2022: 1000 iterations, step 0.5 (L2, pixel units)
    "fast": (200, 0.2),         # at most 200 Adam steps, initial learning rate 0.2 (pixel units)
}
_LR_FACTOR = 0.3                # fast: learning-rate cut on a plateau
_LR_CUTS = 3                    # fast: cuts before a sample stops (the 4th plateau stops it)
_EPS = 1e-12                    # floor of ||m(x)|| in eq. (1), so a dead representation is no 0/0


# --------------------------------------------------------------------------- checks
def _check_model(model, name: str = "model") -> ImageModel:
    if not isinstance(model, ImageModel):
        raise TypeError(f"{name}: expected a stir_lib.models.ImageModel, got "
                        f"{type(model).__name__}; build models with stir_lib.models.create_model")
    return model


def resolve_layer(model: ImageModel, layer: str | None, name: str = "layer") -> str:
    """``layer`` checked against ``model.layer_names``; None means ``model.penultimate``."""
    if layer is None:
        return model.penultimate
    check_choice(layer, name, model.layer_names)
    return layer


# --------------------------------------------------------------------------- representations
def _rep(model: ImageModel, x: torch.Tensor, layer: str) -> torch.Tensor:
    """Differentiable representation (N, D): spatial mean of 4-D outputs, else flattened."""
    h = model.features(x, layer)
    if h.ndim == 4:                                     # (N, C, H, W) -> (N, C)
        return h.mean(dim=(2, 3))
    return h.flatten(1)


def representation(model: ImageModel, x: torch.Tensor, layer: str | None = None, *,
                   batch_size: int = 1000) -> torch.Tensor:
    """The representation m(x) used by inversion and STIR, (N, D).

    Args:
        model: an :class:`~stir_lib.models.ImageModel`.
        x: (N, C, H, W) images in [0, 1], matching ``model.input_shape``.
        layer: a name from ``model.layer_names``; None for ``model.penultimate``.
        batch_size: images per forward pass (memory only; the result does not depend on it).

    Returns:
        (N, D) float tensor on the model's device: the layer's output, averaged
        over the spatial axes (H, W) if it is 4-D (so D = C), else flattened.
    """
    _check_model(model)
    model.check_input(x)
    layer = resolve_layer(model, layer)
    check_int(batch_size, "batch_size")
    dev = device_of(model)
    with eval_mode(model), torch.no_grad():
        return torch.cat([_rep(model, x[i:i + batch_size].to(dev), layer)
                          for i in range(0, len(x), batch_size)])


def _distance(model, z, layer, target, target_norm) -> torch.Tensor:
    """Eq. (1) for a batch, (B,), differentiable in z."""
    return (_rep(model, z, layer) - target).norm(dim=1) / target_norm


def relative_distance(model: ImageModel, x_prime: torch.Tensor, x: torch.Tensor,
                      layer: str | None = None, *, batch_size: int = 1000) -> torch.Tensor:
    """Per-sample ||m(x') - m(x)||_2 / ||m(x)||_2, eq. (1), shape (N,).

    Both batches are (N, C, H, W) images in [0, 1]; the representation is that of
    :func:`representation`. ``||m(x)||`` is floored at 1e-12.
    """
    _check_model(model)
    model.check_input(x, "x")
    model.check_input(x_prime, "x_prime")
    if x_prime.shape != x.shape:
        raise ValueError(f"x_prime: expected the shape of x {tuple(x.shape)}, got "
                         f"{tuple(x_prime.shape)}; pass one x' per x")
    r = representation(model, x, layer, batch_size=batch_size)
    rp = representation(model, x_prime, layer, batch_size=batch_size)
    return (rp - r).norm(dim=1) / r.norm(dim=1).clamp_min(_EPS)


# --------------------------------------------------------------------------- seeds
def _derangement(n: int, g: torch.Generator) -> torch.Tensor:
    """A random permutation with no fixed point: one random n-cycle (n >= 2)."""
    p = torch.randperm(n, generator=g)
    d = torch.empty(n, dtype=torch.long)
    d[p] = p.roll(-1)                                   # p[i] -> p[i + 1]
    return d


def seeds(kind: str, x: torch.Tensor, seed: int = 0, pool: torch.Tensor | None = None
          ) -> torch.Tensor:
    """Starting points x'_0 for the inversion of ``x``, same shape, in [0, 1].

    Kinds:
        "noise": standard Gaussian noise clipped to [0, 1] (half the pixels 0,
            ~16 % at 1). This is the public STIR code's default seed
            ("super-noise", ``torch.randn``) after its first projection onto
            [0, 1]; Nanda et al. (2022) call it random noise.
        "uniform": i.i.d. uniform noise on [0, 1].
        "shuffle": other images of ``x``, a random derangement, so no sample
            starts from itself (needs N >= 2).
        "pool": images drawn uniformly with replacement from ``pool``
            (M, C, H, W), e.g. held-out data.
        "constant": a flat grey image per sample, its level uniform on [0, 1].

    The draw uses its own ``torch.Generator`` seeded with ``seed`` (on the CPU,
    so a seed gives the same start on every device) and does not touch torch's
    global RNG. Returns a tensor on ``x``'s device with ``x``'s dtype.
    """
    check_choice(kind, "seed_kind", SEED_KINDS)
    check_image_batch(x, "x")
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise TypeError(f"seed: expected an int, got {type(seed).__name__}")
    g = torch.Generator().manual_seed(seed)
    shape, n = x.shape, x.shape[0]
    if kind == "noise":
        out = torch.randn(shape, generator=g).clamp_(0, 1)
    elif kind == "uniform":
        out = torch.rand(shape, generator=g)
    elif kind == "constant":
        out = torch.rand((n, 1, 1, 1), generator=g).expand(shape).clone()
    elif kind == "shuffle":
        if n < 2:
            raise ValueError(f"seed_kind='shuffle': expected at least 2 images to shuffle, "
                             f"got {n}; use seed_kind='noise' or 'pool'")
        return x[_derangement(n, g).to(x.device)].clone()
    else:  # pool
        if pool is None:
            raise ValueError("seed_kind='pool': expected a pool of images (M, C, H, W), got "
                             "None; pass pool=held_out_images")
        check_image_batch(pool, "pool", channels=shape[1], size=shape[2:])
        if len(pool) == 0:
            raise ValueError("pool: expected at least one image, got an empty batch")
        idx = torch.randint(len(pool), (n,), generator=g)
        return pool[idx.to(pool.device)].to(device=x.device, dtype=x.dtype).clone()
    return out.to(device=x.device, dtype=x.dtype)


# --------------------------------------------------------------------------- inversion
@dataclass(frozen=True)
class InversionResult:
    """Output of :func:`invert`.

    x_prime: (N, C, H, W) IRIs in [0, 1], each sample's best iterate.
    distance: (N,) eq. (1) at ``x_prime`` (the best distance found).
    initial_distance: (N,) eq. (1) at the start x'_0.
    history: (T,) mean over all N samples of the best distance so far after
        t + 1 evaluations (a sample that stopped early keeps its final value);
        history[0] is the mean initial distance.
    evaluations: (N,) int64 model evaluations per sample: forward passes, each
        with a backward pass except the last (which only scores the final
        iterate).
    method, layer, seed_kind, seed: how it was made.
    """
    x_prime: torch.Tensor
    distance: torch.Tensor
    initial_distance: torch.Tensor
    history: torch.Tensor
    evaluations: torch.Tensor
    method: str
    layer: str
    seed_kind: str
    seed: int


class _Tracker:
    """Best iterate and best distance per sample (eq. 1), updated in place."""

    def __init__(self, z0: torch.Tensor):
        self.best = z0.clone()                                       # (B, C, H, W)
        self.dist = torch.full((len(z0),), math.inf, device=z0.device)
        self.initial: torch.Tensor | None = None                     # distance at z0

    def update(self, rows: torch.Tensor, z: torch.Tensor, d: torch.Tensor) -> None:
        better = d < self.dist[rows]
        r = rows[better]
        self.best[r] = z[better]
        self.dist[r] = d[better]


def _value_and_grad(model, z, layer, target, target_norm):
    z = z.detach().requires_grad_(True)
    d = _distance(model, z, layer, target, target_norm)              # (B,)
    # samples are independent (eval mode), so the gradient of the sum is per sample
    (g,) = torch.autograd.grad(d.sum(), z)
    return d.detach(), g


def _per_sample_norm(g: torch.Tensor) -> torch.Tensor:
    return g.flatten(1).norm(dim=1).clamp_min(1e-12).view(-1, *[1] * (g.ndim - 1))


def _reference(model, z0, layer, target, tnorm, steps, step_size, tick):
    """Nanda et al.'s loop: ``steps`` normalised-gradient steps, then score the last iterate."""
    n = len(z0)
    rows = torch.arange(n, device=z0.device)
    track, z, hist = _Tracker(z0), z0.clone(), []
    for _ in range(steps):
        d, g = _value_and_grad(model, z, layer, target, tnorm)
        track.update(rows, z, d)
        if track.initial is None:
            track.initial = d.clone()
        hist.append(float(track.dist.sum()))
        z = (z - step_size * g / _per_sample_norm(g)).clamp_(0, 1)
        tick()
    with torch.no_grad():
        track.update(rows, z, _distance(model, z, layer, target, tnorm))
    hist.append(float(track.dist.sum()))
    evals = torch.full((n,), steps + 1, dtype=torch.long)
    return track, evals, hist


def _fast(model, z0, layer, target, tnorm, steps, lr, tol, patience, tick,
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
    mark = torch.full((n,), math.inf, device=dev)                # best at the last check
    evals = torch.zeros(n, dtype=torch.long)
    hist = []
    for t in range(steps):
        d, g = _value_and_grad(model, z, layer, tgt, tn)
        evals[rows.cpu()] += 1
        track.update(rows, z, d)
        if track.initial is None:                                # t = 0: every sample
            track.initial = d.clone()
        hist.append(float(track.dist.sum()))
        m.mul_(b1).add_(g, alpha=1 - b1)
        v.mul_(b2).addcmul_(g, g, value=1 - b2)
        step = (m / (1 - b1 ** (t + 1))) / ((v / (1 - b2 ** (t + 1))).sqrt_().add_(adam_eps))
        z = (z - rate[rows].view(-1, *[1] * (z.ndim - 1)) * step).clamp_(0, 1)
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
            track.update(rows, z, _distance(model, z, layer, tgt, tn))
        evals[rows.cpu()] += 1
        hist.append(float(track.dist.sum()))
    return track, evals, hist


def invert(model: ImageModel, x: torch.Tensor, layer: str | None = None, *,
           seed_kind: str = "noise", method: str = "reference", steps: int | None = None,
           step_size: float | None = None, seed: int = 0, pool: torch.Tensor | None = None,
           start: torch.Tensor | None = None, tol: float = 0.1, patience: int = 10,
           batch_size: int = 500, progress: bool | None = None) -> InversionResult:
    """Identically represented inputs: argmin over x' in [0, 1] of eq. (1), per sample.

    Representation inversion (Mahendran & Vedaldi 2015) as Nanda et al. (2022)
    use it for STIR: each x' starts from a seed x'_0 (:func:`seeds`) and
    descends d(x', x) = ||m(x') - m(x)||_2 / ||m(x)||_2 at ``layer``; the best
    iterate of each sample is returned.

    Args:
        model: an :class:`~stir_lib.models.ImageModel`; run in eval mode, its mode restored.
        x: (N, C, H, W) target images in [0, 1], matching ``model.input_shape``.
        layer: a name from ``model.layer_names``; None for ``model.penultimate``.
        seed_kind: the start x'_0, one of :data:`SEED_KINDS` (see :func:`seeds`).
        method: "reference" (the paper's normalised-gradient descent) or "fast"
            (projected Adam, learning rate cut on plateaus, early stopping).
        steps: gradient steps per sample; default 1000 (reference, the paper's)
            or at most 200 (fast).
        step_size: reference: the L2 length of each step over the whole image,
            in [0, 1] pixel units, default 0.5 (the paper's). fast: Adam's
            initial learning rate, i.e. the typical per-pixel move per step in
            pixel units, default 0.2.
        seed: seeds the start (an int; see :func:`seeds`).
        pool: images to draw starts from when ``seed_kind="pool"``.
        start: (N, C, H, W) explicit starts in [0, 1]; overrides ``seed_kind``/``seed``.
        tol, patience: fast only: every ``patience`` steps, a sample whose best
            distance fell by at most the fraction ``tol`` (relative) over those
            steps restarts from its best iterate at 0.3x its learning rate; its
            fourth such plateau stops it. ``tol=0`` reacts only to no progress
            at all.
        batch_size: samples optimised together (memory only: samples are independent).
        progress: progress bar; None shows it only on a terminal.

    Returns:
        :class:`InversionResult` (x_prime on ``x``'s device).
    """
    _check_model(model)
    model.check_input(x, "x")
    layer = resolve_layer(model, layer)
    check_choice(method, "method", METHODS)
    d_steps, d_size = _DEFAULTS[method]
    steps = check_int(d_steps if steps is None else steps, "steps")
    step_size = check_positive(d_size if step_size is None else step_size, "step_size")
    tol = check_positive(tol, "tol", allow_zero=True)
    patience = check_int(patience, "patience")
    batch_size = check_int(batch_size, "batch_size")
    kind_used = seed_kind if start is None else "start"
    if start is None:
        start = seeds(seed_kind, x, seed, pool)
    else:
        model.check_input(start, "start")
        if start.shape != x.shape:
            raise ValueError(f"start: expected the shape of x {tuple(x.shape)}, got "
                             f"{tuple(start.shape)}; pass one start per image")
    dev, n = device_of(model), len(x)
    x_prime = torch.empty_like(x)
    dist, init = torch.empty(n), torch.empty(n)
    evals = torch.zeros(n, dtype=torch.long)
    hist_rows: list[list[float]] = []
    n_batches = math.ceil(n / batch_size)
    pbar = bar(total=n_batches * steps, desc=f"inversion ({method})", progress=progress)
    with eval_mode(model), torch.enable_grad():
        for i in range(0, n, batch_size):
            xb = x[i:i + batch_size].to(dev)
            z0 = start[i:i + batch_size].to(dev)
            with torch.no_grad():
                target = _rep(model, xb, layer)                         # (B, D)
                tnorm = target.norm(dim=1).clamp_min(_EPS)              # (B,)
            if method == "reference":
                track, ev, hist = _reference(model, z0, layer, target, tnorm, steps,
                                             step_size, pbar.update)
            else:
                track, ev, hist = _fast(model, z0, layer, target, tnorm, steps, step_size,
                                        tol, patience, pbar.update)
            init[i:i + len(xb)] = track.initial.cpu()
            x_prime[i:i + len(xb)] = track.best.to(x.device)
            dist[i:i + len(xb)] = track.dist.cpu()
            evals[i:i + len(xb)] = ev
            hist_rows.append(hist)
    pbar.close()
    length = max(len(h) for h in hist_rows)            # batches that stopped early hold still
    history = torch.tensor([sum(h[min(t, len(h) - 1)] for h in hist_rows) / n
                            for t in range(length)])
    return InversionResult(x_prime=x_prime, distance=dist, initial_distance=init,
                           history=history, evaluations=evals, method=method, layer=layer,
                           seed_kind=kind_used, seed=seed)
