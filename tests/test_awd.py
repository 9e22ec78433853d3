"""Adaptive wavelet distillation: the learnable wavelet against PyWavelets in every mode,
the lattice parametrisation, the validity terms (by hand too), AWDLoss's gradients
(gradcheck) and its interpretation term against hand derivations for linear teachers,
fit_wavelet on a small simulation, and the distilled scikit-learn estimators."""

import math
import warnings

import numpy as np
import pytest
import pywt
import torch
from sklearn.linear_model import LinearRegression
from sklearn.model_selection import GridSearchCV
from sklearn.utils.estimator_checks import parametrize_with_checks
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from captum_cd.attr.transforms.dwt import MODES
from captum_cd.wavelets import (
    AdaptiveWavelet,
    AdaptiveWavelet2d,
    AWDLoss,
    fit_wavelet,
    lattice_angles,
    lattice_filter,
    top_coefficients,
    validity_terms,
    wavelet_distance,
    WaveletDistilledRegressor,
    WaveletDistilledClassifier,
)
from captum_cd.transforms import WaveletTransform

TOL = dict(rtol=1e-10, atol=1e-10)
F64 = torch.float64
METHODS = ["saliency", "input_x_gradient", "cd"]
TERMS = ["reconstruction", "lowpass_sum", "highpass_sum", "unit_norm", "cmf", "double_shift", "sparsity", "interpretation", "total"]


pytestmark = pytest.mark.usefixtures("one_thread")


def _gen(seed):
    return torch.Generator().manual_seed(seed)


def _lowpass(name):
    return torch.tensor(pywt.Wavelet(name).rec_lo, dtype=F64)


def _close(ours, ref, **tol):
    ref = torch.as_tensor(np.asarray(ref))
    assert tuple(ours.shape) == tuple(ref.shape), (tuple(ours.shape), tuple(ref.shape))
    torch.testing.assert_close(ours.detach(), ref, **(tol or TOL))


# -------------------------------------------------------------------- the wavelet

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


# ------------------------------------------------------------------- lattice


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


# -------------------------------------------------------------------- validity


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


# --------------------------------------------------------------------- AWDLoss


def _teacher(n=12, outputs=1, seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(n, 6), nn.Tanh(), nn.Linear(6, outputs)).double().eval()


def _noisy(wave="db2", levels=2, seed=0, **kwargs):
    return AdaptiveWavelet(wave, levels=levels, init_noise=0.05, generator=_gen(seed), dtype=F64, **kwargs)


def _stack(terms):
    return torch.stack([terms[k] for k in TERMS])


@pytest.mark.parametrize("method", METHODS)
def test_gradcheck_of_every_term_in_the_filter(method):
    teacher, wavelet = _teacher(), _noisy()
    x = torch.randn(3, 12, dtype=F64, generator=_gen(5))
    for dense in (True, False):
        loss = AWDLoss(teacher, wavelet, lam_l1=0.3, lam_interp=0.7, lam_wave=2.0, method=method, dense=dense)
        terms = lambda h: _stack(torch.func.functional_call(loss, {"wavelet.h": h}, (x,)))  # noqa: E731
        h = wavelet.h.detach().clone().requires_grad_()
        assert torch.autograd.gradcheck(terms, (h,), atol=1e-6, rtol=1e-4)


def test_gradcheck_in_the_lattice_angles_and_for_a_class_target():
    teacher = _teacher(outputs=3)
    wavelet = AdaptiveWavelet("db3", levels=1, parametrization="lattice", init_noise=0.1, generator=_gen(6), dtype=F64)
    x = torch.randn(2, 12, dtype=F64, generator=_gen(7))
    loss = AWDLoss(teacher, wavelet, method="saliency", target=2)
    terms = lambda a: _stack(torch.func.functional_call(loss, {"wavelet.angles": a}, (x,)))  # noqa: E731
    assert torch.autograd.gradcheck(terms, (wavelet.angles.detach().clone().requires_grad_(),), atol=1e-6, rtol=1e-4)


@pytest.mark.parametrize("method", METHODS)
def test_backward_trains_the_wavelet_only(method):
    teacher, wavelet = _teacher(), _noisy()
    loss = AWDLoss(teacher, wavelet, method=method)
    assert [p is wavelet.h for p in loss.parameters()] == [True]
    assert list(loss.state_dict()) == ["wavelet.h", "wavelet.h_init"]
    terms = loss(torch.randn(4, 12, dtype=F64))
    assert set(terms) == set(TERMS) and all(t.dim() == 0 for t in terms.values())
    validity = ["lowpass_sum", "highpass_sum", "unit_norm", "cmf", "double_shift"]
    expected_total = terms["reconstruction"] + terms["sparsity"] + terms["interpretation"] + sum(terms[k] for k in validity)
    torch.testing.assert_close(terms["total"], expected_total)  # lam_wave = 1
    terms["total"].backward()
    assert wavelet.h.grad is not None and wavelet.h.grad.abs().sum() > 0
    assert all(p.grad is None for p in teacher.parameters())
    assert all(p.requires_grad for p in teacher.parameters())  # restored after the pass
    assert not teacher.training


@pytest.mark.parametrize("method", METHODS)
def test_dense_and_convolution_paths_give_the_same_terms(method):
    wavelet = _noisy("db3", levels=2, mode="symmetric")
    x = torch.randn(4, 20, dtype=F64, generator=_gen(8))
    teacher = _teacher(n=20)
    dense = AWDLoss(teacher, wavelet, method=method, dense=True)(x)
    convolution = AWDLoss(teacher, wavelet, method=method, dense=False)(x)
    for key in TERMS:
        torch.testing.assert_close(dense[key], convolution[key], **TOL)
    # with a channel dimension
    teacher = nn.Sequential(nn.Flatten(), nn.Linear(2 * 20, 4), nn.Softplus(), nn.Linear(4, 1)).double().eval()
    x = torch.randn(3, 2, 20, dtype=F64, generator=_gen(9))
    dense = AWDLoss(teacher, wavelet, method=method, dense=True)(x)
    convolution = AWDLoss(teacher, wavelet, method=method, dense=False)(x)
    for key in TERMS:
        torch.testing.assert_close(dense[key], convolution[key], **TOL)


def _pywt_atoms_and_coefficients(wavelet, x, levels, mode):
    """psi_i (pywt.waverec of the unit coefficient vectors, cut to N) and s = wavedec(x)."""
    w, n = wavelet.to_pywt(), x.shape[-1]
    coeffs = pywt.wavedec(x, w, mode=mode, level=levels, axis=-1)
    sizes = [c.shape[-1] for c in coeffs]
    eye = np.eye(sum(sizes))
    atoms = np.stack([pywt.waverec(np.split(row, np.cumsum(sizes)[:-1]), w, mode=mode)[:n] for row in eye])
    return torch.tensor(atoms), torch.tensor(np.concatenate(coeffs, -1))


@pytest.mark.parametrize("bias", [False, True])
@pytest.mark.parametrize("mode", ["zero", "symmetric", "periodization"])
def test_interpretation_of_a_linear_teacher_by_hand(mode, bias):
    """f(x) = w.x + b: CD gives coefficient i the relevant part u_i = s_i <w, psi_i> plus
    the bias share b |u_i| / (|u_i| + |w.x - u_i|); saliency is |<w, psi_i>| and
    input x gradient s_i <w, psi_i>."""
    n = 16
    teacher = nn.Linear(n, 1, bias=bias).double().eval()
    wavelet = _noisy("db2", levels=2, mode=mode, seed=10)  # a perturbed (non-orthogonal) filter
    x = torch.randn(3, n, dtype=F64, generator=_gen(11))
    atoms, s_ref = _pywt_atoms_and_coefficients(wavelet, x.numpy(), 2, mode)
    w = teacher.weight[0].detach()
    weight_on_atom = atoms @ w  # <w, psi_i>
    u = s_ref * weight_on_atom
    if bias:
        b = teacher.bias.detach()
        v = (x @ w).unsqueeze(1) - u
        cd_expected = u + b * u.abs() / (u.abs() + v.abs())
    else:
        cd_expected = u
    expected = {"cd": cd_expected, "saliency": weight_on_atom.abs().expand_as(s_ref), "input_x_gradient": u}
    for method, values in expected.items():
        loss = AWDLoss(teacher, wavelet, method=method, lam_interp=0.5)
        s = loss.transform(x)
        _close(s, s_ref)
        attr = loss.attributions(x, s)
        torch.testing.assert_close(attr.detach(), values, rtol=1e-8, atol=1e-10)
        interpretation = loss(x)["interpretation"]
        torch.testing.assert_close(interpretation.detach(), 0.5 * values.abs().sum(1).mean(), rtol=1e-8, atol=1e-10)


def test_reconstruction_and_sparsity_by_hand():
    wavelet = _noisy("db2", levels=1, mode="zero", seed=12)
    x = torch.randn(5, 10, dtype=F64, generator=_gen(13))
    w = wavelet.to_pywt()
    coeffs = pywt.wavedec(x.numpy(), w, mode="zero", level=1)
    back = pywt.waverec(coeffs, w, mode="zero")[:, :10]
    terms = AWDLoss(nn.Linear(10, 1).double().eval(), wavelet, lam_l1=0.25, lam_interp=0)(x)
    assert float(terms["reconstruction"]) == pytest.approx(((x.numpy() - back) ** 2).sum(1).mean(), rel=1e-8)
    assert float(terms["reconstruction"]) > 1e-8  # the perturbed filter does not reconstruct exactly
    assert float(terms["sparsity"]) == pytest.approx(0.25 * np.abs(np.concatenate(coeffs, -1)).sum(1).mean(), rel=1e-10)
    assert float(terms["interpretation"]) == 0.0


def test_awd_loss_works_under_no_grad_and_at_level_zero():
    teacher = _teacher(n=3)
    with torch.no_grad():  # evaluating the loss: gradients are the saliency itself
        terms = AWDLoss(teacher, _noisy(levels=1), method="saliency")(torch.randn(2, 3, dtype=F64))
    assert torch.isfinite(terms["total"])
    # 3 samples and 4 taps: level 0, s = x; the interpretation is a constant in the filter
    wavelet = AdaptiveWavelet("db2", dtype=F64)
    terms = AWDLoss(teacher, wavelet, method="saliency")(torch.randn(2, 3, dtype=F64))
    terms["total"].backward()
    assert wavelet.h.grad is not None


# ---------------------------------------------------------------------- fit_wavelet


def _simulation(n_train=300, n=32, seed=0):
    """White-noise signals; the teacher is the linear map y = 1.0 cD_2[3] - 2.0 cD_1[5]
    of their db4 coefficients (its weights are those analysis rows, from pywt)."""
    rows = np.concatenate(pywt.wavedec(np.eye(n), "db4", mode="zero", level=2, axis=-1), axis=-1).T
    sizes = [len(c) for c in pywt.wavedec(np.zeros(n), "db4", mode="zero", level=2)]
    beta = np.zeros(rows.shape[0])
    beta[sizes[0] + 3], beta[sizes[0] + sizes[1] + 5] = 1.0, -2.0
    teacher = nn.Linear(n, 1, bias=False).double().eval()
    with torch.no_grad():
        teacher.weight.copy_(torch.tensor(beta @ rows).view(1, n))
    x = torch.randn(n_train, n, dtype=F64, generator=_gen(seed))
    return teacher, x


def _snapshot(model):
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


@pytest.mark.parametrize("method", ["saliency", "cd"])
def test_fit_wavelet_reduces_the_loss_and_leaves_the_teacher_alone(method):
    teacher, x = _simulation()
    before = _snapshot(teacher)
    wavelet = AdaptiveWavelet("db4", levels=2, init_noise=0.1, generator=_gen(0), dtype=F64)
    start = wavelet.h.detach().clone()
    fitted, history = fit_wavelet(teacher, x, wavelet, lr=5e-3, epochs=3, progress=False, generator=_gen(1), method=method)
    assert fitted is wavelet and (wavelet.h.detach() - start).abs().max() > 1e-4
    assert history["total"][-1] < history["total"][0]
    assert set(history) == set(TERMS) and all(len(v) == 3 for v in history.values())
    assert "validation" not in history
    for key, value in _snapshot(teacher).items():
        assert torch.equal(value, before[key])
    assert not teacher.training and all(p.grad is None and p.requires_grad for p in teacher.parameters())


def test_fit_wavelet_early_stops_and_restores_the_best_state():
    teacher, x = _simulation()
    validation = torch.randn(100, 32, dtype=F64, generator=_gen(2))

    def run(epochs, validation=None):
        wavelet = AdaptiveWavelet("db4", levels=2, init_noise=0.1, generator=_gen(0), dtype=F64)
        return fit_wavelet(teacher, x, wavelet, lr=0.2, epochs=epochs, validation=validation, patience=2, progress=False, generator=_gen(1))

    wavelet, history = run(12, validation)
    best = int(np.argmin(history["validation"]))
    # stopped `patience` epochs after the best, well before 12
    assert len(history["validation"]) == len(history["total"]) == best + 1 + 2 < 12
    # the restored filter is the one after the best epoch (validation does not touch the shuffling)
    replay, _ = run(best + 1)
    torch.testing.assert_close(wavelet.h, replay.h, rtol=0, atol=0)
    assert history["validation"][best] == pytest.approx(min(history["validation"]))


def test_fit_wavelet_data_loader_dtype_device_and_warnings():
    teacher, x = _simulation(n_train=40)
    loader = DataLoader(TensorDataset(x, torch.zeros(40)), batch_size=16)
    wavelet, history = fit_wavelet(teacher, loader, AdaptiveWavelet("db4", levels=2, dtype=F64), epochs=2, progress=False)
    assert len(history["total"]) == 2
    # the default wavelet is db5, on the data's device
    default, _ = fit_wavelet(teacher, x, epochs=1, progress=False, lam_interp=0)
    assert default.filter_length == 10 and default.h.device == x.device
    teacher.train()
    with pytest.warns(UserWarning, match="training mode"):
        fit_wavelet(teacher, x, AdaptiveWavelet("db4", levels=2, dtype=F64), epochs=1, progress=False)
    assert teacher.training  # the mode is the user's
    teacher.eval()
    meta = nn.Linear(32, 1, device="meta")
    with pytest.raises(ValueError, match="the model is on meta but the data is on cpu"):
        fit_wavelet(meta, x, epochs=1, progress=False)
    with pytest.raises(ValueError, match="batch_size must be >= 1"):
        fit_wavelet(teacher, x, epochs=1, batch_size=0, progress=False)
    with pytest.raises(ValueError, match="no examples"):
        fit_wavelet(teacher, x[:0], epochs=1, progress=False)
    with pytest.raises(ValueError, match="no examples"):
        fit_wavelet(teacher, DataLoader(TensorDataset(x[:0]), batch_size=4), epochs=1, progress=False)


# ----------------------------------------------------------------- distillation


def test_top_coefficients_by_hand():
    coeffs = [np.array([[1.0, -3.0], [0.5, 0.2]]), np.array([[2.0, -1.0, 4.0], [-5.0, 0.0, 1.0]])]
    np.testing.assert_array_equal(top_coefficients(coeffs, 2), [[-3.0, 1.0, 4.0, 2.0], [0.5, 0.2, -5.0, 1.0]])
    np.testing.assert_array_equal(top_coefficients(coeffs, 1), [[-3.0, 4.0], [0.5, -5.0]])
    # a scale with fewer than m coefficients keeps all of them
    np.testing.assert_array_equal(top_coefficients(coeffs, 3), [[-3.0, 1.0, 4.0, 2.0, -1.0], [0.5, 0.2, -5.0, 1.0, 0.0]])
    # ties keep their order
    np.testing.assert_array_equal(top_coefficients([np.array([[1.0, -1.0, 0.5]])], 2), [[1.0, -1.0]])


def _planted(n_samples=200, n=64, seed=0):
    """Signals with one large db5 coefficient per detail scale at a random position (and
    small ones elsewhere), built by the orthogonal (periodization) inverse DWT; y is a
    linear function of the planted coefficients."""
    rng = np.random.default_rng(seed)
    template = pywt.wavedec(np.zeros(n), "db5", mode="periodization", level=2)
    X, amplitudes = [], []
    for _ in range(n_samples):
        coeffs = [0.05 * rng.standard_normal(len(c)) for c in template]
        planted = 3 + rng.standard_normal(len(template) - 1)  # |a| > ~1, far above the rest
        for j, a in enumerate(planted, start=1):
            coeffs[j][rng.integers(len(coeffs[j]))] = a * rng.choice([-1, 1])
        X.append(pywt.waverec(coeffs, "db5", mode="periodization"))
        amplitudes.append([max(c, key=abs) for c in coeffs[1:]])
    amplitudes = np.array(amplitudes)
    y = 2.0 * amplitudes[:, 0] - 1.5 * amplitudes[:, 1] + 0.05 * rng.standard_normal(n_samples)
    return np.array(X), y


def test_distilled_regressor_and_classifier_fit_predict_and_attributes():
    X, y = _planted()
    model = WaveletDistilledRegressor("db5", levels=2, mode="periodization", m=1)
    assert model.fit(X, y) is model
    assert model.n_features_in_ == 64 and isinstance(model.wavelet_, pywt.Wavelet)
    assert not hasattr(model, "history_")
    fitted = {k for k in vars(model) if k.endswith("_") and not k.startswith("_")}
    assert {"wavelet_", "estimator_", "n_features_in_"} <= fitted
    assert model.score(X, y) > 0.9  # R^2: y is linear in the top coefficient of each detail scale
    expected = top_coefficients(pywt.wavedec(X, "db5", mode="periodization", level=2, axis=-1), 1)
    np.testing.assert_allclose(model.transform(X), expected)
    assert model.predict(X[:5]).shape == (5,)
    classifier = WaveletDistilledClassifier("db5", levels=2, mode="periodization", m=1)
    labels = np.where(y > 0, "up", "down")
    assert classifier.fit(X, labels) is classifier
    assert sorted(classifier.classes_) == ["down", "up"]
    assert classifier.score(X, labels) > 0.9
    assert classifier.predict_proba(X[:3]).shape == (3, 2)


def test_grid_search_over_m_and_over_lam_interp_with_a_teacher():
    X, y = _planted(n_samples=90)
    search = GridSearchCV(WaveletDistilledRegressor("db5", levels=2, mode="periodization"), {"m": [1, 2]}, cv=3).fit(X, y)
    assert search.best_params_["m"] in (1, 2) and search.best_score_ > 0.8
    assert len(search.cv_results_["params"]) == 2
    teacher = nn.Linear(64, 1).double().eval()
    with torch.no_grad():
        teacher.weight.copy_(torch.tensor(LinearRegression().fit(X, y).coef_).view(1, 64))
    before = teacher.weight.detach().clone()
    distilled = WaveletDistilledRegressor("db5", levels=2, mode="periodization", m=1, teacher=teacher, epochs=1, batch_size=30, random_state=0)
    search = GridSearchCV(distilled, {"lam_interp": [0.0, 0.1]}, cv=2).fit(X, y)
    assert len(search.cv_results_["params"]) == 2
    best = search.best_estimator_
    assert len(best.history_["total"]) == 1 and isinstance(best.wavelet_, pywt.Wavelet)
    # the adapted wavelet moved away from db5, and the teacher did not
    assert np.abs(np.array(best.wavelet_.rec_lo) - pywt.Wavelet("db5").rec_lo).max() > 0
    assert torch.equal(teacher.weight.detach(), before)


def test_distilled_with_a_teacher_is_reproducible():
    X, y = _planted(n_samples=40)
    teacher = nn.Sequential(nn.Linear(64, 4), nn.Tanh(), nn.Linear(4, 2)).double().eval()
    make = lambda: WaveletDistilledClassifier("db5", levels=2, m=2, teacher=teacher, init_noise=0.05, epochs=1, random_state=3)  # noqa: E731
    a, b = make().fit(X, y > 0), make().fit(X, y > 0)
    np.testing.assert_array_equal(a.wavelet_.rec_lo, b.wavelet_.rec_lo)
    np.testing.assert_array_equal(a.predict(X), b.predict(X))


class _TanhSum(nn.Module):
    """A teacher for any signal length (scikit-learn's checks vary the features)."""

    def forward(self, x):
        return torch.tanh(x).sum(-1)


class _TwoClasses(nn.Module):
    def forward(self, x):
        t = torch.tanh(x).sum(-1, keepdim=True)
        return torch.cat([t, -t], -1)


# pandas (in the test extra) lets the dataframe checks run; scikit-learn skips its 4
# array-API checks itself unless SCIPY_ARRAY_API=1 (these estimators take numpy only).
@parametrize_with_checks(
    [
        WaveletDistilledRegressor(m=2),
        WaveletDistilledClassifier(m=2),
        WaveletDistilledRegressor(wavelet="haar", m=2, teacher=_TanhSum().eval(), epochs=1),
        WaveletDistilledClassifier(wavelet="haar", m=2, teacher=_TwoClasses().eval(), epochs=1),
    ]
)
def test_scikit_learn_estimator_checks(estimator, check):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        check(estimator)


# ----------------------------------------------------------------------- errors


def test_clear_errors():
    x = torch.randn(2, 16, dtype=F64)
    with pytest.raises(ValueError, match="even length"):
        AdaptiveWavelet([0.5, 0.5, 0.5])
    with pytest.raises(ValueError, match="not orthogonal"):
        AdaptiveWavelet("bior2.2")
    with pytest.raises(ValueError, match="unknown wavelet"):
        AdaptiveWavelet("db999")
    with pytest.raises(ValueError, match="parametrization must be one of"):
        AdaptiveWavelet("db2", parametrization="polyphase")
    with pytest.raises(ValueError, match="levels must be None"):
        AdaptiveWavelet("db2", levels=-1)
    with pytest.raises(ValueError, match="Unknown wavelet extension mode"):
        AdaptiveWavelet("db2", mode="wrap")  # at construction, not at first use
    nan = x.clone()
    nan[0, 3] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        AdaptiveWavelet("db2", dtype=F64)(nan)
    with pytest.raises(ValueError, match="NaN"):
        AdaptiveWavelet2d("db2", dtype=F64)(nan.view(2, 4, 4))
    teacher = nn.Linear(16, 1).double().eval()
    with pytest.raises(ValueError, match="NaN"):
        AWDLoss(teacher, AdaptiveWavelet("db2", dtype=F64))(nan)
    with pytest.raises(ValueError, match="method must be one of"):
        AWDLoss(teacher, AdaptiveWavelet("db2"), method="lrp")
    with pytest.raises(TypeError, match="AdaptiveWavelet"):
        AWDLoss(teacher, WaveletTransform("db2"))
    with pytest.raises(ValueError, match="one number per example"):
        AWDLoss(nn.Linear(16, 3).double().eval(), AdaptiveWavelet("db2", dtype=F64))(x)
    with pytest.raises(ValueError, match="target must be"):
        AWDLoss(nn.Linear(16, 3).double().eval(), AdaptiveWavelet("db2", dtype=F64), target="largest")(x)
    # a short signal: above pywt's maximum level warns, impossible levels raise
    with pytest.warns(UserWarning, match="above the recommended maximum level"):
        AdaptiveWavelet("db5", levels=2, dtype=F64)(torch.randn(1, 5, dtype=F64))
    with pytest.raises(ValueError, match="impossible"):
        AdaptiveWavelet("db5", levels=3, dtype=F64)(torch.randn(1, 5, dtype=F64))
    X, y = np.random.default_rng(0).standard_normal((20, 16)), np.arange(20.0)
    for m in (0, -2, 1.5, True):
        with pytest.raises(ValueError, match="m \\(coefficients kept per scale\\)"):
            WaveletDistilledRegressor(m=m).fit(X, y)
    with pytest.raises(ValueError, match="not orthogonal"):
        WaveletDistilledRegressor("bior2.2", teacher=teacher).fit(X, y)


def test_interpretation_equals_trim_with_captum_methods_and_cd():
    from captum.attr import InputXGradient, Saliency

    from captum_cd import ContextualDecomposition, TRIM

    torch.manual_seed(0)
    teacher = nn.Sequential(nn.Linear(24, 16), nn.Tanh(), nn.Linear(16, 3)).double().eval()
    wavelet = AdaptiveWavelet("db2", levels=2, mode="periodization", dtype=F64)
    x = torch.randn(4, 24, dtype=F64, generator=_gen(21))
    transform = wavelet.transform()
    captum = {
        "saliency": (Saliency(teacher), {"abs": True}),
        "input_x_gradient": (InputXGradient(teacher), {}),
        "cd": (ContextualDecomposition(teacher), {}),
    }
    for method, (attribution, kwargs) in captum.items():
        loss = AWDLoss(teacher, wavelet, method=method, target=2)
        ours = loss.attributions(x, loss.transform(x)).detach()
        ids = torch.arange(transform(x).shape[-1]).unsqueeze(0)  # one group per coefficient
        theirs = TRIM(attribution, transform).attribute(x, target=2, feature_mask=ids, **kwargs)
        torch.testing.assert_close(ours, theirs.detach(), rtol=1e-8, atol=1e-10)
