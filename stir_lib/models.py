"""One model interface for every experiment in the book.

Every model is an :class:`ImageModel`: it takes images in [0, 1] of shape
(N, C, H, W) and normalises them itself, runs a chain of named *stages* (the
body) and a replaceable *head*. Any stage's output can be read out by name with
:meth:`ImageModel.features`, so attacks, inversion, CKA, spectral bounds and
transfer all go through the same door.

Models are made by name from one registry (timm style)::

    model = create_model("fc100-100-10")
    list_models("fc*")

An unknown name is a ValueError that lists the valid ones.
"""

from __future__ import annotations

import fnmatch
from collections import OrderedDict
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn

from .validation import check_choice, check_image_batch, require

__all__ = ["ImageModel", "Normalize", "create_model", "list_models", "register_model",
           "model_info", "imagenet_resnet", "load_torchvision_resnet", "IMAGENET_RESNETS",
           "wrap_torchvision_resnet", "wrap_torchvision_alexnet", "load_torchvision_alexnet",
           "resolve_device", "device_of"]

MNIST_SHAPE = (1, 28, 28)
CIFAR_SHAPE = (3, 32, 32)
IMAGENET_SHAPE = (3, 224, 224)
CIFAR_MEAN, CIFAR_STD = (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def resolve_device(device=None) -> torch.device:
    """``None`` or ``"cpu"``: the CPU; ``"auto"``: CUDA when available, else the CPU; any
    other torch device spec as given (``"cuda:1"``, ``torch.device(...)``)."""
    if device is None:
        return torch.device("cpu")
    if isinstance(device, str) and device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as err:
        raise ValueError(f"device: expected 'auto', 'cpu', 'cuda', 'cuda:N' or a torch.device, "
                         f"got {device!r}") from err
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {device!r}: CUDA is not available on this machine; use "
                         f"device='auto' or 'cpu'")
    return dev


def device_of(module: nn.Module) -> torch.device:
    """The device of a module's first parameter (else first buffer; else the CPU)."""
    p: torch.Tensor | None = next(module.parameters(), None)
    if p is None:
        p = next(module.buffers(), None)
    return p.device if p is not None else torch.device("cpu")


class Normalize(nn.Module):
    """Per-channel (x - mean) / std, kept inside the model so inputs stay in [0, 1]."""

    def __init__(self, mean: Sequence[float], std: Sequence[float]):
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(-1, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(-1, 1, 1))

    def forward(self, x):
        return (x - self.mean) / self.std


class ImageModel(nn.Module):
    """Images in [0, 1] -> logits, through named stages and a replaceable head.

    Args:
        stages: ordered (name, module) pairs; the first usually flattens or
            normalises, the last one's output is the penultimate representation.
        head: maps the last stage's output to logits (nn.Linear for every model here).
        input_shape: (C, H, W) the model expects.
        mean, std: per-channel normalisation applied inside; None for none.
    """

    head: nn.Linear
    body: nn.Sequential

    def __init__(self, stages: Sequence[tuple[str, nn.Module]], head: nn.Linear,
                 input_shape: Sequence[int], mean=None, std=None):
        super().__init__()
        self.input_shape = tuple(input_shape)
        self.normalize = Normalize(mean, std) if mean is not None else nn.Identity()
        self.body = nn.Sequential(OrderedDict(stages))
        self.head = head

    @property
    def layer_names(self) -> list[str]:
        """Names readable by :meth:`features`, input to output; 'logits' is last."""
        return [*self.body._modules.keys(), "logits"]

    @property
    def penultimate(self) -> str:
        """Name of the stage whose output feeds the head."""
        return list(self.body._modules.keys())[-1]

    @property
    def num_classes(self) -> int:
        return self.head.out_features

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """Penultimate representation, (N, D)."""
        return self.body(self.normalize(x)).flatten(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.embed(x))

    def features(self, x: torch.Tensor, layers: str | Sequence[str]) -> Any:
        """Read named stages out in one pass.

        Returns one tensor for one name, else a dict name -> tensor. Stages after
        the last requested one are not run.
        """
        names: list[str] = [layers] if isinstance(layers, str) else list(layers)
        single = isinstance(layers, str)
        for name in names:
            check_choice(name, "layer", self.layer_names)
        wanted, out = set(names), dict[str, torch.Tensor]()
        h = self.normalize(x)
        for name, stage in self.body.named_children():
            if not wanted - out.keys():
                break
            h = stage(h)
            if name in wanted:
                out[name] = h
        if "logits" in wanted:
            out["logits"] = self.head(h.flatten(1))
        return out[names[0]] if single else {n: out[n] for n in names}

    def replace_head(self, num_classes: int) -> ImageModel:
        """Swap the head for a fresh linear layer with ``num_classes`` outputs."""
        self.head = nn.Linear(self.head.in_features, num_classes, device=self.head.weight.device)
        return self

    def check_input(self, x: torch.Tensor, name: str = "x") -> torch.Tensor:
        """Validate an input batch against this model's expected shape and range."""
        return check_image_batch(x, name, channels=self.input_shape[0],
                                 size=self.input_shape[1:])


# --------------------------------------------------------------------------- registry
_REGISTRY: dict[str, Callable[..., ImageModel]] = {}
_INFO: dict[str, str] = {}


def register_model(name: str, info: str = ""):
    """Decorator adding a builder to the registry under ``name``."""
    def deco(fn):
        _REGISTRY[name] = fn
        _INFO[name] = info or (fn.__doc__ or "").strip().split("\n")[0]
        return fn
    return deco


def list_models(pattern: str = "*") -> list[str]:
    """Registered model names matching a glob pattern, sorted."""
    return sorted(n for n in _REGISTRY if fnmatch.fnmatch(n, pattern))


def model_info(name: str) -> str:
    """One-line description of a registered model."""
    check_choice(name, "model name", list_models())
    return _INFO[name]


def create_model(name: str, **kwargs) -> ImageModel:
    """Build a registered model by name; keyword arguments go to its builder."""
    if name not in _REGISTRY:
        raise ValueError(f"unknown model name {name!r}; expected one of {list_models()}")
    return _REGISTRY[name](**kwargs)


# --------------------------------------------------------------------------- MLPs
_ACTIVATIONS = {"sigmoid": nn.Sigmoid, "relu": nn.ReLU, "tanh": nn.Tanh}


def mlp(hidden: Sequence[int] = (100, 100), num_classes: int = 10,
        activation: str = "sigmoid", input_shape: Sequence[int] = MNIST_SHAPE) -> ImageModel:
    """Fully connected net on flattened pixels: hidden layers ``h1, h2, ...`` then a linear head.

    With ``hidden=()`` this is softmax regression (Szegedy et al.'s FC10).
    """
    check_choice(activation, "activation", _ACTIVATIONS)
    d = 1
    for s in input_shape:
        d *= s
    stages: list[tuple[str, nn.Module]] = [("flatten", nn.Flatten())]
    for i, width in enumerate(hidden, start=1):
        stages.append((f"h{i}", nn.Sequential(nn.Linear(d, width), _ACTIVATIONS[activation]())))
        d = width
    return ImageModel(stages, nn.Linear(d, num_classes), input_shape)


for _h in [(), (100, 100), (200, 200), (123, 456)]:
    _name = "fc" + "".join(f"{w}-" for w in _h) + "10"
    register_model(_name, f"Szegedy et al.'s {_name.upper()}: sigmoid MLP on MNIST pixels")(
        lambda _h=_h, **kw: mlp(hidden=_h, **kw))
register_model("mlp", "fully connected net with configurable hidden widths")(mlp)


@register_model("ae400-10", "Szegedy et al.'s AE400-10: a 400-unit sigmoid autoencoder's "
                            "encoder with a softmax classifier on top")
def autoencoder_classifier(code: int = 400, num_classes: int = 10,
                           input_shape: Sequence[int] = MNIST_SHAPE) -> ImageModel:
    """Encoder ``code`` (784 -> 400, sigmoid) and a linear head.

    The decoder used to pre-train the encoder lives in :mod:`stir_lib.training`
    (it is not part of the classifier).
    """
    d = 1
    for s in input_shape:
        d *= s
    stages = [("flatten", nn.Flatten()),
              ("code", nn.Sequential(nn.Linear(d, code), nn.Sigmoid()))]
    return ImageModel(stages, nn.Linear(code, num_classes), input_shape)


# --------------------------------------------------------------------------- conv nets
@register_model("convnet", "small MNIST conv net: two 5x5 conv+ReLU+maxpool blocks (16, 32 channels), FC 256")
def convnet(channels: Sequence[int] = (16, 32), hidden: int = 256, num_classes: int = 10,
            input_shape: Sequence[int] = MNIST_SHAPE) -> ImageModel:
    """LeNet-like net: conv1 -> pool -> conv2 -> pool -> fc (ReLU) -> head.

    Stages: ``conv1`` (C1 x H/2 x W/2), ``conv2`` (C2 x H/4 x W/4), ``fc`` (hidden).
    """
    c_in, h, w = input_shape
    c1, c2 = channels
    stages = [
        ("conv1", nn.Sequential(nn.Conv2d(c_in, c1, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2))),
        ("conv2", nn.Sequential(nn.Conv2d(c1, c2, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2))),
        ("fc", nn.Sequential(nn.Flatten(), nn.Linear(c2 * (h // 4) * (w // 4), hidden), nn.ReLU())),
    ]
    return ImageModel(stages, nn.Linear(hidden, num_classes), input_shape)


class _Residual(nn.Module):
    """x + f(x), then ReLU: the identity skip of He et al. (2016) around ``f``."""

    def __init__(self, f: nn.Module):
        super().__init__()
        self.f = f

    def forward(self, x):
        return torch.relu(x + self.f(x))


def mnist_conv(channels: Sequence[int] = (8, 16), hidden: int = 128, residual: bool = False,
               num_classes: int = 10, input_shape: Sequence[int] = MNIST_SHAPE) -> ImageModel:
    """A small strided conv net for MNIST-sized inputs, with or without a residual block.

    Stages: ``conv1`` (5x5 stride 2 + ReLU: C1 x H/2 x W/2), ``conv2`` (5x5 stride 2 + ReLU:
    C2 x H/4 x W/4), ``block`` (two 3x3 convs at C2 x H/4 x W/4; with ``residual`` an
    identity skip around them, He et al. 2016), ``fc`` (flatten, linear, ReLU). The plain
    and the residual variant have the same weights' shapes and differ only in the skip,
    so comparing them isolates what the skip does. Strides instead of pooling keep it
    cheap to train adversarially on a CPU.
    """
    c_in, h, w = input_shape
    c1, c2 = channels
    inner = nn.Sequential(nn.Conv2d(c2, c2, 3, padding=1), nn.ReLU(),
                          nn.Conv2d(c2, c2, 3, padding=1))
    block = _Residual(inner) if residual else nn.Sequential(inner, nn.ReLU())
    hh, ww = (h + 1) // 2, (w + 1) // 2
    hh, ww = (hh + 1) // 2, (ww + 1) // 2
    stages = [
        ("conv1", nn.Sequential(nn.Conv2d(c_in, c1, 5, 2, 2), nn.ReLU())),
        ("conv2", nn.Sequential(nn.Conv2d(c1, c2, 5, 2, 2), nn.ReLU())),
        ("block", block),
        ("fc", nn.Sequential(nn.Flatten(), nn.Linear(c2 * hh * ww, hidden), nn.ReLU())),
    ]
    return ImageModel(stages, nn.Linear(hidden, num_classes), input_shape)


register_model("mnist_conv", "small strided MNIST conv net: conv1, conv2 (5x5/2), a 3x3 block, fc")(
    lambda **kw: mnist_conv(residual=False, **kw))
register_model("mnist_res", "the same as mnist_conv with an identity skip around the 3x3 block")(
    lambda **kw: mnist_conv(residual=True, **kw))


class BasicBlock(nn.Module):
    """Residual block of He et al. (2016): two 3x3 convs with BatchNorm, identity skip."""

    def __init__(self, c_in: int, c_out: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.shortcut = nn.Sequential()
        if stride != 1 or c_in != c_out:
            self.shortcut = nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride, bias=False),
                                          nn.BatchNorm2d(c_out))

    def forward(self, x):
        out = torch.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return torch.relu(out + self.shortcut(x))


def resnet(blocks: Sequence[int], width: int = 64, num_classes: int = 10,
           input_shape: Sequence[int] = CIFAR_SHAPE, mean=CIFAR_MEAN, std=CIFAR_STD) -> ImageModel:
    """CIFAR-style ResNet (3x3 stem, no stem pooling), as in the STIR paper's models.

    Stages: ``stem``, ``layer1``..``layer4`` (4-D), ``pool`` (global average, (N, 8*width)).
    """
    c_in = input_shape[0]
    stages: list[tuple[str, nn.Module]] = [
        ("stem", nn.Sequential(nn.Conv2d(c_in, width, 3, 1, 1, bias=False),
                               nn.BatchNorm2d(width), nn.ReLU()))]
    c = width
    for i, n in enumerate(blocks):
        c_out = width * 2 ** i
        layers = [BasicBlock(c, c_out, 1 if i == 0 else 2)]
        layers += [BasicBlock(c_out, c_out) for _ in range(n - 1)]
        stages.append((f"layer{i + 1}", nn.Sequential(*layers)))
        c = c_out
    stages.append(("pool", nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten())))
    norm = (mean, std) if input_shape[0] == len(mean) else ((0.5,) * c_in, (0.5,) * c_in)
    return ImageModel(stages, nn.Linear(c, num_classes), input_shape, *norm)


register_model("resnet18_cifar", "ResNet-18 for 32x32 inputs")(
    lambda **kw: resnet((2, 2, 2, 2), **kw))
register_model("resnet34_cifar", "ResNet-34 for 32x32 inputs")(
    lambda **kw: resnet((3, 4, 6, 3), **kw))
register_model("resnet_small", "a narrow 4-stage ResNet (one block a stage) for MNIST-scale work")(
    lambda width=16, input_shape=MNIST_SHAPE, **kw: resnet((1, 1, 1, 1), width=width,
                                                           input_shape=input_shape, **kw))

_VGG_CFG: dict[str, list[int | str]] = {
    "vgg11": [64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"],
    "vgg16": [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M",
              512, 512, 512, "M"],
    "vgg19": [64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512, 512, 512, "M",
              512, 512, 512, 512, "M"],
}


def vgg(cfg: str, num_classes: int = 10, width_mult: float = 1.0,
        input_shape: Sequence[int] = CIFAR_SHAPE, mean=CIFAR_MEAN, std=CIFAR_STD) -> ImageModel:
    """CIFAR-style VGG with BatchNorm (Simonyan & Zisserman 2015): one stage per pooling block.

    Stages: ``block1``..``block5`` (4-D), ``pool`` (flatten to (N, 512)).
    """
    c = input_shape[0]
    stages: list[tuple[str, nn.Module]] = []
    layers: list[nn.Module] = []
    for v in _VGG_CFG[cfg]:
        if isinstance(v, str):                      # "M": a pooling closes the block
            layers.append(nn.MaxPool2d(2))
            stages.append((f"block{len(stages) + 1}", nn.Sequential(*layers)))
            layers = []
        else:
            v = max(1, int(v * width_mult))
            layers += [nn.Conv2d(c, v, 3, padding=1, bias=False), nn.BatchNorm2d(v), nn.ReLU()]
            c = v
    stages.append(("pool", nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten())))
    norm = (mean, std) if input_shape[0] == len(mean) else ((0.5,) * input_shape[0],) * 2
    return ImageModel(stages, nn.Linear(c, num_classes), input_shape, *norm)


register_model("vgg16_cifar", "VGG-16 (BatchNorm) for 32x32 inputs")(lambda **kw: vgg("vgg16", **kw))
register_model("vgg19_cifar", "VGG-19 (BatchNorm) for 32x32 inputs")(lambda **kw: vgg("vgg19", **kw))


# --------------------------------------------------------------------------- torchvision models
def _tv_models(what: str):
    """``torchvision.models``, imported by the builders that wrap torchvision's architectures
    only: the rest of the library runs without torchvision (the ``vision`` extra)."""
    return require("torchvision.models", extra="vision", what=what)


def _load_tv(tv: nn.Module, state: dict, what: str, source: str) -> None:
    """Load ``state`` into torchvision's module ``tv`` after checking every key and shape.

    BatchNorm ``num_batches_tracked`` counters may be absent (files from older torch);
    anything else that does not match is a ValueError listing the first missing and
    unexpected keys and shape mismatches, in torchvision's key names.
    """
    if not isinstance(state, dict):
        raise ValueError(f"{source}: expected a state dict, got {type(state).__name__}")
    expected = {k: v.shape for k, v in tv.state_dict().items()}
    got = {k: getattr(v, "shape", None) for k, v in state.items()}
    missing = sorted(k for k in set(expected) - set(got) if not k.endswith("num_batches_tracked"))
    unexpected = sorted(set(got) - set(expected))
    wrong = sorted(k for k in set(expected) & set(got) if expected[k] != got[k])
    if missing or unexpected or wrong:
        raise ValueError(
            f"{source}: expected {what}; got {len(missing)} missing keys "
            f"{missing[:4]}, {len(unexpected)} unexpected keys {unexpected[:4]}, {len(wrong)} "
            f"wrong shapes (key, in the file, expected) "
            f"{[(k, tuple(got[k] or ()), tuple(expected[k])) for k in wrong[:4]]}; check the "
            f"architecture and num_classes")
    tv.load_state_dict(state, strict=False)   # only the optional counters can be absent


def wrap_torchvision_alexnet(tv: Any, input_shape: Sequence[int] = IMAGENET_SHAPE,
                             mean=IMAGENET_MEAN, std=IMAGENET_STD) -> ImageModel:
    """torchvision's AlexNet as an :class:`ImageModel`, sharing its modules.

    Stages ``features`` (torchvision's ``features``) and ``classifier`` (its ``avgpool``,
    a flatten, and ``classifier[0:6]``); the head is ``classifier[6]``. In-place ReLUs
    become out-of-place (same function), so intermediate outputs can be read.
    """
    for m in tv.modules():
        if isinstance(m, nn.ReLU):
            m.inplace = False
    cls = list(tv.classifier.children())
    body_cls = nn.Sequential(tv.avgpool, nn.Flatten(), *cls[:-1])
    return ImageModel([("features", tv.features), ("classifier", body_cls)], cls[-1],
                      input_shape, mean, std)


@register_model("alexnet", "torchvision's AlexNet (Krizhevsky et al. 2012, one-GPU variant)")
def alexnet(num_classes: int = 1000, input_shape: Sequence[int] = IMAGENET_SHAPE) -> ImageModel:
    """torchvision's AlexNet, randomly initialised, as an :class:`ImageModel`."""
    tv = _tv_models("alexnet").alexnet(weights=None, num_classes=num_classes)
    return wrap_torchvision_alexnet(tv, input_shape)


def load_torchvision_alexnet(path, map_location="cpu") -> ImageModel:
    """Load torchvision-format AlexNet weights (a state-dict file) into torchvision's AlexNet.

    A file of the wrong architecture is a ValueError naming the mismatched keys (from
    torchvision's own ``load_state_dict``).
    """
    state = torch.load(path, map_location=map_location, weights_only=True)
    if not isinstance(state, dict):
        raise ValueError(f"{path}: expected a state dict, got {type(state).__name__}")
    head = state.get("classifier.6.weight")
    tv = _tv_models("load_torchvision_alexnet").alexnet(
        weights=None, num_classes=head.shape[0] if isinstance(head, torch.Tensor) else 1000)
    _load_tv(tv, state, "torchvision AlexNet weights", str(path))
    return wrap_torchvision_alexnet(tv).eval()


def _wrn50_4(num_classes: int = 1000) -> nn.Module:
    """WRN-50-4 (Zagoruyko & Komodakis 2016, as in Salman et al.): torchvision's ResNet class
    with Bottleneck blocks [3, 4, 6, 3] and a group width of 4 x 64."""
    resnet = _tv_models("wide_resnet50_4").resnet
    return resnet.ResNet(resnet.Bottleneck, [3, 4, 6, 3], width_per_group=64 * 4,
                         num_classes=num_classes)


def _tv_builder(name: str) -> Callable[..., nn.Module]:
    """torchvision.models.<name>, looked up when called (torchvision loads on first use)."""
    def build(**kwargs) -> nn.Module:
        return getattr(_tv_models(name), name)(**kwargs)
    build.__name__ = build.__qualname__ = name
    return build


# arch -> torchvision builder; the ImageNet sources of Salman et al. 2020
IMAGENET_RESNETS = {
    "resnet18": _tv_builder("resnet18"),
    "resnet50": _tv_builder("resnet50"),
    "wide_resnet50_2": _tv_builder("wide_resnet50_2"),
    "wide_resnet50_4": _wrn50_4,
}


def wrap_torchvision_resnet(tv: Any, input_shape: Sequence[int] = IMAGENET_SHAPE,
                            mean=IMAGENET_MEAN, std=IMAGENET_STD) -> ImageModel:
    """A torchvision ResNet as an :class:`ImageModel`, sharing its modules.

    Stages: ``stem`` (conv1, bn1, relu, maxpool), ``layer1``..``layer4``, ``pool``
    (global average and flatten: 512-d for ResNet-18, 2048-d for the others); the head
    is torchvision's ``fc``.
    """
    stem = nn.Sequential(OrderedDict([("conv1", tv.conv1), ("bn1", tv.bn1), ("relu", tv.relu),
                                      ("maxpool", tv.maxpool)]))
    stages = [("stem", stem)] + [(f"layer{i}", getattr(tv, f"layer{i}")) for i in range(1, 5)]
    stages.append(("pool", nn.Sequential(tv.avgpool, nn.Flatten())))
    return ImageModel(stages, tv.fc, input_shape, mean, std)


def imagenet_resnet(arch: str = "resnet50", num_classes: int = 1000,
                    input_shape: Sequence[int] = IMAGENET_SHAPE, mean=IMAGENET_MEAN,
                    std=IMAGENET_STD) -> ImageModel:
    """torchvision's ImageNet ResNet (He et al. 2016), randomly initialised, as an ImageModel.

    Not in the registry (the wide ones have 69M and 223M weights); build by ``arch``, one
    of ``IMAGENET_RESNETS``. Any input side >= 32 works (global pooling).
    """
    check_choice(arch, "arch", IMAGENET_RESNETS)
    return wrap_torchvision_resnet(IMAGENET_RESNETS[arch](num_classes=num_classes),
                                   input_shape, mean, std)


def load_torchvision_resnet(state: dict, arch: str = "resnet50", num_classes: int = 1000, *,
                            input_shape: Sequence[int] = IMAGENET_SHAPE, mean=IMAGENET_MEAN,
                            std=IMAGENET_STD, source: str = "state dict") -> ImageModel:
    """Load a torchvision-format ResNet state dict into torchvision's own module of ``arch``.

    BatchNorm ``num_batches_tracked`` counters may be absent (older files); everything
    else must match exactly.

    Raises:
        ValueError: the keys or shapes are not those of ``arch`` (torchvision's message,
            which lists the missing and unexpected keys and the shape mismatches).
    """
    check_choice(arch, "arch", IMAGENET_RESNETS)
    tv = IMAGENET_RESNETS[arch](num_classes=num_classes)
    _load_tv(tv, state, f"torchvision {arch} weights with {num_classes} classes", source)
    return wrap_torchvision_resnet(tv, input_shape, mean, std)
