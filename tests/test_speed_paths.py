"""Paths taken for speed give the numbers of the plain path: attribute's passes of whole
examples (after a first pass over the whole batch, the ordinary pass runs once per example
however many passes the groups need), taken only where the output has a row per example."""

import pytest
import torch

from captum_cd import ContextualDecomposition, grid_ids
from experiments.models import lenet


@pytest.fixture
def setup():
    torch.manual_seed(0)
    model = lenet().double().eval()
    x = torch.randn(6, 1, 28, 28, dtype=torch.float64)
    return model, x


def _by_hand(model, x, ids, targets):
    """Each group decomposed alone, each example alone: the definition of the scores."""
    cd = ContextualDecomposition(model)
    out = torch.zeros_like(x)
    for b in range(x.shape[0]):
        example_ids = ids[b] if ids.shape[0] > 1 else ids[0]
        for g in torch.unique(example_ids):
            mask = (example_ids == g).double().unsqueeze(0)
            rel, _ = cd.decompose(x[b : b + 1], mask)
            out[b][example_ids.expand_as(x[b]) == g] = rel[0, 0, targets[b]]
    return out


@pytest.mark.parametrize("per_pass", [None, 1, 2, 5])
def test_passes_of_whole_examples_give_the_definition(setup, per_pass):
    model, x = setup
    ids = torch.randint(0, 4, (6, 1, 28, 28), generator=torch.Generator().manual_seed(2))  # per example
    targets = [0, 1, 2, 3, 4, 5]
    attr, delta = ContextualDecomposition(model).attribute(
        x, target=targets, feature_mask=ids, perturbations_per_eval=per_pass, return_convergence_delta=True
    )
    torch.testing.assert_close(attr, _by_hand(model, x, ids, targets), rtol=1e-9, atol=1e-12)
    assert delta.shape == (6,) and delta.abs().max() < 1e-10


def test_the_ordinary_pass_runs_once_per_example(setup):
    model, x = setup
    rows = []
    handle = model[0].register_forward_hook(lambda m, args, out: rows.append(args[0].shape[0]))
    try:
        # 16 groups, at most 2 x 6 rows a pass: the first pass holds 2 groups of the whole
        # batch (it shows the output has a row per example), the other 14 go in passes of
        # whole examples
        ContextualDecomposition(model).attribute(x, target=torch.arange(6), feature_mask=grid_ids(28, 28, 7), perturbations_per_eval=2)
    finally:
        handle.remove()
    # 12 groups fit a pass: 2 passes an example, where chunks of 2 groups over the whole
    # batch would repeat the ordinary pass 7 times
    assert rows == [6] + [1, 1] * 6


def test_a_per_example_target_of_the_wrong_length_is_refused_when_examples_are_split(setup):
    model, x = setup
    with pytest.raises(ValueError, match="one entry per example"):
        ContextualDecomposition(model).attribute(x, target=[0, 1, 2], feature_mask=grid_ids(28, 28, 7), perturbations_per_eval=1)


@pytest.mark.parametrize(
    "statistic",
    [
        lambda out: out.sum(0, keepdim=True),  # one row for the whole batch
        lambda out: out - out.mean(0, keepdim=True),  # a row per example, but not its own
    ],
    ids=["row for the batch", "rows that depend on the batch"],
)
def test_an_output_that_is_a_statistic_of_the_batch_is_never_split_into_examples(setup, statistic):
    model, x = setup
    forward = lambda images: statistic(model(images))  # noqa: E731
    ids = grid_ids(28, 28, 7)  # 16 groups
    cd = ContextualDecomposition(forward)
    one_pass = cd.attribute(x, target=0, feature_mask=ids)  # every group at once, over the whole batch
    several = cd.attribute(x, target=0, feature_mask=ids, perturbations_per_eval=2)  # 2 groups a pass
    torch.testing.assert_close(several, one_pass, rtol=1e-9, atol=1e-12)
    # by hand: each pixel gets its group's relevant part, decomposed over the whole batch
    rel, _ = cd.decompose(x, (ids == torch.arange(16).view(16, 1, 1, 1)).double())  # (16, rows, 10)
    torch.testing.assert_close(one_pass[:, 0], rel[ids[0, 0], :, 0].permute(2, 0, 1), rtol=1e-9, atol=1e-12)
