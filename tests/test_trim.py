"""TRIM: attributions in a transformed space, over CD and over Captum's methods."""

import warnings

import pytest
import torch
from captum.attr import DeepLift, FeatureAblation, GradientShap, IntegratedGradients, KernelShap, Saliency
from torch import nn

from captum_cd import ContextualDecomposition, TRIM
from captum_cd.transforms import DictionaryTransform, Fourier1d, Fourier2d, Transform, frequency_bins, radial_bands

warnings.filterwarnings("ignore", module="captum")


class Identity(Transform):
    def forward(self, x):
        return x

    def inverse(self, s):
        return s


def mlp():
    return nn.Sequential(nn.Linear(16, 12), nn.ReLU(), nn.Linear(12, 3)).eval()


@pytest.mark.parametrize(
    "make, kwargs",
    [
        (IntegratedGradients, {"n_steps": 20}),
        (DeepLift, {}),
        (Saliency, {}),
        (FeatureAblation, {}),
        (ContextualDecomposition, {}),
    ],
)
def test_identity_transform_equals_the_method_itself(make, kwargs):
    model, x = mlp(), torch.randn(4, 16)
    ids = (torch.arange(16) // 4).view(1, 16)
    direct = make(model).attribute(x, target=2, **kwargs, **({"feature_mask": ids} if make in (FeatureAblation, ContextualDecomposition) else {}))
    through = TRIM(make(model), Identity()).attribute(x, target=2, feature_mask=ids if make in (FeatureAblation, ContextualDecomposition) else None, **kwargs)
    torch.testing.assert_close(through, direct.detach(), atol=1e-5, rtol=1e-5)


def test_group_sums_for_methods_without_a_feature_mask():
    model, x = mlp(), torch.randn(3, 16)
    ids = (torch.arange(16) // 4).view(1, 16)
    pixel = IntegratedGradients(model).attribute(x, target=0, n_steps=20)
    grouped = TRIM(IntegratedGradients(model), Identity()).attribute(x, target=0, feature_mask=ids, n_steps=20)
    torch.testing.assert_close(grouped[:, 0], pixel[:, :4].sum(1).detach(), atol=1e-6, rtol=1e-5)
    assert torch.equal(grouped[:, 0], grouped[:, 3])


@pytest.mark.parametrize(
    "transform, shape",
    [
        (Fourier1d(15), (3, 2, 15)),
        (Fourier1d(16), (3, 16)),
        (Fourier2d((7, 6)), (2, 1, 7, 6)),
        (DictionaryTransform(torch.randn(10, 16)), (3, 16)),
    ],
)
def test_inverse_of_forward_is_the_identity(transform, shape):
    x = torch.randn(shape, dtype=torch.float64)
    transform = transform.double()
    if isinstance(transform, DictionaryTransform):  # an overcomplete dictionary spans everything
        transform = DictionaryTransform(torch.randn(20, 16, dtype=torch.float64)).double()
    torch.testing.assert_close(transform.inverse(transform(x)), x, atol=1e-6, rtol=1e-6)


def test_cd_through_a_transform_is_complete_and_relevant_is_the_inverse_of_the_group():
    model, x = mlp(), torch.randn(2, 16)
    transform, bins = Fourier1d(16), frequency_bins(16)
    s = transform(x)
    cd = ContextualDecomposition(model)
    scores = TRIM(cd, transform).attribute(x, target=1, feature_mask=bins)
    for k in (0, 3, 8):
        mask = (bins == k).float()
        relevant = transform.inverse(mask * s).unsqueeze(0)  # T^-1(M s)
        out = cd.forward_decomposition(x, relevant=relevant)
        torch.testing.assert_close(out.full, model(x))  # irrelevant = x - T^-1(M s): complete
        torch.testing.assert_close(scores[:, k, 0], out.rel[0, :, 1].detach())
    # all bins together: everything is relevant but the biases' share
    every = TRIM(cd, transform).attribute(x, target=1, feature_mask=torch.zeros_like(bins))
    rel_all, _ = cd.decompose(x, torch.ones(1, 16))
    torch.testing.assert_close(every[:, 0, 0], rel_all[0, :, 1].detach(), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("make", [ContextualDecomposition, FeatureAblation])
def test_a_feature_mask_without_the_batch_dimension_broadcasts_as_in_cd(make):
    model, x = mlp(), torch.randn(2, 16)
    bins = frequency_bins(16, band=2)  # (1, 9, 2)
    trim = TRIM(make(model), Fourier1d(16))
    torch.testing.assert_close(trim.attribute(x, target=1, feature_mask=bins[0]), trim.attribute(x, target=1, feature_mask=bins))


def test_residual_trick_for_a_dictionary_that_does_not_span():
    model, x = mlp(), torch.randn(3, 16)
    transform = DictionaryTransform(torch.randn(5, 16))  # 5 atoms: a residual is left
    s = transform(x)
    assert (transform.inverse(s) - x).abs().max() > 0.1
    attr = TRIM(IntegratedGradients(model), transform).attribute(x, target=0, n_steps=50)
    # IG's completeness on f o T^-1 with the residual: attributions sum to f(x) - f(T^-1(0) + residual)
    residual = x - transform.inverse(s)
    gap = model(x)[:, 0] - model(transform.inverse(torch.zeros_like(s)) + residual)[:, 0]
    torch.testing.assert_close(attr.sum(1), gap.detach(), atol=1e-3, rtol=1e-3)


def test_gradients_flow_through_inverse_and_complex_magnitude():
    model, x = mlp(), torch.randn(2, 16)
    attr = TRIM(Saliency(model), Fourier1d(16)).attribute(x, target=0)
    assert attr.shape == (2, 9, 2) and attr.abs().sum() > 0
    magnitude = TRIM(GradientShap(model), Fourier1d(16)).attribute(x, target=0, complex_magnitude=True, n_samples=5)
    assert magnitude.shape == (2, 9) and (magnitude >= 0).all()
    bands = TRIM(KernelShap(model), Fourier1d(16)).attribute(x, target=0, feature_mask=frequency_bins(16, band=3), n_samples=30)
    assert torch.equal(bands[:, 0], bands[:, 2])


def test_radial_bands_and_images():
    model = nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU(), nn.Flatten(), nn.Linear(2 * 6 * 6, 2)).eval()
    x = torch.randn(2, 1, 8, 8)
    ids = radial_bands((8, 8), bands=4, leading=(1,))
    assert ids.shape == (1, 1, 8, 5, 2) and set(ids.unique().tolist()) == {0, 1, 2, 3}
    attr = TRIM(ContextualDecomposition(model), Fourier2d((8, 8))).attribute(x, target=1, feature_mask=ids)
    assert attr.shape == (2, 1, 8, 5, 2)


def test_clear_errors():
    model = mlp()

    class NoInverse(nn.Module):
        def forward(self, x):
            return x

    with pytest.raises(TypeError, match="no inverse"):
        TRIM(Saliency(model), NoInverse())
    with pytest.raises(TypeError, match="Captum attribution"):
        TRIM(model, Fourier1d(16))
    with pytest.raises(ValueError, match=r"feature_mask 0 has shape \(1, 16\), which does not broadcast to the coefficients' shape \(2, 9, 2\)"):
        TRIM(Saliency(model), Fourier1d(16)).attribute(torch.randn(2, 16), target=0, feature_mask=torch.zeros(1, 16, dtype=torch.long))
    with pytest.raises(TypeError, match="feature_mask 0 must hold integer group ids, not torch.float32"):  # CD's messages
        TRIM(Saliency(model), Fourier1d(16)).attribute(torch.randn(2, 16), target=0, feature_mask=torch.zeros(1, 9, 2))
    assert TRIM(Saliency(model), Fourier1d(16)).get_name() == "TRIM"


def test_captum_conventions():
    from captum.attr import NoiseTunnel
    from captum.metrics import sensitivity_max

    torch.manual_seed(0)
    model, x = mlp(), torch.randn(4, 16)
    fourier, bins = Fourier1d(16), frequency_bins(16)
    assert TRIM(ContextualDecomposition(model), fourier).get_name() == "TRIM"
    trim = TRIM(ContextualDecomposition(model), fourier)
    by_keyword = trim.attribute(x, target=1, feature_mask=bins)
    torch.testing.assert_close(trim.attribute(x, None, 1, None, bins), by_keyword)  # Captum's order
    (as_tuple,) = trim.attribute((x,), target=1, feature_mask=bins)
    torch.testing.assert_close(as_tuple, by_keyword)
    with pytest.raises(ValueError, match="takes no baselines.*target="):
        trim.attribute(x, torch.tensor([0, 1, 2, 1]))
    sens = sensitivity_max(trim.attribute, x, target=1, feature_mask=bins, n_perturb_samples=2)
    assert sens.shape == (4,) and torch.isfinite(sens).all()

    # CD's convergence delta through the transform, against an ordinary forward pass.
    attr, delta = trim.attribute(x, target=1, feature_mask=bins, return_convergence_delta=True)
    torch.testing.assert_close(attr, by_keyword)
    assert delta.shape == (4,) and delta.abs().max() < 1e-5


def test_noise_tunnel_and_convergence_delta_of_captum_methods():
    from captum.attr import NoiseTunnel

    torch.manual_seed(1)
    model, x = mlp(), torch.randn(3, 16)
    fourier = Fourier1d(16)
    ig = TRIM(IntegratedGradients(model), fourier)
    attr, delta = ig.attribute(x, target=2, n_steps=200, return_convergence_delta=True)
    assert ig.has_convergence_delta() and delta.shape == (3,) and delta.abs().max() < 1e-2
    # IG's completeness holds in coefficient space: the scores sum to f(x) - f(T^-1(0)).
    total = model(x)[:, 2] - model(torch.zeros_like(x))[:, 2]
    torch.testing.assert_close(attr.flatten(1).sum(1), total.detach(), atol=1e-2, rtol=0)

    nt = TRIM(NoiseTunnel(IntegratedGradients(model)), fourier)
    smooth = nt.attribute(x, target=2, nt_type="smoothgrad", nt_samples=2, stdevs=0.0, n_steps=20)
    torch.testing.assert_close(smooth, TRIM(IntegratedGradients(model), fourier).attribute(x, target=2, n_steps=20))
    noisy = nt.attribute(x, target=2, nt_type="smoothgrad", nt_samples=3, stdevs=0.5, n_steps=20)
    assert noisy.shape == smooth.shape and not torch.allclose(noisy, smooth)


def test_show_progress(capsys):
    model, x = mlp(), torch.randn(2, 16)
    TRIM(ContextualDecomposition(model), Fourier1d(16)).attribute(x, target=0, perturbations_per_eval=3, show_progress=True)
    assert "TRIM attribution" in capsys.readouterr().err
    TRIM(FeatureAblation(model), Fourier1d(16)).attribute(x, target=0, show_progress=True)
    assert "Feature Ablation" in capsys.readouterr().err
