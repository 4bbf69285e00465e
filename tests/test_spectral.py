"""Tests for stir_lib.spectral: every exact norm against the dense matrix of the layer.

The dense matrix of a layer's linear part is built by applying the layer (in float64) to
every basis vector of a small input and subtracting its output at zero (the bias); its
largest singular value is then taken with numpy. Iterative and closed-form methods must
agree with it to 1e-4 relative (they are far closer in practice).
"""

from __future__ import annotations

import copy
import math

import numpy as np
import pytest
import torch
from torch import nn

from stir_lib import spectral
from stir_lib.spectral import (LayerRow, conv_circular_norm, conv_circular_singular_values,
                               conv_norm, group_rows, layer_table, linear_norm,
                               lipschitz_table, operator_norm, product_bound,
                               reshaped_kernel_norm, top_singular_value)

RTOL = 1e-4


def dense_matrix(module: nn.Module, in_shape) -> np.ndarray:
    """The (n_out, n_in) matrix of ``x -> module(x) - module(0)`` for inputs of in_shape."""
    m = copy.deepcopy(module).double().eval()
    n = math.prod(in_shape)
    basis = torch.eye(n, dtype=torch.float64).reshape(n, *in_shape)
    with torch.no_grad():
        out = m(basis) - m(torch.zeros(1, *in_shape, dtype=torch.float64))
    return out.reshape(n, -1).T.numpy()


def dense_norm(module: nn.Module, in_shape) -> float:
    return float(np.linalg.norm(dense_matrix(module, in_shape), 2))


def seeded(seed: int = 0):
    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed)


# --------------------------------------------------------------------------- convolutions
CONV_CASES = [
    # c_in, c_out, kernel, stride, padding, dilation, groups, (H, W)
    (2, 3, 1, 1, 0, 1, 1, (5, 5)),
    (3, 4, 3, 1, 1, 1, 1, (6, 6)),
    (3, 4, 3, 1, 0, 1, 1, (7, 5)),
    (2, 3, 5, 1, 2, 1, 1, (6, 8)),
    (3, 2, 5, 2, 2, 1, 1, (8, 7)),
    (2, 4, 3, 2, 1, 1, 1, (7, 7)),
    (2, 4, 3, 3, 0, 1, 1, (8, 8)),
    (3, 3, 5, 3, 1, 1, 1, (8, 6)),
    (2, 3, 3, 1, 2, 2, 1, (6, 8)),
    (4, 6, 3, 2, 1, 1, 2, (7, 5)),
    (3, 2, 3, 2, 1, 2, 1, (9, 8)),
]


@pytest.mark.parametrize("c_in,c_out,k,s,p,d,g,hw", CONV_CASES)
def test_conv_norm_matches_dense_matrix(c_in, c_out, k, s, p, d, g, hw):
    seeded(k * 100 + s * 10 + p)
    layer = nn.Conv2d(c_in, c_out, k, s, p, dilation=d, groups=g)
    shape = (c_in, *hw)
    want = dense_norm(layer, shape)
    assert conv_norm(layer, shape) == pytest.approx(want, rel=RTOL)


def test_conv1d_norm_matches_dense_matrix():
    seeded(16)
    layer = nn.Conv1d(2, 3, 3, stride=2, padding=1)
    assert conv_norm(layer, (2, 9)) == pytest.approx(dense_norm(layer, (2, 9)), rel=RTOL)


def test_conv_norm_power_method_agrees():
    seeded(1)
    layer = nn.Conv2d(3, 4, 3, 2, 1)
    want = dense_norm(layer, (3, 8, 7))
    got = conv_norm(layer, (3, 8, 7), method="power", tol=1e-12, max_iter=20000)
    assert got == pytest.approx(want, rel=RTOL)


@pytest.mark.parametrize("mode", ["circular", "reflect", "replicate"])
def test_conv_norm_other_padding_modes_match_dense(mode):
    seeded(2)
    layer = nn.Conv2d(2, 3, 3, stride=1, padding=1, padding_mode=mode)
    assert conv_norm(layer, (2, 6, 7)) == pytest.approx(dense_norm(layer, (2, 6, 7)),
                                                        rel=RTOL)


@pytest.mark.parametrize("c_in,c_out,k,d,g,hw", [
    (2, 3, 3, 1, 1, (6, 6)),
    (3, 2, 3, 1, 1, (5, 7)),
    (2, 2, 5, 1, 1, (3, 4)),      # kernel larger than the input: taps wrap around
    (2, 3, 3, 2, 1, (7, 6)),      # dilation
    (4, 2, 3, 1, 2, (5, 5)),      # groups
])
def test_circular_singular_values_match_dense_spectrum(c_in, c_out, k, d, g, hw):
    seeded(3)
    layer = nn.Conv2d(c_in, c_out, k, padding=d * (k // 2), dilation=d, groups=g,
                      padding_mode="circular")
    A = dense_matrix(layer, (c_in, *hw))
    want = np.sort(np.linalg.svd(A, compute_uv=False))[::-1]
    sv = conv_circular_singular_values(layer.weight, hw, dilation=d, groups=g)
    assert sv.shape == (*hw, min(c_in, c_out))
    got = np.sort(sv.flatten().numpy())[::-1]
    np.testing.assert_allclose(got, want, rtol=1e-9, atol=1e-10)
    assert conv_circular_norm(layer, hw) == pytest.approx(want[0], rel=1e-10)


@pytest.mark.filterwarnings("ignore:Using padding='same'")
@pytest.mark.parametrize("padding", ["same", "valid"])
def test_conv_norm_string_padding_matches_dense(padding):
    seeded(2)
    layer = nn.Conv2d(2, 3, 4, padding=padding)   # even kernel: asymmetric "same" padding
    assert conv_norm(layer, (2, 6, 7)) == pytest.approx(dense_norm(layer, (2, 6, 7)),
                                                        rel=RTOL)


def test_circular_fft_and_krylov_agree_on_a_larger_layer():
    # Two independent methods, no dense matrix: 8 -> 8 channels on 16 x 12.
    seeded(4)
    layer = nn.Conv2d(8, 8, 3, padding=1, padding_mode="circular")
    assert conv_norm(layer, (8, 16, 12)) == pytest.approx(conv_circular_norm(layer, (16, 12)),
                                                          rel=1e-6)


def test_zero_padded_norm_grows_with_size_towards_circular():
    # Stride 1, zero padding: the n x n operator is a compression of the (n+1) x (n+1) one
    # and of the circular one on a torus with room for the padding, so norms increase
    # with n and stay below the circular norm.
    seeded(5)
    layer = nn.Conv2d(4, 4, 3, padding=1)
    norms = [conv_norm(layer, (4, n, n)) for n in (3, 5, 8, 12)]
    assert all(a <= b * (1 + 1e-9) for a, b in zip(norms, norms[1:]))
    assert norms[-1] <= conv_circular_norm(layer, 14) * (1 + 1e-9)


def test_reshaped_kernel_norm_is_not_the_operator_norm():
    seeded(6)
    below = 0
    for _ in range(20):
        layer = nn.Conv2d(8, 8, 3, padding=1)
        reshaped = reshaped_kernel_norm(layer)
        true = conv_circular_norm(layer, 16)
        below += reshaped < true
        assert abs(reshaped - true) / true > 0.05
    assert below == 20
    # and for the zero-padded layer itself
    layer = nn.Conv2d(8, 8, 3, padding=1)
    assert reshaped_kernel_norm(layer) < conv_norm(layer, (8, 12, 12))
    W = layer.weight.detach().double().reshape(8, -1).numpy()
    assert reshaped_kernel_norm(layer) == pytest.approx(np.linalg.norm(W, 2), rel=1e-12)


# --------------------------------------------------------------------------- other layers
@pytest.mark.parametrize("shape", [(7, 13), (300, 40), (1, 5)])
@pytest.mark.parametrize("method", ["dense", "lanczos"])
def test_linear_norm_matches_numpy(shape, method):
    seeded(7)
    layer = nn.Linear(shape[1], shape[0])
    want = np.linalg.norm(layer.weight.detach().double().numpy(), 2)
    assert linear_norm(layer, method=method, tol=1e-10) == pytest.approx(want, rel=1e-8)
    assert operator_norm(layer, (shape[1],)) == pytest.approx(want, rel=1e-8)
    assert operator_norm(layer, (3, shape[1])) == pytest.approx(want, rel=1e-8)


@pytest.mark.parametrize("bn,shape", [(nn.BatchNorm2d(5), (5, 3, 4)), (nn.BatchNorm1d(6), (6,)),
                                      (nn.BatchNorm1d(4), (4, 3))])
def test_batchnorm_eval_matches_dense(bn, shape):
    seeded(8)
    bn.running_var.uniform_(0.1, 3.0)
    bn.running_mean.normal_()
    bn.weight.data.uniform_(-2, 2)
    bn.bias.data.normal_()
    bn.eval()
    assert operator_norm(bn, shape) == pytest.approx(dense_norm(bn, shape), rel=1e-10)


@pytest.mark.parametrize("pool,hw", [
    (nn.AvgPool2d(2), (6, 6)),
    (nn.AvgPool2d(3, 2), (9, 7)),
    (nn.AvgPool2d(3, 2, padding=1), (6, 7)),
    (nn.AvgPool2d(3, 2, padding=1, count_include_pad=False, ceil_mode=True), (6, 7)),
    (nn.AdaptiveAvgPool2d((3, 2)), (7, 5)),
    (nn.AdaptiveAvgPool2d(1), (4, 6)),
])
def test_avgpool_matches_dense(pool, hw):
    want = dense_norm(pool, (1, *hw))
    assert operator_norm(pool, (3, *hw)) == pytest.approx(want, rel=RTOL)


def test_non_overlapping_avgpool_is_one_over_k():
    assert operator_norm(nn.AvgPool2d(3), (2, 9, 9)) == pytest.approx(1 / 3, rel=1e-9)


@pytest.mark.parametrize("pool,hw,want", [
    (nn.MaxPool2d(2), (8, 8), 1.0),
    (nn.MaxPool2d(3, 2), (9, 9), 2.0),          # AlexNet's overlapping pooling
    (nn.MaxPool2d(3, 1), (7, 7), 3.0),
    (nn.MaxPool2d(3, 2, padding=1), (6, 5), 2.0),
    (nn.AdaptiveMaxPool2d(3), (7, 7), 2.0),     # windows [0,3) [2,5) [4,7) overlap
])
def test_maxpool_lipschitz_is_attained_and_holds(pool, hw, want):
    norm = operator_norm(pool, (1, *hw))
    assert norm == pytest.approx(want)
    if isinstance(pool, nn.MaxPool2d):
        with_indices = nn.MaxPool2d(pool.kernel_size, pool.stride, pool.padding,
                                    return_indices=True)
        assert operator_norm(with_indices, (1, *hw)) == norm
    # attained: one bright pixel where the most windows overlap (interior centre pixel)
    best = 0.0
    for i in range(hw[0]):
        for j in range(hw[1]):
            x = torch.zeros(1, 1, *hw)
            x[0, 0, i, j] = 1.0
            best = max(best, float(pool(x).norm()))
    assert best == pytest.approx(norm)
    # holds: random pairs never expand more
    g = seeded(9)
    x, y = torch.randn(50, 1, *hw, generator=g), torch.randn(50, 1, *hw, generator=g)
    ratio = (pool(x) - pool(y)).flatten(1).norm(dim=1) / (x - y).flatten(1).norm(dim=1)
    assert float(ratio.max()) <= norm + 1e-6


def test_activation_constants():
    assert operator_norm(nn.ReLU(), (4,)) == 1.0
    assert operator_norm(nn.Tanh(), (4,)) == 1.0
    assert operator_norm(nn.Sigmoid(), (4,)) == 0.25
    assert operator_norm(nn.LeakyReLU(0.1), (4,)) == 1.0
    assert operator_norm(nn.LeakyReLU(2.0), (4,)) == 2.0
    assert operator_norm(nn.Dropout(0.5).eval(), (4,)) == 1.0
    # Softmax: the Jacobian at two tied dominant logits has norm 1/2 (the bound is tight)
    z = torch.tensor([0.0, 0.0, -30.0, -30.0], dtype=torch.float64)
    J = torch.autograd.functional.jacobian(lambda t: torch.softmax(t, 0), z)
    assert float(torch.linalg.matrix_norm(J, 2)) == pytest.approx(0.5, rel=1e-6)
    assert operator_norm(nn.Softmax(dim=-1), (4,)) == 0.5
    g = seeded(10)
    for _ in range(20):
        z = 3 * torch.randn(6, generator=g, dtype=torch.float64)
        J = torch.autograd.functional.jacobian(lambda t: torch.softmax(t, 0), z)
        assert float(torch.linalg.matrix_norm(J, 2)) <= 0.5 + 1e-12


def test_top_singular_value_autograd_adjoint_and_power_agree():
    seeded(11)
    W = torch.randn(30, 20, dtype=torch.float64)
    want = float(torch.linalg.matrix_norm(W, 2))
    lan = top_singular_value(lambda x: W @ x, None, (20,), tol=1e-10)
    pw = top_singular_value(lambda x: W @ x, lambda y: W.T @ y, (20,), method="power",
                            tol=1e-13, max_iter=50000)
    assert lan.converged and lan.norm == pytest.approx(want, rel=1e-8)
    assert pw.norm == pytest.approx(want, rel=RTOL)
    assert lan.norm <= want * (1 + 1e-12)   # a Rayleigh quotient: never above the norm


# --------------------------------------------------------------------------- errors
def test_unsupported_module_is_a_type_error_naming_it():
    with pytest.raises(TypeError, match="GELU.*supported: .*Conv2d"):
        operator_norm(nn.GELU(), (4,))
    with pytest.raises(TypeError, match="LayerNorm"):
        layer_table(nn.Sequential(nn.Linear(4, 4), nn.LayerNorm(4)), (4,))


def test_wrong_input_shapes_are_value_errors():
    conv = nn.Conv2d(3, 4, 3)
    with pytest.raises(ValueError, match="expected 3 input channels"):
        operator_norm(conv, (4, 8, 8))
    with pytest.raises(ValueError, match="drop the batch axis"):
        operator_norm(conv, (1, 3, 8, 8))
    with pytest.raises(ValueError, match="large enough"):
        operator_norm(conv, (3, 2, 2))
    with pytest.raises(ValueError, match="ending in 5"):
        operator_norm(nn.Linear(5, 2), (6,))
    with pytest.raises(ValueError, match=r"\(C, H, W\)"):
        operator_norm(nn.MaxPool2d(2), (8, 8))
    with pytest.raises(ValueError, match="positive ints"):
        operator_norm(nn.ReLU(), (0, 3))
    with pytest.raises(ValueError, match="accepts"):
        layer_table(nn.Sequential(nn.Linear(5, 2)), (6,))
    with pytest.raises(ValueError, match="stride-1"):
        conv_circular_norm(nn.Conv2d(2, 2, 3, stride=2), 8)


def test_training_mode_batchnorm_and_dropout_are_value_errors():
    with pytest.raises(ValueError, match="eval"):
        operator_norm(nn.BatchNorm2d(3).train(), (3, 4, 4))
    with pytest.raises(ValueError, match="eval"):
        operator_norm(nn.Dropout(0.2).train(), (3,))


def test_skip_connections_are_refused():
    class Residual(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b = nn.Linear(4, 4), nn.Linear(4, 4)

        def forward(self, x):
            return self.b(self.a(x) + x)

    with pytest.raises(ValueError, match="feed-forward chain"):
        layer_table(Residual(), (4,))
    rows = layer_table(Residual(), (4,), strict=False)
    assert [r.name for r in rows] == ["a", "b"]


# --------------------------------------------------------------------------- tables and bounds
def small_convnet():
    net = nn.Sequential(
        nn.Conv2d(3, 6, 3, padding=1), nn.BatchNorm2d(6), nn.ReLU(), nn.MaxPool2d(3, 2),
        nn.Conv2d(6, 8, 3, stride=2, padding=1), nn.Tanh(), nn.AvgPool2d(2),
        nn.Flatten(), nn.Linear(8, 10), nn.Sigmoid(), nn.Linear(10, 5))
    with torch.no_grad():
        net[1].running_var.uniform_(0.3, 2.0)
        net[1].weight.uniform_(-2, 2)
    return net.eval(), (3, 9, 9)


def small_mlp():
    net = nn.Sequential(nn.Flatten(), nn.Linear(12, 20), nn.ReLU(), nn.Dropout(0.3),
                        nn.Linear(20, 20), nn.LeakyReLU(0.2), nn.Linear(20, 4),
                        nn.Softmax(dim=1))
    return net.eval(), (3, 4)


@pytest.mark.parametrize("make", [small_convnet, small_mlp])
def test_product_bound_holds(make):
    seeded(12)
    net, shape = make()
    bound = product_bound(layer_table(net, shape))
    g = torch.Generator().manual_seed(13)
    for scale in (1e-3, 1.0):
        x = torch.randn(64, *shape, generator=g)
        r = scale * torch.randn(64, *shape, generator=g)
        with torch.no_grad():
            ratio = (net(x + r) - net(x)).flatten(1).norm(dim=1) / r.flatten(1).norm(dim=1)
        assert float(ratio.max()) <= bound
    # the local Lipschitz constant ||J(x)||_2 (power iteration on J^T J) stays below too
    for i in range(3):
        x0 = torch.randn(*shape, generator=g)
        J = torch.autograd.functional.jacobian(lambda t: net(t.unsqueeze(0))[0], x0)
        local = float(torch.linalg.matrix_norm(J.reshape(J.shape[0], -1), 2))
        assert local <= bound * (1 + 1e-6)


def test_product_bound_is_tight_for_a_linear_chain():
    # For a chain of linear layers whose norms are attained by aligned singular vectors
    # the bound is the exact Lipschitz constant: a single conv is the simplest such chain.
    seeded(14)
    net = nn.Sequential(nn.Conv2d(2, 3, 3, stride=2, padding=1)).eval()
    bound = product_bound(layer_table(net, (2, 7, 6)))
    assert bound == pytest.approx(dense_norm(net, (2, 7, 6)), rel=RTOL)


def test_layer_table_rows_grouping_and_modes():
    net, shape = small_convnet()
    net.train()
    net[3].eval()   # mixed modes must come back as they were
    modes = [m.training for m in net.modules()]
    rows = layer_table(net, shape)
    assert [m.training for m in net.modules()] == modes
    assert [r.type for r in rows] == ["Conv2d", "BatchNorm2d", "ReLU", "MaxPool2d", "Conv2d",
                                      "Tanh", "AvgPool2d", "Flatten", "Linear", "Sigmoid",
                                      "Linear"]
    assert rows[0].input_shape == (3, 9, 9) and rows[0].output_shape == (6, 9, 9)
    assert rows[3].output_shape == (6, 4, 4) and rows[7].output_shape == (8,)
    assert rows[3].norm == pytest.approx(2.0)          # overlapping max-pool
    assert rows[0].reshaped_norm == pytest.approx(reshaped_kernel_norm(net[0]))
    assert rows[8].reshaped_norm is None
    assert {r.kind for r in rows} <= set(spectral.KINDS)
    grouped = group_rows(rows)
    assert [r.type for r in grouped] == ["Conv2d+BatchNorm2d+ReLU+MaxPool2d",
                                         "Conv2d+Tanh+AvgPool2d+Flatten", "Linear+Sigmoid",
                                         "Linear"]
    assert grouped[0].norm == pytest.approx(math.prod(r.norm for r in rows[:4]))
    assert grouped[-1].kind == "exact" and grouped[0].kind == "product"
    assert product_bound(grouped) == pytest.approx(product_bound(rows))
    assert [r.name for r in lipschitz_table(net, shape)] == ["0", "4", "8", "10"]
    assert isinstance(rows[0], LayerRow)


def test_house_models_normalize_and_mlp():
    models = pytest.importorskip("stir_lib.models")
    seeded(15)
    std = (0.2, 0.5, 0.25)
    net = nn.Sequential(models.Normalize((0.1, 0.2, 0.3), std), nn.Flatten(),
                        nn.Linear(3 * 2 * 2, 4)).eval()
    rows = layer_table(net, (3, 2, 2))
    assert rows[0].norm == pytest.approx(dense_norm(net[0], (3, 2, 2)), rel=1e-6)
    assert rows[0].norm == pytest.approx(5.0, rel=1e-6)
    mlp = models.create_model("fc100-100-10")
    bound = product_bound(lipschitz_table(mlp, (1, 28, 28)))
    x = torch.rand(16, 1, 28, 28)
    r = 1e-2 * torch.randn(16, 1, 28, 28)
    with torch.no_grad():
        ratio = (mlp(x + r) - mlp(x)).norm(dim=1) / r.flatten(1).norm(dim=1)
    assert float(ratio.max()) <= bound


def test_register_lipschitz_extends_dispatch():
    class Double(nn.Module):
        def forward(self, x):
            return 2 * x

    with pytest.raises(TypeError, match="Double"):
        operator_norm(Double(), (3,))
    spectral.register_lipschitz(Double, lambda m, shape, **_: (2.0, "exact"))
    try:
        assert operator_norm(Double(), (3,)) == 2.0
        assert product_bound(layer_table(nn.Sequential(Double(), nn.Linear(3, 1)), (3,))) > 0
    finally:
        spectral.layers._HANDLERS.pop(Double)
