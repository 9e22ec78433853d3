"""The structural rules (captum_cd/attr/rules/structural.py): a map ``L`` linear in the
decomposed value gives ``beta' = L(beta)``, ``gamma' = L(gamma)``; constants that take
positions of their own (a concatenated token, a padding value, ``where``'s constant branch)
are irrelevant. Each map is checked against ``L`` applied to one group's part at a time,
float64 throughout."""

import pytest
import torch
import torch.nn.functional as F

from _rules import decompose, DT, Lambda
from captum_cd import ContextualDecomposition, DecompositionError


def _data(seed=0, shape=(2, 3, 4, 6), groups=3):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(shape, generator=g, dtype=DT)
    masks = (torch.rand(groups, *shape[1:], generator=g) > 0.5).to(DT)
    return x, masks


_W = torch.randn(6, 5, generator=torch.Generator().manual_seed(9), dtype=DT)
_INDEX = torch.tensor([[[[2, 0, 1, 1, 5, 3]]]]).expand(2, 3, 4, 6)
_COND = torch.rand(3, 4, 6, generator=torch.Generator().manual_seed(8)) > 0.5

# name -> (L, L on the relevant part where it differs: constants replaced by 0)
LINEAR = {
    "view": (lambda h: h.view(2, 12, 6), None),
    "reshape": (lambda h: torch.reshape(h, (2, -1)), None),
    "flatten": (lambda h: h.flatten(1, 2), None),
    "permute": (lambda h: h.permute(0, 3, 1, 2), None),
    "transpose": (lambda h: h.transpose(1, -1), None),
    "movedim": (lambda h: torch.movedim(h, 1, 3), None),
    "unsqueeze, squeeze": (lambda h: h.unsqueeze(2).squeeze(2), None),
    "getitem slices": (lambda h: h[:, 1:, ::2, -3:], None),
    "getitem advanced": (lambda h: h[:, [2, 0, 0], [1, 3, 1]], None),
    "getitem boolean": (lambda h: h[:, _COND[0, 0, :3]], None),
    "select, narrow": (lambda h: h.select(1, 2).narrow(-1, 1, 3), None),
    "chunk": (lambda h: torch.cat(h.chunk(2, dim=-1)[::-1], 1), None),
    "split": (lambda h: h.split([1, 2], dim=1)[1], None),
    "unbind": (lambda h: torch.stack(h.unbind(2)[1:3], 0), None),
    "sum all": (lambda h: h.sum().expand(2), None),
    "sum dims keepdim": (lambda h: h.sum((1, 3), keepdim=True), None),
    "mean dim": (lambda h: torch.mean(h, -2), None),
    "cumsum": (lambda h: h.cumsum(2), None),
    "roll, flip": (lambda h: torch.roll(h, 2, -1).flip(1), None),
    "gather": (lambda h: h.gather(-1, _INDEX), None),
    "diagonal": (lambda h: h[..., :4].diagonal(dim1=-2, dim2=-1), None),
    "expand, repeat": (lambda h: h[:, :1].expand(2, 2, 4, 6).repeat(1, 1, 1, 2), None),
    "matmul by a constant": (lambda h: h @ _W, None),
    "einsum by a constant": (lambda h: torch.einsum("bcij,jk->bcik", h, _W), None),
    "avg_pool2d": (lambda h: F.avg_pool2d(h, 2, stride=1, padding=1), None),
    "adaptive_avg_pool2d": (lambda h: F.adaptive_avg_pool2d(h, (3, 2)), None),
    "interpolate bilinear": (lambda h: F.interpolate(h, scale_factor=1.5, mode="bilinear"), None),
    "pad reflect": (lambda h: F.pad(h, (2, 1, 0, 3), mode="reflect"), None),
    "pixel_unshuffle": (lambda h: F.pixel_unshuffle(h, 2), None),
    "unfold": (lambda h: F.unfold(h, 2), None),
    "cat with a constant": (
        lambda h: torch.cat([torch.ones(2, 1, 4, 6, dtype=DT), h], 1),
        lambda b: torch.cat([torch.zeros(2, 1, 4, 6, dtype=DT), b], 1),
    ),
    "stack with a constant": (lambda h: torch.stack([h, torch.full_like(h, 3.0)]), lambda b: torch.stack([b, torch.zeros_like(b)])),
    "pad with a value": (lambda h: F.pad(h, (1, 1), value=2.5), lambda b: F.pad(b, (1, 1))),
    "where with a constant": (lambda h: torch.where(_COND, h, -1.0), lambda b: torch.where(_COND, b, 0.0)),
    "masked_fill": (lambda h: h.masked_fill(_COND, 7.0), lambda b: b.masked_fill(_COND, 0.0)),
}


@pytest.mark.parametrize("name", LINEAR)
def test_a_linear_map_applies_to_each_part(name):
    L, L_rel = LINEAR[name]
    x, masks = _data()
    rel, irr = decompose(Lambda(L), x, masks)
    expected = torch.stack([(L_rel or L)(m * x) for m in masks])
    torch.testing.assert_close(rel, expected, rtol=1e-12, atol=1e-12)
    if L_rel is None:  # no constant: the irrelevant part is L of the rest
        torch.testing.assert_close(irr, torch.stack([L((1 - m) * x) for m in masks]), rtol=1e-12, atol=1e-12)
    assert rel.abs().max() > 0.1


def test_advanced_indices_separated_by_a_slice():
    x, masks = _data()
    for index in ((slice(None), [2, 0], slice(None), [1, 4]), (0, slice(None), [1, 3]), (slice(None), [1, 0], [2, 2])):
        rel, _ = decompose(Lambda(lambda h: h[index]), x, masks)
        torch.testing.assert_close(rel, torch.stack([(m * x)[index] for m in masks]))


def test_setitem_writes_into_both_parts_and_a_constant_is_irrelevant():
    x, masks = _data(1)

    def write(h):
        h = h.clone()
        h[:, 0] = 5.0  # a constant
        h[:, 1] = h[:, 2] * 2  # a decomposed value
        return h

    rel, _ = decompose(Lambda(write), x, masks)
    expected = masks[:, None] * x
    expected[:, :, 0], expected[:, :, 1] = 0, 2 * expected[:, :, 2]
    torch.testing.assert_close(rel, expected, rtol=0, atol=0)


def test_a_product_of_two_decomposed_values_is_the_shapley_split_of_the_bilinear_map():
    x, masks = _data(2, shape=(2, 5, 4))
    rel, _ = decompose(Lambda(lambda h: h @ h.transpose(1, 2)), x, masks)
    expected = torch.stack([0.5 * ((m * x) @ x.transpose(1, 2) + x @ (m * x).transpose(1, 2)) for m in masks])
    torch.testing.assert_close(rel, expected, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("op", ["mm", "bmm", "Tensor.bmm"])
def test_mm_and_bmm_on_a_decomposed_value_equal_matmul(op):
    torch.manual_seed(0)
    w = torch.randn(4, 3, dtype=DT)
    x = torch.randn(2, 5, 4, dtype=DT)
    masks = (torch.rand(3, 5, 1) > 0.5).to(DT)
    if op == "mm":
        model = Lambda(lambda h: torch.mm(h.reshape(-1, 4), w).view(2, 5, 3))
    elif op == "bmm":
        model = Lambda(lambda h: torch.bmm(h, w.expand(2, 4, 3)))
    else:
        model = Lambda(lambda h: h.bmm(h.transpose(1, 2)))  # two decomposed factors
    rel, _ = decompose(model, x, masks)
    if op == "Tensor.bmm":
        torch.testing.assert_close(rel, decompose(Lambda(lambda h: h @ h.transpose(1, 2)), x, masks)[0], rtol=1e-12, atol=1e-12)
    else:
        torch.testing.assert_close(rel, decompose(Lambda(lambda h: h @ w), x, masks)[0], rtol=1e-12, atol=1e-12)


def test_shape_of_other_reads_only_the_shape():
    x = torch.randn(2, 3, 4, dtype=DT)
    masks = (torch.rand(2, 3, 4) > 0.5).to(DT)
    model = Lambda(
        lambda h: h.flatten(1).view_as(h).reshape_as(h).type_as(h)
        + torch.ones(3, 4, dtype=DT).view_as(h[0]).expand_as(h) * h.mean(-1, keepdim=True).expand_as(h)
    )
    rel, _ = decompose(model, x, masks)
    beta = masks[:, None] * x
    torch.testing.assert_close(rel, beta + beta.mean(-1, keepdim=True), rtol=1e-12, atol=1e-12)


def test_cat_skips_an_empty_legacy_tensor_like_torch():
    """A key-value cache starts as ``torch.tensor([])`` and grows with ``torch.cat``."""
    x = torch.randn(2, 3, 4, dtype=DT)
    masks = (torch.rand(2, 3, 1) > 0.5).to(DT)
    rel, _ = decompose(Lambda(lambda h: torch.cat([torch.tensor([], dtype=DT), h], dim=-2)), x, masks)
    torch.testing.assert_close(rel, masks[:, None].expand(2, 2, 3, 4) * x)


REFUSED = {
    "a decomposed condition": (lambda h: torch.where(h, h, 0.0), "decomposed condition"),
    "a decomposed fill value": (lambda h: h.masked_fill(h.detach() > 0, h[0, 0]), "masked_fill"),
    "a decomposed value into a plain tensor": (lambda h: _write_into_plain(h), "has no rule"),
    "two decomposed values of a non-contraction": (lambda h: torch.take_along_dim(h, h.long()), "no rule"),
}


def _write_into_plain(h):
    out = torch.zeros_like(h.detach())
    out[0] = h[0]
    return out


@pytest.mark.parametrize("name", REFUSED)
def test_what_has_no_rule_is_refused_by_name(name):
    call, match = REFUSED[name]
    x = torch.randn(2, 4, dtype=DT)
    with pytest.raises((DecompositionError, RuntimeError), match=match):
        ContextualDecomposition(Lambda(call)).decompose(x, torch.ones(1, 4, dtype=DT))
