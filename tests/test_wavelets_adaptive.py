"""captum_cd.wavelets.adaptive: the learnable wavelet against PyWavelets in every mode
(both return types), to_pywt and plot, the distance between wavelets, the lattice
parametrisation, and the validity terms (by hand too)."""

import math

import numpy as np
import pytest
import pywt
import torch
from torch import nn

from captum_cd.attr.transforms.dwt import MODES
from captum_cd.wavelets import (
    AdaptiveWavelet,
    AdaptiveWavelet2d,
    lattice_angles,
    lattice_filter,
    validity_terms,
    wavelet_distance,
)

from _wavelets import F64, TOL, _close, _gen, _lowpass  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_thread")


# (wavelet, length, levels): odd and even lengths, levels within pywt.dwt_max_level
CASES_1D = [("db5", 37, 1), ("sym4", 64, 2), ("haar", 16, 3), ("coif2", 50, None)]


@pytest.mark.parametrize("mode", MODES)
def test_adaptive_wavelet_is_pywt_wavedec_and_waverec_in_every_mode(mode):
    rng = np.random.default_rng(0)
    for wave, n, levels in CASES_1D:
        for shape in [(n,), (2, 3, n)]:
            x = rng.standard_normal(shape)
            wavelet = AdaptiveWavelet(wave, levels=levels, mode=mode, dtype=F64)
            coeffs = wavelet.coefficients(torch.tensor(x))
            expected = pywt.wavedec(x, wave, mode=mode, level=levels, axis=-1)
            assert len(coeffs) == len(expected)
            for ours, ref in zip(coeffs, expected):
                _close(ours, ref)
            _close(wavelet.reconstruct(coeffs), x)  # odd lengths come back whole
            s = wavelet(torch.tensor(x))  # the same coefficients as one tensor, and back
            _close(s, np.concatenate(expected, axis=-1))
            _close(wavelet.inverse(s), x)
        # the synthesis on its own: arbitrary coefficients, a module that saw no signal
        random = [rng.standard_normal(c.shape) for c in expected]
        fresh = AdaptiveWavelet(wave, levels=levels, mode=mode, dtype=F64)
        _close(fresh.reconstruct([torch.tensor(c) for c in random]), pywt.waverec(random, wave, mode=mode, axis=-1))


@pytest.mark.parametrize("mode", MODES)
def test_adaptive_wavelet_2d_is_pywt_wavedec2_and_waverec2(mode):
    rng = np.random.default_rng(1)
    x = rng.standard_normal((2, 1, 20, 17))
    wavelet = AdaptiveWavelet2d("db2", levels=2, mode=mode, dtype=F64)
    coeffs = wavelet.coefficients(torch.tensor(x))
    expected = pywt.wavedec2(x, "db2", mode=mode, level=2, axes=(-2, -1))
    _close(coeffs[0], expected[0])
    for ours, ref in zip(coeffs[1:], expected[1:]):
        for a, b in zip(ours, ref):
            _close(a, b)
    _close(wavelet.reconstruct(coeffs), x)
    _close(wavelet.inverse(wavelet(torch.tensor(x))), x)
    random = [rng.standard_normal(expected[0].shape)] + [tuple(rng.standard_normal(b.shape) for b in lv) for lv in expected[1:]]
    fresh = AdaptiveWavelet2d("db2", levels=2, mode=mode, dtype=F64)
    ours = fresh.reconstruct([torch.tensor(random[0])] + [tuple(torch.tensor(b) for b in lv) for lv in random[1:]])
    _close(ours, pywt.waverec2(random, "db2", mode=mode, axes=(-2, -1)))


@pytest.mark.parametrize("parametrization", ["filter", "lattice"])
def test_to_pywt_follows_the_changed_filter_and_plot_writes_a_file(parametrization, tmp_path):
    wavelet = AdaptiveWavelet("db4", levels=2, mode="symmetric", init_noise=0.1, generator=_gen(0), parametrization=parametrization, dtype=F64)
    h = wavelet.lowpass().detach()
    assert (h - _lowpass("db4")).abs().max() > 1e-3  # the noise moved it
    as_pywt = wavelet.to_pywt()
    assert isinstance(as_pywt, pywt.Wavelet)
    np.testing.assert_allclose(as_pywt.rec_lo, h.numpy(), rtol=0, atol=1e-15)
    x = np.random.default_rng(2).standard_normal((3, 40))
    for ours, ref in zip(wavelet.coefficients(torch.tensor(x)), pywt.wavedec(x, as_pywt, mode="symmetric", level=2)):
        _close(ours, ref)
    path = wavelet.plot(str(tmp_path / "wavelet.png"), level=4)
    assert path == str(tmp_path / "wavelet.png") and (tmp_path / "wavelet.png").stat().st_size > 1000


def test_wavelet_distance_is_the_best_shift_or_reversal_of_psi():
    def brute_force(a, b, level=5):
        psi_a, psi_b = pywt.Wavelet(a).wavefun(level)[1], pywt.Wavelet(b).wavefun(level)[1]
        size = max(len(psi_a), len(psi_b))
        psi_a, psi_b = np.pad(psi_a, (0, size - len(psi_a))), np.pad(psi_b, (0, size - len(psi_b)))
        return min(np.linalg.norm(np.roll(c, k) - psi_b) for c in (psi_a, psi_a[::-1]) for k in range(size))

    assert wavelet_distance("db5", "db5") == pytest.approx(0.0, abs=1e-6)
    assert wavelet_distance(AdaptiveWavelet("db5"), _lowpass("db5").numpy()) == pytest.approx(0.0, abs=1e-6)
    for a, b in [("db4", "db2"), ("sym4", "db4"), ("coif2", "haar")]:
        assert wavelet_distance(a, b) == pytest.approx(brute_force(a, b), rel=1e-9, abs=1e-9)
        assert wavelet_distance(a, b) > 0.1


@pytest.mark.parametrize("name", ["haar", "db4", "db5", "sym4", "coif2"])
def test_lattice_angles_and_filter_recover_pywt_lowpass(name):
    h = _lowpass(name)
    angles = lattice_angles(h)
    assert angles.shape == (len(h) // 2 - 1,)
    _close(lattice_filter(angles), h)  # sym4's taps are printed to ~1e-12; the tolerance is 1e-10


def test_every_lattice_filter_is_a_valid_orthogonal_wavelet():
    generator = _gen(3)
    for k in range(6):
        angles = (torch.rand(k, generator=generator, dtype=F64) * 2 - 1) * math.pi
        h = lattice_filter(angles)
        assert h.shape == (2 * k + 2,)
        for name, value in validity_terms(h).items():
            assert float(value) < 1e-20, (k, name, float(value))
        # orthogonal: the periodized DWT keeps the norm and inverts exactly
        wavelet = AdaptiveWavelet(h, mode="periodization", levels=1, dtype=F64)
        x = torch.randn(3, 16, dtype=F64, generator=generator)
        torch.testing.assert_close(wavelet(x).norm(dim=-1), x.norm(dim=-1), **TOL)
    # the lattice module keeps that for any parameter value
    lattice = AdaptiveWavelet("db4", parametrization="lattice", init_noise=1.0, generator=generator, dtype=F64)
    assert isinstance(lattice.angles, nn.Parameter) and lattice.angles.shape == (3,)
    assert max(float(v) for v in lattice.validity().values()) < 1e-20
    with pytest.raises(ValueError, match="parametrization='filter'"):
        lattice_angles(_lowpass("db4") * 1.1)


@pytest.mark.parametrize("name", ["db5", "sym4", "haar", "coif2", "db2"])
def test_validity_terms_vanish_at_orthogonal_wavelets(name):
    terms = validity_terms(_lowpass(name))
    assert list(terms) == ["lowpass_sum", "highpass_sum", "unit_norm", "cmf", "double_shift"]
    for key, value in terms.items():
        assert value.dim() == 0 and abs(float(value)) < 1e-10, (key, float(value))


def test_validity_terms_are_positive_at_a_perturbed_filter():
    h = _lowpass("db5") + 0.05 * torch.randn(10, generator=_gen(4), dtype=F64)
    terms = validity_terms(h)
    for key, value in terms.items():
        assert float(value) > 1e-10, (key, float(value))


def test_validity_terms_by_hand():
    # haar perturbed, h = (a, b): g = (b, -a); |H(w)|^2 + |H(w + pi)|^2 = 2 (a^2 + b^2) at
    # both grid points w = 0, pi/2; the only even lag is 0.
    a, b = 0.8, 0.5
    terms = validity_terms(torch.tensor([a, b], dtype=F64))
    norm = a * a + b * b - 1
    expected = {
        "lowpass_sum": (a + b - math.sqrt(2)) ** 2,
        "highpass_sum": (b - a) ** 2,
        "unit_norm": norm**2,
        "cmf": 2 * (2 * norm) ** 2,
        "double_shift": norm**2,
    }
    for key, value in expected.items():
        assert float(terms[key]) == pytest.approx(value, rel=1e-12, abs=1e-15), key
    # h = (1, 1, 1, 1) / 2: unit norm, sum 2; |H(w)|^2 + |H(w + pi)|^2 - 2 = 2 cos 2w, which
    # at w = 0, pi/4, pi/2, 3pi/4 squares to 4, 0, 4, 0; the lag-2 autocorrelation is 1/2
    terms = validity_terms(torch.full((4,), 0.5, dtype=F64))
    assert float(terms["lowpass_sum"]) == pytest.approx((2 - math.sqrt(2)) ** 2)
    assert float(terms["highpass_sum"]) == pytest.approx(0, abs=1e-15)
    assert float(terms["unit_norm"]) == pytest.approx(0, abs=1e-15)
    assert float(terms["cmf"]) == pytest.approx(8.0)
    assert float(terms["double_shift"]) == pytest.approx(2 * 0.5**2)
