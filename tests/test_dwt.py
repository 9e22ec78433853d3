"""The PyTorch wavelet transforms against PyWavelets: every mode, odd and even lengths,
signals shorter than the filter, several levels, batches; perfect reconstruction;
gradients with respect to the signal and a learnable lowpass filter; errors; dtypes."""

import numpy as np
import pytest
import pywt
import torch
from captum_cd.attr.transforms.dwt import (
    MODES,
    dwt,
    dwt2,
    dwt_max_level,
    filter_bank,
    idwt,
    idwt2,
    orthogonal_filter_bank,
    wavedec,
    wavedec2,
    waverec,
    waverec2,
)

WAVELETS = ["haar", "db2", "db5", "sym4", "coif2"]
TOL = dict(rtol=1e-10, atol=1e-10)
DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


@pytest.fixture(autouse=True)
def _one_thread():
    """Tiny tensors: intra-op threads only add synchronisation, which a busy 2-core
    machine turns into seconds per test."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _close(ours, ref):
    ref = torch.as_tensor(np.asarray(ref))
    assert tuple(ours.shape) == tuple(ref.shape), (tuple(ours.shape), tuple(ref.shape))
    torch.testing.assert_close(ours.detach().cpu(), ref, **TOL)


def _rows(batch_shape):
    """Index tuples of every 1-D row (or 2-D image) of a batch."""
    return list(np.ndindex(*batch_shape))


# ------------------------------------------------------------------------- vs pywt


@pytest.mark.parametrize("wavelet", WAVELETS)
@pytest.mark.parametrize("mode", MODES)
def test_wavedec_waverec_match_pywt(mode, wavelet):
    rng = np.random.default_rng(0)
    fb = filter_bank(wavelet)
    flen = pywt.Wavelet(wavelet).dec_len
    for n in (2, 7, 16, 33, 64):
        x = rng.standard_normal((3, 2, n))
        for level in range(1, dwt_max_level(n, flen) + 1):
            coeffs = wavedec(torch.tensor(x), fb, level, mode)
            rec = waverec(coeffs, fb, mode)
            for row in _rows(x.shape[:-1]):
                ref = pywt.wavedec(x[row], wavelet, mode, level)
                assert len(coeffs) == len(ref) == level + 1
                for ours, theirs in zip(coeffs, ref):
                    _close(ours[row], theirs)
                _close(rec[row], pywt.waverec(ref, wavelet, mode))
        # level=None: pywt's maximum level
        assert len(wavedec(torch.tensor(x), fb, mode=mode)) == len(pywt.wavedec(x, wavelet, mode, axis=-1))


@pytest.mark.parametrize("wavelet", WAVELETS)
@pytest.mark.parametrize("mode", MODES)
def test_dwt_idwt_short_signals_match_pywt(mode, wavelet):
    """Single levels on signals down to one sample, shorter than the filter (the
    extension wraps several times), and on random (not just consistent) coefficients."""
    rng = np.random.default_rng(1)
    fb = filter_bank(wavelet)
    for n in range(1 if mode not in ("reflect", "antireflect") else 2, 14):
        x = rng.standard_normal((2, 3, n))
        ca, cd = dwt(torch.tensor(x), fb, mode)
        ra, rd = rng.standard_normal(ca.shape), rng.standard_normal(ca.shape)
        rec = idwt(torch.tensor(ra), torch.tensor(rd), fb, mode)
        for row in _rows(x.shape[:-1]):
            ref_a, ref_d = pywt.dwt(x[row], wavelet, mode)
            _close(ca[row], ref_a)
            _close(cd[row], ref_d)
            _close(rec[row], pywt.idwt(ra[row], rd[row], wavelet, mode))


@pytest.mark.parametrize("wavelet", WAVELETS)
@pytest.mark.parametrize("mode", MODES)
def test_wavedec2_waverec2_match_pywt(mode, wavelet):
    rng = np.random.default_rng(2)
    fb = filter_bank(wavelet)
    flen = pywt.Wavelet(wavelet).dec_len
    for size in ((16, 16), (17, 22), (33, 20)):
        x = rng.standard_normal((2, 2, *size))
        max_level = min(dwt_max_level(s, flen) for s in size)
        for level in sorted({1, 2, max_level} & set(range(1, max_level + 1))):
            coeffs = wavedec2(torch.tensor(x), fb, level, mode)
            rec = waverec2(coeffs, fb, mode)
            for row in _rows(x.shape[:-2]):
                ref = pywt.wavedec2(x[row], wavelet, mode, level)
                _close(coeffs[0][row], ref[0])
                for ours, theirs in zip(coeffs[1:], ref[1:]):
                    for o, t in zip(ours, theirs):
                        _close(o[row], t)
                _close(rec[row], pywt.waverec2(ref, wavelet, mode))


@pytest.mark.parametrize("mode", MODES)
def test_dwt2_idwt2_small_images_match_pywt(mode):
    rng = np.random.default_rng(3)
    fb = filter_bank("db5")
    for size in ((1, 1), (2, 3), (5, 4), (3, 9)):
        if mode in ("reflect", "antireflect") and min(size) < 2:
            continue
        x = rng.standard_normal((2, *size))
        ca, details = dwt2(torch.tensor(x), fb, mode)
        rec = idwt2((ca, details), fb, mode)
        for i in range(2):
            ref_a, ref_d = pywt.dwt2(x[i], "db5", mode)
            _close(ca[i], ref_a)
            for o, t in zip(details, ref_d):
                _close(o[i], t)
            _close(rec[i], pywt.idwt2((ref_a, ref_d), "db5", mode))


# ------------------------------------------------------------- reconstruction


@pytest.mark.parametrize("mode", MODES)
def test_perfect_reconstruction(mode):
    torch.manual_seed(0)
    for wavelet in ("db5", "sym4", "bior3.3"):
        fb = filter_bank(wavelet)
        for n in (31, 64):
            x = torch.randn(3, 2, n, dtype=torch.float64)
            torch.testing.assert_close(waverec(wavedec(x, fb, None, mode), fb, mode, length=n), x, **TOL)
        x = torch.randn(2, 23, 30, dtype=torch.float64)
        torch.testing.assert_close(waverec2(wavedec2(x, fb, None, mode), fb, mode, shape=(23, 30)), x, **TOL)


def test_waverec_length_and_pywt_extra_sample():
    fb = filter_bank("db2")
    x = torch.randn(4, 13, dtype=torch.float64)
    coeffs = wavedec(x, fb, 2, "periodization")
    ref = pywt.waverec([c.numpy() for c in coeffs], "db2", "periodization")
    assert waverec(coeffs, fb, "periodization").shape[-1] == ref.shape[-1] == 14  # pywt's extra sample
    assert waverec(coeffs, fb, "periodization", length=13).shape == x.shape
    with pytest.raises(ValueError, match="cut"):
        waverec(coeffs, fb, "periodization", length=17)


def test_idwt_cuts_one_longer_approximation_and_accepts_none():
    fb = filter_bank("db2")
    rng = np.random.default_rng(4)
    ca, cd = rng.standard_normal(8), rng.standard_normal(7)
    _close(idwt(torch.tensor(ca), torch.tensor(cd), fb), pywt.waverec([ca, cd], "db2"))
    _close(idwt(None, torch.tensor(cd), fb), pywt.idwt(None, cd, "db2"))
    _close(idwt(torch.tensor(cd), None, fb), pywt.idwt(cd, None, "db2"))
    with pytest.raises(ValueError, match="shape mismatch"):
        idwt(torch.tensor(cd), torch.tensor(ca[:5]), fb)


def test_waverec2_none_details_are_zeros():
    fb = filter_bank("db2")
    x = torch.randn(2, 20, 24, dtype=torch.float64)
    cA, level2, level1 = wavedec2(x, fb, 2)
    zeros = tuple(torch.zeros_like(d) for d in level1)
    expected = waverec2([cA, level2, zeros], fb)
    # without detail arrays the size of level 1 is unknown: pywt then keeps the extra
    # sample of the approximation (22 x 26 here); shape= cuts it, and the kept part agrees
    assert waverec2([cA, level2, (None, None, None)], fb).shape[-2:] == (22, 26)
    torch.testing.assert_close(waverec2([cA, level2, None], fb, shape=(20, 24)), expected, **TOL)
    torch.testing.assert_close(waverec2([cA, level2, (None, None, None)], fb, shape=(20, 24)), expected, **TOL)


@pytest.mark.parametrize("mode", [m for m in MODES if m != "periodization"])
def test_extension_wraps_like_pywt_pad(mode):
    """The boundary extension itself, many times longer than the signal."""
    from captum_cd.attr.transforms.dwt import extend

    for n in (2, 3, 5):
        x = np.random.default_rng(n).standard_normal(n)
        ours = extend(torch.tensor(x).view(1, n), 11, 13, mode)[0]
        _close(ours, pywt.pad(x, (11, 13), mode))
        ours = extend(torch.tensor(x).view(n, 1), 11, 13, mode, dim=-2)[:, 0]
        _close(ours, pywt.pad(x, (11, 13), mode))


# ---------------------------------------------------------------- filters, grads


@pytest.mark.parametrize("wavelet", ["haar", "db2", "db5", "db12", "sym4", "sym9", "coif2", "coif5", "dmey"])
def test_orthogonal_filter_bank_equals_pywt(wavelet):
    w = pywt.Wavelet(wavelet)
    ours = orthogonal_filter_bank(torch.tensor(w.rec_lo, dtype=torch.float64))
    for o, t in zip(ours, w.filter_bank):
        assert torch.equal(o, torch.tensor(t, dtype=torch.float64))


@pytest.mark.parametrize("mode", ["zero", "symmetric", "periodization", "reflect", "smooth", "antireflect"])
def test_gradcheck_signal_and_lowpass_filter(mode):
    torch.manual_seed(0)
    h = (torch.tensor(pywt.Wavelet("db2").rec_lo) + 0.05 * torch.randn(4, dtype=torch.float64)).requires_grad_()
    x = torch.randn(2, 13, dtype=torch.float64, requires_grad=True)  # odd, two levels

    def dec(x, h):
        return tuple(wavedec(x, orthogonal_filter_bank(h), 2, mode))

    torch.autograd.gradcheck(dec, (x, h))
    coeffs = [c.detach().requires_grad_() for c in dec(x, h)]

    def rec(h, *coeffs):
        return waverec(list(coeffs), orthogonal_filter_bank(h), mode)

    torch.autograd.gradcheck(rec, (h, *coeffs))


@pytest.mark.parametrize("mode", ["zero", "symmetric", "periodization"])
def test_gradcheck_2d(mode):
    torch.manual_seed(0)
    h = torch.tensor(pywt.Wavelet("db2").rec_lo, dtype=torch.float64, requires_grad=True)
    x = torch.randn(1, 7, 6, dtype=torch.float64, requires_grad=True)

    def roundtrip(x, h):
        fb = orthogonal_filter_bank(h)
        coeffs = wavedec2(x, fb, 1, mode)
        return coeffs[0], *coeffs[1], waverec2([coeffs[0], (None, coeffs[1][1], coeffs[1][2])], fb, mode)

    torch.autograd.gradcheck(roundtrip, (x, h))


# ------------------------------------------------------------------ errors


def test_odd_filter_length_raises():
    with pytest.raises(ValueError, match="even length"):
        orthogonal_filter_bank(torch.randn(5))
    fb = tuple(torch.randn(5) for _ in range(4))
    with pytest.raises(ValueError, match="even length"):
        wavedec(torch.randn(32), fb, 1)


def test_unknown_mode_raises_listing_modes():
    with pytest.raises(ValueError, match="periodization") as err:
        wavedec(torch.randn(32), filter_bank("db2"), 1, mode="mirror")
    assert "'mirror'" in str(err.value) and all(m in str(err.value) for m in MODES)


def test_levels_beyond_the_recommended_maximum_warn_like_pywt_and_impossible_ones_raise():
    fb = filter_bank("db5")
    assert dwt_max_level(64, 10) == pywt.dwt_max_level(64, 10) == 2
    x = torch.randn(3, 64, dtype=torch.float64)
    with pytest.warns(UserWarning, match="recommended maximum level 2"):
        ours = wavedec(x, fb, 3)
    with pytest.warns(UserWarning):
        theirs = pywt.wavedec(x.numpy(), "db5", "symmetric", 3)
    for a, b in zip(ours, theirs):
        np.testing.assert_allclose(a.numpy(), b, atol=1e-10)
    with pytest.raises(ValueError, match="halves to one sample after 6 levels"):
        wavedec(x, fb, 7)
    with pytest.raises(ValueError, match="after 4 levels"):
        wavedec2(torch.randn(40, 18), fb, 5)
    with pytest.raises(ValueError, match=">= 0"):
        wavedec(torch.randn(64), fb, -1)


def test_reflect_needs_two_samples():
    with pytest.raises(ValueError, match="at least 2 samples"):
        dwt(torch.randn(3, 1), filter_bank("db2"), "reflect")


# ------------------------------------------------------------- dtype, device


def test_float32_in_float32_out_and_float64_filters_cast():
    fb = filter_bank("db5")  # float64
    x = torch.randn(100, 64)
    coeffs = wavedec(x, fb, 2)
    assert all(c.dtype == torch.float32 for c in coeffs)
    assert waverec(coeffs, fb).dtype == torch.float32
    assert all(c.dtype == torch.float32 for c in wavedec2(torch.randn(2, 32, 32), fb, 1)[1])
    ref = wavedec(x.double(), fb, 2)
    for c, r in zip(coeffs, ref):
        torch.testing.assert_close(c.double(), r, rtol=1e-5, atol=1e-5)
    # a float64 learnable filter receives a float64 gradient through a float32 transform
    h = torch.tensor(pywt.Wavelet("db5").rec_lo, dtype=torch.float64, requires_grad=True)
    waverec(wavedec(x, orthogonal_filter_bank(h), 2), orthogonal_filter_bank(h)).square().sum().backward()
    assert h.grad is not None and h.grad.dtype == torch.float64


@pytest.mark.parametrize("device", DEVICES)
def test_device_follows_input(device):
    fb = filter_bank("sym4")
    x = torch.randn(3, 2, 45, dtype=torch.float64)
    img = torch.randn(2, 17, 16, dtype=torch.float64)
    for mode in MODES:
        coeffs = wavedec(x.to(device), fb, 2, mode)
        assert all(c.device.type == device for c in coeffs)
        for c, r in zip(coeffs, wavedec(x, fb, 2, mode)):
            torch.testing.assert_close(c.cpu(), r, **TOL)
        coeffs2 = wavedec2(img.to(device), fb, 1, mode)
        assert all(c.device.type == device for c in coeffs2[1])
        torch.testing.assert_close(waverec2(coeffs2, fb, mode, shape=(17, 16)).cpu(), img, **TOL)
