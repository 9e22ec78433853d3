"""ContextualDecomposition is a native Captum citizen."""

import pytest
import torch
from captum.attr import FeatureAblation, NoiseTunnel, visualization
from captum.metrics import infidelity, sensitivity_max
from torch import nn

from captum_cd import ContextualDecomposition


def small_cnn():
    return nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(), nn.Linear(4 * 4 * 4, 3)
    ).eval()  # fmt: skip


@pytest.fixture
def setup():
    return small_cnn(), torch.randn(4, 1, 8, 8)


def test_captum_metadata():
    cd = ContextualDecomposition(small_cnn())
    assert cd.get_name() == "Contextual Decomposition"
    assert cd.has_convergence_delta() is True
    assert cd.multiplies_by_inputs is True
    assert hasattr(cd.attribute, "__wrapped__")  # log_usage, which NoiseTunnel relies on


def test_attribute_future_waits_for_the_forwards_future(setup):
    model, x = setup

    def forward_future(images):  # a forward that hands its output back as a Future
        result = torch.futures.Future()
        result.set_result(model(images))
        return result

    future = ContextualDecomposition(forward_future).attribute_future(x, target=1)
    torch.testing.assert_close(future.wait(), ContextualDecomposition(model).attribute(x, target=1))
    with pytest.raises(TypeError, match="returns a torch.futures.Future"):
        ContextualDecomposition(model).attribute_future(x, target=1)
    with pytest.raises(RuntimeError, match="attribute_future"):
        ContextualDecomposition(forward_future).attribute(x, target=1)


@pytest.mark.parametrize(
    "target",
    [1, (1,), torch.tensor(1), torch.tensor([0, 1, 2, 1]), [0, 1, 2, 1]],
    ids=["int", "tuple", "scalar-tensor", "tensor", "list"],
)
def test_every_target_form_selects_the_same_scores(setup, target):
    model, x = setup
    cd = ContextualDecomposition(model)
    attr = cd.attribute(x, target=target)
    per_example = torch.tensor([1, 1, 1, 1]) if not isinstance(target, (list, torch.Tensor)) or (
        isinstance(target, torch.Tensor) and target.numel() == 1
    ) else torch.as_tensor(target)
    # Each pixel alone as a group: its score is the relevant part of that group's decomposition.
    masks = torch.eye(64).view(64, 1, 8, 8)
    rel, _ = cd.decompose(x, masks)
    expected = rel[:, torch.arange(4), per_example].t().reshape(4, 1, 8, 8)
    torch.testing.assert_close(attr, expected)


def test_feature_mask_gives_each_feature_its_groups_score(setup):
    model, x = setup
    cd = ContextualDecomposition(model)
    ids = torch.arange(4).view(2, 2).repeat_interleave(4, 0).repeat_interleave(4, 1)[None, None] * 10  # ids 0,10,20,30
    attr = cd.attribute(x, target=2, feature_mask=ids)
    for k, group_id in enumerate([0, 10, 20, 30]):
        mask = (ids[0] == group_id).float()
        rel, _ = cd.decompose(x, mask[None])
        torch.testing.assert_close(attr[:, 0][ids[0, 0].expand(4, 8, 8) == group_id].view(4, 16), rel[0, :, 2:3].expand(4, 16))


def test_per_example_feature_mask(setup):
    model, x = setup
    cd = ContextualDecomposition(model)
    ids = torch.randint(0, 3, (4, 1, 8, 8))
    attr = cd.attribute(x, target=0, feature_mask=ids)
    for b in range(4):
        for g in range(3):
            rel, _ = cd.decompose(x[b : b + 1], (ids[b] == g).float()[None])
            if (ids[b] == g).any():
                torch.testing.assert_close(attr[b][ids[b] == g], rel[0, 0, 0].expand(int((ids[b] == g).sum())))


def test_tuple_inputs_return_tuples_and_group_ids_span_inputs():
    class Two(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b = nn.Linear(3, 2), nn.Linear(2, 2)

        def forward(self, x, y):
            return self.a(x) * 2 + self.b(y)

    model, x, y = Two(), torch.randn(2, 3), torch.randn(2, 2)
    cd = ContextualDecomposition(model)
    attr = cd.attribute((x, y), target=0)
    assert isinstance(attr, tuple) and attr[0].shape == x.shape and attr[1].shape == y.shape
    ids = (torch.tensor([[0, 0, 1]]), torch.tensor([[1, 2]]))
    grouped = cd.attribute((x, y), target=0, feature_mask=ids)
    rel, _ = cd.decompose((x, y), (torch.tensor([[0.0, 0, 1]]), torch.tensor([[1.0, 0]])))
    torch.testing.assert_close(grouped[0][:, 2], rel[0, :, 0])
    torch.testing.assert_close(grouped[1][:, 0], rel[0, :, 0])


def test_chunking_does_not_change_the_result(setup):
    model, x = setup
    cd = ContextualDecomposition(model)
    torch.testing.assert_close(cd.attribute(x, target=1, perturbations_per_eval=7), cd.attribute(x, target=1))


def test_agrees_with_feature_ablation_on_a_linear_model():
    # For a linear model without bias, CD of a group = its ablation effect (baseline 0).
    model = nn.Linear(6, 2, bias=False)
    x = torch.randn(3, 6)
    ids = torch.tensor([[0, 0, 1, 1, 2, 2]])
    cd_attr = ContextualDecomposition(model).attribute(x, target=1, feature_mask=ids)
    fa_attr = FeatureAblation(model).attribute(x, target=1, feature_mask=ids)
    torch.testing.assert_close(cd_attr, fa_attr)


def test_noise_tunnel(setup):
    model, x = setup
    torch.manual_seed(0)
    nt = NoiseTunnel(ContextualDecomposition(model))
    attr = nt.attribute(x, nt_type="smoothgrad", nt_samples=3, stdevs=0.1, target=1)
    assert attr.shape == x.shape and torch.isfinite(attr).all()
    # With no noise, smoothgrad is the plain attribution.
    attr0 = nt.attribute(x, nt_type="smoothgrad", nt_samples=2, stdevs=0.0, target=1)
    torch.testing.assert_close(attr0, ContextualDecomposition(model).attribute(x, target=1))


def test_infidelity_and_sensitivity(setup):
    model, x = setup
    cd = ContextualDecomposition(model)
    attr = cd.attribute(x, target=0)

    def perturb(inputs):
        noise = torch.randn_like(inputs) * 0.05
        return noise, inputs - noise

    score = infidelity(model, perturb, x, attr, target=0, n_perturb_samples=4)
    sens = sensitivity_max(cd.attribute, x, target=0, n_perturb_samples=3)
    assert score.shape == (4,) and torch.isfinite(score).all()
    assert sens.shape == (4,) and torch.isfinite(sens).all()


def test_visualization(setup, tmp_path):
    import matplotlib

    matplotlib.use("Agg")
    model, x = setup
    attr = ContextualDecomposition(model).attribute(x[:1], target=0)
    figure, _ = visualization.visualize_image_attr(
        attr[0].permute(1, 2, 0).numpy(), x[0].permute(1, 2, 0).numpy(), method="heat_map", sign="all", use_pyplot=False
    )
    figure.savefig(tmp_path / "cd.png")
    assert (tmp_path / "cd.png").stat().st_size > 0


def test_interactions_match_three_decompositions(setup):
    model, x = setup
    cd = ContextualDecomposition(model)
    a = torch.zeros(3, 1, 8, 8)
    b = torch.zeros(3, 1, 8, 8)
    a[0, :, :4], b[0, :, 4:] = 1, 1
    a[1, :, :, :2], b[1, :, :, 2:5] = 1, 1
    a[2, :, 0, 0], b[2, :, 7, 7] = 1, 1
    inter = cd.interactions(x, a, b, target=1)
    for p in range(3):
        both = torch.maximum(a[p], b[p])
        rel, _ = cd.decompose(x, torch.stack([both, a[p], b[p]]))
        torch.testing.assert_close(inter[p], rel[0, :, 1] - rel[1, :, 1] - rel[2, :, 1], atol=1e-6, rtol=1e-5)
    assert cd.interactions(x, a, b).shape == (3, 4, 3)


def test_captum_positional_order_means_the_same(setup):
    # FeatureAblation's order: inputs, baselines, target, additional_forward_args, feature_mask.
    model, x = setup
    cd = ContextualDecomposition(model)
    ids = torch.arange(4).view(2, 2).repeat_interleave(4, 0).repeat_interleave(4, 1)[None, None]
    labels = torch.tensor([0, 1, 2, 1])
    torch.testing.assert_close(cd.attribute(x, None, labels, None, ids), cd.attribute(x, target=labels, feature_mask=ids))


@pytest.mark.parametrize("baselines", [torch.tensor([0, 1, 2, 1]), [0, 1, 2, 1], 1])
def test_labels_in_the_baselines_slot_are_refused_with_a_hint(setup, baselines):
    model, x = setup
    with pytest.raises(ValueError, match="takes no baselines.*target="):
        ContextualDecomposition(model).attribute(x, baselines)


def test_float_baselines_are_refused(setup):
    model, x = setup
    with pytest.raises(ValueError, match="baselines must be None") as info:
        ContextualDecomposition(model).attribute(x, torch.zeros_like(x), target=0)
    assert "labels" not in str(info.value)


@pytest.mark.parametrize("value", [0, -1, 2.5, True])
def test_perturbations_per_eval_must_be_a_positive_int(setup, value):
    model, x = setup
    with pytest.raises(ValueError, match="perturbations_per_eval"):
        ContextualDecomposition(model).attribute(x, target=0, perturbations_per_eval=value)


def test_convergence_delta_the_captum_way(setup):
    model, x = setup
    cd = ContextualDecomposition(model)
    attr, delta = cd.attribute(x, target=1, return_convergence_delta=True)
    torch.testing.assert_close(attr, cd.attribute(x, target=1))
    assert delta.shape == (4,) and delta.abs().max() < 1e-5
    masks = torch.zeros(2, 1, 8, 8)
    masks[0, :, :4], masks[1, :, 4:] = 1, 1
    relevant, irrelevant = cd.decompose(x, masks)
    assert cd.compute_convergence_delta((relevant, irrelevant), x, target=1).abs().max() < 1e-5
    # The delta is measured against an ordinary forward pass, so it can fail: a pair
    # that does not add up to the model's output shows its error.
    shifted = cd.compute_convergence_delta((relevant, irrelevant + 0.25), x, target=1)
    torch.testing.assert_close(shifted, torch.full((4,), 0.25), atol=1e-5, rtol=0)
    with pytest.raises(TypeError, match="relevant, irrelevant"):
        cd.compute_convergence_delta(attr, x, target=1)


def test_convergence_delta_catches_a_rule_that_changes_the_forward_values():
    from captum_cd import Decomposition

    def wrong_tanh(func, args, kwargs):  # the ordinary activation computed wrongly
        x = args[0]
        return Decomposition(torch.tanh(x.full) + 0.5, torch.tanh(x.rel))

    model = nn.Sequential(nn.Linear(5, 4), nn.Tanh(), nn.Linear(4, 2)).eval()
    x = torch.randn(3, 5)
    _, delta = ContextualDecomposition(model).attribute(x, target=0, return_convergence_delta=True)
    assert delta.abs().max() < 1e-5
    _, delta = ContextualDecomposition(model, rules={torch.tanh: wrong_tanh}).attribute(
        x, target=0, return_convergence_delta=True
    )
    assert delta.abs().min() > 1e-3


def test_noise_tunnel_passes_the_convergence_delta_through(setup):
    model, x = setup
    nt = NoiseTunnel(ContextualDecomposition(model))
    attr, delta = nt.attribute(x, nt_type="smoothgrad", nt_samples=3, stdevs=0.1, target=1, return_convergence_delta=True)
    assert attr.shape == x.shape and delta.shape == (12,) and delta.abs().max() < 1e-5


def test_show_progress_draws_a_bar(setup, capsys):
    model, x = setup
    cd = ContextualDecomposition(model)
    attr = cd.attribute(x, target=1, perturbations_per_eval=16, show_progress=True)
    err = capsys.readouterr().err
    # 64 groups, 16 a pass over 4 examples: the first pass over the whole batch, then one
    # pass of the other 48 groups for each example
    assert "Contextual Decomposition attribution" in err and "100%" in err and "5/5" in err
    torch.testing.assert_close(attr, cd.attribute(x, target=1))
    cd.attribute(x, target=1)
    assert capsys.readouterr().err == ""
