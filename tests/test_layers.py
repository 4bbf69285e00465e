"""Layers people name on real architectures: torchvision's ResNet-18 and a tiny ViT.

Every read is checked against a forward pass written out by hand from the model's own
submodules (or, for attention, from its weights), so a hook that reads the wrong call, the
wrong element of a tuple or a tensor changed in place afterwards fails here.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import pytest
import torch
from torch import nn
from torchvision.models import VisionTransformer, resnet18

from stir_lib import features as F
from stir_lib.features import Layer
from stir_lib.inversion import inversion_key, invert, representation
from stir_lib.models import ImageModel
from stir_lib.stir import STIRResult, stir

F64 = torch.float64


@pytest.fixture(scope="module")
def resnet():
    torch.manual_seed(0)
    return resnet18(weights=None, num_classes=10).to(F64).eval()


@pytest.fixture(scope="module")
def vit():
    torch.manual_seed(1)
    return VisionTransformer(image_size=32, patch_size=8, num_layers=1, num_heads=2,
                             hidden_dim=16, mlp_dim=32, num_classes=10).to(F64).eval()


@pytest.fixture(scope="module")
def x():
    return torch.rand(3, 3, 32, 32, generator=torch.Generator().manual_seed(2), dtype=F64)


# --------------------------------------------------------------------------- hand forwards
def resnet_stem(m, x):
    return m.maxpool(torch.relu(m.bn1(m.conv1(x))))


def resnet_block(b, h):
    """torchvision's BasicBlock written out: (bn1 output, first ReLU, second ReLU)."""
    pre = b.bn1(b.conv1(h))
    first = torch.relu(pre)
    identity = h if b.downsample is None else b.downsample(h)
    second = torch.relu(b.bn2(b.conv2(first)) + identity)
    return pre, first, second


def resnet_penultimate(m, x):
    h = resnet_stem(m, x)
    for stage in (m.layer1, m.layer2, m.layer3, m.layer4):
        for b in stage:
            h = resnet_block(b, h)[2]
    return torch.flatten(m.avgpool(h), 1)


def vit_tokens(v, x):
    """Patch embedding, class token and position embedding: the encoder block's input."""
    n, p = len(x), v.patch_size
    h = v.conv_proj(x).flatten(2).transpose(1, 2)                  # (N, L, E)
    assert h.shape[1] == (32 // p) ** 2
    h = torch.cat([v.class_token.expand(n, -1, -1), h], dim=1)     # (N, 1 + L, E)
    return h + v.encoder.pos_embedding


def attention_by_hand(mha, q):
    """Multi-head self-attention from the module's weights, (N, L, E) -> (N, L, E)."""
    n, L, E = q.shape
    H = mha.num_heads
    Q, K, V = (q @ mha.in_proj_weight.T + mha.in_proj_bias).split(E, dim=-1)
    Q, K, V = (t.reshape(n, L, H, E // H).transpose(1, 2) for t in (Q, K, V))  # (N, H, L, hd)
    a = torch.softmax(Q @ K.transpose(-1, -2) / math.sqrt(E // H), dim=-1) @ V
    return a.transpose(1, 2).reshape(n, L, E) @ mha.out_proj.weight.T + mha.out_proj.bias


def vit_class_token(v, x):
    h = vit_tokens(v, x)
    for blk in v.encoder.layers:
        y = h + attention_by_hand(blk.self_attention, blk.ln_1(h))
        h = y + blk.mlp(blk.ln_2(y))
    return v.encoder.ln(h)[:, 0]


def runs(module):
    """A context that counts the completed forward calls of ``module`` while it is open
    (``.n``; a forward hook, so a call stopped before or inside the module is not counted)."""
    class Count:
        def __enter__(self):
            self.n = 0
            self.h = module.register_forward_hook(lambda *_: setattr(self, "n", self.n + 1))
            return self

        def __exit__(self, *exc):
            self.h.remove()
    return Count()


# --------------------------------------------------------------------------- (a) ResNet default
def test_resnet_default_is_fcs_input_flattened_pooled_features(resnet, x):
    layer = F.resolve_layer(resnet, None)
    assert layer == F.default_layer(resnet) == Layer("fc", read="input")
    with torch.no_grad():
        want = resnet_penultimate(resnet, x)
        assert want.shape == (3, 512)
        torch.testing.assert_close(F.layer_output(resnet, x, layer), want)
        torch.testing.assert_close(representation(resnet, x), want)
        torch.testing.assert_close(F.layer_output(resnet, x, "output"), resnet.fc(want))


def test_input_read_stops_before_the_module_runs(resnet, x):
    fast = F.first_call(resnet, Layer("fc", read="input"))
    assert fast == Layer("fc", call=0, read="input")
    with torch.no_grad(), runs(resnet.fc) as fc, runs(resnet.avgpool) as pool:
        F.layer_output(resnet, x, fast)
    assert (fc.n, pool.n) == (0, 1)


# --------------------------------------------------------------------------- (b) calls
def test_a_module_that_runs_twice_is_refused_without_a_call(resnet, x):
    with pytest.raises(ValueError, match=r"'layer1\.0\.relu'.*got 2 calls.*"
                                         r"Layer\('layer1\.0\.relu', call=k\), k in 0\.\.1"):
        F.layer_output(resnet, x, "layer1.0.relu")
    with pytest.raises(ValueError, match=r"2 calls"):
        representation(resnet, x, Layer("layer2.1.relu"))
    with pytest.raises(ValueError, match=r"2 calls"):       # the target pass checks it
        invert(resnet, x, "layer1.0.relu", steps=1, progress=False)
    with pytest.raises(ValueError, match=r"ran 2 time\(s\).*expected call in 0\.\.1"):
        F.layer_output(resnet, x, Layer("layer1.0.relu", call=2))


def test_calls_zero_and_one_are_the_blocks_first_and_second_relu(resnet, x):
    with torch.no_grad():
        h = resnet_stem(resnet, x)
        _, first, second = resnet_block(resnet.layer1[0], h)
        got0 = F.layer_output(resnet, x, Layer("layer1.0.relu", call=0))
        got1 = F.layer_output(resnet, x, Layer("layer1.0.relu", call=1))
    assert not torch.allclose(first, second)
    torch.testing.assert_close(got0, first)
    torch.testing.assert_close(got1, second)
    # the hook stops the pass after the chosen call: the next block never runs
    with torch.no_grad(), runs(resnet.layer1[1]) as nxt, runs(resnet.layer1[0].conv2) as c2:
        F.layer_output(resnet, x, Layer("layer1.0.relu", call=0))
    assert (nxt.n, c2.n) == (0, 0)


def test_a_read_is_not_changed_by_later_in_place_operations(resnet, x):
    """bn1's output is overwritten by the in-place ReLU that follows it; the full pass that
    checks the call count must still return the BatchNorm's output, negatives and all."""
    with torch.no_grad():
        pre = resnet_block(resnet.layer1[0], resnet_stem(resnet, x))[0]
        got = F.layer_output(resnet, x, "layer1.0.bn1")
    assert float(pre.min()) < 0
    torch.testing.assert_close(got, pre)


def test_call_counts_show_the_reused_relus_and_restore_the_mode(resnet, x):
    resnet.train()
    try:
        counts = F.call_counts(resnet, x[:1])
        assert resnet.training and resnet.layer1[0].bn1.training
    finally:
        resnet.eval()
    twice = sorted(n for n, c in counts.items() if c == 2)
    assert twice == [f"layer{i}.{j}.relu" for i in range(1, 5) for j in range(2)]
    assert set(counts.values()) == {1, 2} and counts["fc"] == counts["relu"] == 1


# --------------------------------------------------------------------------- (c) ViT, selectors
def test_vit_default_is_the_class_token_into_the_head(vit, x):
    layer = F.resolve_layer(vit, None)
    assert layer == Layer("heads.head", read="input")
    with torch.no_grad():
        want = vit_class_token(vit, x)
        torch.testing.assert_close(F.layer_output(vit, x, layer), want)
        torch.testing.assert_close(vit(x), vit.heads.head(want))


def test_vit_self_attention_tuple_needs_a_selector(vit, x):
    name = "encoder.layers.encoder_layer_0.self_attention"
    with pytest.raises(TypeError, match=r"expected a tensor output, got a tuple.*"
                                        r"select=\.\.\..*index 0\.\.1 \(items: Tensor, NoneType\)"):
        F.layer_output(vit, x, name)
    blk = vit.encoder.layers[0]
    with torch.no_grad():
        want = attention_by_hand(blk.self_attention, blk.ln_1(vit_tokens(vit, x)))
        torch.testing.assert_close(F.layer_output(vit, x, Layer(name, select=0)), want)
        cls = F.layer_output(vit, x, Layer(name, select=lambda out: out[0][:, 0]))
        torch.testing.assert_close(cls, want[:, 0])
        torch.testing.assert_close(representation(vit, x, Layer(name, select=0)), want.flatten(1))
    with pytest.raises(TypeError, match=r"selector to give a tensor, got a NoneType"):
        F.layer_output(vit, x, Layer(name, select=1))
    with pytest.raises(ValueError, match=r"expected an index in 0\.\.1, got 2"):
        F.layer_output(vit, x, Layer(name, select=2))


def test_the_attention_out_proj_is_no_default_head():
    class Attend(nn.Module):
        def __init__(self):
            super().__init__()
            self.mha = nn.MultiheadAttention(4, 2, batch_first=True)

        def forward(self, x):
            return self.mha(x, x, x)[0]

    with pytest.raises(ValueError, match=r"nn\.Linear head.*pass a layer"):
        F.default_layer(Attend())
    with pytest.raises(ValueError, match=r"nn\.Linear head.*got a Sequential with none"):
        F.default_layer(nn.Sequential(nn.Conv2d(1, 2, 3)))


@dataclass
class Out:
    logits: torch.Tensor
    hidden: torch.Tensor


class DictBody(nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(4, 3)

    def forward(self, x):
        h = self.lin(x)
        return {"pre": h, "post": torch.tanh(h)}


class Toy(nn.Module):
    """A dict-output module inside, a dataclass output outside (like Hugging Face's)."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(3)
        self.body, self.head = DictBody(), nn.Linear(3, 2)

    def forward(self, x):
        hidden = self.body(x.flatten(1))["post"]
        return Out(logits=self.head(hidden), hidden=hidden)


def test_dict_and_attribute_outputs_by_key():
    toy, x = Toy().eval(), torch.rand(5, 1, 2, 2)
    with torch.no_grad():
        pre = toy.body.lin(x.flatten(1))
        torch.testing.assert_close(F.layer_output(toy, x, Layer("body", select="pre")), pre)
        torch.testing.assert_close(F.layer_output(toy, x, Layer("output", select="hidden")),
                                   torch.tanh(pre))
        torch.testing.assert_close(F.layer_output(toy, x, F.default_layer(toy)), torch.tanh(pre))
        torch.testing.assert_close(F.layer_output(toy, x, Layer("body", select=lambda d:
                                                                d["post"] - d["pre"])),
                                   torch.tanh(pre) - pre)
    with pytest.raises(TypeError, match=r"got a dict.*key among \['pre', 'post'\]"):
        F.layer_output(toy, x, "body")
    with pytest.raises(ValueError, match=r"key among \['pre', 'post'\], got 'mid'"):
        F.layer_output(toy, x, Layer("body", select="mid"))
    with pytest.raises(TypeError, match=r"got a Out.*attribute among \['logits', 'hidden'\]"):
        F.layer_output(toy, x, "output")
    with pytest.raises(TypeError, match=r"an int select indexes a tuple.*got a dict"):
        F.layer_output(toy, x, Layer("body", select=0))


def test_layer_specs_are_checked():
    toy = Toy()
    assert F.resolve_layer(toy, Layer("body.lin")) == "body.lin"      # nothing but a name
    with pytest.raises(ValueError, match=r"module path.*got 'nope'.*'body\.lin'"):
        F.resolve_layer(toy, Layer("nope", call=0))
    with pytest.raises(ValueError, match=r"'output' is what the model returns"):
        F.resolve_layer(toy, Layer("output", read="input"))
    with pytest.raises(TypeError, match=r"expected a layer name \(str\), a stir_lib"):
        F.resolve_layer(toy, 3)
    for bad, err in ((dict(call=-1), ValueError), (dict(call=True), ValueError),
                     (dict(select=1.5), TypeError), (dict(select=True), TypeError),
                     (dict(read="inputs"), ValueError)):
        with pytest.raises(err, match=r"Layer\.(call|select|read)"):
            Layer("body", **bad)
    image_model = ImageModel([("flatten", nn.Flatten()), ("h1", nn.Linear(4, 3))],
                             nn.Linear(3, 2), (1, 2, 2))
    assert F.resolve_layer(image_model, Layer("h1")) == "h1"
    with pytest.raises(ValueError, match=r"ImageModel is read by stage name.*call=0"):
        F.resolve_layer(image_model, Layer("h1", call=0))
    assert repr(Layer("a", call=1, select=0, read="input")) == \
        "Layer('a', call=1, select=0, read='input')"


# --------------------------------------------------------------------------- (d) end to end
def test_inversion_at_a_chosen_call_follows_the_hand_written_gradient(resnet, x):
    """Two reference steps at the second ReLU of layer1.0 (read with the early stop) against
    the same steps on the hand-written block."""
    layer = Layer("layer1.0.relu", call=1)
    z0 = torch.rand(x.shape, generator=torch.Generator().manual_seed(4), dtype=F64)
    got = invert(resnet, x, layer, steps=2, start=z0, progress=False)
    assert got.layer == layer

    def rep(z):
        return resnet_block(resnet.layer1[0], resnet_stem(resnet, z))[2].flatten(1)

    with torch.no_grad():
        target = rep(x)
    z, dists = z0.clone(), []
    for t in range(3):
        z = z.detach().requires_grad_(True)
        d = (rep(z) - target).norm(dim=1) / target.norm(dim=1)
        dists.append(d.detach())
        if t == 2:
            break
        (g,) = torch.autograd.grad(d.sum(), z)
        z = (z - 0.5 * g / g.flatten(1).norm(dim=1).view(-1, 1, 1, 1)).clamp(0, 1)
    torch.testing.assert_close(got.initial_distance, dists[0].float())
    torch.testing.assert_close(got.distance, torch.stack(dists).min(0).values.float())


def test_stir_runs_with_layers_and_keys_them(resnet, x, tmp_path):
    torch.manual_seed(5)
    other = resnet18(weights=None, num_classes=10).to(F64).eval()
    layer = Layer("layer1.0.relu", call=1)
    r = stir(resnet, other, x, layer1=layer, layer2=None, steps=2, progress=False,
             use_cache=True)
    assert (r.layer1, r.layer2) == (layer, Layer("fc", read="input"))
    assert r.distance_m1.shape == (1, 3) and 0 <= r.m2_given_m1.mean <= 1 + 1e-9
    again = stir(resnet, other, x, layer1=layer, layer2=None, steps=2, progress=False,
                 use_cache=True)
    assert again.m2_given_m1 == r.m2_given_m1                     # from the cache, equal
    r.save(tmp_path / "r.pt")
    assert STIRResult.load(tmp_path / "r.pt").layer1 == layer
    key = dict(spatial="flatten", method="reference", steps=2, step_size=0.5, seed=0,
               seed_kind="noise", box=(0, 1))
    assert inversion_key("m", x, "fc", **key)["layer"] == "fc"    # strings key as before
    assert inversion_key("m", x, layer, **key)["layer"] == dict(name="layer1.0.relu", call=1,
                                                               select=None, read="output")
    with pytest.raises(ValueError, match=r"selector function.*use_cache=False"):
        invert(resnet, x, Layer("layer1.0.relu", call=1, select=lambda h: h), steps=1,
               use_cache=True)
