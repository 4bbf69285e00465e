"""Training: standard, weight-decayed, autoencoder-pretrained and adversarial (PGD-AT, TRADES, MART).

:func:`train` trains a model in place from a :class:`TrainConfig`;
:func:`trained_model` does the same through the cache, keyed by the model's
name and arguments, the configuration, a fingerprint of the data and the
source of this module, :mod:`stir_lib.models` and :mod:`stir_lib.attacks`.
"""

from __future__ import annotations

import math
import os
import sys
import time
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from . import attacks, cache, models, threads
from .attacks import pgd
from .models import ImageModel, create_model
from .progress import bar
from .validation import check_choice, check_image_batch, check_labels

__all__ = ["TrainConfig", "TrainedModel", "train", "trained_model", "model_key", "data_fingerprint"]


@dataclass(frozen=True)
class TrainConfig:
    """Everything that determines a training run besides the model and the data."""

    epochs: int = 20                 # passes over the training set
    batch_size: int = 128
    optimizer: str = "adam"          # "adam" or "sgd" (with ``momentum``, Nesterov off)
    lr: float = 1e-3                 # peak learning rate
    lr_schedule: str = "cosine"      # "cosine" (to 0 over the run), "constant", or "step"
    #                                  (divided by 10 every ``lr_step`` epochs)
    lr_step: int = 0                 # epochs between /10 cuts of the "step" schedule
    momentum: float = 0.9            # SGD momentum
    optim_weight_decay: float = 0.0  # the optimiser's own weight_decay (torch's SGD/Adam
    #                                  semantics: + wd * p on every trained parameter's gradient)
    weight_decay: float | tuple = 0.0  # lambda of the penalty lambda * ||W||_F^2 on each weight
    #                                    matrix/kernel (biases excluded); a tuple gives one
    #                                    lambda per weight, in parameter order
    loss: str = "ce"                 # "ce", "pgd-at" (Madry et al.), "pgd-mix" (half clean,
    #                                  half adversarial, Goodfellow et al.), "trades", "mart"
    adv_norm: str = "l2"             # threat model of the adversarial losses
    adv_eps: float = 0.0             # radius in [0, 1] pixel units
    adv_steps: int = 7               # PGD steps during training
    adv_step_size: float | None = None  # PGD step length; None: Madry et al.'s 2.5 eps / steps
    beta: float = 6.0                # TRADES / MART trade-off weight
    autoencoder_epochs: int = 0      # > 0: pre-train the body as a sigmoid autoencoder first
    #                                  (then train as below: the whole net, or the head only)
    train_params: str = "all"        # "all" or "head" (fixed-feature training)
    augment: str = "none"            # "none" or "crop-flip" (4-pixel padded random crop and
    #                                  horizontal flip, per sample, on the training device)
    amp: bool = False                # bf16 autocast of the training step (the adversarial
    #                                  examples of adversarial training included)
    snapshots: tuple = ()            # epochs after which the weights are kept in the history
    seed: int = 0


def data_fingerprint(*tensors: torch.Tensor) -> str:
    """SHA-256 (first 16 hex digits) of the tensors' shapes, dtypes and bytes."""
    return cache.fingerprint(*tensors)


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
                    step_size=cfg.adv_step_size, seed=step_seed)
        return F.cross_entropy(model(x_adv), yb)
    if cfg.loss == "pgd-mix":
        x_adv = pgd(model, xb, yb, norm=cfg.adv_norm, eps=cfg.adv_eps, steps=cfg.adv_steps,
                    step_size=cfg.adv_step_size, seed=step_seed)
        return 0.5 * (F.cross_entropy(model(xb), yb) + F.cross_entropy(model(x_adv), yb))
    if cfg.loss == "trades":  # Zhang et al., ICML 2019
        with torch.no_grad(), attacks.eval_mode(model):
            p_clean = F.softmax(model(xb), 1)

        def kl(logits, p):
            return F.kl_div(F.log_softmax(logits, 1), p, reduction="none").sum(1)

        x_adv = pgd(model, xb, p_clean, norm=cfg.adv_norm, eps=cfg.adv_eps, steps=cfg.adv_steps,
                    step_size=cfg.adv_step_size, loss=kl, seed=step_seed)
        logits = model(xb)
        robust = kl(model(x_adv), F.softmax(logits, 1)).mean()
        return F.cross_entropy(logits, yb) + cfg.beta * robust
    if cfg.loss == "mart":  # Wang et al., ICLR 2020
        x_adv = pgd(model, xb, yb, norm=cfg.adv_norm, eps=cfg.adv_eps, steps=cfg.adv_steps,
                    step_size=cfg.adv_step_size, seed=step_seed)
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
    dev = models.device_of(model)
    d_in, code = x[0].numel(), model.head.in_features
    decoder = nn.Sequential(nn.Linear(code, d_in, device=dev), nn.Sigmoid())
    params = list(model.body.parameters()) + list(decoder.parameters())
    opt = torch.optim.Adam(params, lr=cfg.lr)
    n = len(x)
    for _ in bar(range(cfg.autoencoder_epochs), desc="autoencoder", progress=progress):
        threads.refresh()
        for idx in torch.randperm(n, generator=g, device="cpu").split(cfg.batch_size):
            xb = x[idx.to(x.device)].to(dev)
            recon = decoder(model.embed(xb))
            loss = F.mse_loss(recon, xb.flatten(1), reduction="sum") / len(xb)
            loss = loss + _weight_penalty(model, cfg.weight_decay, trained=model.body)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()


def _crop_flip(xb: torch.Tensor, pad: int, g: torch.Generator) -> torch.Tensor:
    """Per-sample random crop of the zero-padded batch (pad ``pad``) and horizontal flip.

    The CIFAR augmentation of the STIR and robustness papers (torchvision's
    ``RandomCrop(32, padding=4)`` and ``RandomHorizontalFlip()``), vectorised over the
    batch on its own device: torchvision's transforms draw one crop per call, not one per
    sample of a batch.
    """
    n, c, h, w = xb.shape
    dev = xb.device
    padded = F.pad(xb, (pad, pad, pad, pad))
    oy = torch.randint(0, 2 * pad + 1, (n,), generator=g, device=dev)
    ox = torch.randint(0, 2 * pad + 1, (n,), generator=g, device=dev)
    rows = (oy[:, None] + torch.arange(h, device=dev))[:, :, None]        # (N, H, 1)
    cols = (ox[:, None] + torch.arange(w, device=dev))[:, None, :]        # (N, 1, W)
    out = padded[torch.arange(n, device=dev)[:, None, None], :, rows, cols]  # (N, H, W, C)
    out = out.permute(0, 3, 1, 2)
    flip = torch.rand(n, generator=g, device=dev) < 0.5
    return torch.where(flip[:, None, None, None], out.flip(-1), out).contiguous()


_AUGMENT = {"none": None, "crop-flip": 4}   # name -> padding of the random crop


def _save_checkpoint(path: Path, state: dict) -> None:
    """Write atomically: a temporary file renamed into place (a kill leaves the old one)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)


def _load_checkpoint(path: Path | None):
    if path is None or not Path(path).exists():
        return None
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - an unreadable checkpoint is started over
        warnings.warn(f"training checkpoint {path} is unreadable ({err}); starting over",
                      stacklevel=3)
        Path(path).unlink(missing_ok=True)
        return None


def train(model: ImageModel, x: torch.Tensor, y: torch.Tensor, config: TrainConfig,
          progress: bool | None = None, checkpoint: str | os.PathLike | None = None) -> dict:
    """Train ``model`` in place on images ``x`` in [0, 1] and labels ``y``.

    Runs on the model's device: ``x`` and ``y`` may live on the CPU (each batch is moved)
    or already on that device (CIFAR fits in GPU memory; nothing is copied then).
    Augmentation (``config.augment``) is drawn on that device from a seeded generator.

    Args:
        checkpoint: a file; after every epoch the whole training state (weights,
            optimiser, schedule, random generators, history) is written there
            atomically, and a run that finds it resumes after its last epoch, giving the
            same final weights as an uninterrupted run. None: no checkpoints.

    Returns:
        A history dict: per-epoch mean training loss, the wall time (of a resumed
        training, all its runs together), images per second (of this run: the images
        of the epochs it trained over its own time; 0.0 when it trained none), the epoch
        it resumed at, and the snapshots (state dicts after the epochs in
        ``config.snapshots``).
    """
    cfg = config
    check_image_batch(x, "x", channels=model.input_shape[0], size=model.input_shape[1:])
    check_labels(y, len(x), model.num_classes, "y")
    check_choice(cfg.optimizer, "optimizer", ("adam", "sgd"))
    check_choice(cfg.loss, "loss", ("ce", "pgd-at", "pgd-mix", "trades", "mart"))
    check_choice(cfg.lr_schedule, "lr_schedule", ("cosine", "constant", "step"))
    check_choice(cfg.train_params, "train_params", ("all", "head"))
    check_choice(cfg.augment, "augment", _AUGMENT)
    if cfg.loss != "ce" and cfg.adv_eps <= 0:
        raise ValueError(f"loss={cfg.loss!r} needs adv_eps > 0, got {cfg.adv_eps}")
    if cfg.lr_schedule == "step" and cfg.lr_step < 1:
        raise ValueError(f"lr_schedule='step' needs lr_step >= 1 (epochs between /10 cuts), "
                         f"got {cfg.lr_step}")
    bad = [e for e in cfg.snapshots if not (isinstance(e, int) and 1 <= e <= cfg.epochs)]
    if bad:
        raise ValueError(f"snapshots: expected epochs in 1..{cfg.epochs}, got {bad}")
    dev = models.device_of(model)
    torch.manual_seed(cfg.seed)
    g = torch.Generator().manual_seed(cfg.seed)                       # batch order (CPU)
    g_aug = torch.Generator(device=dev).manual_seed(cfg.seed + 2)     # augmentation
    start = time.perf_counter()
    ckpt = Path(checkpoint) if checkpoint is not None else None
    resumed = _load_checkpoint(ckpt)
    model.train()
    if cfg.autoencoder_epochs and resumed is None:
        with threads.use("parallel"):   # the thread policy covers every loop that trains
            _pretrain_autoencoder(model, x, cfg, progress)
    head_only = cfg.train_params == "head"
    for p in model.body.parameters():
        p.requires_grad_(not head_only)
    params = [p for p in model.parameters() if p.requires_grad]
    if cfg.optimizer == "adam":
        opt = torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.optim_weight_decay)
    else:
        opt = torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum,
                              weight_decay=cfg.optim_weight_decay)
    steps_per_epoch = math.ceil(len(x) / cfg.batch_size)
    total = max(1, cfg.epochs * steps_per_epoch)
    if cfg.lr_schedule == "cosine":
        factor = (lambda s: 0.5 * (1 + math.cos(math.pi * s / total)))
    elif cfg.lr_schedule == "step":   # divide by 10 every lr_step epochs
        factor = (lambda s: 0.1 ** ((s // steps_per_epoch) // cfg.lr_step))
    else:
        factor = (lambda s: 1.0)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, factor)
    losses, step, first_epoch, snaps, seconds = [], 0, 0, {}, 0.0
    if resumed is not None:
        model.load_state_dict(resumed["model"])
        opt.load_state_dict(resumed["optimizer"])
        sched.load_state_dict(resumed["scheduler"])
        g.set_state(resumed["g"])
        g_aug.set_state(resumed["g_aug"].to(g_aug.get_state().device))
        losses, step = list(resumed["losses"]), int(resumed["step"])
        first_epoch, snaps = int(resumed["epoch"]), dict(resumed["snapshots"])
        seconds = float(resumed["seconds"])
    if head_only:  # frozen features: BatchNorm statistics must not move either. The whole
        model.eval()  # model, not just the body: attacks restore the model's mode after each
        #               call, which would put the body back in train mode (heads are linear)
    penalised = model.head if head_only else model  # the weights being trained
    pad = _AUGMENT[cfg.augment]
    amp = torch.autocast(device_type=dev.type, dtype=torch.bfloat16, enabled=cfg.amp)
    pbar = bar(range(first_epoch, cfg.epochs), desc="epochs", progress=progress)
    with threads.use("parallel"):
        for epoch in pbar:
            threads.refresh()
            t_epoch = time.perf_counter()
            total_loss = 0.0
            for idx in torch.randperm(len(x), generator=g, device="cpu").split(cfg.batch_size):
                if x.device != idx.device:
                    idx = idx.to(x.device)
                xb = x[idx].to(dev, non_blocking=True)
                yb = y[idx].to(dev, non_blocking=True)
                if pad is not None:
                    xb = _crop_flip(xb, pad, g_aug)
                with amp:
                    loss = _adv_loss(model, xb, yb, cfg, step_seed=cfg.seed * 1_000_003 + step)
                    loss = loss + _weight_penalty(model, cfg.weight_decay, trained=penalised)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                sched.step()
                total_loss += float(loss.detach()) * len(idx)
                step += 1
            losses.append(total_loss / len(x))
            rate = len(x) / max(time.perf_counter() - t_epoch, 1e-9)
            if hasattr(pbar, "set_postfix"):
                pbar.set_postfix(loss=f"{losses[-1]:.4f}", img_s=f"{rate:.0f}")
            if epoch + 1 in cfg.snapshots:
                snaps[epoch + 1] = {k: v.detach().cpu().clone()
                                    for k, v in model.state_dict().items()}
            if ckpt is not None and epoch + 1 < cfg.epochs:
                _save_checkpoint(ckpt, {
                    "model": model.state_dict(), "optimizer": opt.state_dict(),
                    "scheduler": sched.state_dict(), "g": g.get_state(),
                    "g_aug": g_aug.get_state().cpu(), "losses": losses, "step": step,
                    "epoch": epoch + 1, "snapshots": snaps,
                    "seconds": seconds + time.perf_counter() - start})
    for p in model.parameters():
        p.requires_grad_(True)
    model.eval()
    this_run = time.perf_counter() - start          # a resumed run: its own part only
    done = cfg.epochs - first_epoch                  # the epochs this run trained
    return {"loss": losses, "seconds": seconds + this_run, "resumed_at_epoch": first_epoch,
            "images_per_second": done * len(x) / max(this_run, 1e-9) if done else 0.0,
            "snapshots": snaps}


_ON_GPU = 4 << 30   # training sets up to 4 GiB are moved to the GPU once, whole


@dataclass
class TrainedModel:
    """A model from :func:`trained_model`, with its training history and cache key."""
    model: ImageModel
    history: dict = field(default_factory=dict)
    key: str = ""


def model_key(name: str, x: torch.Tensor, y: torch.Tensor, config: TrainConfig,
              model_kwargs: dict | None = None, init_state: dict | None = None,
              init_key: str | None = None) -> dict:
    """The configuration that keys a trained model in the cache (see :func:`trained_model`)."""
    if init_state is not None and init_key is not None:
        raise ValueError("give init_state or init_key, not both")
    init = (data_fingerprint(*init_state.values()) if init_state is not None else
            f"model:{init_key}" if init_key is not None else None)
    return {"name": name, "model_kwargs": dict(model_kwargs or {}), "config": asdict(config),
            "data": data_fingerprint(x, y), "init": init,
            "code": cache.code_version(models, attacks, sys.modules[__name__])}


def trained_model(name: str, x: torch.Tensor, y: torch.Tensor, config: TrainConfig,
                  model_kwargs: dict | None = None, init_state: dict | None = None,
                  progress: bool | None = None, *, init_key: str | None = None,
                  device=None) -> TrainedModel:
    """Build ``create_model(name, **model_kwargs)``, train it, and cache the result.

    The cache key covers the name, the keyword arguments, ``config``, the data's
    fingerprint, the initial weights for fine-tuning (``init_state``, or ``init_key``:
    the cache key of the trained model whose final weights to start from) and the
    source of the training, model and attack code. Training runs on ``device`` (None:
    the CPU; ``"auto"``: CUDA when available) and checkpoints every epoch next to the
    entry, so an interrupted run resumes. The model is returned on ``device``, in eval
    mode, tagged with its cache key (see :func:`stir_lib.cache.model_identity`).
    """
    dev = models.resolve_device(device)
    model_kwargs = dict(model_kwargs or {})
    if init_key is not None:
        init_entry = cache.load_entry("model", init_key)
        if init_entry is None:
            raise ValueError(f"init_key {init_key!r}: expected the key of a trained model in "
                             f"the cache, found none; train that model first")
        init_state = init_entry["state"]
        key = model_key(name, x, y, config, model_kwargs, init_key=init_key)
    else:
        key = model_key(name, x, y, config, model_kwargs, init_state=init_state)

    def create():
        torch.manual_seed(config.seed)
        model = create_model(name, **model_kwargs)
        if init_state is not None:
            model.load_state_dict(init_state)
        model.to(dev)
        xs, ys = x, y
        if dev.type == "cuda" and x.device != dev and x.numel() * x.element_size() < _ON_GPU:
            xs, ys = x.to(dev), y.to(dev)    # e.g. CIFAR-10: 0.6 GB, batches then never wait
        history = train(model, xs, ys, config, progress=progress,
                        checkpoint=cache.checkpoint_path("model", key))
        return {"state": {k: v.detach().cpu() for k, v in model.state_dict().items()},
                "history": history}

    entry = cache.get_or_create("model", key, create, device=dev)
    model = create_model(name, **model_kwargs)
    model.load_state_dict(entry["state"])
    model.to(dev).eval()
    digest = cache.config_key("model", key)
    cache.tag_model(model, digest)
    return TrainedModel(model, entry["history"], digest)
