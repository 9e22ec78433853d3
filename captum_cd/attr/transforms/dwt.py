r"""Multi-level discrete wavelet transforms in PyTorch, equal to PyWavelets.

One implementation serves both the fixed wavelet transform of TRIM and the learnable
wavelet of adaptive wavelet distillation, so everything here is differentiable with
respect to the signal *and* the filters, runs on whatever device and dtype the input
has, and batches over any number of leading dimensions (one convolution per level and
axis, no Python loops over samples).

The results equal ``pywt.wavedec`` / ``pywt.waverec`` / ``pywt.wavedec2`` /
``pywt.waverec2`` (``axis=-1`` / ``axes=(-2, -1)``) for every extension mode of
PyWavelets, up to floating-point rounding. The signal is extended by an index map
(built once per length and cached) that wraps as often as needed, so signals shorter
than the filter give what PyWavelets gives in every mode, periodization included.

Extension rules, for a signal ``x[0..N-1]`` (``|`` marks the signal's ends):

- ``zero``: ``0 0 | x0 .. xN-1 | 0 0``
- ``constant``: ``x0 x0 | x0 .. xN-1 | xN-1 xN-1``
- ``symmetric`` (half-sample): ``x1 x0 | x0 .. xN-1 | xN-1 xN-2``, period ``2N``
- ``reflect`` (whole-sample): ``x2 x1 | x0 .. xN-1 | xN-2 xN-3``, period ``2N-2``
- ``periodic``: ``xN-2 xN-1 | x0 .. xN-1 | x0 x1``, period ``N``
- ``smooth``: straight lines through the two samples at each end:
  ``x0 + k (x0 - x1)`` at ``-k``, ``xN-1 + k (xN-1 - xN-2)`` at ``N-1+k``; a signal
  of one sample is extended as ``constant``
- ``periodization``: ``periodic`` over ``x`` with its last sample repeated once when
  ``N`` is odd (period ``N + N % 2``); the outputs have ``ceil(N / 2)`` samples and
  the transform is orthogonal for orthogonal wavelets
- ``antisymmetric`` (half-sample): ``-x1 -x0 | x0 .. xN-1 | -xN-1 -xN-2``; the next
  copies are again ``+x`` then ``-reversed(x)``, period ``2N``
- ``antireflect`` (whole-sample, point reflection): ``2x0 - x1 | x0 .. xN-1 |
  2xN-1 - xN-2``; further copies reflect about the last extended sample, so the
  extension keeps climbing by ``xN-1 - x0`` per period ``2N-2``

``reflect`` and ``antireflect`` need at least two samples.
"""

import warnings
from functools import lru_cache
from math import prod
from typing import Any, List, Optional, Sequence, Tuple, Union

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = [
    "MODES",
    "dwt",
    "dwt2",
    "dwt_max_level",
    "filter_bank",
    "idwt",
    "idwt2",
    "orthogonal_filter_bank",
    "wavedec",
    "wavedec2",
    "waverec",
    "waverec2",
]

MODES: Tuple[str, ...] = (
    "zero",
    "constant",
    "symmetric",
    "reflect",
    "periodic",
    "smooth",
    "periodization",
    "antisymmetric",
    "antireflect",
)

Filters = Tuple[Tensor, Tensor, Tensor, Tensor]
Details2d = Tuple[Optional[Tensor], Optional[Tensor], Optional[Tensor]]


# --------------------------------------------------------------------------- filters


def filter_bank(wavelet: Any, dtype: Optional[torch.dtype] = None, device: Optional[torch.device] = None) -> Filters:
    r"""The four filters of a PyWavelets wavelet as tensors, for the transforms here.

    Args:
        wavelet (str or pywt.Wavelet): a wavelet name (``"db5"``) or a ``pywt.Wavelet``
                    (custom filter banks included).
        dtype (torch.dtype, optional): Default ``torch.float64``, PyWavelets' own
                    precision; the transforms cast the filters to the input's dtype.
        device (torch.device, optional): Default: the default device.

    Returns:
        *tuple* of 4 1-D tensors ``(dec_lo, dec_hi, rec_lo, rec_hi)``, exactly
        ``pywt.Wavelet(wavelet).filter_bank``.
    """
    import pywt

    w = wavelet if isinstance(wavelet, pywt.Wavelet) else pywt.Wavelet(wavelet)
    dtype = torch.float64 if dtype is None else dtype
    return tuple(torch.tensor(f, dtype=dtype, device=device) for f in w.filter_bank)  # type: ignore[return-value]


def orthogonal_filter_bank(h: Tensor) -> Filters:
    r"""The four filters of the orthogonal wavelet whose scaling (lowpass
    reconstruction) filter is ``h``, in PyWavelets' conventions, so that
    ``orthogonal_filter_bank(torch.tensor(pywt.Wavelet("db5").rec_lo))`` equals
    ``pywt.Wavelet("db5").filter_bank`` (exactly, for every orthogonal wavelet of
    PyWavelets: haar, db, sym, coif, dmey). With ``L = len(h)`` and ``n = 0..L-1``:

    - ``rec_lo[n] = h[n]``
    - ``rec_hi[n] = (-1)**n * h[L-1-n]`` (the quadrature mirror, first tap ``+h[L-1]``)
    - ``dec_lo[n] = h[L-1-n]`` and ``dec_hi[n] = rec_hi[L-1-n] = (-1)**(n+1) * h[n]``
      (time reverses of the reconstruction filters).

    Built from ``h`` by flips and a sign pattern, so gradients flow back to ``h``
    (a learnable ``nn.Parameter`` in adaptive wavelet distillation). Whether ``h``
    really is orthogonal is not checked; that is the training penalties' job.

    Args:
        h (Tensor): 1-D lowpass filter of even length.

    Returns:
        *tuple* of 4 tensors ``(dec_lo, dec_hi, rec_lo, rec_hi)``, each like ``h``.
    """
    if h.dim() != 1:
        raise ValueError(f"orthogonal_filter_bank expects a 1-D lowpass filter, got shape {tuple(h.shape)}.")
    length = h.shape[0]
    if length < 2 or length % 2:
        raise ValueError(
            f"orthogonal_filter_bank needs a lowpass filter of even length >= 2 (an orthogonal "
            f"wavelet's filters have even length), got length {length}."
        )
    sign = torch.ones(length, dtype=h.dtype, device=h.device)
    sign[1::2] = -1
    rec_lo = h
    dec_lo = h.flip(0)
    rec_hi = sign * dec_lo
    dec_hi = rec_hi.flip(0)
    return dec_lo, dec_hi, rec_lo, rec_hi


def dwt_max_level(length: int, filter_len: int) -> int:
    r"""The deepest level at which every coefficient still sees some signal: the same
    value as ``pywt.dwt_max_level``, ``floor(log2(length / (filter_len - 1)))`` and 0 when
    the signal is shorter than ``filter_len - 1``.

    Args:
        length (int): signal length along the transformed axis.
        filter_len (int): length of the decomposition filters.
    """
    if filter_len < 2 or length < filter_len - 1:
        return 0
    return (length // (filter_len - 1)).bit_length() - 1


# ---------------------------------------------------------------------- validation


def check_mode(mode: str) -> str:
    if mode not in MODES:
        raise ValueError(f"Unknown wavelet extension mode {mode!r}; the supported modes are {', '.join(MODES)}.")
    return mode


def _cast_filters(filters: Sequence[Tensor], like: Tensor) -> Filters:
    """Check the filter bank and cast it to ``like``'s dtype and device (differentiably)."""
    if len(filters) != 4:
        raise ValueError(
            f"filters must be the 4-tuple (dec_lo, dec_hi, rec_lo, rec_hi), got {len(filters)} entries; "
            "see filter_bank and orthogonal_filter_bank."
        )
    out = []
    for name, f in zip(("dec_lo", "dec_hi", "rec_lo", "rec_hi"), filters):
        f = torch.as_tensor(f)
        if f.dim() != 1:
            raise ValueError(f"filter {name} must be 1-D, got shape {tuple(f.shape)}.")
        if f.shape[0] < 2 or f.shape[0] % 2:
            raise ValueError(
                f"filter {name} has length {f.shape[0]}; the wavelet filters must have an even length >= 2, "
                "as PyWavelets requires for the inverse transform."
            )
        out.append(f.to(dtype=like.dtype, device=like.device))
    if out[0].shape != out[1].shape or out[2].shape != out[3].shape:
        raise ValueError(
            f"dec_lo and dec_hi must have equal lengths, and so must rec_lo and rec_hi; got lengths "
            f"{[f.shape[0] for f in out]}."
        )
    return tuple(out)  # type: ignore[return-value]


def _check_signal(x: Tensor, dims: int) -> None:
    if not torch.is_tensor(x):
        raise TypeError(f"expected a Tensor, got {type(x).__name__}.")
    if x.dim() < dims:
        raise ValueError(f"expected a tensor with at least {dims} dimension(s), got shape {tuple(x.shape)}.")
    if not x.is_floating_point():
        raise TypeError(f"expected a floating-point tensor, got {x.dtype}.")
    for size in x.shape[-dims:]:
        if size < 1:
            raise ValueError(f"cannot transform an empty signal (shape {tuple(x.shape)}).")


def _check_level(sizes: Sequence[int], filter_len: int, level: Optional[int]) -> int:
    """Levels beyond ``pywt.dwt_max_level`` warn, as in pywt (the adaptive-wavelet
    simulation uses 3 levels of db5 on 64 samples); levels that would halve the signal
    below one sample raise."""
    max_level = min(dwt_max_level(s, filter_len) for s in sizes)
    if level is None:
        return max_level
    if level < 0:
        raise ValueError(f"level must be >= 0, got {level}.")
    size = " x ".join(str(s) for s in sizes)
    halvings = min(int(s).bit_length() - 1 for s in sizes)  # floor(log2(N))
    if level > halvings:
        raise ValueError(
            f"level {level} is impossible for a signal of size {size}: it halves to one sample "
            f"after {halvings} levels (with filters of length {filter_len} the recommended "
            f"maximum level is {max_level}, pywt.dwt_max_level)."
        )
    if level > max_level:
        warnings.warn(
            f"level {level} is above the recommended maximum level {max_level} for a signal of "
            f"size {size} and filters of length {filter_len} (pywt.dwt_max_level): the deepest "
            "coefficients mostly describe the boundary extension.",
            stacklevel=3,
        )
    return level


# ----------------------------------------------------------------------- extension


def _positions(n: int, left: int, right: int) -> Tensor:
    return torch.arange(-left, n + right, dtype=torch.int64)


@lru_cache(maxsize=512)
def _index_map(mode: str, n: int, left: int, right: int, device: torch.device) -> Tuple[Tensor, Optional[Tensor]]:
    """Gather indices (and signs, for antisymmetric) of the extended signal, for the
    modes whose extension is a pure re-indexing. Cached per length and device."""
    with torch.inference_mode(False), torch.no_grad():
        m = _positions(n, left, right)
        sign = None
        if mode == "constant":
            idx = m.clamp(0, n - 1)
        elif mode == "periodic":
            idx = m.remainder(n)
        elif mode == "periodization":
            idx = m.remainder(n + n % 2).clamp(max=n - 1)
        elif mode in ("symmetric", "antisymmetric"):
            r = m.remainder(2 * n)
            idx = torch.where(r < n, r, 2 * n - 1 - r)
            if mode == "antisymmetric":
                sign = torch.where(r < n, 1, -1).to(torch.int8)
        elif mode == "reflect":
            r = m.remainder(2 * n - 2)
            idx = torch.where(r < n, r, 2 * n - 2 - r)
        else:  # pragma: no cover - guarded by the callers
            raise AssertionError(mode)
        return idx.to(device), None if sign is None else sign.to(device)


@lru_cache(maxsize=512)
def _affine_map(mode: str, n: int, left: int, right: int, device: torch.device) -> Tuple[Tensor, ...]:
    """Index and weight tensors of the edge extensions of ``smooth`` and
    ``antireflect`` (linear, not pure re-indexings), for the positions outside
    ``[0, n)``: left edge first, then right edge."""
    with torch.inference_mode(False), torch.no_grad():
        m = torch.cat([torch.arange(-left, 0), torch.arange(n, n + right)])
        if mode == "smooth":
            # x_ext[m] = x[i0] + k * (x[i0] - x[i1]), as pywt computes it.
            i0 = torch.where(m < 0, 0, n - 1)
            i1 = torch.where(m < 0, 1, n - 2)
            k = torch.where(m < 0, -m, m - n + 1)
            return i0.to(device), i1.to(device), k.to(device)
        # antireflect: segments of length n-1; segment s = floor(m / (n-1)).
        # even s: x[m - s(n-1)] + s (x[n-1] - x[0]); odd s: -x[(s+1)(n-1) - m] + x[0] + x[n-1] + s (x[n-1] - x[0]).
        s = torch.div(m, n - 1, rounding_mode="floor")
        u = m - s * (n - 1)
        odd = s.remainder(2) == 1
        idx = torch.where(odd, n - 1 - u, u)
        sign = torch.where(odd, -1, 1)
        a = torch.where(odd, 1 - s, -s)  # weight of x[0]
        b = torch.where(odd, 1 + s, s)  # weight of x[n-1]
        return idx.to(device), sign.to(device), a.to(device), b.to(device)


def _shape_along(t: Tensor, dim: int) -> List[int]:
    shape = [1] * (-dim)
    shape[0] = t.shape[0]
    return shape  # broadcastable along ``dim`` (dim is -1 or -2)


def extend(x: Tensor, left: int, right: int, mode: str, dim: int = -1) -> Tensor:
    """Extend ``x`` along ``dim`` (-1 or -2) by ``left`` and ``right`` samples with the
    boundary rule of ``mode``; wraps as often as needed for short signals."""
    if left == 0 and right == 0:
        return x
    n = x.shape[dim]
    if mode == "smooth" and n < 2:
        mode = "constant"
    if mode in ("reflect", "antireflect") and n < 2:
        raise ValueError(f"mode {mode!r} needs at least 2 samples along the transformed axis, got {n}.")
    if mode == "zero":
        return F.pad(x, (left, right) if dim == -1 else (0, 0, left, right))
    if mode in ("smooth", "antireflect"):
        maps = _affine_map(mode, n, left, right, x.device)
        view = _shape_along(maps[0], dim)
        if mode == "smooth":
            i0, i1, k = maps
            g0 = x.index_select(dim, i0)
            edges = g0 + k.to(x.dtype).view(view) * (g0 - x.index_select(dim, i1))
        else:
            idx, sign, a, b = maps
            first, last = x.narrow(dim, 0, 1), x.narrow(dim, n - 1, 1)
            edges = (
                sign.to(x.dtype).view(view) * x.index_select(dim, idx)
                + a.to(x.dtype).view(view) * first
                + b.to(x.dtype).view(view) * last
            )
        return torch.cat([edges.narrow(dim, 0, left), x, edges.narrow(dim, left, right)], dim=dim)
    idx, sign = _index_map(mode, n, left, right, x.device)
    out = x.index_select(dim, idx)
    if sign is not None:
        out = out * sign.to(x.dtype).view(_shape_along(sign, dim))
    return out


def analysis_pads(n: int, flen: int, mode: str) -> Tuple[int, int, int]:
    """(left, right, output length) of one analysis step, reproducing pywt's C code:
    ``out[k] = sum_j f[j] x_ext[2k + 1 - j]`` (``x_ext[F/2 + 2k - j]`` in periodization)."""
    if mode == "periodization":
        out = (n + 1) // 2
        left = flen - 1 - flen // 2
    else:
        out = (n + flen - 1) // 2
        left = flen - 2
    right = 2 * (out - 1) + flen - left - n
    return left, right, out


# ---------------------------------------------------------------------------- 1-D


def _dec_weight(filters: Filters) -> Tensor:
    # conv1d correlates, pywt convolves: reverse the analysis filters.
    return torch.stack([filters[0], filters[1]]).flip(-1).unsqueeze(1)  # (2, 1, F)


def _rec_weight(filters: Filters) -> Tensor:
    return torch.stack([filters[2], filters[3]]).unsqueeze(1)  # (2, 1, F): conv_transpose convolves


def _analysis_1d(x: Tensor, weight: Tensor, mode: str) -> Tensor:
    """(B, 1, N) -> (B, 2, K): approximation and detail as two channels of one conv."""
    flen = weight.shape[-1]
    left, right, _ = analysis_pads(x.shape[-1], flen, mode)
    return F.conv1d(extend(x, left, right, mode), weight, stride=2)


def _synthesis_1d(c: Tensor, weight: Tensor, mode: str) -> Tensor:
    """(B, 2, N) approximation and detail -> (B, 1, M), M = 2N in periodization,
    2N - F + 2 otherwise (pywt's ``idwt_buffer_length``)."""
    n, flen = c.shape[-1], weight.shape[-1]
    if mode == "periodization":
        # x[t] = sum_n c[n] f[(t + F/2 - 1 - 2n) mod 2N]: wrap the coefficients F//4 on each side.
        wrap = flen // 4
        c = extend(c, wrap, wrap, "periodic")
        return F.conv_transpose1d(c, weight, stride=2, padding=flen // 2 - 1 + 2 * wrap)
    if 2 * n < flen:
        raise ValueError(
            f"coefficients of length {n} are too short for filters of length {flen} (at least {flen // 2} "
            f"needed in mode {mode!r}); were they made with the same filters and mode?"
        )
    return F.conv_transpose1d(c, weight, stride=2, padding=flen - 2)


def _flatten(x: Tensor, dims: int) -> Tuple[Tensor, Tuple[int, ...]]:
    lead = tuple(x.shape[:-dims])
    return x.reshape(prod(lead), 1, *x.shape[x.dim() - dims :]), lead


def _pair_1d(ca: Optional[Tensor], cd: Optional[Tensor]) -> Tuple[Tensor, Tensor]:
    """pywt's idwt/waverec rules: one may be None (zeros); cA one longer than cD is cut."""
    if ca is None and cd is None:
        raise ValueError("idwt needs at least one of cA and cD.")
    if ca is None:
        ca = torch.zeros_like(cd)
    if cd is None:
        cd = torch.zeros_like(ca)
    if ca.shape[-1] == cd.shape[-1] + 1:
        ca = ca[..., : cd.shape[-1]]
    if ca.shape != cd.shape:
        raise ValueError(
            f"coefficient shape mismatch: cA {tuple(ca.shape)} and cD {tuple(cd.shape)} must have equal shapes "
            "(or cA one sample longer along the last axis)."
        )
    return ca, cd


def dwt(x: Tensor, filters: Sequence[Tensor], mode: str = "symmetric") -> Tuple[Tensor, Tensor]:
    r"""Single-level DWT along the last dimension, equal to ``pywt.dwt(x, wavelet, mode,
    axis=-1)``.

    Args:
        x (Tensor): signal of shape ``(..., N)``, floating point.
        filters (tuple of 4 Tensor): ``(dec_lo, dec_hi, rec_lo, rec_hi)``, e.g. from
                    :func:`filter_bank` or :func:`orthogonal_filter_bank`; may require
                    grad; cast to ``x``'s dtype and device.
        mode (str, optional): signal extension mode, one of :data:`MODES`.
                    Default: "symmetric"

    Returns:
        *tuple* ``(cA, cD)`` of shape ``(..., K)``, ``K = ceil(N / 2)`` in periodization
        and ``floor((N + F - 1) / 2)`` otherwise.
    """
    check_mode(mode)
    _check_signal(x, 1)
    fb = _cast_filters(filters, x)
    flat, lead = _flatten(x, 1)
    y = _analysis_1d(flat, _dec_weight(fb), mode)
    return y[:, 0].reshape(*lead, -1), y[:, 1].reshape(*lead, -1)


def idwt(cA: Optional[Tensor], cD: Optional[Tensor], filters: Sequence[Tensor], mode: str = "symmetric") -> Tensor:
    r"""Single-level inverse DWT along the last dimension, equal to ``pywt.idwt(cA, cD,
    wavelet, mode, axis=-1)``, with :func:`waverec`'s rule for a ``cA`` one sample longer
    than ``cD`` (its last sample is dropped, as pywt does between levels).

    Args:
        cA (Tensor or None): approximation coefficients ``(..., K)``; None means zeros.
        cD (Tensor or None): detail coefficients ``(..., K)``; None means zeros.
        filters (tuple of 4 Tensor): ``(dec_lo, dec_hi, rec_lo, rec_hi)``.
        mode (str, optional): the mode of the decomposition. Default: "symmetric"

    Returns:
        *Tensor* of shape ``(..., 2K)`` in periodization and ``(..., 2K - F + 2)``
        otherwise.
    """
    check_mode(mode)
    ca, cd = _pair_1d(cA, cD)
    _check_signal(ca, 1)
    fb = _cast_filters(filters, ca)
    lead = tuple(ca.shape[:-1])
    c = torch.stack([ca, cd], dim=-2).reshape(prod(lead), 2, ca.shape[-1])
    return _synthesis_1d(c, _rec_weight(fb), mode).reshape(*lead, -1)


def wavedec(x: Tensor, filters: Sequence[Tensor], level: Optional[int] = None, mode: str = "symmetric") -> List[Tensor]:
    r"""Multi-level DWT along the last dimension, equal to ``pywt.wavedec(x, wavelet,
    mode, level, axis=-1)``.

    A ``level`` above ``pywt.dwt_max_level`` warns, as pywt does (the deepest
    coefficients then mostly describe the boundary extension); a level that would halve
    the signal below one sample raises.

    Args:
        x (Tensor): signal of shape ``(..., N)``.
        filters (tuple of 4 Tensor): ``(dec_lo, dec_hi, rec_lo, rec_hi)``.
        level (int, optional): number of levels. Default: :func:`dwt_max_level`\ ``(N, F)``
        mode (str, optional): signal extension mode, one of :data:`MODES`.
                    Default: "symmetric"

    Returns:
        *list* ``[cA_n, cD_n, ..., cD_1]`` of tensors of shape ``(..., K_i)``.
    """
    check_mode(mode)
    _check_signal(x, 1)
    fb = _cast_filters(filters, x)
    level = _check_level([x.shape[-1]], fb[0].shape[0], level)
    weight = _dec_weight(fb)
    a, lead = _flatten(x, 1)
    details = []
    for _ in range(level):
        y = _analysis_1d(a, weight, mode)
        a = y[:, :1]
        details.append(y[:, 1].reshape(*lead, -1))
    return [a.reshape(*lead, -1)] + details[::-1]


def waverec(
    coeffs: Sequence[Optional[Tensor]], filters: Sequence[Tensor], mode: str = "symmetric", length: Optional[int] = None
) -> Tensor:
    r"""Multi-level inverse DWT along the last dimension, equal to ``pywt.waverec(coeffs,
    wavelet, mode, axis=-1)``.

    pywt returns one sample more than an odd-length signal had (and more for signals
    that were extended in between); pass ``length`` to get the original length back.

    Args:
        coeffs (list of Tensor): ``[cA_n, cD_n, ..., cD_1]`` as from :func:`wavedec`;
                    detail entries may be None (zeros).
        filters (tuple of 4 Tensor): ``(dec_lo, dec_hi, rec_lo, rec_hi)``.
        mode (str, optional): the mode of the decomposition. Default: "symmetric"
        length (int, optional): keep the first ``length`` samples. Default: all

    Returns:
        *Tensor* of shape ``(..., M)`` (``M = length`` when given).
    """
    check_mode(mode)
    if not isinstance(coeffs, (list, tuple)) or len(coeffs) == 0 or coeffs[0] is None:
        raise ValueError("waverec expects a non-empty list [cA_n, cD_n, ..., cD_1] with cA_n a tensor.")
    a = coeffs[0]
    _check_signal(a, 1)
    if len(coeffs) > 1:
        fb = _cast_filters(filters, a)
        weight = _rec_weight(fb)
        lead = tuple(a.shape[:-1])
        for d in coeffs[1:]:
            ca, cd = _pair_1d(a, d)
            c = torch.stack([ca, cd], dim=-2).reshape(prod(lead), 2, ca.shape[-1])
            a = _synthesis_1d(c, weight, mode).reshape(*lead, -1)
    return _cut(a, (length,))


def _cut(x: Tensor, sizes: Sequence[Optional[int]]) -> Tensor:
    for dim, size in zip(range(-len(sizes), 0), sizes):
        if size is None:
            continue
        if not 0 < size <= x.shape[dim]:
            raise ValueError(
                f"cannot cut the reconstruction of size {x.shape[dim]} along dimension {dim} to {size}; "
                "pass the size of the signal that was decomposed."
            )
        x = x.narrow(dim, 0, size)
    return x


# ---------------------------------------------------------------------------- 2-D


def _analysis_2d(x: Tensor, fb: Filters, mode: str) -> Tensor:
    """(B, 1, H, W) -> (B, 4, H', W') with channels (cA, cH, cV, cD): a conv along W with
    two output channels, then a grouped conv along H."""
    flen = fb[0].shape[0]
    w1 = _dec_weight(fb)  # (2, 1, F)
    left, right, _ = analysis_pads(x.shape[-1], flen, mode)
    y = F.conv2d(extend(x, left, right, mode, dim=-1), w1.unsqueeze(2), stride=(1, 2))  # (B, 2, H, W')
    left, right, _ = analysis_pads(x.shape[-2], flen, mode)
    # groups: W-lowpass -> (aa, da), W-highpass -> (ad, dd), i.e. (cA, cH, cV, cD)
    w2 = w1.repeat(2, 1, 1).unsqueeze(-1)  # (4, 1, F, 1)
    return F.conv2d(extend(y, left, right, mode, dim=-2), w2, stride=(2, 1), groups=2)


def _synthesis_2d(c: Tensor, fb: Filters, mode: str) -> Tensor:
    """(B, 4, H', W') with channels (cA, cH, cV, cD) -> (B, 1, H, W)."""
    flen = fb[2].shape[0]
    w1 = _rec_weight(fb)  # (2, 1, F)
    if mode == "periodization":
        wrap = flen // 4
        pad = flen // 2 - 1 + 2 * wrap
        c = extend(c, wrap, wrap, "periodic", dim=-2)
    else:
        if 2 * min(c.shape[-2:]) < flen:
            raise ValueError(
                f"coefficients of shape {tuple(c.shape[-2:])} are too small for filters of length {flen}; "
                "were they made with the same filters and mode?"
            )
        wrap, pad = 0, flen - 2
    # along H: (cA, cH) -> W-lowpass, (cV, cD) -> W-highpass
    y = F.conv_transpose2d(c, w1.repeat(2, 1, 1).unsqueeze(-1), stride=(2, 1), padding=(pad, 0), groups=2)
    if wrap:
        y = extend(y, wrap, wrap, "periodic", dim=-1)
    return F.conv_transpose2d(y, w1.unsqueeze(2), stride=(1, 2), padding=(0, pad))


def _stack_2d(ca: Optional[Tensor], details: Sequence[Optional[Tensor]], cut: bool) -> Tensor:
    if len(details) != 3:
        raise ValueError(f"2-D detail coefficients must be a tuple (cH, cV, cD), got {len(details)} entries.")
    present = [t for t in (ca, *details) if t is not None]
    if not present:
        raise ValueError("idwt2 needs at least one coefficient array.")
    ref = next((t for t in details if t is not None), present[0])
    if ca is not None and cut and ca.shape != ref.shape:
        # pywt.waverec2: the approximation may exceed the details by one sample per axis
        if all(a - d in (0, 1) for a, d in zip(ca.shape[-2:], ref.shape[-2:])) and ca.shape[:-2] == ref.shape[:-2]:
            ca = ca[..., : ref.shape[-2], : ref.shape[-1]]
    parts = [t if t is not None else torch.zeros_like(ref) for t in (ca, *details)]
    if any(t.shape != parts[0].shape for t in parts):
        raise ValueError(
            f"coefficient shape mismatch: {[tuple(t.shape) for t in (ca, *details) if t is not None]} "
            "(cA, cH, cV, cD must have equal shapes)."
        )
    return torch.stack(parts, dim=-3)


def dwt2(x: Tensor, filters: Sequence[Tensor], mode: str = "symmetric") -> Tuple[Tensor, Tuple[Tensor, Tensor, Tensor]]:
    r"""Single-level 2-D DWT over the last two dimensions, equal to ``pywt.dwt2(x,
    wavelet, mode, axes=(-2, -1))``.

    Args:
        x (Tensor): image of shape ``(..., H, W)``.
        filters (tuple of 4 Tensor): ``(dec_lo, dec_hi, rec_lo, rec_hi)``.
        mode (str, optional): signal extension mode, one of :data:`MODES`.
                    Default: "symmetric"

    Returns:
        *tuple* ``(cA, (cH, cV, cD))``: ``cH`` is lowpass along W and highpass along H
        (horizontal edges), ``cV`` the opposite, as in pywt.
    """
    check_mode(mode)
    _check_signal(x, 2)
    fb = _cast_filters(filters, x)
    flat, lead = _flatten(x, 2)
    y = _analysis_2d(flat, fb, mode)
    out = [y[:, i].reshape(*lead, *y.shape[-2:]) for i in range(4)]
    return out[0], (out[1], out[2], out[3])


def idwt2(
    coeffs: Tuple[Optional[Tensor], Details2d], filters: Sequence[Tensor], mode: str = "symmetric"
) -> Tensor:
    r"""Single-level inverse 2-D DWT over the last two dimensions, equal to
    ``pywt.idwt2(coeffs, wavelet, mode, axes=(-2, -1))``; like :func:`idwt`, a ``cA``
    one sample larger than the details along an axis is cut first.

    Args:
        coeffs (tuple): ``(cA, (cH, cV, cD))``; any entry may be None (zeros).
        filters (tuple of 4 Tensor): ``(dec_lo, dec_hi, rec_lo, rec_hi)``.
        mode (str, optional): the mode of the decomposition. Default: "symmetric"

    Returns:
        *Tensor* of shape ``(..., H, W)``.
    """
    check_mode(mode)
    ca, details = coeffs
    c = _stack_2d(ca, details, cut=True)
    _check_signal(c, 2)
    fb = _cast_filters(filters, c)
    lead = tuple(c.shape[:-3])
    y = _synthesis_2d(c.reshape(prod(lead), 4, *c.shape[-2:]), fb, mode)
    return y.reshape(*lead, *y.shape[-2:])


def wavedec2(
    x: Tensor, filters: Sequence[Tensor], level: Optional[int] = None, mode: str = "symmetric"
) -> List[Union[Tensor, Tuple[Tensor, Tensor, Tensor]]]:
    r"""Multi-level 2-D DWT over the last two dimensions, equal to ``pywt.wavedec2(x,
    wavelet, mode, level, axes=(-2, -1))``. As in :func:`wavedec`, a level above the
    maximum (the smaller of the two axes' ``pywt.dwt_max_level``) warns and an impossible
    one raises.

    Args:
        x (Tensor): image of shape ``(..., H, W)``.
        filters (tuple of 4 Tensor): ``(dec_lo, dec_hi, rec_lo, rec_hi)``.
        level (int, optional): number of levels. Default: the maximum level.
        mode (str, optional): signal extension mode, one of :data:`MODES`.
                    Default: "symmetric"

    Returns:
        *list* ``[cA_n, (cH_n, cV_n, cD_n), ..., (cH_1, cV_1, cD_1)]``.
    """
    check_mode(mode)
    _check_signal(x, 2)
    fb = _cast_filters(filters, x)
    level = _check_level(list(x.shape[-2:]), fb[0].shape[0], level)
    a, lead = _flatten(x, 2)
    details: List[Tuple[Tensor, Tensor, Tensor]] = []
    for _ in range(level):
        y = _analysis_2d(a, fb, mode)
        a = y[:, :1]
        size = y.shape[-2:]
        details.append(tuple(y[:, i].reshape(*lead, *size) for i in (1, 2, 3)))  # type: ignore[arg-type]
    return [a.reshape(*lead, *a.shape[-2:])] + details[::-1]


def waverec2(
    coeffs: Sequence[Any],
    filters: Sequence[Tensor],
    mode: str = "symmetric",
    shape: Optional[Sequence[int]] = None,
) -> Tensor:
    r"""Multi-level inverse 2-D DWT over the last two dimensions, equal to
    ``pywt.waverec2(coeffs, wavelet, mode, axes=(-2, -1))``.

    Args:
        coeffs (list): ``[cA_n, (cH_n, cV_n, cD_n), ..., (cH_1, cV_1, cD_1)]`` as from
                    :func:`wavedec2`; a detail array, or a whole level's tuple, may be
                    None (zeros).
        filters (tuple of 4 Tensor): ``(dec_lo, dec_hi, rec_lo, rec_hi)``.
        mode (str, optional): the mode of the decomposition. Default: "symmetric"
        shape (tuple of 2 int, optional): keep the first ``(H, W)`` samples, the size of
                    the decomposed image (pywt returns one more along odd axes).
                    Default: all

    Returns:
        *Tensor* of shape ``(..., H, W)``.
    """
    check_mode(mode)
    if not isinstance(coeffs, (list, tuple)) or len(coeffs) == 0 or coeffs[0] is None:
        raise ValueError("waverec2 expects a non-empty list [cA_n, (cH_n, cV_n, cD_n), ...] with cA_n a tensor.")
    a = coeffs[0]
    _check_signal(a, 2)
    if len(coeffs) > 1:
        fb = _cast_filters(filters, a)
        lead = tuple(a.shape[:-2])
        for i, details in enumerate(coeffs[1:]):
            c = _stack_2d(a, (None, None, None) if details is None else tuple(details), cut=i > 0)
            y = _synthesis_2d(c.reshape(prod(lead), 4, *c.shape[-2:]), fb, mode)
            a = y.reshape(*lead, *y.shape[-2:])
    if shape is not None and len(shape) != 2:
        raise ValueError(f"shape must be (H, W), got {tuple(shape)}.")
    return _cut(a, (None, None) if shape is None else tuple(shape))
