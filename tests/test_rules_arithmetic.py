"""The arithmetic rules: products, gates and the functions users write by hand (rules in
``captum_cd/attr/rules/arithmetic.py`` and ``lineage.py``), float64 throughout."""

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from _rules import decompose, DT, Lambda
from captum_cd import ContextualDecomposition, DecompositionError
from captum_cd.attr.decomposition import Decomposition
from captum_cd.attr.rules._util import align

def _mlp(act, seed=1):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(6, 16), Lambda(act), nn.Linear(16, 3)).to(DT)


def _decompose(model, x, masks):
    return decompose(model, x, masks, rtol=1e-10)[0]


HAND_WRITTEN = {
    "tanh-gelu": (
        lambda x: 0.5 * x * (1.0 + torch.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * torch.pow(x, 3.0)))),
        lambda x: F.gelu(x, approximate="tanh"),
    ),
    "erf-gelu": (lambda x: x * 0.5 * (1.0 + torch.erf(x / math.sqrt(2.0))), F.gelu),
    "x*sigmoid(x)": (lambda x: x * torch.sigmoid(x), F.silu),
    "x/(1+exp(-x))": (lambda x: x / (1 + torch.exp(-x)), F.silu),
    "x*sigmoid(x) by hand": (lambda x: x * (1 / (1 + (-x).exp())), F.silu),
    "x*tanh(softplus(x))": (lambda x: x * torch.tanh(F.softplus(x)), F.mish),
}


@pytest.mark.parametrize("name", HAND_WRITTEN)
def test_the_same_function_written_by_hand_gets_the_same_scores(name):
    hand, builtin = HAND_WRITTEN[name]
    x = torch.randn(4, 6, dtype=DT)
    masks = (torch.rand(5, 6) > 0.5).to(DT)
    rel_hand = _decompose(_mlp(hand), x, masks)
    rel_builtin = _decompose(_mlp(builtin), x, masks)
    assert rel_builtin.abs().max() > 0.05
    torch.testing.assert_close(rel_hand, rel_builtin, rtol=0, atol=1e-12)


def test_rms_norm_by_hand_equals_the_builtin():
    """LlamaRMSNorm's pow, mean, rsqrt: statistics from the full activation, as F.rms_norm."""
    weight = torch.randn(16, dtype=DT)

    def by_hand(h):
        return weight * (h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + 1e-6))

    x = torch.randn(4, 6, dtype=DT)
    masks = (torch.rand(5, 6) > 0.5).to(DT)
    rel_hand = _decompose(_mlp(by_hand), x, masks)
    rel_builtin = _decompose(_mlp(lambda h: F.rms_norm(h, (16,), weight, 1e-6)), x, masks)
    torch.testing.assert_close(rel_hand, rel_builtin, rtol=0, atol=1e-12)


def test_a_broadcast_gate_scales_the_parts_of_the_full_factor():
    """Squeeze-and-excitation: the (B, C, 1, 1) gate is a statistic of the full activation."""
    torch.manual_seed(0)
    conv, fc = nn.Conv2d(3, 4, 3).to(DT), nn.Linear(4, 4).to(DT)

    def se(x):
        h = conv(x)
        gate = torch.sigmoid(fc(h.mean((2, 3)))).view(-1, 4, 1, 1)
        return (h * gate).sum((2, 3)), h, gate

    x = torch.randn(2, 3, 6, 6, dtype=DT)
    masks = (torch.rand(3, 1, 6, 6) > 0.5).to(DT)
    rel = _decompose(Lambda(lambda x: se(x)[0]), x, masks)
    rel_h = ContextualDecomposition(Lambda(lambda x: se(x)[1])).decompose(x, masks)[0]
    with torch.no_grad():
        gate = se(x)[2]
    torch.testing.assert_close(rel, (rel_h * gate).sum((3, 4)), rtol=1e-12, atol=1e-12)


def _gated(x, w_gate, w_up):
    return F.silu(x @ w_gate) * (x @ w_up)


def test_complementary_groups_share_a_bilinear_product_exactly():
    """The Shapley split of ``a * b`` is additive: a group and its complement together get
    the whole product when there is no bias (keeping only ``beta_a * beta_b`` gives them
    ``ab - gamma_a beta_b - beta_a gamma_b``)."""
    torch.manual_seed(0)
    w_a, w_b = torch.randn(6, 5, dtype=DT), torch.randn(6, 5, dtype=DT)
    model = Lambda(lambda x: (x @ w_a) * (x @ w_b))
    x = torch.randn(3, 6, dtype=DT)
    group = (torch.rand(6) > 0.5).to(DT)
    rel = _decompose(model, x, torch.stack([group, 1 - group]))
    with torch.no_grad():
        torch.testing.assert_close(rel.sum(0), model(x), rtol=1e-12, atol=1e-12)


def _keep_beta_product(func, args, kwargs):
    """The convention the library had before: only ``beta_a * beta_b`` is relevant."""
    a, b = args[0], args[1]
    with torch._C.DisableTorchFunctionSubclass():
        both = isinstance(a, Decomposition) and isinstance(b, Decomposition)
        if not both or a.full.shape != b.full.shape:  # gates: today's rule
            from captum_cd.attr.rules.arithmetic import mul

            return mul(func, args, kwargs)
        out = a.full * b.full
        return Decomposition(out, align(a.rel, out.ndim) * align(b.rel, out.ndim))


class GatedBlock(nn.Module):
    """RMSNorm by hand, then a SiLU-gated MLP (Llama's), with or without a residual."""

    def __init__(self, width: int, residual: bool) -> None:
        super().__init__()
        self.residual = residual
        self.norm = nn.Parameter(torch.ones(width))
        self.gate, self.up = nn.Linear(width, 2 * width, bias=False), nn.Linear(width, 2 * width, bias=False)
        self.down = nn.Linear(2 * width, width, bias=False)

    def forward(self, x):
        h = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + 1e-6) * self.norm
        out = self.down(F.silu(self.gate(h)) * self.up(h))
        return x + out if self.residual else out


@pytest.mark.parametrize("residual", [True, False])
def test_group_scores_stay_on_the_scale_of_the_output_through_a_stack_of_gates(residual):
    torch.manual_seed(0)
    model = nn.Sequential(*[GatedBlock(16, residual) for _ in range(8)], nn.Linear(16, 1)).to(DT).eval()
    x = torch.randn(4, 16, dtype=DT)
    masks = (torch.arange(16)[None] // 4 == torch.arange(4)[:, None]).to(DT)
    with torch.no_grad():
        out = model(x)
        rel = _decompose(model, x, masks)
        old_rules = {f: _keep_beta_product for f in (torch.Tensor.mul, torch.Tensor.__mul__, torch.mul)}
        old = ContextualDecomposition(model, rules=old_rules).decompose(x, masks)[0]
    scale = out.abs().max()
    assert 0.1 * scale < rel.abs().max() < 10 * scale
    if not residual:  # without a residual path, keeping only beta_a * beta_b loses the scale
        assert not 0.1 * scale < old.abs().max() < 10 * scale


def test_a_singular_function_of_a_raw_activation_is_refused_by_name():
    model = Lambda(lambda x: torch.rsqrt(x.abs() + 1) * 0 + torch.rsqrt(x))
    x = torch.rand(2, 3, dtype=DT) + 0.5
    with pytest.raises(DecompositionError, match="rsqrt"):
        ContextualDecomposition(model).decompose(x, torch.ones(1, 3, dtype=DT))


def test_dividing_two_unrelated_decomposed_values_is_refused():
    torch.manual_seed(0)
    w_a, w_b = torch.randn(3, 3, dtype=DT), torch.randn(3, 3, dtype=DT)
    model = Lambda(lambda x: (x @ w_a) / (x @ w_b))
    with pytest.raises(DecompositionError, match="dividing by a decomposed value"):
        ContextualDecomposition(model).decompose(torch.randn(2, 3, dtype=DT), torch.ones(1, 3, dtype=DT))


# --------------------------------------------------------------- functions real models call


def test_rms_norm_by_hand_also_with_eager_elementwise_steps():
    """The statistic's own parts are never computed, also when elementwise steps run at once."""
    from captum_cd.attr.decomposition import lazy_elementwise

    model = Lambda(lambda h: h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True)))
    x = torch.randn(2, 5, dtype=DT)
    masks = (torch.rand(3, 5) > 0.5).to(DT)
    with lazy_elementwise(False):
        rel = _decompose(model, x, masks)
    torch.testing.assert_close(rel, _decompose(Lambda(lambda h: F.rms_norm(h, (5,), eps=0.0)), x, masks), rtol=0, atol=1e-12)


def test_addcmul_and_addcdiv_are_a_product_and_a_sum():
    """timm's ResMLP ``Affine``: ``addcmul(beta, alpha, x)`` is ``beta + alpha * x``."""
    torch.manual_seed(0)
    alpha, beta = torch.randn(4, dtype=DT), torch.randn(4, dtype=DT)
    x = torch.randn(3, 4, dtype=DT)
    masks = (torch.rand(2, 4) > 0.5).to(DT)
    rel = _decompose(Lambda(lambda h: torch.addcmul(beta, alpha, h, value=0.5)), x, masks)
    torch.testing.assert_close(rel, _decompose(Lambda(lambda h: beta + 0.5 * (alpha * h)), x, masks), rtol=0, atol=1e-14)
    gated = _decompose(Lambda(lambda h: h.addcdiv(h, 1 + torch.exp(-h))), x, masks)  # h + silu(h)
    torch.testing.assert_close(gated, _decompose(Lambda(lambda h: h + F.silu(h)), x, masks), rtol=0, atol=1e-12)
