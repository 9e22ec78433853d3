"""No NaN out of a finite model (captum_cd/attr/rules/shapley.py, captum_cd/attr/finite.py).

The Shapley form evaluates a function at the parts, which may leave its domain where the
full activation never does (``sqrt(h * h + 1)``: the irrelevant argument goes negative) or
overflow (``exp`` of a part of 1000 whose other part is -999). There the proportional
form ``beta (f(z) - f(0)) / z`` takes over. And as the last line of defence, parts that are
not finite where the model's output is finite are an error naming the first function."""

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from _rules import decompose, DT, Lambda
from captum_cd import ContextualDecomposition, DecompositionError
from captum_cd.attr.rules import shapley_activation


def _parts_that_leave_the_domain():
    """A bias-free map and groups whose parts go negative (and large) where the full is not."""
    g = torch.Generator().manual_seed(0)
    w = torch.randn(6, 5, generator=g, dtype=DT) * 4
    x = torch.randn(8, 5, generator=g, dtype=DT)
    masks = (torch.rand(6, 5, generator=g) > 0.5).to(DT)
    return w, x, masks


# Each function applied where the full activation is inside its domain (and finite).
FUNCTIONS = {
    "sqrt(h * h + 1)": lambda h: torch.sqrt(h * h + 1),
    "sqrt(h * h)": lambda h: torch.sqrt(h * h),
    "h.abs() ** 0.5": lambda h: h.abs() ** 0.5,
    "sqrt of a sum of squares": lambda h: torch.sqrt(h[:, :3] ** 2 + h[:, 3:] ** 2),
    "log1p(|h|)": lambda h: torch.log1p(h.abs()),
    "log(h * h + 1)": lambda h: torch.log(h * h + 1),
    "rsqrt(h * h + 1e-3)": lambda h: torch.rsqrt(h * h + 1e-3),
    "exp(h)": lambda h: torch.exp(h),
    "asin(tanh(h))": lambda h: torch.asin(torch.tanh(h)),
    "acos(0.9 sin(h))": lambda h: torch.acos(0.9 * torch.sin(h)),
    "atanh(0.9 tanh(h))": lambda h: torch.atanh(0.9 * torch.tanh(h)),
    "erfinv(0.5 tanh(h))": lambda h: torch.erfinv(0.5 * torch.tanh(h)),
    "acosh(h * h + 1)": lambda h: torch.acosh(h * h + 1),
    "1 / (h * h + 1)": lambda h: 1 / (h * h + 1),
    "cosh(h)": lambda h: torch.cosh(h),
    "h.abs() ** 1.5": lambda h: h.abs() ** 1.5,
}


@pytest.mark.parametrize("name", FUNCTIONS)
def test_functions_with_a_restricted_domain_give_finite_complete_parts(name):
    w, x, masks = _parts_that_leave_the_domain()
    f = FUNCTIONS[name]
    model = Lambda(lambda t: f(t @ w.T))
    assert torch.isfinite(model(x)).all()
    rel, irrel = decompose(model, x, masks, rtol=1e-10, atol=1e-10)
    assert torch.isfinite(rel).all()
    assert rel.abs().max() < 10 * model(x).abs().max() + 10  # on the scale of the output


def test_the_issue_case_was_nan_with_the_plain_shapley_form():
    """``sqrt(h * h + 1)`` gave NaN parts for some groups under the plain Shapley form (the
    irrelevant argument of sqrt goes negative): with it registered again, the call is an
    error naming torch.sqrt and the line, never a returned NaN."""
    w, x, masks = _parts_that_leave_the_domain()
    model = Lambda(lambda t: torch.sqrt(t @ w.T * (t @ w.T) + 1))
    cd = ContextualDecomposition(model, rules={torch.sqrt: shapley_activation})
    with pytest.raises(DecompositionError, match=r"not finite where the model's own activation is finite, first at torch.sqrt.*test_finite.py"):
        cd.decompose(x, masks)


def test_hand_derived_proportional_form_where_a_part_is_outside_the_domain():
    # sqrt(beta + gamma) with beta = -1, gamma = 2: sqrt(-1) is undefined, so beta' =
    # beta (sqrt(z) - sqrt(0)) / z = -1 and gamma' = sqrt(1) + 1 = 2.
    rel, irrel = ContextualDecomposition(Lambda(lambda t: torch.sqrt(t.sum(1)))).decompose(
        torch.tensor([[-1.0, 2.0]], dtype=DT), torch.tensor([[1.0, 0.0]], dtype=DT)
    )
    assert rel.item() == -1.0 and irrel.item() == 2.0


def test_the_proportional_form_meets_the_shapley_form_where_a_part_is_zero():
    """For sqrt (domain ending at 0) the switch is continuous: with beta -> 0 or gamma -> 0
    from either side the two forms tend to the same value (the Shapley form as sqrt(eps))."""
    model = Lambda(lambda t: torch.sqrt(t.sum(1)))
    mask = torch.tensor([[1.0, 0.0]], dtype=DT)
    for z in (0.5, 2.0):
        for eps in (1e-12, -1e-12):
            near_zero_beta, _ = ContextualDecomposition(model).decompose(torch.tensor([[eps, z - eps]], dtype=DT), mask)
            near_zero_gamma, _ = ContextualDecomposition(model).decompose(torch.tensor([[z - eps, eps]], dtype=DT), mask)
            assert abs(near_zero_beta.item()) < 1e-5
            assert abs(near_zero_gamma.item() - z**0.5) < 1e-5


def test_a_part_where_exp_overflows_takes_the_proportional_form():
    # exp(800 - 795): exp(800) overflows, so beta' = 800 (e^5 - 1) / 5, gamma' the rest.
    rel, irrel = ContextualDecomposition(Lambda(lambda t: torch.exp(t.sum(1)))).decompose(
        torch.tensor([[800.0, -795.0]], dtype=DT), torch.tensor([[1.0, 0.0]], dtype=DT)
    )
    expected = 800 * (torch.exp(torch.tensor(5.0, dtype=DT)) - 1) / 5
    torch.testing.assert_close(rel[0, 0], expected, rtol=1e-12, atol=0)
    torch.testing.assert_close(rel + irrel, torch.exp(torch.tensor([[5.0]], dtype=DT)), rtol=1e-12, atol=0)


def test_gradients_through_the_proportional_form_are_finite():
    """Training through CD (CDEP) where parts leave sqrt's domain: no NaN from the branch
    that is not taken."""
    w, x, masks = _parts_that_leave_the_domain()
    w = w.clone().requires_grad_()
    rel, _ = ContextualDecomposition(Lambda(lambda t: torch.sqrt((t @ w.T) ** 2 + 1))).decompose(x, masks)
    rel.sum().backward()
    assert torch.isfinite(w.grad).all() and w.grad.abs().sum() > 0


def test_non_finite_parts_in_training_mode_are_refused_without_a_second_pass():
    """With batch statistics (CDEP) finding the function would run the model again and move
    its running statistics: the error comes without, and the statistics moved once."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(5, 6), nn.BatchNorm1d(6), Lambda(lambda t: torch.sqrt(t * t + 1)), nn.Linear(6, 2)).to(DT)
    x, masks = torch.randn(8, 5, dtype=DT), (torch.rand(4, 5) > 0.5).to(DT)
    once = copy.deepcopy(model)
    once(x)
    cd = ContextualDecomposition(model, rules={torch.sqrt: shapley_activation})
    with pytest.raises(DecompositionError, match="not finite where the model's own output is finite"):
        cd.forward_decomposition(x, masks, training="batch")
    torch.testing.assert_close(model[1].running_mean, once[1].running_mean, rtol=0, atol=0)


def test_a_model_whose_own_output_is_not_finite_is_decomposed_as_it_is():
    model = Lambda(lambda t: torch.log(t))  # log of a negative input: NaN in the model too
    x = torch.tensor([[-1.0, 2.0]], dtype=DT)
    with pytest.raises(DecompositionError, match="infinite at 0"):  # a raw log has no decomposition
        ContextualDecomposition(model).decompose(x, torch.ones(1, 2, dtype=DT))
    rel, _ = ContextualDecomposition(Lambda(lambda t: F.relu(t) * float("nan"))).decompose(x, torch.ones(1, 2, dtype=DT))
    assert torch.isnan(rel).all()
