"""Statistics along dimensions (captum_cd/attr/rules/statistics.py) and selection by the full
activation's order (captum_cd/attr/rules/pooling.py: topk, sort, kthvalue, median), against
formulas and hand-written equivalents, float64 throughout."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from _rules import decompose, DT, Lambda
from captum_cd import ContextualDecomposition, DecompositionError


def _data(seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(3, 7, generator=g, dtype=DT)
    masks = (torch.rand(4, 7, generator=g) > 0.5).to(DT)
    return x, masks


def test_hand_derived_variance_is_the_parts_covariance_with_the_whole():
    # x = (1, 2, 6), group {x0}: mean 3, centred (-2, -1, 3); var = 14 / 2 = 7 and its
    # relevant part sum(centred * beta) / 2 = (-2 * 1) / 2 = -1.
    x = torch.tensor([[1.0, 2.0, 6.0]], dtype=DT)
    rel, irrel = ContextualDecomposition(Lambda(lambda t: t.var(1))).decompose(x, torch.tensor([[1.0, 0.0, 0.0]], dtype=DT))
    assert rel.item() == -1.0 and irrel.item() == 8.0


@pytest.mark.parametrize(
    "written, by_hand",
    [
        (lambda t: t.var(1, unbiased=False), lambda t: ((t - t.mean(1, keepdim=True)) ** 2).mean(1)),
        (lambda t: torch.var(t, dim=1, correction=1, keepdim=True), lambda t: ((t - t.mean(1, keepdim=True)) ** 2).sum(1, keepdim=True) / 6),
        (lambda t: t.var(), lambda t: ((t - t.mean()) ** 2).sum() / (t.numel() - 1)),
        (lambda t: torch.var_mean(t, 0)[0] + torch.var_mean(t, 0)[1], lambda t: ((t - t.mean(0)) ** 2).sum(0) / 2 + t.mean(0)),
    ],
)
def test_variance_decomposes_as_written_out_by_hand(written, by_hand):
    x, masks = _data()
    torch.testing.assert_close(decompose(Lambda(written), x, masks)[0], decompose(Lambda(by_hand), x, masks)[0], rtol=1e-12, atol=1e-12)


def test_a_hand_written_normalisation_equals_layer_norm():
    """``(x - mean) / sqrt(var + eps)``: the statistic scales the parts (product rule 2),
    as F.layer_norm's does; std's parts are never computed for it."""
    x, masks = _data(1)
    hand = Lambda(lambda t: (t - t.mean(-1, keepdim=True)) / torch.sqrt(t.var(-1, keepdim=True, unbiased=False) + 1e-5))
    torch.testing.assert_close(decompose(hand, x, masks)[0], decompose(Lambda(lambda t: F.layer_norm(t, (7,))), x, masks)[0], rtol=1e-12, atol=1e-12)
    by_std = Lambda(lambda t: (t - t.mean(-1, keepdim=True)) / t.std(-1, keepdim=True))
    expected = (masks[:, None] * x - (masks[:, None] * x).mean(-1, keepdim=True)) / x.std(-1, keepdim=True)
    torch.testing.assert_close(decompose(by_std, x, masks)[0], expected, rtol=1e-12, atol=1e-12)


def test_std_is_the_guarded_square_root_of_the_variance():
    x, masks = _data(2)
    rel, _ = decompose(Lambda(lambda t: t.std(1)), x, masks)
    var_rel, _ = decompose(Lambda(lambda t: t.var(1)), x, masks)
    var, std = x.var(1), x.std(1)
    shapley = 0.5 * (var_rel.sqrt() + std - (var - var_rel).sqrt())
    expected = torch.where(torch.isfinite(shapley), shapley, var_rel * std / var)
    torch.testing.assert_close(rel, expected, rtol=1e-12, atol=1e-12)


def test_hand_derived_norm_is_the_guarded_square_root_of_the_sum_of_squares():
    # x = (3, 4), group {x0}: sum of squares 25, its relevant part 3 * 3 = 9, the rest 16;
    # norm 5, relevant 0.5 ((sqrt(9) - sqrt(0)) + (sqrt(25) - sqrt(16))) = 0.5 (3 + 1) = 2.
    x, mask = torch.tensor([[3.0, 4.0]], dtype=DT), torch.tensor([[1.0, 0.0]], dtype=DT)
    for written in (lambda t: torch.linalg.vector_norm(t, dim=1), lambda t: t.norm(dim=1), lambda t: torch.norm(t, 2, 1)):
        rel, irrel = ContextualDecomposition(Lambda(written)).decompose(x, mask)
        assert rel.item() == 2.0 and irrel.item() == 3.0


@pytest.mark.parametrize(
    "written, by_hand",
    [
        (lambda t: torch.linalg.vector_norm(t, dim=1, keepdim=True), lambda t: torch.sqrt((t * t).sum(1, keepdim=True))),
        (lambda t: t.norm(), lambda t: torch.sqrt((t * t).sum())),
        (lambda t: torch.norm(t, p="fro", dim=(0, 1)), lambda t: torch.sqrt((t * t).sum((0, 1)))),
    ],
)
def test_the_2_norm_decomposes_as_written_out_by_hand(written, by_hand):
    x, masks = _data(3)
    torch.testing.assert_close(decompose(Lambda(written), x, masks)[0], decompose(Lambda(by_hand), x, masks)[0], rtol=1e-12, atol=1e-12)


def test_a_hand_written_l2_normalisation_equals_f_normalize():
    x, masks = _data(4)
    hand = Lambda(lambda t: t / t.norm(dim=-1, keepdim=True))
    torch.testing.assert_close(decompose(hand, x, masks)[0], decompose(Lambda(lambda t: F.normalize(t, dim=-1)), x, masks)[0], rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize(
    "written", [lambda t: torch.linalg.vector_norm(t, ord=1, dim=1, keepdim=True), lambda t: t.norm(p=float("inf"), dim=1, keepdim=True)]
)
def test_other_norms_are_refused_with_what_to_write_unless_only_divided_by(written):
    x, masks = _data()
    with pytest.raises(DecompositionError, match="has no rule for its parts; the 2-norm has.*x.abs"):
        ContextualDecomposition(Lambda(written)).decompose(x, masks)
    divided, _ = decompose(Lambda(lambda t: t / written(t)), x, masks)
    torch.testing.assert_close(divided, masks[:, None] * x / written(x), rtol=1e-12, atol=1e-12)


def test_logsumexp_weights_the_parts_with_the_softmax_of_the_full():
    x, masks = _data(3)
    rel, irrel = decompose(Lambda(lambda t: torch.logsumexp(t, dim=1)), x, masks)
    p = torch.softmax(x, 1)
    torch.testing.assert_close(rel, (p * masks[:, None] * x).sum(-1), rtol=1e-12, atol=1e-12)
    entropy = -(p * p.log()).sum(-1)  # the constant H(p) goes to the irrelevant part
    torch.testing.assert_close((irrel - ((1 - masks[:, None]) * x * p).sum(-1)), entropy.expand(4, -1), rtol=1e-12, atol=1e-12)


SELECTIONS = {
    "topk": (lambda t: t.topk(3, dim=1).values, lambda t: t.topk(3, dim=1).indices, 1),
    "sort descending": (lambda t: torch.sort(t, -1, descending=True)[0], lambda t: torch.sort(t, -1, descending=True)[1], 1),
    "kthvalue": (lambda t: t.kthvalue(2, 0, keepdim=True)[0], lambda t: t.kthvalue(2, 0, keepdim=True)[1], 0),
    "median": (lambda t: t.median(dim=1).values.unsqueeze(1), lambda t: t.median(dim=1).indices.unsqueeze(1), 1),
}


@pytest.mark.parametrize("name", SELECTIONS)
def test_selection_gathers_both_parts_in_the_full_activations_order(name):
    select, indices, dim = SELECTIONS[name]
    x, masks = _data(4)
    rel, _ = decompose(Lambda(select), x, masks)
    beta = masks[:, None] * x
    expected = beta.gather(dim + 1, indices(x).expand(4, *indices(x).shape))
    assert torch.equal(rel, expected)


def test_the_median_of_a_whole_tensor_is_the_element_it_is():
    x, masks = _data(5)
    rel, _ = decompose(Lambda(lambda t: t.median() * torch.ones(3, 1, dtype=DT)), x, masks)
    index = x.flatten().median(0).indices
    assert torch.equal(rel[..., 0], (masks[:, None] * x).flatten(1)[:, index, None].expand(4, 3))


def test_a_hand_written_sigmoid_before_max_pooling_equals_the_sigmoid():
    """The Shapley form over a lineage binds the whole activation: max pooling runs it
    before gathering (it once gathered the placeholder and failed on the shapes)."""
    torch.manual_seed(0)
    conv, lin = nn.Conv2d(1, 2, 3, padding=1).to(DT), nn.Linear(32, 3).to(DT)
    x, masks = torch.randn(2, 1, 8, 8, dtype=DT), (torch.rand(3, 1, 8, 8) > 0.5).to(DT)
    hand = Lambda(lambda t: lin(F.max_pool2d(1 / (1 + torch.exp(-conv(t))), 2).flatten(1)))
    plain = Lambda(lambda t: lin(F.max_pool2d(torch.sigmoid(conv(t)), 2).flatten(1)))
    torch.testing.assert_close(decompose(hand, x, masks)[0], decompose(plain, x, masks)[0], rtol=1e-12, atol=1e-12)
