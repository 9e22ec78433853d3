"""The bias split (captum_cd/attr/rules/_util.py: split_bias) and the zeros it depends on.

A bias is shared in proportion to the magnitudes of the linear images of the two parts;
where both are exactly 0 it goes to the irrelevant part, so a group whose features are
exactly zero contributes nothing anywhere (docs/methods.md, "The bias split"). The shares
must be decided from the parts, never from the rounding of a recomputed output, and every
rule must keep a part that is 0 exactly 0."""

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from _rules import decompose, DT, Lambda
from captum_cd import ContextualDecomposition
from captum_cd.attr.rules._util import split_bias, split_biased
from reference_cd import reference_cd


def _points(scale):
    """``u``, the full's linear image, and a bias, covering: both parts 0, one part 0
    (either), parts of opposite signs, and ordinary parts, all of size ``scale``."""
    u = torch.tensor([0.0, 0.0, 1.0, 1.0, -2.0, 3.0, 1.5], dtype=DT) * scale
    v = torch.tensor([0.0, 2.0, 0.0, -3.0, 1.0, 0.5, 2.5], dtype=DT) * scale
    bias = torch.tensor([1.5, -2.0, 0.7, 1.1, -0.4, 2.0, -1.3], dtype=DT)
    return u, u + v, bias


def test_hand_derived_shares():
    u, linear, bias = _points(1.0)
    rel = split_bias(u, linear, bias)
    v = linear - u
    expected = u + bias * torch.tensor([0.0, 0.0, 1.0, 1 / 4, 2 / 3, 3 / 3.5, 1.5 / 4], dtype=DT)
    torch.testing.assert_close(rel, expected, rtol=1e-15, atol=1e-15)
    assert rel[0] == 0 and rel[1] == 0  # a part that is 0 gets nothing, also when both are
    torch.testing.assert_close(split_biased(u, linear + bias, bias), rel)  # out = linear + b
    assert torch.equal(split_bias(u, linear, bias), u + bias * u.abs() / (u.abs() + v.abs()).where(v.abs() + u.abs() > 0, 1))


# (split_biased reads the linear image off out - b, which keeps 1e-16 of |b|: differences of
# 1e-13 in b see that rounding where the parts are 1e-9.)
@pytest.mark.parametrize("scale, biased", [(1.0, False), (1e-6, False), (1e-9, False), (1.0, True), (1e-6, True)])
def test_gradients_equal_finite_differences_at_tiny_parts(scale, biased):
    """The backward is written with 1/s, never 1/s^2: no huge terms that cancel only in
    exact arithmetic. Central differences agree where the parts are 1e-9 (and the
    derivative ~1e9) as where they are 1."""
    u, linear, bias = (t[3:] for t in _points(scale))  # no part 0: |.| is smooth here
    split = split_biased if biased else split_bias
    second = linear + bias if biased else linear
    parts = (u.requires_grad_(), second.requires_grad_())  # differences on the parts' scale
    assert torch.autograd.gradcheck(lambda a, b: split(a, b, bias), parts, eps=1e-4 * scale, atol=1e-5, rtol=1e-5)
    bias_eps = 1e-4 * scale if biased else 1e-6  # through out - b, b moves the parts too
    assert torch.autograd.gradcheck(lambda b: split(u, second, b), (bias.requires_grad_(),), eps=bias_eps, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("biased", [False, True])
def test_gradients_where_a_part_is_zero_are_finite_and_hand_derived(biased):
    """Where a part is exactly 0, ``|.|`` has a kink and the signs give its symmetric
    derivative (what central differences converge to): ``d rel / d u = 1`` and nothing
    through the full's image; the bias's derivative is the share (0, 0, 1)."""
    u, linear, bias = (t[:3].requires_grad_() for t in _points(1.0))
    second = (linear + bias).detach().requires_grad_() if biased else linear
    rel = (split_biased if biased else split_bias)(u, second, bias)
    grads = torch.autograd.grad(rel.sum(), (u, second, bias))
    expected = [[1.0, 1.0, 1.0], [0.0, 0.0, 0.0], [0.0, 0.0, 1.0]]
    for grad, want in zip(grads, expected):
        assert torch.equal(grad, torch.tensor(want, dtype=DT))


def test_gradients_through_a_dead_relu_and_batchnorm_equal_finite_differences():
    """d(score)/d(parameters) through Linear - ReLU (some units dead) - BatchNorm - Linear
    in float64: the BatchNorm shift meets two zero parts at the dead units. (Its share
    followed rounding noise there, and the backward's 1e20-sized terms put the gradient
    of a bias 20% off.)"""
    g = torch.Generator().manual_seed(0)
    model = nn.Sequential(nn.Linear(5, 6), nn.ReLU(), nn.BatchNorm1d(6), nn.Linear(6, 2)).to(DT).eval()
    with torch.no_grad():
        model[0].bias[:3] = -20.0  # dead units
        model[2].running_mean.normal_(generator=g)
        model[2].bias.normal_(generator=g)
    x = torch.randn(4, 5, generator=g, dtype=DT)
    masks = (torch.rand(3, 5, generator=g) > 0.5).to(DT)
    names = ["0.bias", "2.weight", "2.bias", "3.bias"]
    params = {k: v.detach() for k, v in model.named_parameters()}

    def score(*values):
        state = {**params, **dict(zip(names, values))}
        call = Lambda(lambda t: torch.func.functional_call(model, state, (t,)))
        return ContextualDecomposition(call).decompose(x, masks)[0]

    assert torch.autograd.gradcheck(score, tuple(params[n].clone().requires_grad_() for n in names))


def test_a_dead_relu_before_batchnorm_and_a_linear_layer_equals_the_straight_line_reference():
    """``ReLU - BatchNorm1d(4) - Linear``: the reference propagates both parts (never
    ``gamma = z - beta``), so its zeros are exact; the engine's must be too (it was 0.4 of
    the output off)."""
    g = torch.Generator().manual_seed(0)
    for _ in range(20):
        model = nn.Sequential(nn.ReLU(), nn.BatchNorm1d(4), nn.Linear(4, 3)).to(DT).eval()
        with torch.no_grad():
            model[1].running_mean.normal_(generator=g)
            model[1].running_var.uniform_(0.5, 2.0, generator=g)
            model[1].weight.normal_(generator=g)
            model[1].bias.normal_(generator=g)
            model[2].weight.normal_(generator=g)
        x = torch.randn(2, 4, generator=g, dtype=DT)
        masks = (torch.rand(3, 4, generator=g) > 0.5).to(DT)
        rel, _ = decompose(model, x, masks)
        expected = torch.stack([reference_cd(model, x, m)[0] for m in masks])
        torch.testing.assert_close(rel, expected, rtol=1e-12, atol=1e-12)


class _Block(nn.Module):
    """A residual block written the way people write them: conv, BN, ReLU, conv, BN, +=."""

    def __init__(self, c):
        super().__init__()
        self.conv1, self.bn1 = nn.Conv2d(c, c, 3, padding=1, bias=False), nn.BatchNorm2d(c)
        self.conv2, self.bn2 = nn.Conv2d(c, c, 3, padding=1, bias=False), nn.BatchNorm2d(c)

    def forward(self, x):
        y = self.bn2(self.conv2(F.relu(self.bn1(self.conv1(x)))))
        y += x
        return F.relu(y)


def _blank_corner_model():
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(2, 6, 3, padding=1), nn.GELU(), _Block(6), nn.Softplus(), nn.Conv2d(6, 6, 3, padding=1),
        nn.SiLU(), nn.MaxPool2d(2), nn.GroupNorm(2, 6), nn.Tanh(), nn.AvgPool2d(2), nn.Flatten(), nn.Linear(6 * 9, 3),
    )  # fmt: skip
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):  # statistics that are not the identity
            m.running_mean.normal_(0, 0.5), m.running_var.uniform_(0.5, 2.0), m.bias.data.normal_(0, 0.5)
    return model.eval()


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_a_blank_region_scores_exactly_zero_through_every_rule_family(dtype):
    """A corner that is exactly 0 (with the blank beyond it) scores exactly 0 through
    convolutions, BatchNorm, GroupNorm, Shapley-form activations (whose kernels round
    f(z) differently at different positions), max and average pooling and a residual
    sum, with windows and without; so does an empty mask."""
    model = _blank_corner_model().to(dtype)
    x = torch.randn(2, 2, 12, 12, dtype=dtype)
    x[..., :6, :6] = 0
    ids = torch.arange(9).view(3, 3).repeat_interleave(4, 0).repeat_interleave(4, 1)
    scores = ContextualDecomposition(model).attribute(x, target=1, feature_mask=ids[None, None])
    assert torch.equal(scores[..., :4, :4], torch.zeros_like(scores[..., :4, :4]))
    assert scores[..., 8:, 8:].abs().min() > 0
    masks = torch.zeros(2, 1, 12, 12, dtype=dtype)
    masks[1, ..., :5, :6] = 1  # blank features
    rel, _ = ContextualDecomposition(model).decompose(x, masks)
    assert torch.equal(rel, torch.zeros_like(rel))


@pytest.mark.parametrize("layer", [nn.LSTM, nn.GRU, nn.RNN])
def test_an_empty_group_scores_exactly_zero_through_recurrent_layers(layer):
    torch.manual_seed(0)
    rnn = layer(4, 5, batch_first=True).to(DT)
    model = Lambda(lambda t: rnn(t)[0])
    x = torch.randn(2, 6, 4, dtype=DT)
    x[:, 3] = 0  # a step whose input is all zero
    masks = torch.zeros(3, 6, 1, dtype=DT)
    masks[1, 3] = 1  # the zero step
    masks[2, 1:3] = 1
    rel, _ = decompose(model, x, masks)
    assert torch.equal(rel[:2], torch.zeros_like(rel[:2]))
    assert rel[2].abs().max() > 1e-3


def test_float32_and_float64_agree_on_a_residual_network_with_batchnorm():
    """The ResNet-style block's float32 and float64 decompositions disagreed by 2e-2 of the
    output (8e-1 at worst) while the split followed rounding; now by at most 1e-3 of it."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), _Block(8), _Block(8), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 4))
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.normal_(0, 0.5), m.running_var.uniform_(0.5, 2.0), m.weight.data.normal_(1, 0.3), m.bias.data.normal_(0, 0.5)
    model.eval()
    x = torch.randn(4, 3, 12, 12)
    x[..., :4, :4] = 0
    ids = torch.arange(9).view(3, 3).repeat_interleave(4, 0).repeat_interleave(4, 1)
    masks = torch.stack([ids == i for i in range(9)]).unsqueeze(1).float()
    rel32, _ = ContextualDecomposition(model).decompose(x, masks)
    model64 = copy.deepcopy(model).double()
    rel64, _ = ContextualDecomposition(model64).decompose(x.double(), masks.double())
    scale = model64(x.double()).abs().max()
    assert (rel32.double() - rel64).abs().max() < 1e-3 * scale
