"""The pooling and selection rules (captum_cd/attr/rules/pooling.py): max pooling and
``max``/``min``/``amax``/``amin`` take their winners from the full activation and gather
the relevant part there, pending elementwise steps gathered along; checked against
gathers written out here, float64 throughout."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from _rules import decompose, DT, Lambda
from captum_cd import ContextualDecomposition, DecompositionError
from captum_cd.attr.decomposition import lazy_elementwise


def _gathered(beta, indices, n):
    """``beta`` (G, *full) at the flat indices over the last ``n`` dims, one group at a time."""
    out = []
    for b in beta:
        flat = b.flatten(-n)
        out.append(flat.gather(-1, indices.flatten(-n)).view(indices.shape))
    return torch.stack(out)


def test_hand_derived_max_pool_takes_winners_from_full():
    # Full = (1, 5, 2, 0): window winner is index 1 even though beta is larger at index 0.
    x = torch.tensor([[[1.0, 5.0, 2.0, 0.0]]])
    mask = torch.tensor([[[1.0, 0.0, 1.0, 0.0]]])
    rel, irrel = ContextualDecomposition(nn.MaxPool1d(2)).decompose(x, mask)
    torch.testing.assert_close(rel[0], torch.tensor([[[0.0, 2.0]]]))
    torch.testing.assert_close(irrel[0], torch.tensor([[[5.0, 0.0]]]))


POOLS = {
    "max_pool1d padded, dilated, ceil": (lambda h, **k: F.max_pool1d(h, 3, 2, padding=1, dilation=2, ceil_mode=True, **k), (2, 3, 17), 1),
    "max_pool2d overlapping": (lambda h, **k: F.max_pool2d(h, 3, stride=1, padding=1, **k), (2, 3, 6, 5), 2),
    "max_pool2d (2, 3) ceil": (lambda h, **k: F.max_pool2d(h, (2, 3), ceil_mode=True, **k), (2, 2, 7, 8), 2),
    "max_pool3d": (lambda h, **k: F.max_pool3d(h, 2, **k), (2, 2, 4, 4, 6), 3),
    "adaptive_max_pool1d": (lambda h, **k: F.adaptive_max_pool1d(h, 4, **k), (2, 3, 13), 1),
    "adaptive_max_pool2d": (lambda h, **k: F.adaptive_max_pool2d(h, (3, 2), **k), (2, 3, 11, 9), 2),
    "adaptive_max_pool3d": (lambda h, **k: F.adaptive_max_pool3d(h, 2, **k), (2, 1, 5, 5, 4), 3),
}


@pytest.mark.parametrize("name", POOLS)
def test_max_pool_gathers_the_relevant_part_at_the_full_activations_winners(name):
    pool, shape, n = POOLS[name]
    g = torch.Generator().manual_seed(0)
    x = torch.randn(shape, generator=g, dtype=DT)
    masks = (torch.rand(3, *shape[1:], generator=g) > 0.5).to(DT)
    rel, irr = decompose(Lambda(pool), x, masks)
    _, winners = pool(x, return_indices=True)
    beta = masks[:, None] * x
    torch.testing.assert_close(rel, _gathered(beta, winners, n), rtol=0, atol=0)
    torch.testing.assert_close(irr, _gathered(x[None] - beta, winners, n), rtol=0, atol=1e-14)
    seen = {}

    def with_indices(h):  # return_indices=True: torch's own indices beside the decomposition
        out, seen["indices"] = pool(h, return_indices=True)
        return out

    rel_i, _ = ContextualDecomposition(Lambda(with_indices)).decompose(x, masks)
    torch.testing.assert_close(rel_i, rel, rtol=0, atol=0)
    assert torch.equal(seen["indices"], winners)


def test_pending_steps_run_on_the_pooled_elements_as_they_would_before_pooling():
    """The bias split and ReLU pending on a conv's output are gathered along with the
    relevant part: the same numbers as running them on the whole map first."""
    torch.manual_seed(1)
    net = nn.Sequential(nn.Conv2d(2, 3, 3), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(), nn.Linear(3 * 9, 2)).to(DT)
    x = torch.randn(2, 2, 8, 8, dtype=DT)
    masks = (torch.rand(3, 1, 8, 8) > 0.5).to(DT)
    lazy, _ = decompose(net, x, masks)
    with lazy_elementwise(False):
        eager, _ = decompose(net, x, masks)
    torch.testing.assert_close(lazy, eager, rtol=0, atol=1e-13)


SELECT = {
    "max(dim)": (lambda h: h.max(dim=1).values, lambda t: t.argmax(1, keepdim=True), 1, False),
    "torch.max(dim, keepdim)": (lambda h: torch.max(h, 2, keepdim=True)[0], lambda t: t.argmax(2, keepdim=True), 2, True),
    "min(dim)": (lambda h: h.min(-1).values, lambda t: t.argmin(-1, keepdim=True), 2, False),
    "amax(dim)": (lambda h: h.amax(1), lambda t: t.argmax(1, keepdim=True), 1, False),
    "amin(dim, keepdim)": (lambda h: torch.amin(h, 2, keepdim=True), lambda t: t.argmin(2, keepdim=True), 2, True),
}


@pytest.mark.parametrize("name", SELECT)
def test_max_and_min_along_a_dimension_take_the_full_activations_winner(name):
    select, arg, dim, keepdim = SELECT[name]
    g = torch.Generator().manual_seed(2)
    x = torch.randn(3, 5, 4, generator=g, dtype=DT)
    masks = (torch.rand(4, 5, 4, generator=g) > 0.5).to(DT)
    rel, _ = decompose(Lambda(select), x, masks)
    index = arg(x)
    expected = torch.stack([(m * x).gather(dim, index) for m in masks])
    torch.testing.assert_close(rel, expected if keepdim else expected.squeeze(dim + 1), rtol=0, atol=0)


def test_max_returns_torchs_indices_and_amax_over_several_dimensions():
    g = torch.Generator().manual_seed(3)
    x = torch.randn(2, 3, 4, 5, generator=g, dtype=DT)
    masks = (torch.rand(2, 3, 4, 5, generator=g) > 0.5).to(DT)
    rel, _ = decompose(Lambda(lambda h: h.amax((1, 3))), x, masks)
    flat = x.permute(0, 2, 1, 3).flatten(2)  # the reduced dims last
    index = flat.argmax(-1, keepdim=True)
    expected = torch.stack([(m * x).permute(0, 2, 1, 3).flatten(2).gather(-1, index).squeeze(-1) for m in masks])
    torch.testing.assert_close(rel, expected, rtol=0, atol=0)
    seen = {}

    def keep_indices(h):
        values, seen["indices"] = torch.max(h, dim=2)
        return values

    ContextualDecomposition(Lambda(keep_indices)).decompose(x, masks)
    assert torch.equal(seen["indices"], x.argmax(2))


@pytest.mark.parametrize("call, pick", [(lambda h: h.max(), torch.argmax), (lambda h: torch.amin(h), torch.argmin), (torch.min, torch.argmin)])
def test_a_max_over_the_whole_tensor_gathers_both_parts_at_the_winner(call, pick):
    x = torch.randn(3, 4, dtype=DT)
    masks = (torch.rand(5, 3, 4, generator=torch.Generator().manual_seed(1)) > 0.5).to(DT)  # per example
    rel, irrel = ContextualDecomposition(Lambda(lambda h: call(h).reshape(1))).decompose(x, masks)
    winner = pick(x)  # the whole batch's extreme element, where both parts are read
    torch.testing.assert_close(rel[:, 0], (masks * x).flatten(1)[:, winner])
    torch.testing.assert_close((rel + irrel)[:, 0], x.flatten()[winner].expand(5))


def test_an_elementwise_max_of_two_values_is_refused():
    x = torch.randn(2, 4, dtype=DT)
    with pytest.raises(DecompositionError, match="of two tensors"):
        ContextualDecomposition(Lambda(lambda h: torch.max(h, h * 0.5))).decompose(x, torch.ones(1, 4, dtype=DT))


def test_gradcheck_through_overlapping_max_pool_with_pending_steps():
    # Overlapping windows: one element wins several outputs, so the pooled gather's
    # backward must add; the pending bias split and ReLU are gathered along.
    torch.manual_seed(4)
    net = nn.Sequential(nn.Conv2d(2, 3, 3), nn.ReLU(), nn.MaxPool2d(3, stride=1, padding=1), nn.Flatten(), nn.Linear(3 * 25, 2)).double()
    x = torch.randn(2, 2, 7, 7, dtype=torch.float64, requires_grad=True)
    masks = (torch.rand(2, 1, 7, 7, generator=torch.Generator().manual_seed(0)) > 0.5).double()
    cd = ContextualDecomposition(net)
    assert torch.autograd.gradcheck(lambda inp: cd.decompose(inp, masks)[0], (x,))

    def of_weight(w):
        model = lambda inp: torch.func.functional_call(net, {"0.weight": w}, (inp,))  # noqa: E731
        return ContextualDecomposition(model).decompose(x.detach(), masks)[0]

    assert torch.autograd.gradcheck(of_weight, (net[0].weight.detach().clone().requires_grad_(),))


def test_gradcheck_through_max_along_a_dimension():
    class TokenMax(nn.Module):  # max pooling over tokens, as text models do
        def __init__(self):
            super().__init__()
            self.proj, self.out = nn.Linear(3, 4), nn.Linear(4, 2)

        def forward(self, x):
            return self.out(torch.relu(self.proj(x)).max(dim=1).values + torch.tanh(self.proj(x)).amax(dim=1))

    torch.manual_seed(5)
    net = TokenMax().double()
    x = torch.randn(2, 5, 3, dtype=torch.float64, requires_grad=True)
    masks = torch.tensor([[1.0, 1, 0, 0, 0], [0, 0, 1, 1, 0]], dtype=torch.float64).unsqueeze(-1)
    assert torch.autograd.gradcheck(lambda inp: ContextualDecomposition(net).decompose(inp, masks)[0], (x,))
