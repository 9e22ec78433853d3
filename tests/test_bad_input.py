"""Bad input gets a clear error that says what was wrong and how to fix it."""

import pytest
import torch
from torch import nn

from captum_cd import ContextualDecomposition


@pytest.fixture
def cd():
    return ContextualDecomposition(nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU(), nn.Flatten(), nn.Linear(2 * 6 * 6, 3)).eval())


X = torch.randn(2, 1, 8, 8)


@pytest.mark.parametrize("shape", [(1, 8, 8), (2, 1, 7, 8), (2, 3, 1, 8, 8), (2, 2, 1, 8)])
def test_mask_of_the_wrong_shape(cd, shape):
    with pytest.raises(ValueError, match=r"does not fit inputs of shape \(2, 1, 8, 8\)"):
        cd.decompose(X, torch.ones(shape))


def test_masks_for_tuple_inputs_must_match(cd):
    with pytest.raises(ValueError, match="one mask per input"):
        cd.decompose(X, (torch.ones(1, 1, 8, 8), torch.ones(1, 1, 8, 8)))


@pytest.mark.parametrize("target", [3, -4, (0, 1), [0, 5], torch.tensor([0, 3]), torch.tensor([0, 1, 2])])
def test_target_out_of_range(cd, target):
    with pytest.raises(ValueError, match="target"):
        cd.attribute(X, target=target)


def test_groups_per_example_need_an_output_per_example():
    # A sum over the batch has one row for all examples: groups that differ between
    # examples have no row of their own to be scored in.
    cd = ContextualDecomposition(lambda x: x.sum())
    with pytest.raises(ValueError, match="give a mask with first dimension 1"):
        cd.attribute(torch.randn(2, 3), feature_mask=torch.tensor([[0, 0, 1], [1, 1, 0]]))


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_nan_or_infinite_input(cd, bad):
    x = X.clone()
    x[0, 0, 0, 0] = bad
    with pytest.raises(ValueError, match="NaN or infinite"):
        cd.decompose(x, torch.ones(1, 1, 8, 8))


def test_nan_mask(cd):
    with pytest.raises(ValueError, match="NaN or infinite"):
        cd.decompose(X, torch.full((1, 1, 8, 8), float("nan")))


def test_complex_masks_and_relevant_parts(cd):
    with pytest.raises(TypeError, match="mask 0 is complex"):
        cd.decompose(X, torch.ones(1, 1, 8, 8, dtype=torch.complex64))
    with pytest.raises(TypeError, match="real floating-point"):
        cd.forward_decomposition(X, relevant=torch.ones(1, 2, 1, 8, 8, dtype=torch.complex64))


def test_masks_with_no_groups_give_an_empty_decomposition(cd):
    """G = 0 is a meaning, not an error: no groups, nothing decomposed (as FeatureAblation
    gives an input without features empty attributions); the shapes are still checked."""
    rel, irrel = cd.decompose(X, torch.ones(0, 1, 8, 8))
    assert rel.shape == irrel.shape == (0, 2, 3)
    assert cd.forward_decomposition(X, relevant=torch.ones(0, 2, 1, 8, 8)).rel.shape == (0, 2, 3)
    assert cd.interactions(X, torch.ones(0, 1, 8, 8), torch.ones(0, 1, 8, 8), target=0).shape == (0, 2)
    with pytest.raises(ValueError, match="does not fit"):
        cd.decompose(X, torch.ones(0, 1, 7, 8))


def test_dtype_mismatch_between_inputs_and_model(cd):
    with pytest.raises(ValueError, match="float64 but the model's parameters are torch.float32"):
        cd.decompose(X.double(), torch.ones(1, 1, 8, 8))


def test_mask_on_another_device(cd):
    with pytest.raises(ValueError, match="on meta but its input is on cpu"):
        cd.decompose(X, torch.ones(1, 1, 8, 8, device="meta"))


def test_integer_inputs_say_to_use_layer(cd):
    with pytest.raises(TypeError, match="layer="):
        cd.decompose(X.long(), torch.ones(1, 1, 8, 8))


def test_feature_mask_checks(cd):
    with pytest.raises(TypeError, match="integer group ids"):
        cd.attribute(X, target=0, feature_mask=torch.zeros(1, 1, 8, 8))
    with pytest.raises(ValueError, match="does not broadcast"):
        cd.attribute(X, target=0, feature_mask=torch.zeros(3, 1, 8, 8, dtype=torch.long))


def test_model_returning_a_tuple():
    cd = ContextualDecomposition(lambda x: (x * 2, x))
    with pytest.raises(RuntimeError, match="returned a tuple"):
        cd.decompose(torch.randn(2, 3), torch.ones(1, 3))


def test_output_that_does_not_depend_on_the_input():
    cd = ContextualDecomposition(lambda x: (x > 0).float())
    with pytest.raises(RuntimeError, match="does not depend on the decomposed input"):
        cd.decompose(torch.randn(2, 3), torch.ones(1, 3))


def test_layer_that_runs_twice():
    lin = nn.Linear(3, 3)
    cd = ContextualDecomposition(lambda x: lin(lin(x)), layer=lin)
    with pytest.raises(RuntimeError, match="ran 2 times"):
        cd.decompose(torch.randn(2, 3), torch.ones(1, 3))
    assert not lin._forward_hooks
