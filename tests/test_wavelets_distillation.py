"""captum_cd.wavelets.distillation: AWDLoss's gradients (gradcheck), its dense and
convolution paths, its interpretation term against hand derivations for linear teachers
and against TRIM, fit_wavelet on a small simulation, and the clear errors."""


import numpy as np
import pytest
import pywt
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from captum_cd.wavelets import (
    AdaptiveWavelet,
    AdaptiveWavelet2d,
    AWDLoss,
    fit_wavelet,
    WaveletDistilledRegressor,
)
from captum_cd.transforms import WaveletTransform

from _wavelets import F64, METHODS, TERMS, TOL, _close, _gen, _noisy, _simulation, _snapshot, _stack, _teacher  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_thread")


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
def test_the_predicted_target_is_each_examples_largest_output(method):
    """``"predicted"`` goes through groups.check_target: the same terms as the arg-max
    classes given as a tensor; CD refuses it (a Captum target form it is not)."""
    teacher, wavelet = _teacher(outputs=3, seed=2), _noisy(seed=3)
    x = torch.randn(6, 12, dtype=F64, generator=_gen(4))
    with torch.no_grad():
        classes = teacher(x).argmax(1)
    assert len(set(classes.tolist())) > 1  # the examples' targets differ
    predicted = AWDLoss(teacher, wavelet, method=method, target="predicted")(x)
    given = AWDLoss(teacher, wavelet, method=method, target=classes)(x)
    _close(_stack(predicted), _stack(given).detach(), rtol=0, atol=0)
    with pytest.raises(ValueError, match=r"'predicted' needs an output of shape \(B, classes\)"):
        AWDLoss(nn.Sequential(teacher[0], nn.Unflatten(1, (2, 3))), wavelet, method=method, target="predicted")(x)
    from captum_cd import ContextualDecomposition

    with pytest.raises(TypeError, match="'predicted' is not an output index"):
        ContextualDecomposition(teacher).attribute(x, target="predicted")


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
