"""Training: standard, weight-decayed, autoencoder-pretrained and adversarial (PGD-AT, TRADES, MART).

:func:`train` trains a model in place from a :class:`TrainConfig`;
:func:`trained_model` does the same through the cache, keyed by the model's
name and arguments, the configuration, a fingerprint of the data and the
source of this module, :mod:`stir_lib.models` and :mod:`stir_lib.attacks`.
"""

from __future__ import annotations

import hashlib
import math
import sys
import time
from dataclasses import asdict, dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from . import attacks, cache, models
from .attacks import pgd
from .models import ImageModel, create_model
from .progress import bar
from .validation import check_choice, check_image_batch, check_labels

__all__ = ["TrainConfig", "train", "trained_model", "data_fingerprint"]


@dataclass(frozen=True)
class TrainConfig:
    """Everything that determines a training run besides the model and the data."""

    epochs: int = 20                 # passes over the training set
    batch_size: int = 128
    optimizer: str = "adam"          # "adam" or "sgd" (momentum 0.9, Nesterov off)
    lr: float = 1e-3                 # peak learning rate
    lr_schedule: str = "cosine"      # "cosine" (to 0 over the run) or "constant"
    weight_decay: float | tuple = 0.0  # lambda of the penalty lambda * ||W||_F^2 on each weight
    #                                    matrix/kernel (biases excluded); a tuple gives one
    #                                    lambda per weight, in parameter order
    loss: str = "ce"                 # "ce", "pgd-at" (Madry et al.), "pgd-mix" (half clean,
    #                                  half adversarial, Goodfellow et al.), "trades", "mart"
    adv_norm: str = "l2"             # threat model of the adversarial losses
    adv_eps: float = 0.0             # radius in [0, 1] pixel units
    adv_steps: int = 7               # PGD steps during training
    beta: float = 6.0                # TRADES / MART trade-off weight
    autoencoder_epochs: int = 0      # > 0: pre-train the body as a sigmoid autoencoder first
    #                                  (then train as below: the whole net, or the head only)
    train_params: str = "all"        # "all" or "head" (fixed-feature training)
    seed: int = 0


def data_fingerprint(*tensors: torch.Tensor) -> str:
    """SHA-256 (first 16 hex digits) of the tensors' shapes, dtypes and bytes."""
    h = hashlib.sha256()
    for t in tensors:
        t = t.detach().contiguous().cpu()
        h.update(f"{tuple(t.shape)}{t.dtype}".encode())
        h.update(t.numpy().tobytes())
    return h.hexdigest()[:16]


def _weight_penalty(model: nn.Module, weight_decay, trained: nn.Module | None = None):
    """Sum of lambda * ||W||_F^2 over the weight matrices/kernels (parameters with ndim >= 2).

    A tuple ``weight_decay`` gives one lambda per weight of the whole ``model``, in
    parameter order; only the weights inside ``trained`` (default: all) are penalised.
    """
    weights = [p for p in model.parameters() if p.ndim >= 2]
    if isinstance(weight_decay, (int, float)):
        lambdas = [float(weight_decay)] * len(weights)
    else:
        lambdas = [float(v) for v in weight_decay]
        if len(lambdas) != len(weights):
            raise ValueError(f"weight_decay: expected one lambda per weight matrix of the model "
                             f"({len(weights)}), got {len(lambdas)}")
    keep = {id(p) for p in (trained or model).parameters()}
    terms = [lam * w.pow(2).sum() for lam, w in zip(lambdas, weights) if lam and id(w) in keep]
    return sum(terms) if terms else 0.0


def _adv_loss(model, xb, yb, cfg: TrainConfig, step_seed: int) -> torch.Tensor:
    """Mean training loss of one batch under cfg.loss."""
    if cfg.loss == "ce":
        return F.cross_entropy(model(xb), yb)
    if cfg.loss == "pgd-at":
        x_adv = pgd(model, xb, yb, norm=cfg.adv_norm, eps=cfg.adv_eps, steps=cfg.adv_steps,
                    seed=step_seed)
        return F.cross_entropy(model(x_adv), yb)
    if cfg.loss == "pgd-mix":
        x_adv = pgd(model, xb, yb, norm=cfg.adv_norm, eps=cfg.adv_eps, steps=cfg.adv_steps,
                    seed=step_seed)
        return 0.5 * (F.cross_entropy(model(xb), yb) + F.cross_entropy(model(x_adv), yb))
    if cfg.loss == "trades":  # Zhang et al., ICML 2019
        with torch.no_grad(), attacks.eval_mode(model):
            p_clean = F.softmax(model(xb), 1)

        def kl(logits, p):
            return F.kl_div(F.log_softmax(logits, 1), p, reduction="none").sum(1)

        x_adv = pgd(model, xb, p_clean, norm=cfg.adv_norm, eps=cfg.adv_eps, steps=cfg.adv_steps,
                    loss=kl, seed=step_seed)
        logits = model(xb)
        robust = kl(model(x_adv), F.softmax(logits, 1)).mean()
        return F.cross_entropy(logits, yb) + cfg.beta * robust
    if cfg.loss == "mart":  # Wang et al., ICLR 2020
        x_adv = pgd(model, xb, yb, norm=cfg.adv_norm, eps=cfg.adv_eps, steps=cfg.adv_steps,
                    seed=step_seed)
        logits, logits_adv = model(xb), model(x_adv)
        p_adv, p_clean = F.softmax(logits_adv, 1), F.softmax(logits, 1)
        other = p_adv.scatter(1, yb[:, None], 0.0).amax(1)
        bce = F.cross_entropy(logits_adv, yb) - torch.log(1.0001 - other).mean()
        kl = F.kl_div(torch.log(p_adv + 1e-12), p_clean, reduction="none").sum(1)
        p_true = p_clean.gather(1, yb[:, None]).squeeze(1)
        return bce + cfg.beta * (kl * (1.0 - p_true)).mean()
    raise AssertionError(cfg.loss)


def _pretrain_autoencoder(model: ImageModel, x: torch.Tensor, cfg: TrainConfig, progress):
    """Train the body as the encoder of a sigmoid autoencoder (squared error)."""
    g = torch.Generator().manual_seed(cfg.seed + 1)
    d_in, code = x[0].numel(), model.head.in_features
    decoder = nn.Sequential(nn.Linear(code, d_in), nn.Sigmoid())
    params = list(model.body.parameters()) + list(decoder.parameters())
    opt = torch.optim.Adam(params, lr=cfg.lr)
    n = len(x)
    for _ in bar(range(cfg.autoencoder_epochs), desc="autoencoder", progress=progress):
        for idx in torch.randperm(n, generator=g).split(cfg.batch_size):
            xb = x[idx]
            recon = decoder(model.embed(xb))
            loss = F.mse_loss(recon, xb.flatten(1), reduction="sum") / len(xb)
            loss = loss + _weight_penalty(model, cfg.weight_decay, trained=model.body)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()


def train(model: ImageModel, x: torch.Tensor, y: torch.Tensor, config: TrainConfig,
          progress: bool | None = None) -> dict:
    """Train ``model`` in place on images ``x`` in [0, 1] and labels ``y``.

    Returns a history dict: per-epoch mean training loss and the wall time.
    """
    cfg = config
    check_image_batch(x, "x", channels=model.input_shape[0], size=model.input_shape[1:])
    check_labels(y, len(x), model.num_classes, "y")
    check_choice(cfg.optimizer, "optimizer", ("adam", "sgd"))
    check_choice(cfg.loss, "loss", ("ce", "pgd-at", "pgd-mix", "trades", "mart"))
    check_choice(cfg.lr_schedule, "lr_schedule", ("cosine", "constant"))
    check_choice(cfg.train_params, "train_params", ("all", "head"))
    if cfg.loss != "ce" and cfg.adv_eps <= 0:
        raise ValueError(f"loss={cfg.loss!r} needs adv_eps > 0, got {cfg.adv_eps}")
    torch.manual_seed(cfg.seed)
    g = torch.Generator().manual_seed(cfg.seed)
    start = time.perf_counter()
    model.train()
    if cfg.autoencoder_epochs:
        _pretrain_autoencoder(model, x, cfg, progress)
    head_only = cfg.train_params == "head"
    for p in model.body.parameters():
        p.requires_grad_(not head_only)
    params = [p for p in model.parameters() if p.requires_grad]
    if cfg.optimizer == "adam":
        opt = torch.optim.Adam(params, lr=cfg.lr)
    else:
        opt = torch.optim.SGD(params, lr=cfg.lr, momentum=0.9)
    steps_per_epoch = math.ceil(len(x) / cfg.batch_size)
    total = max(1, cfg.epochs * steps_per_epoch)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, (lambda s: 0.5 * (1 + math.cos(math.pi * s / total)))
        if cfg.lr_schedule == "cosine" else (lambda s: 1.0))
    if head_only:  # frozen features: BatchNorm statistics must not move either. The whole
        model.eval()  # model, not just the body: attacks restore the model's mode after each
        #               call, which would put the body back in train mode (heads are linear)
    losses, step = [], 0
    penalised = model.head if head_only else model  # the weights being trained
    for epoch in bar(range(cfg.epochs), desc="epochs", progress=progress):
        total_loss = 0.0
        for idx in torch.randperm(len(x), generator=g).split(cfg.batch_size):
            xb, yb = x[idx], y[idx]
            loss = _adv_loss(model, xb, yb, cfg, step_seed=cfg.seed * 1_000_003 + step)
            loss = loss + _weight_penalty(model, cfg.weight_decay, trained=penalised)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            total_loss += float(loss.detach()) * len(idx)
            step += 1
        losses.append(total_loss / len(x))
    for p in model.parameters():
        p.requires_grad_(True)
    model.eval()
    return {"loss": losses, "seconds": time.perf_counter() - start}


@dataclass
class TrainedModel:
    """A model from :func:`trained_model`, with its training history and cache key."""
    model: ImageModel
    history: dict = field(default_factory=dict)
    key: str = ""


def trained_model(name: str, x: torch.Tensor, y: torch.Tensor, config: TrainConfig,
                  model_kwargs: dict | None = None, init_state: dict | None = None,
                  progress: bool | None = None) -> TrainedModel:
    """Build ``create_model(name, **model_kwargs)``, train it, and cache the result.

    The cache key covers the name, the keyword arguments, ``config``, the data's
    fingerprint, an optional initial state (for fine-tuning) and the source of
    the training, model and attack code. The model is returned in eval mode.
    """
    model_kwargs = dict(model_kwargs or {})
    key = {"name": name, "model_kwargs": model_kwargs, "config": asdict(config),
           "data": data_fingerprint(x, y),
           "init": data_fingerprint(*init_state.values()) if init_state else None,
           "code": cache.code_version(models, attacks, sys.modules[__name__])}

    def create():
        torch.manual_seed(config.seed)
        model = create_model(name, **model_kwargs)
        if init_state is not None:
            model.load_state_dict(init_state)
        history = train(model, x, y, config, progress=progress)
        return {"state": model.state_dict(), "history": history}

    entry = cache.get_or_create("model", key, create)
    model = create_model(name, **model_kwargs)
    model.load_state_dict(entry["state"])
    model.eval()
    return TrainedModel(model, entry["history"], cache.config_key("model", key))

