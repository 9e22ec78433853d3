r"""The learnable wavelet of adaptive wavelet distillation: a DWT identical to
PyWavelets whose lowpass filter is a parameter, its lattice parametrisation, the validity
terms that keep it a wavelet, and the distance used to report it."""

import math
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
from torch import nn, Tensor

from captum_cd.attr.transforms.dwt import check_mode, Filters, orthogonal_filter_bank, wavedec, wavedec2, waverec, waverec2
from captum_cd.attr.transforms.wavelet import WaveletTransform, WaveletTransform2d

PARAMETRIZATIONS = ("filter", "lattice")
SQRT2 = math.sqrt(2.0)


def _lowpass_of(wavelet: Any) -> Tensor:
    """The float64 lowpass (scaling, ``rec_lo``) filter of a pywt name or Wavelet, an
    :class:`AdaptiveWavelet`, or an array."""
    import pywt

    if isinstance(wavelet, _AdaptiveWaveletBase):
        return wavelet.lowpass().detach().to(torch.float64).cpu()
    if isinstance(wavelet, str):
        try:
            wavelet = pywt.Wavelet(wavelet)
        except ValueError as error:
            raise ValueError(f"unknown wavelet {wavelet!r}: use a name from pywt.wavelist(kind='discrete').") from error
        if not wavelet.orthogonal:
            raise ValueError(
                f"wavelet {wavelet.name!r} is not orthogonal; adaptive wavelets are orthogonal: start from an "
                "orthogonal one (haar, dbN, symN, coifN) or pass a lowpass filter array."
            )
    if isinstance(wavelet, pywt.Wavelet):
        return torch.tensor(wavelet.rec_lo, dtype=torch.float64)
    try:
        h = torch.as_tensor(np.asarray(wavelet, dtype=np.float64))
    except (TypeError, ValueError) as error:
        raise TypeError(
            f"wavelet must be a PyWavelets name, a pywt.Wavelet or a 1-D lowpass filter; got {type(wavelet).__name__}."
        ) from error
    return h.clone()


def lattice_filter(angles: Tensor) -> Tensor:
    r"""The orthogonal lowpass filter of length ``2 (len(angles) + 1)`` with the given
    free lattice angles: ``theta_1..theta_K``, and ``theta_0 = pi/4 - sum(theta_k)`` so
    that ``sum(h) = sqrt(2)``. Every such filter is orthogonal to its even shifts and has
    unit norm by construction (a product of rotations and delays of the polyphase matrix,
    Vaidyanathan's lattice), so all of :func:`validity_terms` vanish for any angles.

    Args:
        angles (Tensor): 1-D, the ``K`` free angles; differentiable.

    Returns:
        *Tensor* ``h`` of length ``2K + 2``, like ``angles``.
    """
    theta0 = math.pi / 4 - angles.sum()
    h0 = torch.stack([torch.cos(theta0), torch.sin(theta0)])
    h1 = torch.stack([-torch.sin(theta0), torch.cos(theta0)])
    zero = angles.new_zeros(2)
    for theta in angles:
        c, s = torch.cos(theta), torch.sin(theta)
        a, b = torch.cat([h0, zero]), torch.cat([zero, h1])
        h0, h1 = c * a + s * b, c * b - s * a
    return h0


def lattice_angles(h: Tensor, atol: float = 1e-8) -> Tensor:
    r"""The free lattice angles of an orthogonal lowpass filter (the inverse of
    :func:`lattice_filter`): peel one rotation and delay off per stage.

    Args:
        h (Tensor): 1-D orthogonal lowpass filter of even length with ``sum(h) = sqrt(2)``.
        atol (float, optional): how far from orthogonal ``h`` may be. Default: 1e-8

    Returns:
        *Tensor* of ``len(h) / 2 - 1`` angles (float64).
    """
    h = h.detach().to(torch.float64).cpu()
    orthogonal_filter_bank(h)  # even length, 1-D
    terms = validity_terms(h)
    if max(float(v) for v in terms.values()) > atol:
        raise ValueError(
            "the lattice parametrisation starts from an orthogonal wavelet filter (sum sqrt(2), unit norm, "
            f"orthogonal to its even shifts); this filter's validity terms are {_fmt(terms)}. Use "
            "parametrization='filter' to start from an arbitrary filter."
        )
    n = torch.arange(h.shape[0])
    h0, h1 = h, -((-1.0) ** n) * h.flip(0)
    angles = []
    while h0.shape[0] > 2:
        pick = -1 if h0[-1].abs() + h1[-1].abs() > 1e-12 else -2
        theta = torch.atan2(h0[pick], h1[pick])
        c, s = torch.cos(theta), torch.sin(theta)
        h0, h1 = (c * h0 - s * h1)[:-2], (s * h0 + c * h1)[2:]
        angles.append(theta)
    return torch.stack(angles[::-1]) if angles else torch.zeros(0, dtype=torch.float64)


def _fmt(terms: Dict[str, Tensor]) -> str:
    return ", ".join(f"{k}={float(v):.2g}" for k, v in terms.items())


# ------------------------------------------------------------ the wavelet


class _AdaptiveWaveletBase(nn.Module):
    """The learnable lowpass filter and everything derived from it."""

    def __init__(
        self,
        wavelet: Any = "db5",
        levels: Optional[int] = None,
        mode: str = "zero",
        init_noise: float = 0.0,
        generator: Optional[torch.Generator] = None,
        parametrization: str = "filter",
        dtype: Optional[torch.dtype] = None,
    ) -> None:
        super().__init__()
        if parametrization not in PARAMETRIZATIONS:
            raise ValueError(f"parametrization must be one of {PARAMETRIZATIONS}, got {parametrization!r}.")
        if levels is not None and levels < 0:
            raise ValueError(f"levels must be None (the maximum level) or >= 0, got {levels}.")
        h = _lowpass_of(wavelet)
        orthogonal_filter_bank(h)  # a clear error for odd or non-1-D filters
        dtype = dtype or torch.get_default_dtype()
        self.levels, self.mode, self.parametrization = levels, check_mode(mode), parametrization
        self.register_buffer("h_init", h.to(dtype))
        if parametrization == "filter":
            noise = torch.randn(h.shape, generator=generator, dtype=torch.float64) * init_noise
            self.h = nn.Parameter((h + noise).to(dtype))
        else:
            angles = lattice_angles(h)
            noise = torch.randn(angles.shape, generator=generator, dtype=torch.float64) * init_noise
            self.angles = nn.Parameter((angles + noise).to(dtype))
        self._sizes: Dict[Tuple, Any] = {}  # coefficient shapes -> signal size (odd lengths)
        # The transform around this wavelet (forward and inverse go through it). A plain
        # attribute: it holds this module as its submodule, so registering it would loop.
        self.__dict__["_transform"] = None

    @property
    def filter_length(self) -> int:
        r"""The length of the filters."""
        return self.h_init.shape[0]

    def lowpass(self) -> Tensor:
        r"""The current lowpass (scaling, ``rec_lo``) filter ``h``, differentiable."""
        return self.h if self.parametrization == "filter" else lattice_filter(self.angles)

    def filters(self) -> Filters:
        r"""``(dec_lo, dec_hi, rec_lo, rec_hi)`` of the current filter, PyWavelets' conventions."""
        return orthogonal_filter_bank(self.lowpass())

    def transform(self) -> Any:
        r"""The :class:`~captum_cd.transforms.WaveletTransform` (``2d``) around this wavelet
        (its coefficients concatenated, trained through it), for TRIM and :class:`AWDLoss`;
        :meth:`forward` and :meth:`inverse` are its."""
        if self._transform is None:
            self.__dict__["_transform"] = self._new_transform()
        return self._transform

    def validity(self) -> Dict[str, Tensor]:
        r""":func:`validity_terms` of the current filter."""
        return validity_terms(self.lowpass())

    def to_pywt(self, name: str = "learned") -> Any:
        r"""The current wavelet as a ``pywt.Wavelet`` (a custom filter bank, marked orthogonal)."""
        return _pywt_from_lowpass(self.lowpass(), name)

    def plot(self, path: str, level: int = 6) -> str:
        r"""Draw the learned scaling and wavelet functions (``pywt.Wavelet.wavefun``)
        against those of the wavelet it was initialised from, before ``init_noise``, into
        an image file.

        Args:
            path (str): the file to write (its extension picks the format).
            level (int, optional): the cascade algorithm's depth. Default: 6

        Returns:
            *str* the path.
        """
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure

        learned = _wavefun(self.to_pywt(), level)
        initial = _wavefun(_pywt_from_lowpass(self.h_init), level)
        figure = Figure(figsize=(9, 3.2))
        FigureCanvasAgg(figure)
        for i, title in enumerate(("scaling function phi", "wavelet psi")):
            ax = figure.add_subplot(1, 2, i + 1)
            ax.plot(initial[2], initial[i], color="0.6", label="initial wavelet (no noise)")
            ax.plot(learned[2], learned[i], color="C0", label="learned")
            ax.set_title(title)
            ax.legend(loc="upper right", fontsize=8)
        figure.tight_layout()
        figure.savefig(path, dpi=110)
        return path

    def _check_input(self, x: Tensor) -> None:
        if not torch.is_tensor(x):
            raise TypeError(f"expected a Tensor, got {type(x).__name__}.")
        if x.is_floating_point() and not torch.isfinite(x).all():
            raise ValueError("the input contains NaN or infinite values; clean or impute them before the wavelet transform.")

    def extra_repr(self) -> str:
        return f"filter_length={self.filter_length}, levels={self.levels}, mode={self.mode!r}, parametrization={self.parametrization!r}"


class AdaptiveWavelet(_AdaptiveWaveletBase):
    r"""
    A learnable orthogonal wavelet: the multi-level DWT along the last dimension (equal
    to ``pywt.wavedec``), whose lowpass filter ``h`` is an ``nn.Parameter``; the highpass
    and the analysis filters follow from ``h`` (``orthogonal_filter_bank``). Batches
    over any leading dimensions, runs on the input's device and dtype, and is
    differentiable with respect to ``h``.

    Args:
        wavelet (str, pywt.Wavelet or array, optional): the initial wavelet: an orthogonal
                    PyWavelets name, a ``pywt.Wavelet`` or a lowpass filter of even length.
                    Default: "db5"
        levels (int, optional): the number of levels ``J``. Default: None (the maximum
                    level of each signal, ``pywt.dwt_max_level``)
        mode (str, optional): signal extension mode (``dwt.MODES``). Default: "zero"
        init_noise (float, optional): standard deviation of Gaussian noise added to the
                    initial filter (to the lattice angles with ``parametrization="lattice"``).
                    Default: 0.0
        generator (torch.Generator, optional): for the noise. Default: None (global RNG)
        parametrization (str, optional): ``"filter"``: ``h`` itself is the parameter and
                    orthogonality is the soft penalty of :func:`validity_terms`, as in the
                    paper; ``"lattice"``: the parameter is the ``L/2 - 1`` free angles of a
                    lattice factorisation (:func:`lattice_filter`), and every value is an
                    exactly orthogonal wavelet with ``sum(h) = sqrt(2)``. Default: "filter"
        dtype (torch.dtype, optional): the parameter's dtype. Default: torch's default

    Examples::

        >>> wavelet = AdaptiveWavelet("db5", levels=3, init_noise=0.3)
        >>> s = wavelet(x)                          # (..., K): every coefficient, concatenated
        >>> x_back = wavelet.inverse(s)
        >>> coeffs = wavelet.coefficients(x)        # [cA_3, cD_3, cD_2, cD_1], as pywt.wavedec
        >>> x_back = wavelet.reconstruct(coeffs)
    """

    def forward(self, x: Tensor) -> Tensor:
        r"""
        Args:
            x (Tensor): signals ``(..., N)``, floating point, finite.

        Returns:
            *Tensor* ``(..., K)``: every coefficient, ``[cA_J, cD_J, ..., cD_1]`` concatenated
            (as :class:`~captum_cd.transforms.WaveletTransform`; the list is
            :meth:`coefficients`).
        """
        self._check_input(x)
        return self.transform()(x)

    def inverse(self, s: Tensor, length: Optional[int] = None) -> Tensor:
        r"""The signals of concatenated coefficients ``s`` (``(..., K)``, as from
        :meth:`forward`), cut to ``length`` (Default: the length of the last signal
        :meth:`forward` saw with ``K`` coefficients, else the even length)."""
        return self.transform().inverse(s, length)

    def coefficients(self, x: Tensor) -> List[Tensor]:
        r"""``pywt.wavedec(x)``: the list ``[cA_J, cD_J, ..., cD_1]``, each ``(..., K_i)``."""
        self._check_input(x)
        coeffs = wavedec(x, self.filters(), self.levels, self.mode)
        self._sizes[tuple(c.shape[-1] for c in coeffs)] = x.shape[-1]
        return coeffs

    def reconstruct(self, coeffs: Sequence[Optional[Tensor]], length: Optional[int] = None) -> Tensor:
        r"""``pywt.waverec(coeffs)``, cut to ``length``.

        Args:
            coeffs (list of Tensor): as from :meth:`coefficients`; details may be None.
            length (int, optional): Default: the length of the last signal
                        :meth:`coefficients` decomposed into coefficients of these sizes
                        (so odd lengths come back whole), else pywt's length.
        """
        if length is None and all(c is not None for c in coeffs):
            length = self._sizes.get(tuple(c.shape[-1] for c in coeffs))
        return waverec(list(coeffs), self.filters(), self.mode, length)

    def _new_transform(self) -> WaveletTransform:
        return WaveletTransform(self, levels=self.levels, mode=self.mode)


class AdaptiveWavelet2d(_AdaptiveWaveletBase):
    r"""
    The separable 2-D version of :class:`AdaptiveWavelet` over the last two dimensions
    (``pywt.wavedec2``), with the same arguments and methods: :meth:`forward` and
    :meth:`inverse` on all coefficients concatenated, :meth:`coefficients` and
    :meth:`reconstruct` on ``[cA_J, (cH_J, cV_J, cD_J), ..., (cH_1, cV_1, cD_1)]``.
    """

    def forward(self, x: Tensor) -> Tensor:
        r"""Every coefficient of images ``(..., H, W)``, concatenated: ``(..., K)`` (as
        :class:`~captum_cd.transforms.WaveletTransform2d`; the list is :meth:`coefficients`)."""
        self._check_input(x)
        return self.transform()(x)

    def inverse(self, s: Tensor, size: Optional[Sequence[int]] = None) -> Tensor:
        r"""The images of concatenated coefficients ``s``, cut to ``size`` ``(H, W)``
        (Default: the size of the last image :meth:`forward` saw with as many coefficients)."""
        return self.transform().inverse(s, size)

    def coefficients(self, x: Tensor) -> List[Any]:
        r"""``pywt.wavedec2(x)``: ``[cA_J, (cH_J, cV_J, cD_J), ..., (cH_1, cV_1, cD_1)]``."""
        self._check_input(x)
        coeffs = wavedec2(x, self.filters(), self.levels, self.mode)
        self._sizes[_shapes_2d(coeffs)] = tuple(x.shape[-2:])
        return coeffs

    def reconstruct(self, coeffs: Sequence[Any], size: Optional[Sequence[int]] = None) -> Tensor:
        r"""``pywt.waverec2(coeffs)``, cut to ``size`` ``(H, W)`` (Default: the size of the
        last image :meth:`coefficients` decomposed into subbands of these shapes)."""
        if size is None:
            size = self._sizes.get(_shapes_2d(coeffs))
        return waverec2(list(coeffs), self.filters(), self.mode, size)

    def _new_transform(self) -> WaveletTransform2d:
        return WaveletTransform2d(self, levels=self.levels, mode=self.mode)


def _shapes_2d(coeffs: Sequence[Any]) -> Tuple:
    try:
        return (tuple(coeffs[0].shape[-2:]),) + tuple(tuple(b.shape[-2:]) for level in coeffs[1:] for b in level)
    except (AttributeError, TypeError):
        return ()


def _pywt_from_lowpass(h: Tensor, name: str = "wavelet") -> Any:
    import pywt

    bank = [f.detach().to(torch.float64).cpu().tolist() for f in orthogonal_filter_bank(h)]
    wavelet = pywt.Wavelet(name, filter_bank=bank)
    wavelet.orthogonal = wavelet.biorthogonal = True
    return wavelet


def _wavefun(wavelet: Any, level: int) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(phi, psi, x) of the cascade algorithm (the decomposition pair for biorthogonal)."""
    out = wavelet.wavefun(level=level)
    return np.asarray(out[0]), np.asarray(out[1]), np.asarray(out[-1])


def wavelet_distance(a: Any, b: Any = "db5", level: int = 5) -> float:
    r"""The distance between two wavelets used to report AWD's simulation, as the
    reference code measures it: sample each wavelet function ``psi`` with the cascade
    algorithm (``pywt.Wavelet.wavefun(level)``, ``2**level`` samples per unit), pad the
    shorter with zeros, and take the smallest Euclidean norm ``||psi_a - psi_b||_2`` (a
    plain sum over the samples, not scaled by the sample spacing) over all circular
    shifts and time reversals of ``psi_a`` (a wavelet is only defined up to those).

    Args:
        a, b: each a PyWavelets name, a ``pywt.Wavelet``, an :class:`AdaptiveWavelet` or an
                    orthogonal lowpass filter.
        level (int, optional): cascade depth. Default: 5

    Returns:
        *float*, 0 for identical wavelets.
    """
    psi_a, psi_b = (_wavefun(as_pywt(w), level)[1] for w in (a, b))
    size = max(len(psi_a), len(psi_b))
    psi_a, psi_b = np.pad(psi_a, (0, size - len(psi_a))), np.pad(psi_b, (0, size - len(psi_b)))
    best = np.inf
    for candidate in (psi_a, psi_a[::-1]):
        # all circular shifts at once: ||roll(a, k) - b||^2 = |a|^2 + |b|^2 - 2 (a * b)[k]
        cross = np.real(np.fft.ifft(np.fft.fft(candidate) * np.conj(np.fft.fft(psi_b))))
        squared = candidate @ candidate + psi_b @ psi_b - 2 * cross
        best = min(best, float(np.sqrt(max(squared.min(), 0.0))))
    return best


def as_pywt(w: Any) -> Any:
    import pywt

    if isinstance(w, _AdaptiveWaveletBase):
        return w.to_pywt()
    if isinstance(w, (str, pywt.Wavelet)):
        return pywt.Wavelet(w) if isinstance(w, str) else w
    return _pywt_from_lowpass(torch.as_tensor(np.asarray(w, dtype=np.float64)))


# ------------------------------------------------------------ validity


def validity_terms(h: Tensor) -> Dict[str, Tensor]:
    r"""The penalties that make a lowpass filter ``h`` (length ``L``) an orthogonal
    wavelet's (docs/methods.md, "Adaptive wavelet distillation"); each is 0 exactly when its condition holds:

    - ``lowpass_sum``: ``(sum_n h[n] - sqrt 2)^2``
    - ``highpass_sum``: ``(sum_n g[n])^2`` with ``g[n] = (-1)^n h[L-1-n]``
    - ``unit_norm``: ``(||h||^2 - 1)^2``
    - ``cmf``: ``sum_w (|H(w)|^2 + |H(w + pi)|^2 - 2)^2`` over ``w = pi m / L``,
      ``m = 0..L-1`` (the conjugate mirror filter condition; the left side is a
      trigonometric polynomial of degree ``L/2 - 1`` in ``2w``, which these ``L`` points
      determine, so the term is 0 only if the condition holds at every ``w``). Computed
      with cosines and sines, no complex tensors.
    - ``double_shift``: ``sum_k (sum_n h[n] h[n - 2k] - 1[k = 0])^2`` over all ``k``
      (orthonormality of the even shifts).

    Args:
        h (Tensor): 1-D lowpass filter; differentiable.

    Returns:
        *dict* of 0-dim tensors, in the order above.
    """
    if h.dim() != 1:
        raise ValueError(f"validity_terms expects a 1-D lowpass filter, got shape {tuple(h.shape)}.")
    length = h.shape[0]
    n = torch.arange(length, dtype=h.dtype, device=h.device)
    alternate = 1 - 2 * (torch.arange(length, device=h.device) % 2).to(h.dtype)  # (-1)^n
    g = alternate * h.flip(0)
    w = math.pi * torch.arange(length, dtype=h.dtype, device=h.device) / length
    phase = w.unsqueeze(1) * n  # (frequencies, taps)
    cos, sin = torch.cos(phase), torch.sin(phase)

    def power(f: Tensor) -> Tensor:  # |F(w)|^2 = (sum f cos)^2 + (sum f sin)^2
        return (cos @ f) ** 2 + (sin @ f) ** 2

    cmf = power(h) + power(alternate * h) - 2  # H(w + pi) = sum_n (-1)^n h[n] e^{-iwn}
    autocorrelation = torch.nn.functional.conv1d(h.view(1, 1, -1), h.view(1, 1, -1), padding=length - 1).flatten()
    even = autocorrelation[(length - 1) % 2 :: 2]  # lags -(L-2), ..., 0, ..., L-2
    delta = torch.zeros_like(even)
    delta[even.shape[0] // 2] = 1
    return {
        "lowpass_sum": (h.sum() - SQRT2) ** 2,
        "highpass_sum": g.sum() ** 2,
        "unit_norm": (h.pow(2).sum() - 1) ** 2,
        "cmf": cmf.pow(2).sum(),
        "double_shift": (even - delta).pow(2).sum(),
    }
