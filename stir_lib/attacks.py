"""Adversarial examples: PGD (one loop for every norm) and Szegedy et al.'s box-constrained L-BFGS.

All attacks take images in [0, 1] of shape (N, C, H, W), put the model in eval
mode for the attack and restore its mode afterwards, and return images in
[0, 1]. Distances are in [0, 1] pixel units.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from . import threads
from .progress import bar
from .validation import check_choice, check_image_batch, check_labels, check_positive

__all__ = ["pgd", "lbfgs_min_distortion", "LBFGSResult", "rms_distortion", "gaussian_noise",
           "accuracy", "predict", "eval_mode"]


@contextmanager
def eval_mode(model: nn.Module):
    """Put ``model`` in eval mode inside the block, then restore its previous mode."""
    was_training = model.training
    model.eval()
    try:
        yield model
    finally:
        model.train(was_training)


def _device(model: nn.Module) -> torch.device:
    p = next(model.parameters(), None)
    return p.device if p is not None else torch.device("cpu")


@torch.no_grad()
def predict(model: nn.Module, x: torch.Tensor, batch_size: int = 2048) -> torch.Tensor:
    """Predicted labels (N,) on ``x``'s device, batched on the model's device, in eval mode."""
    dev = _device(model)
    if not len(x):
        return torch.empty(0, dtype=torch.long, device=x.device)
    with eval_mode(model), threads.use("parallel"):
        return torch.cat([model(x[i:i + batch_size].to(dev)).argmax(1).to(x.device)
                          for i in range(0, len(x), batch_size)])


def accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int = 2048) -> float:
    """Fraction of ``x`` classified as ``y`` (any devices)."""
    return float((predict(model, x, batch_size) == y.to(x.device)).float().mean())


def rms_distortion(x: torch.Tensor, x_adv: torch.Tensor) -> torch.Tensor:
    """Szegedy et al.'s distortion sqrt(sum_i (x'_i - x_i)^2 / n), per example (N,)."""
    return (x_adv - x).flatten(1).pow(2).mean(1).sqrt()


def gaussian_noise(x: torch.Tensor, std: float, seed: int = 0) -> torch.Tensor:
    """x + N(0, std^2) per pixel, clipped to [0, 1] (Szegedy et al.'s noise baseline).

    Clipping lowers the realised RMS distortion a little; measure it with
    :func:`rms_distortion` rather than assuming ``std``. The noise is drawn on the CPU
    from its own seeded generator, so a seed gives the same images on every device.
    """
    g = torch.Generator().manual_seed(seed)
    return (x + std * torch.randn(x.shape, generator=g, device="cpu").to(x.device)).clamp(0, 1)


# ------------------------------------------------------------------------ PGD
def _l2_norm(d: torch.Tensor) -> torch.Tensor:
    return d.flatten(1).norm(dim=1).clamp_min(1e-12).view(-1, *[1] * (d.ndim - 1))


@dataclass(frozen=True)
class _Norm:
    step: Callable[[torch.Tensor], torch.Tensor]            # ascent direction from a gradient
    project: Callable[[torch.Tensor, float], torch.Tensor]  # onto the eps-ball
    sample: Callable[[torch.Tensor, float, torch.Generator], torch.Tensor]  # random start


def _l2_sample(x, eps, g):
    d = torch.randn(x.shape, generator=g, device=x.device, dtype=x.dtype)
    u = torch.rand((len(x),) + (1,) * (x.ndim - 1), generator=g, device=x.device,
                   dtype=x.dtype) ** (1 / x[0].numel())
    return eps * u * d / _l2_norm(d)


def _linf_sample(x, eps, g):
    return (2 * torch.rand(x.shape, generator=g, device=x.device, dtype=x.dtype) - 1) * eps


_NORMS = {
    "linf": _Norm(step=torch.sign,
                  project=lambda d, eps: d.clamp(-eps, eps),
                  sample=_linf_sample),
    "l2": _Norm(step=lambda grad: grad / _l2_norm(grad),
                project=lambda d, eps: d * (eps / _l2_norm(d)).clamp(max=1.0),
                sample=_l2_sample),
}


def pgd(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, norm: str = "l2", eps: float,
        steps: int = 10, step_size: float | None = None, random_start: bool = True,
        targeted: bool = False, loss: Callable | None = None, seed: int = 0) -> torch.Tensor:
    """Projected gradient descent (Madry et al., ICLR 2018) in an L2 or Linf ball.

    Args:
        model: maps images in [0, 1] to logits.
        x: (N, C, H, W) images in [0, 1].
        y: (N,) labels to move away from (or towards, if ``targeted``).
        norm: "l2" or "linf".
        eps: radius of the ball, in [0, 1] pixel units (L2: over the whole image).
        steps: number of gradient steps.
        step_size: step length; default 2.5 * eps / steps (Madry et al.'s rule).
        loss: ``loss(logits, y) -> (N,)`` per-example loss to ascend; default cross-entropy.
        seed: seeds the random start, drawn on ``x``'s device from its own generator (the
            same seed gives other numbers on another device type).

    ``x`` and ``y`` must be on the model's device (training loops move each batch there);
    the result is on that device too.

    Returns:
        Adversarial images (N, C, H, W) in [0, 1] with ||x_adv - x|| <= eps.
    """
    check_choice(norm, "norm", _NORMS)
    check_image_batch(x, "x")
    eps = check_positive(eps, "eps", allow_zero=True)
    if eps == 0 or steps == 0:
        return x.clone()
    geometry = _NORMS[norm]
    alpha = step_size if step_size is not None else 2.5 * eps / steps
    loss = loss or (lambda logits, t: F.cross_entropy(logits, t, reduction="none"))
    sign = -1.0 if targeted else 1.0
    dev = _device(model)
    if x.device != dev or y.device != dev:
        raise ValueError(f"pgd: expected x and y on the model's device {dev}, got {x.device} "
                         f"and {y.device}; move them with .to({str(dev)!r})")
    g = torch.Generator(device=dev).manual_seed(seed)
    delta = geometry.sample(x, eps, g) if random_start else torch.zeros_like(x)
    delta = (x + delta).clamp(0, 1) - x
    with eval_mode(model), torch.enable_grad(), threads.use("parallel"):
        for _ in range(steps):
            delta.requires_grad_(True)
            objective = sign * loss(model(x + delta), y).sum()
            (grad,) = torch.autograd.grad(objective, delta)
            delta = geometry.project(delta.detach() + alpha * geometry.step(grad), eps)
            delta = (x + delta).clamp(0, 1) - x
    return (x + delta).detach()


# ------------------------------------------------------------ box-constrained L-BFGS
@dataclass
class LBFGSResult:
    """Output of :func:`lbfgs_min_distortion`.

    images: (N, C, H, W) adversarial images in [0, 1] (the original image where
        the search found none). success: (N,) bool, the model labels the image
        ``target``. c: (N,) the penalty weight of the kept solution.
        evaluations: number of batched gradient evaluations used.
    """
    images: torch.Tensor
    success: torch.Tensor
    c: torch.Tensor
    evaluations: int


def _rowdot(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Row-wise dot products of two (B, D) tensors, (B,)."""
    return torch.linalg.vecdot(a, b, dim=1)


def _box_lbfgs(fun, z0, lower, upper, *, max_iter, history, pgtol, ftol):
    """Minimise a sum of independent per-row objectives over a box, all rows at once.

    Each row (example) keeps its own L-BFGS memory (Nocedal 1980), so the
    curvature of one example never leaks into another. Bounds are handled by
    the two-metric projection of Bertsekas (1982): coordinates at a bound whose
    gradient points outward are held, the L-BFGS direction is taken in the
    others, and a projected Armijo backtracking search picks the step. Rows that
    meet scipy's L-BFGS-B stopping rules leave the batch, so late iterations
    only pay for the rows still moving.

    Args:
        fun: ``fun(z, rows) -> (f (B,), g (B, D))`` for the rows ``rows`` of the problem.
        z0: (N, D) start, inside the box [lower, upper].

    Returns:
        (z, evaluations): the final iterates (N, D) and the number of calls of ``fun``.
    """
    z_out = z0.clone()
    idx = torch.arange(len(z0), device=z0.device)  # rows still being optimised
    z, lo, hi = z0.clone(), lower, upper
    f, g = fun(z, idx)
    evals = 1
    S, Y, rho = [], [], []                  # newest last; each (B, D), (B, D), (B,)
    for _ in range(max_iter):
        held = ((z <= lo) & (g > 0)) | ((z >= hi) & (g < 0))
        gf = g.masked_fill(held, 0.0)
        # two-loop recursion with per-row memory
        q, alphas = gf.clone(), []
        for s, y, r in zip(reversed(S), reversed(Y), reversed(rho)):
            a = r * _rowdot(s, q)
            q.addcmul_(y, a[:, None], value=-1.0)
            alphas.append(a)
        if S:
            sy, yy = _rowdot(S[-1], Y[-1]), _rowdot(Y[-1], Y[-1])
            gamma = torch.where(rho[-1] > 0, sy / yy.clamp_min(1e-300),
                                1.0 / gf.norm(dim=1).clamp_min(1e-12))
        else:  # first step: unit length
            gamma = 1.0 / gf.norm(dim=1).clamp_min(1e-12)
        q *= gamma[:, None]
        for s, y, r, a in zip(S, Y, rho, reversed(alphas)):
            q.addcmul_(s, (a - r * _rowdot(y, q))[:, None])
        d = (-q).masked_fill(held, 0.0)
        bad = _rowdot(d, g) >= 0  # not a descent direction: steepest descent instead
        if bad.any():
            d[bad] = -gf[bad] / gf[bad].norm(dim=1, keepdim=True).clamp_min(1e-12)
        # projected Armijo backtracking, all rows together
        t = torch.ones(len(idx), dtype=z.dtype, device=z.device)
        accepted = torch.zeros(len(idx), dtype=torch.bool, device=z.device)
        z_new, f_new, g_new = z.clone(), f.clone(), g.clone()
        for k in range(20):
            if k == 0:  # every row tries the full step: no gathers
                trial = torch.maximum(torch.minimum(z + d, hi), lo)
                ft, gt = fun(trial, idx)
                evals += 1
                ok = ft <= f + 1e-4 * _rowdot(g, trial - z)
                z_new[ok], f_new[ok], g_new[ok] = trial[ok], ft[ok], gt[ok]
                accepted |= ok
                t[~ok] *= 0.5
                continue
            todo = (~accepted).nonzero().flatten()
            if todo.numel() == 0:
                break
            trial = (z[todo] + t[todo, None] * d[todo]).clamp(lo[todo], hi[todo])
            ft, gt = fun(trial, idx[todo])
            evals += 1
            ok = ft <= f[todo] + 1e-4 * _rowdot(g[todo], trial - z[todo])
            hit = todo[ok]
            z_new[hit], f_new[hit], g_new[hit] = trial[ok], ft[ok], gt[ok]
            accepted[hit] = True
            t[todo[~ok]] *= 0.5
        s_vec, y_vec = z_new - z, g_new - g
        sy = _rowdot(s_vec, y_vec)
        good = sy > 1e-10 * s_vec.norm(dim=1) * y_vec.norm(dim=1)  # keep positive curvature only
        S.append(s_vec)
        Y.append(y_vec)
        rho.append(torch.where(good, 1.0 / sy.clamp_min(1e-300), torch.zeros_like(sy)))
        if len(S) > history:
            S.pop(0), Y.pop(0), rho.pop(0)
        pg = (z_new - (z_new - g_new).clamp(lo, hi)).abs().amax(1)  # projected gradient
        done = (~accepted) | (pg <= pgtol) | \
            ((f - f_new) <= ftol * torch.maximum(f.abs(), f_new.abs()).clamp_min(1.0))
        z, f, g = z_new, f_new, g_new
        if done.any():  # retire finished rows and compact the state
            z_out[idx[done]] = z[done]
            keep = ~done
            idx, z, f, g, lo, hi = idx[keep], z[keep], f[keep], g[keep], lo[keep], hi[keep]
            S, Y, rho = [s[keep] for s in S], [y[keep] for y in Y], [r[keep] for r in rho]
            if idx.numel() == 0:
                break
    z_out[idx] = z
    return z_out, evals


def _loss_f(logits: torch.Tensor, target: torch.Tensor, loss: str, kappa: float) -> torch.Tensor:
    """Per-example loss towards ``target``: logit margin (clamped at -kappa) or cross-entropy."""
    if loss == "ce":
        return F.cross_entropy(logits, target, reduction="none")
    z_target = logits.gather(1, target[:, None]).squeeze(1)
    z_other = logits.scatter(1, target[:, None], -torch.inf).amax(1)
    return (z_other - z_target).clamp_min(-kappa)


@threads.parallel   # all of it, the small forward passes between the solves too
def lbfgs_min_distortion(model: nn.Module, x: torch.Tensor, target: torch.Tensor, *,
                         c_init: float = 1.0, search_steps: int = 8, max_iter: int = 100,
                         history: int = 10, pgtol: float = 1e-5, ftol: float = 1e-6,
                         loss: str = "margin", kappa: float = 0.01,
                         batch_size: int = 1000, progress: bool | None = None) -> LBFGSResult:
    """Szegedy et al.'s minimum-distortion adversarial examples (2014, section 4.1).

    For each image x and target label l, approximately solve
    ``min ||r||_2 s.t. f(x + r) = l, x + r in [0, 1]^m`` by minimising, for a
    penalty weight c, ``c * ||r||_2^2 + CE(f(x + r), l)`` with box-constrained
    L-BFGS from r = 0, and searching c per example for the *largest* c whose
    minimiser still reaches l (a larger c buys a smaller r; this is the sensible
    reading of the paper's "minimum c > 0", see the chapter). The search grows c
    tenfold while it succeeds and shrinks it tenfold while it fails, then bisects
    geometrically; the smallest successful r over the search is kept. The
    squared norm is smooth at r = 0 and traces the same trade-off curve.

    The loss is the paper's ``loss_f``. Two choices:

    * ``"margin"`` (default): ``max(max_{j != l} z_j - z_l, -kappa)`` on the logits z
      (Carlini & Wagner 2017). For a linear model this makes the penalty exact:
      below a threshold c, the minimiser is the smallest perturbation that gives
      l a logit margin of ``kappa``, so the search finds the true minimum.
    * ``"ce"``: cross-entropy towards l, the loss the paper used. Its minimiser
      follows the softmax of every class, not only the two that meet at the
      boundary, and stops 15-35 % further out than the minimum on linear
      models (see tests/test_attacks.py).

    All examples of a batch run together, each with its own c and its own
    L-BFGS memory.

    Args:
        model: maps images in [0, 1] to logits.
        x: (N, C, H, W) images in [0, 1].
        target: (N,) int64 target labels.
        c_init: first penalty weight (per squared [0, 1] pixel unit).
        search_steps: number of L-BFGS solves per example in the c search.
        loss: "margin" or "ce" (see above).
        kappa: logit margin of the "margin" loss, so success is strict.
        max_iter: L-BFGS iterations per solve.
        history: L-BFGS memory length.
        pgtol, ftol: stopping tolerances: a solve stops when the projected gradient's
            largest entry is below ``pgtol`` or the objective's relative decrease is below
            ``ftol``. scipy's L-BFGS-B defaults are pgtol 1e-5 and ftol 2.2e-9 (factr 1e7);
            ftol 1e-6 halves the time on MNIST with the same median distortion to 4
            digits (benchmarks/bench_lbfgs.py).
        batch_size: examples optimised together.
        progress: show a progress bar; None shows it only on a terminal.

    The attack runs on the model's device (float64 there: CUDA and the CPU support it),
    one batch of ``x`` at a time; the returned tensors are on ``x``'s device.

    Returns:
        :class:`LBFGSResult` with the adversarial images.
    """
    check_image_batch(x, "x")
    dev = _device(model)
    net = copy.deepcopy(model).double().eval()  # float64, so scipy's tolerances mean something
    for p in net.parameters():
        p.requires_grad_(False)
    with torch.no_grad():
        num_classes = net(x[:1].to(dev).double()).shape[1] if len(x) else 1
    check_labels(target, len(x), num_classes, "target")
    check_positive(c_init, "c_init")
    check_choice(loss, "loss", ("margin", "ce"))
    kappa = check_positive(kappa, "kappa", allow_zero=True)
    if search_steps < 1 or max_iter < 1:
        raise ValueError(f"expected search_steps >= 1 and max_iter >= 1, got "
                         f"{search_steps} and {max_iter}")
    out = x.clone()
    c_kept = torch.full((len(x),), float("nan"), device=x.device)
    evals = 0
    pbar = bar(total=len(x) * search_steps, desc="L-BFGS attack", progress=progress)
    f64: dict[str, Any] = dict(dtype=torch.float64, device=dev)
    for start in range(0, len(x), batch_size):
        xb = x[start:start + batch_size].to(dev)
        tb = target[start:start + batch_size].to(dev)
        shape, nb = xb.shape, len(xb)
        x0 = xb.flatten(1).double()
        lower, upper = torch.zeros_like(x0), torch.ones_like(x0)
        c = torch.full((nb,), float(c_init), **f64)
        lo = torch.zeros(nb, **f64)
        hi = torch.full((nb,), math.inf, **f64)
        best = torch.full((nb,), math.inf, **f64)

        for _ in range(search_steps):
            def fun(z, rows, c=c, x0=x0, tb=tb, shape=shape):
                with torch.enable_grad():
                    zz = z.detach().requires_grad_(True)
                    logits = net(zz.view(-1, *shape[1:]))
                    lf = _loss_f(logits, tb[rows], loss, kappa)
                    (grad,) = torch.autograd.grad(lf.sum(), zz)
                r = z - x0[rows]
                fval = c[rows] * r.pow(2).sum(1) + lf.detach()
                return fval, grad + 2 * c[rows, None] * r

            threads.refresh()
            z, n_eval = _box_lbfgs(fun, x0.clone(), lower, upper, max_iter=max_iter,
                                   history=history, pgtol=pgtol, ftol=ftol)
            evals += n_eval
            with torch.no_grad():
                hit = net(z.view(shape)).argmax(1) == tb
            norm = (z - x0).norm(dim=1)
            better = hit & (norm < best)
            best[better] = norm[better]
            sl = slice(start, start + nb)
            better_x = better.to(x.device)
            out[sl][better_x] = z[better].to(x).view(-1, *shape[1:])
            c_kept[sl][better_x] = c[better].float().to(x.device)
            lo = torch.where(hit, c, lo)
            hi = torch.where(hit, hi, c)
            c = torch.where(torch.isinf(hi), c * 10,
                            torch.where(lo == 0, c / 10, (lo * hi).sqrt()))
            pbar.update(nb)
    pbar.close()
    out = out.clamp(0, 1)
    # judge success on the float32 images that are returned, with the caller's model
    success = predict(model, out) == target
    return LBFGSResult(images=out, success=success, c=c_kept, evaluations=evals)

