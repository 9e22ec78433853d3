"""The affine rules (captum_cd/attr/rules/affine.py): ``W z + b`` for Linear, ConvNd and
ConvTransposeNd gives ``beta' = W beta + b |W beta| / (|W beta| + |W gamma|)``, written out
here; ``addmm``/``baddbmm`` and grouped expert matmuls; float64 throughout."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from _rules import decompose, DT, Lambda
from captum_cd import ContextualDecomposition, DecompositionError
from captum_cd.attr.windows import spatial_windows


def split_bias(u, v, bias):
    """The relevant part after a bias (docs/methods.md): none of it where both parts are 0."""
    total = u.abs() + v.abs()
    return u + bias * u.abs() / torch.where(total > 0, total, torch.ones_like(total))


def test_hand_derived_linear_relu():
    # f(x) = relu(W x + b) then a sum; x = (1, 2), group = {x0}.
    lin = nn.Linear(2, 2)
    lin.weight.data = torch.tensor([[1.0, -1.0], [2.0, 1.0]])
    lin.bias.data = torch.tensor([3.0, -1.0])
    model = nn.Sequential(lin, nn.ReLU()).eval()
    rel, irrel = ContextualDecomposition(model).decompose(torch.tensor([[1.0, 2.0]]), torch.tensor([[1.0, 0.0]]))
    # Unit 0: u = 1, v = -2, b = 3 -> beta = 1 + 3 * 1/3 = 2, gamma = -2 + 3 * 2/3 = 0;
    #         relu: beta' = 2, gamma' = relu(2) - 2 = 0.
    # Unit 1: u = 2, v = 2, b = -1 -> beta = 2 - 0.5 = 1.5, gamma = 1.5;
    #         relu: beta' = 1.5, gamma' = relu(3) - 1.5 = 1.5.
    torch.testing.assert_close(rel[0, 0], torch.tensor([2.0, 1.5]))
    torch.testing.assert_close(irrel[0, 0], torch.tensor([0.0, 1.5]))


def test_hand_derived_bias_with_nothing_to_split_goes_to_the_irrelevant_part():
    # Both parts zero before the bias (the original's 1e-20 made this 50/50): a group whose
    # input is zero contributes nothing, as FeatureAblation and IG give it.
    lin = nn.Linear(1, 1)
    lin.weight.data.fill_(2.0)
    lin.bias.data.fill_(4.0)
    rel, irrel = ContextualDecomposition(lin).decompose(torch.zeros(1, 1), torch.ones(1, 1))
    assert rel.item() == 0.0 and irrel.item() == 4.0


LAYERS = {
    "linear": (lambda: nn.Linear(6, 4), (3, 6)),
    "linear, leading dims": (lambda: nn.Linear(6, 4), (2, 5, 6)),
    "conv1d": (lambda: nn.Conv1d(2, 3, 3, stride=2, padding=1), (2, 2, 9)),
    "conv2d": (lambda: nn.Conv2d(2, 3, 3, padding=1, dilation=2), (2, 2, 8, 7)),
    "conv2d grouped": (lambda: nn.Conv2d(4, 6, 3, groups=2, padding="same"), (2, 4, 6, 6)),
    "conv3d": (lambda: nn.Conv3d(1, 2, 2), (2, 1, 4, 4, 3)),
    "conv_transpose1d": (lambda: nn.ConvTranspose1d(2, 3, 3, stride=2), (2, 2, 5)),
    "conv_transpose2d": (lambda: nn.ConvTranspose2d(2, 2, 3, stride=2, output_padding=1), (2, 2, 4, 3)),
    "conv_transpose3d": (lambda: nn.ConvTranspose3d(1, 2, 2), (2, 1, 3, 3, 2)),
}


@pytest.mark.parametrize("name", LAYERS)
def test_the_weight_applies_to_both_parts_and_the_bias_is_split(name):
    make, shape = LAYERS[name]
    torch.manual_seed(0)
    layer = make().to(DT).requires_grad_(False)
    x = torch.randn(shape, dtype=DT)
    masks = (torch.rand(3, *shape[1:]) > 0.5).to(DT)
    rel, _ = decompose(layer, x, masks)
    bias = layer(torch.zeros_like(x))  # b, broadcast over the output
    W = lambda t: layer(t) - bias  # noqa: E731
    expected = torch.stack([split_bias(W(m * x), W((1 - m) * x), bias) for m in masks])
    torch.testing.assert_close(rel, expected, rtol=1e-12, atol=1e-12)


def test_a_local_group_gives_the_same_numbers_in_windows_and_dense():
    """A block of pixels is propagated in windows around it (captum_cd/attr/windows.py);
    the scores equal the dense computation and the formula."""
    torch.manual_seed(1)
    net = nn.Sequential(nn.Conv2d(2, 3, 3, padding=1), nn.ReLU(), nn.Conv2d(3, 2, 3, stride=2), nn.Flatten(), nn.LazyLinear(2)).to(DT)
    x = torch.randn(2, 2, 16, 16, dtype=DT)
    net(x)
    masks = torch.zeros(2, 1, 16, 16, dtype=DT)
    masks[0, :, 2:5, 3:6], masks[1, :, 10:12, 9:15] = 1, 1
    windowed, _ = decompose(net, x, masks)
    with spatial_windows(False):
        dense, _ = decompose(net, x, masks)
    torch.testing.assert_close(windowed, dense, rtol=0, atol=1e-13)
    conv = net[0]
    parts = [conv._conv_forward(t, conv.weight, None) for t in (masks[0] * x, (1 - masks[0]) * x)]
    first, _ = decompose(conv, x, masks[:1])
    torch.testing.assert_close(first[0], split_bias(*parts, conv.bias.view(-1, 1, 1)), rtol=1e-12, atol=1e-12)


def test_a_decomposed_weight_is_refused():
    x = torch.randn(2, 4, dtype=DT)
    with pytest.raises(DecompositionError, match="only the input may be decomposed"):
        ContextualDecomposition(Lambda(lambda h: F.linear(h, h.T @ h))).decompose(x, torch.ones(1, 4, dtype=DT))


def test_addmm_is_a_linear_layer():
    """Hugging Face's Conv1D (GPT-2): ``addmm(b, x, W)`` decomposes as ``F.linear(x, W^T, b)``."""
    torch.manual_seed(0)
    weight, bias = torch.randn(6, 4, dtype=DT), torch.randn(4, dtype=DT)
    x = torch.randn(2, 5, 6, dtype=DT)
    masks = (torch.rand(3, 5, 1) > 0.5).to(DT)
    conv1d = Lambda(lambda h: torch.addmm(bias, h.view(-1, 6), weight).view(2, 5, 4))
    rel, _ = decompose(conv1d, x, masks)
    expected, _ = decompose(Lambda(lambda h: F.linear(h, weight.T, bias)), x, masks)
    torch.testing.assert_close(rel, expected, rtol=1e-12, atol=1e-12)
    scaled = Lambda(lambda h: torch.addmm(bias, h.view(-1, 6), weight, beta=0.5, alpha=2.0).view(2, 5, 4))
    rel, _ = decompose(scaled, x, masks)
    expected, _ = decompose(Lambda(lambda h: F.linear(2.0 * h, weight.T, 0.5 * bias)), x, masks)
    torch.testing.assert_close(rel, expected, rtol=1e-12, atol=1e-12)


def test_baddbmm_with_a_decomposed_input_adds_its_parts():
    torch.manual_seed(2)
    w = torch.randn(2, 4, 3, dtype=DT)
    x = torch.randn(2, 5, 4, dtype=DT)
    masks = (torch.rand(3, 5, 1) > 0.5).to(DT)
    rel, _ = decompose(Lambda(lambda h: torch.baddbmm(h[..., :3], h, w, beta=0.5)), x, masks)
    beta = masks[:, None] * x
    torch.testing.assert_close(rel, 0.5 * beta[..., :3] + beta @ w, rtol=1e-12, atol=1e-12)


def test_grouped_mm_of_experts_equals_one_matmul_per_expert():
    """Mixture-of-experts layers (transformers' grouped_mm experts) in float32 (the op's dtypes)."""
    grouped = getattr(F, "grouped_mm", None) or getattr(torch, "_grouped_mm", None)
    if grouped is None:
        pytest.skip("this torch has no grouped_mm")
    torch.manual_seed(0)
    weight = torch.randn(3, 8, 4)  # (experts, in, out); the kernels want 16-byte strides
    offs = torch.tensor([2, 2, 6], dtype=torch.int32)  # tokens 0-1 to expert 0, none to 1, 2-5 to 2
    x = torch.randn(6, 8)
    masks = (torch.rand(2, 6, 8) > 0.5).float()
    rel, irr = ContextualDecomposition(Lambda(lambda h: grouped(h, weight, offs=offs))).decompose(x, masks)
    parts = masks * x
    expected = torch.cat([parts[:, :2] @ weight[0], parts[:, 2:] @ weight[2]], dim=1)
    torch.testing.assert_close(rel, expected, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(rel + irr, grouped(x, weight, offs=offs).expand_as(rel), rtol=1e-5, atol=1e-5)
