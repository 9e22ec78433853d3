"""The activation rules (captum_cd/attr/rules/activations.py): the ReLU form
``beta' = f(beta)`` for piecewise-linear ``f`` with ``f(0) = 0``, the two-player Shapley
form for every other elementwise ``f``, and the choice between them (clamp, hardtanh,
powers, PReLU/RReLU), against formulas written out here, float64 throughout."""

import functools

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from _rules import decompose, DT, Lambda
from captum_cd import ContextualDecomposition, DecompositionError


def _setup(seed=0, features=5, units=6):
    """A bias-free linear map, so the parts entering the activation are known:
    ``beta = (m x) W^T`` and ``gamma = ((1 - m) x) W^T``."""
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(units, features, generator=g, dtype=DT)
    x = 2 * torch.randn(3, features, generator=g, dtype=DT)
    masks = (torch.rand(4, features, generator=g) > 0.5).to(DT)
    masks[0], masks[1] = 0, 1  # the empty group and the whole input
    beta, gamma = (masks[:, None] * x) @ w.T, ((1 - masks[:, None]) * x) @ w.T
    return w, x, masks, beta, gamma


def _decompose(f, w, x, masks):
    """CD of ``f(x W^T)``, checked complete."""
    return decompose(Lambda(lambda h: f(h @ w.T)), x, masks)


def relu_form(f, beta, gamma):
    return f(beta), f(beta + gamma) - f(beta)


def shapley_form(f, beta, gamma):
    f0 = f(torch.zeros((), dtype=DT))
    rel = 0.5 * (f(beta) - f0 + f(beta + gamma) - f(gamma))
    return rel, f(beta + gamma) - rel


RELU_FORM = {
    "relu": F.relu,
    "torch.relu": torch.relu,
    "leaky_relu": functools.partial(F.leaky_relu, negative_slope=0.2),
    "relu6": F.relu6,
    "hardshrink": functools.partial(F.hardshrink, lambd=0.7),
    "softshrink": functools.partial(F.softshrink, lambd=0.7),
    "abs": torch.abs,
    "clamp(-1, 2)": functools.partial(torch.clamp, min=-1.0, max=2.0),
    "clip(max=1)": lambda h: h.clip(max=1.0),
    "clamp_min(0)": lambda h: h.clamp_min(0.0),
    "torch.clamp_max(h, 1)": lambda h: torch.clamp_max(h, 1.0),
    "hardtanh(-1, 2)": functools.partial(F.hardtanh, min_val=-1.0, max_val=2.0),
    "nn.ReLU6": nn.ReLU6(),
}

SHAPLEY_FORM = {
    "sigmoid": torch.sigmoid,
    "tanh": torch.tanh,
    "gelu": F.gelu,
    "silu": F.silu,
    "elu": F.elu,
    "softplus": F.softplus,
    "mish": F.mish,
    "exp": torch.exp,
    "sin": torch.sin,
    "square": torch.square,
    "pow(2)": lambda h: h.pow(2),
    "h ** 3": lambda h: h**3,
    "clamp(min=0.5)": functools.partial(torch.clamp, min=0.5),  # the range leaves out 0
    "clamp_min(0.5)": lambda h: h.clamp_min(0.5),
    "torch.clamp_max(h, -0.5)": lambda h: torch.clamp_max(h, -0.5),
    "hardtanh(0.5, 2)": functools.partial(F.hardtanh, min_val=0.5, max_val=2.0),
    "nn.GELU(tanh)": nn.GELU(approximate="tanh"),
}


FORMS = {
    **{f"ReLU form: {name}": (f, relu_form, shapley_form) for name, f in RELU_FORM.items()},
    **{f"Shapley form: {name}": (f, shapley_form, relu_form) for name, f in SHAPLEY_FORM.items()},
}


@pytest.mark.parametrize("name", FORMS)
def test_each_function_takes_its_form(name):
    f, form, other = FORMS[name]
    w, x, masks, beta, gamma = _setup()
    rel, irr = _decompose(f, w, x, masks)
    expected_rel, expected_irr = form(f, beta, gamma)
    torch.testing.assert_close(rel, expected_rel, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(irr, expected_irr, rtol=1e-12, atol=1e-12)
    # The two forms differ here, so the test tells which one the rule took.
    assert (other(f, beta, gamma)[0] - expected_rel).abs().max() > 1e-3


@pytest.mark.parametrize("name", ["sigmoid", "tanh", "gelu", "softplus"])
def test_shapley_form_is_symmetric_and_gives_f0_to_the_irrelevant_part(name):
    """A group and its complement share ``f(z) - f(0)``; the empty group gets exactly 0."""
    f = SHAPLEY_FORM[name]
    w, x, masks, _, _ = _setup(seed=1)
    rel, _ = _decompose(f, w, x, torch.cat([masks, 1 - masks]))
    n = masks.shape[0]
    with torch.no_grad():
        z = x @ w.T
    torch.testing.assert_close(rel[:n] + rel[n:], (f(z) - f(torch.zeros((), dtype=DT))).expand_as(rel[:n]), rtol=1e-12, atol=1e-12)
    assert torch.equal(rel[0], torch.zeros_like(rel[0]))  # masks[0] is the empty group


def test_hand_derived_shapley_tanh():
    # tanh of beta = 1, gamma = 2: beta' = (tanh 1 - 0 + tanh 3 - tanh 2) / 2.
    x, mask = torch.tensor([[3.0]]), torch.tensor([[1.0 / 3.0]])
    rel, irrel = ContextualDecomposition(nn.Tanh()).decompose(x, mask)
    t = torch.tanh
    expected = 0.5 * (t(torch.tensor(1.0)) + t(torch.tensor(3.0)) - t(torch.tensor(2.0)))
    torch.testing.assert_close(rel[0, 0, 0], expected)
    torch.testing.assert_close(irrel[0, 0, 0], t(torch.tensor(3.0)) - expected)


def test_hand_derived_sigmoid_gives_f0_to_irrelevant():
    # sigmoid(0) = 1/2 goes to gamma: an empty group has relevance 0 exactly.
    rel, irrel = ContextualDecomposition(nn.Sigmoid()).decompose(torch.tensor([[0.7, -1.2]]), torch.zeros(1, 2))
    assert torch.equal(rel, torch.zeros_like(rel))
    torch.testing.assert_close(irrel[0], torch.sigmoid(torch.tensor([[0.7, -1.2]])))


def test_prelu_takes_one_slope_per_channel():
    torch.manual_seed(0)
    prelu = nn.PReLU(3).to(DT)
    prelu.weight.data = torch.tensor([0.1, -0.5, 2.0], dtype=DT)
    x = torch.randn(2, 3, 7, dtype=DT)
    masks = (torch.rand(4, 3, 7) > 0.5).to(DT)
    rel, irr = ContextualDecomposition(prelu).decompose(x, masks)
    beta, slope = masks[:, None] * x, prelu.weight.view(3, 1)
    torch.testing.assert_close(rel, torch.where(beta >= 0, beta, slope * beta), rtol=0, atol=1e-14)
    with torch.no_grad():
        torch.testing.assert_close(rel + irr, prelu(x).expand_as(rel), rtol=1e-12, atol=1e-12)


def test_rrelu_in_eval_is_leaky_relu_with_the_mean_slope_and_refused_in_training():
    w, x, masks, beta, gamma = _setup(seed=2)
    rel, _ = _decompose(lambda h: F.rrelu(h, 0.1, 0.3, training=False), w, x, masks)
    torch.testing.assert_close(rel, F.leaky_relu(beta, 0.2), rtol=1e-12, atol=1e-12)
    with pytest.raises(DecompositionError, match="random slopes"):
        ContextualDecomposition(Lambda(lambda h: F.rrelu(h, training=True))).decompose(x, masks)


def test_only_the_first_argument_may_be_decomposed():
    x, masks = torch.randn(2, 4, dtype=DT), torch.ones(1, 4, dtype=DT)
    with pytest.raises(DecompositionError, match="decomposed bounds have no rule"):
        ContextualDecomposition(Lambda(lambda h: torch.clamp(h, min=h * 0.5))).decompose(x, masks)
    with pytest.raises(DecompositionError, match="constant exponent"):
        ContextualDecomposition(Lambda(lambda h: torch.pow(h, h))).decompose(x.abs(), masks)


def test_a_negative_power_of_a_raw_activation_is_refused_and_of_an_expression_finite_at_0_is_shapley():
    w, x, masks, beta, gamma = _setup(seed=3)
    with pytest.raises(DecompositionError, match="infinite at 0"):
        _decompose(lambda h: h**-1, w, x, masks)
    # 1 / (1 + h^2) is finite at 0: the Shapley form of the whole expression.
    rel, _ = _decompose(lambda h: (1 + h**2) ** -1, w, x, masks)
    torch.testing.assert_close(rel, shapley_form(lambda h: 1 / (1 + h**2), beta, gamma)[0], rtol=1e-12, atol=1e-12)
