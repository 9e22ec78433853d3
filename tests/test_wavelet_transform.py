"""WaveletTransform and WaveletTransform2d, the TRIM transforms over a multi-level DWT:
the concatenated coefficients against PyWavelets, perfect reconstruction (odd sizes
too), the scale and subband feature masks against pywt's coefficient sizes, TRIM with
ContextualDecomposition and Saliency against hand computations through pywt, learned
wavelets (gradients reach the filter), and errors."""

import warnings

import numpy as np
import pytest
import pywt
import torch
from captum.attr import Saliency
from torch import nn

from captum_cd import ContextualDecomposition, TRIM
from captum_cd.attr.transforms.dwt import MODES
from captum_cd.wavelets import AdaptiveWavelet, AdaptiveWavelet2d
from captum_cd.transforms import WaveletTransform, WaveletTransform2d

warnings.filterwarnings("ignore", module="captum")

TOL = dict(rtol=1e-10, atol=1e-10)
FOUR_MODES = ["zero", "periodization", "symmetric", "reflect"]
# (wavelet, levels, length): levels within pywt.dwt_max_level, odd and even lengths
CASES_1D = [("haar", 3, 16), ("db2", 2, 23), ("db5", None, 64), ("sym4", 1, 31)]


pytestmark = pytest.mark.usefixtures("one_thread")


def _pywt_concat(x, wavelet, mode, level):
    return np.concatenate(pywt.wavedec(x, wavelet, mode=mode, level=level, axis=-1), axis=-1)


def _pywt_concat_2d(x, wavelet, mode, level):
    coeffs = pywt.wavedec2(x, wavelet, mode=mode, level=level, axes=(-2, -1))
    flat = [coeffs[0].reshape(*x.shape[:-2], -1)]
    flat += [band.reshape(*x.shape[:-2], -1) for level_bands in coeffs[1:] for band in level_bands]
    return np.concatenate(flat, axis=-1), coeffs


# ------------------------------------------------------------------------- 1-D


@pytest.mark.parametrize("mode", FOUR_MODES)
@pytest.mark.parametrize("wavelet, levels, n", CASES_1D)
def test_forward_is_the_concatenated_pywt_wavedec(mode, wavelet, levels, n):
    x = np.random.default_rng(0).standard_normal((2, 3, n))
    transform = WaveletTransform(wavelet, levels=levels, mode=mode)
    s = transform(torch.tensor(x))
    expected = _pywt_concat(x, wavelet, mode, levels)
    assert s.shape == expected.shape
    torch.testing.assert_close(s, torch.tensor(expected), **TOL)
    # the group sizes pywt's coefficient lengths imply
    lengths = [len(c) for c in pywt.wavedec(x[0, 0], wavelet, mode=mode, level=levels)]
    assert transform.sizes(n) == tuple(lengths)
    ids = transform.scale_ids(n, leading=(3,))
    assert ids.shape == (1, 3, sum(lengths)) and ids.dtype == torch.int64
    assert torch.equal(ids[0, 0], ids[0, 2])
    assert torch.bincount(ids[0, 1]).tolist() == lengths
    assert (ids[0, 0].diff() >= 0).all()  # in the order [cA_J, cD_J, ..., cD_1]


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("wavelet, levels, n", CASES_1D + [("coif2", 1, 13)])
def test_inverse_of_forward_is_the_identity(mode, wavelet, levels, n):
    x = torch.tensor(np.random.default_rng(1).standard_normal((2, n)))
    transform = WaveletTransform(wavelet, levels=levels, mode=mode)
    back = transform.inverse(transform(x))
    assert back.shape == x.shape
    torch.testing.assert_close(back, x, **TOL)
    # a fresh transform that is told the length
    fixed = WaveletTransform(wavelet, levels=levels, mode=mode, length=n)
    torch.testing.assert_close(fixed.inverse(transform(x)), x, **TOL)


@pytest.mark.parametrize("mode", ["zero", "periodization", "symmetric"])
def test_inverse_without_a_known_length_is_pywt_waverec(mode):
    x = np.random.default_rng(2).standard_normal((3, 23))
    s = torch.tensor(_pywt_concat(x, "db2", mode, 2))
    fresh = WaveletTransform("db2", levels=2, mode=mode)  # never saw the 23-sample signal
    expected = pywt.waverec(pywt.wavedec(x, "db2", mode=mode, level=2), "db2", mode=mode)
    assert expected.shape[-1] == 24  # pywt's even length
    torch.testing.assert_close(fresh.inverse(s), torch.tensor(expected), **TOL)
    torch.testing.assert_close(fresh.inverse(s, length=23), torch.tensor(x), **TOL)
    coeffs = [torch.tensor(c) for c in pywt.wavedec(x, "db2", mode=mode, level=2)]
    torch.testing.assert_close(fresh.reconstruct(coeffs, length=23), torch.tensor(x), **TOL)


def test_a_lowpass_array_and_a_pywt_wavelet_equal_the_name():
    x = torch.randn(2, 40, dtype=torch.float64)
    by_name = WaveletTransform("db3", levels=2)(x)
    torch.testing.assert_close(WaveletTransform(pywt.Wavelet("db3").rec_lo, levels=2)(x), by_name, **TOL)
    torch.testing.assert_close(WaveletTransform(pywt.Wavelet("db3"), levels=2)(x), by_name, **TOL)


def test_default_levels_are_pywt_max_level():
    x = np.random.default_rng(3).standard_normal((1, 100))
    transform = WaveletTransform("db2")
    assert len(transform.sizes(100)) == pywt.dwt_max_level(100, 4) + 1
    torch.testing.assert_close(transform(torch.tensor(x)), torch.tensor(_pywt_concat(x, "db2", "zero", None)), **TOL)


# ------------------------------------------------------------------------- 2-D


@pytest.mark.parametrize("mode", FOUR_MODES)
@pytest.mark.parametrize("wavelet, levels, size", [("haar", 2, (8, 12)), ("db2", 2, (20, 17)), ("db2", None, (13, 10))])
def test_2d_forward_is_the_flattened_wavedec2_and_inverts(mode, wavelet, levels, size):
    x = np.random.default_rng(4).standard_normal((2, 1, *size))
    transform = WaveletTransform2d(wavelet, levels=levels, mode=mode)
    s = transform(torch.tensor(x))
    expected, coeffs = _pywt_concat_2d(x, wavelet, mode, levels)
    assert s.shape == expected.shape
    torch.testing.assert_close(s, torch.tensor(expected), **TOL)
    back = transform.inverse(s)
    assert back.shape == x.shape
    torch.testing.assert_close(back, torch.tensor(x), **TOL)
    torch.testing.assert_close(WaveletTransform2d(wavelet, levels=levels, mode=mode, size=size).inverse(s), torch.tensor(x), **TOL)
    # subband shapes and the two feature masks, from pywt's shapes
    shapes = [coeffs[0].shape[-2:]] + [band.shape[-2:] for bands in coeffs[1:] for band in bands]
    assert transform.shapes(size) == [tuple(p) for p in shapes]
    counts = [int(np.prod(p)) for p in shapes]
    subbands = transform.subband_ids(size, leading=(1,))
    assert subbands.shape == (1, 1, sum(counts))
    assert torch.bincount(subbands.flatten()).tolist() == counts
    scales = transform.scale_ids(size)
    per_scale = [counts[0]] + [sum(counts[i : i + 3]) for i in range(1, len(counts), 3)]
    assert torch.bincount(scales.flatten()).tolist() == per_scale


# -------------------------------------------------------------------------- TRIM


def _pywt_relevant(x, wavelet, mode, levels, keep):
    """T^-1(M s) through pywt: the signal rebuilt from the coefficient groups in ``keep``."""
    coeffs = pywt.wavedec(x, wavelet, mode=mode, level=levels, axis=-1)
    masked = [c if i in keep else np.zeros_like(c) for i, c in enumerate(coeffs)]
    return pywt.waverec(masked, wavelet, mode=mode, axis=-1)[..., : x.shape[-1]]


@pytest.mark.parametrize("mode", ["zero", "periodization"])
def test_trim_cd_over_scales_matches_pywt_and_is_complete_for_a_linear_model(mode):
    x = torch.randn(3, 16, dtype=torch.float64)
    transform = WaveletTransform("db2", levels=2, mode=mode)
    ids = transform.scale_ids(16)
    # a ReLU model: every scale's CD score from the relevant part rebuilt by pywt
    model = nn.Sequential(nn.Linear(16, 8), nn.ReLU(), nn.Linear(8, 2)).double().eval()
    cd = ContextualDecomposition(model)
    scores = TRIM(cd, transform).attribute(x, target=1, feature_mask=ids)
    assert scores.shape == (3, int(ids.numel()))
    for k in range(3):
        relevant = torch.tensor(_pywt_relevant(x.numpy(), "db2", mode, 2, {k})).unsqueeze(0)
        out = cd.forward_decomposition(x, relevant=relevant)
        torch.testing.assert_close(out.full, model(x))  # the model sees exactly x
        group = ids[0] == k
        expected = out.rel[0, :, 1].detach()
        torch.testing.assert_close(scores[:, group], expected.unsqueeze(1).expand(-1, int(group.sum())), atol=1e-10, rtol=1e-8)
    # a bias-free linear model: the scale scores add up to the output (T^-1 is exact)
    linear = nn.Linear(16, 1, bias=False).double().eval()
    per_coefficient = TRIM(ContextualDecomposition(linear), transform).attribute(x, feature_mask=ids)
    first = [int((ids[0] == k).nonzero()[0]) for k in range(3)]  # one member of each group
    torch.testing.assert_close(per_coefficient[:, first].sum(1), linear(x)[:, 0].detach(), **TOL)


def test_trim_saliency_of_a_linear_model_is_the_weight_on_each_atom():
    """For f(x) = w.x, df/ds_i = <w, psi_i>, psi_i = T^-1(e_i), built here with pywt."""
    n, x = 16, torch.randn(2, 16, dtype=torch.float64)
    linear = nn.Linear(n, 1).double().eval()
    transform = WaveletTransform("db2", levels=2, mode="symmetric")
    s = transform(x)
    sizes = [len(c) for c in pywt.wavedec(np.zeros(n), "db2", mode="symmetric", level=2)]
    atoms = []
    for i in range(s.shape[-1]):
        unit = np.split(np.eye(s.shape[-1])[i], np.cumsum(sizes)[:-1])
        atoms.append(pywt.waverec(unit, "db2", mode="symmetric")[:n])
    expected = (torch.tensor(np.array(atoms)) @ linear.weight[0].detach()).abs()
    attr = TRIM(Saliency(linear), transform).attribute(x, target=0)
    torch.testing.assert_close(attr, expected.expand(2, -1), **TOL)


def test_trim_with_channels_and_2d_subbands():
    model = nn.Sequential(nn.Conv1d(2, 3, 3), nn.Tanh(), nn.Flatten(), nn.Linear(3 * 14, 2)).double().eval()
    x = torch.randn(2, 2, 16, dtype=torch.float64)
    transform = WaveletTransform("haar", levels=3)
    ids = transform.scale_ids(16, leading=(2,))
    scores = TRIM(ContextualDecomposition(model), transform).attribute(x, target=0, feature_mask=ids)
    assert scores.shape == (2, 2, 16) and torch.isfinite(scores).all()
    image_model = nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU(), nn.Flatten(), nn.Linear(2 * 6 * 6, 2)).double().eval()
    images = torch.randn(2, 1, 8, 8, dtype=torch.float64)
    transform2d = WaveletTransform2d("haar", levels=2)
    bands = transform2d.subband_ids((8, 8), leading=(1,))
    attr = TRIM(ContextualDecomposition(image_model), transform2d).attribute(images, target=1, feature_mask=bands)
    assert attr.shape == (2, 1, 64)
    # each subband's members share one score
    for k in range(7):
        member = attr[:, 0, bands[0, 0] == k]
        assert torch.equal(member, member[:, :1].expand_as(member))


# ------------------------------------------------------------------ learned wavelets


def test_a_transform_around_an_adaptive_wavelet_passes_gradients_to_its_filter():
    wavelet = AdaptiveWavelet("db4", levels=2, init_noise=0.05, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    transform = WaveletTransform(wavelet)
    assert transform.levels == 2 and [p is wavelet.h for p in transform.parameters()] == [True]
    x = torch.randn(2, 3, 30, dtype=torch.float64)
    # the forward is pywt's with the changed filter
    expected = _pywt_concat(x.numpy(), wavelet.to_pywt(), "zero", 2)
    torch.testing.assert_close(transform(x).detach(), torch.tensor(expected), **TOL)
    (transform(x).pow(2).sum() + transform.inverse(transform(x)).sum()).backward()
    assert wavelet.h.grad is not None and wavelet.h.grad.abs().sum() > 0
    # the gradient is right (finite differences through the functional form)
    h = wavelet.h.detach().clone().requires_grad_()
    forward = lambda h: torch.func.functional_call(transform, {"wavelet.h": h}, (x[:1, :1],))
    assert torch.autograd.gradcheck(forward, (h,))
    s = transform(x[:1, 0]).detach()
    inverse = lambda h: torch.func.functional_call(_Inverse(transform, s), {"transform.wavelet.h": h}, ())  # noqa: E731
    assert torch.autograd.gradcheck(inverse, (h,))


class _Inverse(nn.Module):
    """``transform.inverse(s)`` as a module, for functional_call over the filter."""

    def __init__(self, transform, s):
        super().__init__()
        self.transform, self.s = transform, s

    def forward(self):
        return self.transform.inverse(self.s)


def test_a_2d_transform_around_an_adaptive_wavelet_2d():
    wavelet = AdaptiveWavelet2d("haar", levels=2, init_noise=0.05, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    transform = wavelet.transform()
    assert isinstance(transform, WaveletTransform2d) and transform.levels == 2
    x = torch.randn(2, 1, 8, 8, dtype=torch.float64)
    expected, _ = _pywt_concat_2d(x.numpy(), wavelet.to_pywt(), "zero", 2)
    torch.testing.assert_close(transform(x).detach(), torch.tensor(expected), **TOL)
    transform(x).pow(2).sum().backward()
    assert wavelet.h.grad.abs().sum() > 0


# ----------------------------------------------------------------------- errors


def test_clear_errors():
    with pytest.raises(ValueError, match="Unknown wavelet extension mode"):
        WaveletTransform("db2", mode="wrap")
    with pytest.raises(ValueError, match="levels must be None"):
        WaveletTransform("db2", levels=-1)
    with pytest.raises(TypeError, match="filters\\(\\) method"):
        WaveletTransform(nn.Linear(2, 2))
    with pytest.raises(TypeError, match="wavelet must be a PyWavelets name"):
        WaveletTransform(object())
    with pytest.raises(ValueError, match="even length"):
        WaveletTransform([0.5, 0.5, 0.5])
    with pytest.raises(ValueError, match="scale_ids needs the signal length"):
        WaveletTransform("db2", levels=1).scale_ids()
    with pytest.raises(ValueError, match="pass size"):
        WaveletTransform2d("haar", levels=1).inverse(torch.randn(1, 16))
    with pytest.raises(ValueError, match="image size is needed"):
        WaveletTransform2d("haar", levels=1).subband_ids()
    with pytest.raises(ValueError, match="match no signal length"):
        WaveletTransform("db2", levels=2).inverse(torch.randn(1, 3))


def test_short_signals_warn_above_pywt_max_level_and_raise_when_impossible():
    x = torch.randn(1, 5, dtype=torch.float64)  # db5 (10 taps): pywt.dwt_max_level(5, 10) == 0
    with pytest.warns(UserWarning, match="above the recommended maximum level"):
        s = WaveletTransform("db5", levels=2)(x)
    with warnings.catch_warnings():  # pywt warns alike
        warnings.simplefilter("ignore")
        expected = _pywt_concat(x.numpy(), "db5", "zero", 2)
    torch.testing.assert_close(s, torch.tensor(expected), **TOL)
    with pytest.raises(ValueError, match="impossible"):
        WaveletTransform("db5", levels=3)(x)  # 5 samples halve to one after 2 levels
    # with levels=None the signal shorter than the filter gets level 0: the identity
    transform = WaveletTransform("db5")
    torch.testing.assert_close(transform(x), x)
    torch.testing.assert_close(transform.inverse(transform(x)), x)
