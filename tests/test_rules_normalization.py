"""The normalisation rules (captum_cd/attr/rules/normalization.py): BatchNorm in eval mode
is the affine map of its running statistics (a Linear with the same numbers); LayerNorm,
GroupNorm, InstanceNorm, RMSNorm and ``F.normalize`` divide by a statistic of the full
activation, so they are linear in the parts. Checked against formulas written out here,
float64 throughout."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from _rules import decompose, DT, Lambda
from captum_cd import ContextualDecomposition, DecompositionError


def _split_bias(u, out, bias):
    """The relevant part after a bias, ``u + b |u| / (|u| + |v|)`` with ``v = out - b - u``
    (docs/methods.md; no parts are 0 here)."""
    a, c = u.abs(), (out - bias - u).abs()
    return u + bias * a / (a + c)


def _random_statistics(bn, g):
    bn.running_mean.copy_(torch.randn(bn.num_features, generator=g, dtype=DT))
    bn.running_var.copy_(torch.rand(bn.num_features, generator=g, dtype=DT) + 0.5)
    bn.weight.data.copy_(torch.randn(bn.num_features, generator=g, dtype=DT))
    bn.bias.data.copy_(torch.randn(bn.num_features, generator=g, dtype=DT))
    return bn.eval()


def test_batchnorm_in_eval_equals_a_linear_layer_with_the_same_numbers():
    g = torch.Generator().manual_seed(0)
    bn = _random_statistics(nn.BatchNorm1d(4).to(DT), g)
    scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
    linear = nn.Linear(4, 4).to(DT)
    linear.weight.data, linear.bias.data = torch.diag(scale).detach(), (bn.bias - bn.running_mean * scale).detach()
    x = torch.randn(5, 4, generator=g, dtype=DT)
    masks = (torch.rand(3, 4, generator=g) > 0.5).to(DT)
    rel_bn, irr_bn = decompose(bn, x, masks)
    rel_lin, irr_lin = decompose(linear, x, masks)
    torch.testing.assert_close(rel_bn, rel_lin, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(irr_bn, irr_lin, rtol=1e-12, atol=1e-12)


def test_batchnorm2d_in_eval_equals_a_1x1_convolution_with_the_same_numbers():
    g = torch.Generator().manual_seed(1)
    bn = _random_statistics(nn.BatchNorm2d(3).to(DT), g)
    scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
    conv = nn.Conv2d(3, 3, 1).to(DT)
    conv.weight.data, conv.bias.data = torch.diag(scale).view(3, 3, 1, 1).detach(), (bn.bias - bn.running_mean * scale).detach()
    x = torch.randn(2, 3, 4, 5, generator=g, dtype=DT)
    masks = (torch.rand(3, 1, 4, 5, generator=g) > 0.5).to(DT)
    torch.testing.assert_close(decompose(bn, x, masks)[0], decompose(conv, x, masks)[0], rtol=1e-12, atol=1e-12)


def test_batchnorm_gives_the_shift_to_the_irrelevant_part_when_both_parts_are_zero():
    bn = nn.BatchNorm1d(1).eval()
    bn.running_mean.fill_(1.0)  # shift = -1 * weight / sqrt(var + eps)
    rel, irrel = ContextualDecomposition(bn).decompose(torch.zeros(1, 1), torch.ones(1, 1))
    assert rel.item() == 0.0
    torch.testing.assert_close(irrel.squeeze(), torch.tensor(-1 / (1 + bn.eps) ** 0.5))


def test_a_dead_relu_before_batchnorm_splits_by_the_parts_never_by_rounding():
    """Both parts 0 after a dead ReLU: the shift goes to the irrelevant part in every one of
    200 random settings (rounding of BN(z) - shift once decided it, ~100/0 or ~0/100)."""
    g = torch.Generator().manual_seed(0)
    for _ in range(200):
        bn = _random_statistics(nn.BatchNorm1d(1).to(DT), g)
        model = nn.Sequential(nn.ReLU(), bn).eval()
        rel, irrel = ContextualDecomposition(model).decompose(-torch.ones(1, 1, dtype=DT), torch.ones(1, 1, dtype=DT))
        assert rel.item() == 0.0 and irrel.item() == model(-torch.ones(1, 1, dtype=DT)).item()


def _centered(beta, full, dims, eps):
    """``(beta - mean(beta)) / std(full)`` over ``dims`` of one group's part."""
    var = full.var(dim=dims, unbiased=False, keepdim=True)
    return (beta - beta.mean(dim=dims, keepdim=True)) / torch.sqrt(var + eps)


def _per_group(masks, x, fn):
    return torch.stack([fn(m * x) for m in masks])


def test_layer_norm_centres_the_part_and_divides_by_the_full_activations_std():
    g = torch.Generator().manual_seed(2)
    x = torch.randn(3, 4, 6, generator=g, dtype=DT)
    masks = (torch.rand(3, 4, 6, generator=g) > 0.5).to(DT)
    weight, bias = torch.randn(6, generator=g, dtype=DT), torch.randn(6, generator=g, dtype=DT)
    rel, _ = decompose(Lambda(lambda h: F.layer_norm(h, (6,), weight, None, 1e-5)), x, masks)
    torch.testing.assert_close(rel, _per_group(masks, x, lambda b: _centered(b, x, [-1], 1e-5) * weight), rtol=1e-12, atol=1e-12)
    # with a bias, the bias is split as the affine rule splits it
    rel, _ = decompose(nn.LayerNorm(6).to(DT).requires_grad_(False), x, masks)  # weight 1, bias 0
    torch.testing.assert_close(rel, _per_group(masks, x, lambda b: _centered(b, x, [-1], 1e-5)), rtol=1e-12, atol=1e-12)
    model = Lambda(lambda h: F.layer_norm(h, (4, 6), None, bias.expand(4, 6), 1e-5))
    rel, _ = decompose(model, x, masks)
    out = F.layer_norm(x, (4, 6), None, bias.expand(4, 6), 1e-5)
    expected = _per_group(masks, x, lambda b: _split_bias(_centered(b, x, [-2, -1], 1e-5), out, bias))
    torch.testing.assert_close(rel, expected, rtol=1e-12, atol=1e-12)


def test_group_norm_and_instance_norm_use_each_groups_and_channels_statistics():
    g = torch.Generator().manual_seed(3)
    x = torch.randn(2, 4, 3, 5, generator=g, dtype=DT)
    masks = (torch.rand(3, 1, 3, 5, generator=g) > 0.5).to(DT)
    weight = torch.randn(4, generator=g, dtype=DT)
    rel, _ = decompose(Lambda(lambda h: F.group_norm(h, 2, weight, None, 1e-5)), x, masks)

    def group_norm(b):
        grouped = _centered(b.reshape(2, 2, -1), x.reshape(2, 2, -1), [-1], 1e-5)
        return grouped.reshape(b.shape) * weight.view(4, 1, 1)

    torch.testing.assert_close(rel, _per_group(masks, x, group_norm), rtol=1e-12, atol=1e-12)
    rel, _ = decompose(Lambda(lambda h: F.instance_norm(h, weight=weight, eps=1e-5)), x, masks)
    torch.testing.assert_close(rel, _per_group(masks, x, lambda b: _centered(b, x, [2, 3], 1e-5) * weight.view(4, 1, 1)), rtol=1e-12, atol=1e-12)


def test_instance_norm_with_running_statistics_in_eval_is_the_batch_norm_map():
    g = torch.Generator().manual_seed(4)
    inorm = nn.InstanceNorm1d(3, affine=True, track_running_stats=True).to(DT)
    inorm.running_mean.copy_(torch.randn(3, generator=g, dtype=DT))
    inorm.running_var.copy_(torch.rand(3, generator=g, dtype=DT) + 0.5)
    inorm.eval()
    bn = nn.BatchNorm1d(3).to(DT).eval()
    bn.load_state_dict({k: v for k, v in inorm.state_dict().items()}, strict=False)
    x = torch.randn(2, 3, 7, generator=g, dtype=DT)
    masks = (torch.rand(2, 3, 7, generator=g) > 0.5).to(DT)
    torch.testing.assert_close(decompose(inorm, x, masks)[0], decompose(bn, x, masks)[0], rtol=1e-12, atol=1e-12)


def test_rms_norm_divides_the_part_by_the_full_activations_rms():
    g = torch.Generator().manual_seed(5)
    x = torch.randn(3, 8, generator=g, dtype=DT)
    masks = (torch.rand(4, 8, generator=g) > 0.5).to(DT)
    norm = nn.RMSNorm(8, eps=1e-6).to(DT)
    norm.weight.data.copy_(torch.randn(8, generator=g, dtype=DT))
    rel, _ = decompose(norm.requires_grad_(False), x, masks)
    rms = torch.sqrt(x.pow(2).mean(-1, keepdim=True) + 1e-6)
    torch.testing.assert_close(rel, masks[:, None] * x / rms * norm.weight, rtol=1e-12, atol=1e-12)


def test_normalize_divides_by_the_full_activations_norm():
    """XCiT's cross-covariance attention normalises queries and keys with F.normalize."""
    x = torch.randn(3, 5, dtype=DT)
    masks = (torch.rand(2, 5) > 0.5).to(DT)
    rel, _ = decompose(Lambda(lambda h: F.normalize(h, dim=-1)), x, masks)
    by_hand, _ = decompose(Lambda(lambda h: h / h.norm(dim=-1, keepdim=True).clamp_min(1e-12)), x, masks)
    torch.testing.assert_close(rel, by_hand, rtol=0, atol=1e-14)
    torch.testing.assert_close(rel, masks[:, None] * x / x.norm(dim=-1, keepdim=True), rtol=0, atol=1e-14)


def test_normalize_into_an_out_tensor_is_refused():
    x, out = torch.randn(2, 4, dtype=DT), torch.empty(2, 4, dtype=DT)
    with pytest.raises((DecompositionError, RuntimeError), match="out="):
        ContextualDecomposition(Lambda(lambda h: F.normalize(h, dim=-1, out=out))).decompose(x, torch.ones(1, 4, dtype=DT))


def test_instance_norm_with_running_statistics_in_training_mode_is_refused():
    """(BatchNorm's refusal: tests/test_engine.py and tests/test_probes.py.)"""
    norm = nn.InstanceNorm1d(4, track_running_stats=True)
    net = nn.Sequential(nn.Conv1d(2, 4, 1), norm).to(DT).train()
    before = norm.running_mean.clone()
    with pytest.raises(DecompositionError, match=r"model\.eval\(\)"):
        ContextualDecomposition(net).decompose(torch.randn(3, 2, 5, dtype=DT), torch.ones(1, 2, 5, dtype=DT))
    assert torch.equal(norm.running_mean, before) and net.training
