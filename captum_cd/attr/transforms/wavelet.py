r"""Discrete wavelet transforms as TRIM transforms: all coefficients of a multi-level DWT
as one tensor, and feature masks that group them by scale.

The wavelet is fixed (a PyWavelets name, a ``pywt.Wavelet``, an orthogonal lowpass
filter) or learned: any module with a ``filters()`` method, such as
:class:`~captum_cd.wavelets.AdaptiveWavelet`, is called on every use, so gradients
reach its parameters through the transform.
"""

from functools import lru_cache
from math import prod
from typing import Any, Dict, List, Optional, Sequence, Tuple

import torch
from torch import nn, Tensor

from captum_cd.attr.transforms.base import Transform
from captum_cd.attr.transforms.dwt import (
    analysis_pads,
    check_mode,
    dwt_max_level,
    filter_bank,
    Filters,
    orthogonal_filter_bank,
    wavedec,
    wavedec2,
    waverec,
    waverec2,
)

__all__ = ["WaveletTransform", "WaveletTransform2d", "coefficient_sizes"]


@lru_cache(maxsize=256)
def coefficient_sizes(length: int, filter_len: int, levels: int, mode: str) -> Tuple[int, ...]:
    r"""The lengths of ``wavedec``'s outputs ``[cA_J, cD_J, ..., cD_1]`` for a signal of
    ``length`` samples (pywt's rules, as the DWT applies them level by level).

    Args:
        length (int): signal length.
        filter_len (int): length of the wavelet's filters.
        levels (int): number of levels.
        mode (str): extension mode.
    """
    sizes, n = [], length
    for _ in range(levels):
        n = analysis_pads(n, filter_len, mode)[2]
        sizes.append(n)
    return tuple([n] + sizes[::-1]) if levels else (length,)


class _WaveletBase(Transform):
    """What the 1-D and 2-D transforms share: where the filters come from."""

    def __init__(self, wavelet: Any, levels: Optional[int], mode: str) -> None:
        super().__init__()
        self.mode = check_mode(mode)
        if levels is not None and levels < 0:
            raise ValueError(f"levels must be None (the maximum level) or >= 0, got {levels}.")
        if isinstance(wavelet, nn.Module):
            if not callable(getattr(wavelet, "filters", None)):
                raise TypeError(
                    f"a wavelet module must have a filters() method returning (dec_lo, dec_hi, rec_lo, rec_hi); "
                    f"{type(wavelet).__name__} has none."
                )
            self.wavelet = wavelet  # a submodule: its parameters are this transform's
            levels = getattr(wavelet, "levels", None) if levels is None else levels
        else:
            self.wavelet = None
            for name, f in zip(("dec_lo", "dec_hi", "rec_lo", "rec_hi"), _fixed_filters(wavelet)):
                self.register_buffer(name, f)
        self.levels = levels

    def filters(self) -> Filters:
        r"""The current ``(dec_lo, dec_hi, rec_lo, rec_hi)``; differentiable for a learned wavelet."""
        if self.wavelet is not None:
            return self.wavelet.filters()
        return self.dec_lo, self.dec_hi, self.rec_lo, self.rec_hi

    def _filter_len(self) -> int:
        if self.wavelet is not None and hasattr(self.wavelet, "filter_length"):
            return self.wavelet.filter_length
        return self.filters()[0].shape[0]

    def _levels_for(self, sizes: Sequence[int], filter_len: Optional[int] = None) -> int:
        if self.levels is not None:
            return self.levels
        filter_len = filter_len or self._filter_len()
        return min(dwt_max_level(s, filter_len) for s in sizes)

    def extra_repr(self) -> str:
        return f"levels={self.levels}, mode={self.mode!r}"


def _fixed_filters(wavelet: Any) -> Filters:
    """float64 filters of a pywt name or Wavelet, or of an orthogonal lowpass array."""
    import pywt

    if isinstance(wavelet, (str, pywt.Wavelet)):
        return filter_bank(wavelet)
    try:
        h = torch.as_tensor(wavelet, dtype=torch.float64).detach().clone()
    except (TypeError, ValueError, RuntimeError) as error:
        raise TypeError(
            "wavelet must be a PyWavelets name ('db5'), a pywt.Wavelet, an orthogonal lowpass filter "
            f"(1-D array), or a module with a filters() method; got {type(wavelet).__name__}."
        ) from error
    return orthogonal_filter_bank(h)


class WaveletTransform(_WaveletBase):
    r"""All coefficients of a multi-level 1-D DWT along the last dimension, concatenated:
    ``(..., N) -> (..., K)`` in the order ``[cA_J, cD_J, ..., cD_1]`` of ``pywt.wavedec``.

    The inverse needs the signal length ``N`` (odd ``N`` and ``N + 1`` give the same
    coefficient sizes). It is ``length`` when given; otherwise the length of the last
    signal ``forward`` saw with ``K`` coefficients; otherwise the even length
    (what ``pywt.waverec`` returns).

    Args:
        wavelet (str, pywt.Wavelet, array or nn.Module, optional): a PyWavelets name, a
                    ``pywt.Wavelet``, the lowpass (scaling, ``rec_lo``) filter of an
                    orthogonal wavelet, or a module with a ``filters()`` method returning
                    ``(dec_lo, dec_hi, rec_lo, rec_hi)`` (e.g.
                    :class:`~captum_cd.wavelets.AdaptiveWavelet`; it becomes a
                    submodule, so its parameters are trained through this transform).
                    Default: "db5"
        levels (int, optional): number of levels. Default: the module's ``levels`` for a
                    module, else ``pywt.dwt_max_level`` of each signal's length
        mode (str, optional): signal extension mode, one of ``dwt.MODES``.
                    Default: "zero"
        length (int, optional): the signal length, when fixed. Default: None (see above)

    Examples::

        >>> transform = WaveletTransform("db5", levels=3)
        >>> trim = TRIM(ContextualDecomposition(model), transform)
        >>> scores = trim.attribute(x, feature_mask=transform.scale_ids(x.shape[-1]))
    """

    def __init__(self, wavelet: Any = "db5", levels: Optional[int] = None, mode: str = "zero", length: Optional[int] = None) -> None:
        super().__init__(wavelet, levels, mode)
        self.length = length
        self._seen: Dict[int, int] = {}  # total coefficients -> signal length

    def sizes(self, length: int) -> Tuple[int, ...]:
        r"""Coefficient counts ``(len(cA_J), len(cD_J), ..., len(cD_1))`` for a signal of ``length``."""
        return coefficient_sizes(length, self._filter_len(), self._levels_for([length]), self.mode)

    def coefficients(self, x: Tensor) -> List[Tensor]:
        r"""``wavedec(x)``: the list ``[cA_J, cD_J, ..., cD_1]``, each ``(..., K_i)``."""
        fb = self.filters()
        return wavedec(x, fb, self._levels_for([x.shape[-1]], fb[0].shape[0]), self.mode)

    def reconstruct(self, coeffs: Sequence[Optional[Tensor]], length: Optional[int] = None) -> Tensor:
        r"""``waverec(coeffs)`` cut to ``length`` (Default: as ``inverse`` decides)."""
        if length is None and self.length is None and all(c is not None for c in coeffs):
            length = self._seen.get(sum(c.shape[-1] for c in coeffs))
        length = length or self.length
        return waverec(list(coeffs), self.filters(), self.mode, length)

    def forward(self, x: Tensor) -> Tensor:
        coeffs = self.coefficients(x)
        s = torch.cat(coeffs, dim=-1)
        self._seen[s.shape[-1]] = x.shape[-1]
        return s

    def inverse(self, s: Tensor, length: Optional[int] = None) -> Tensor:
        length = length or self.length or self._seen.get(s.shape[-1]) or self._infer_length(s.shape[-1])
        coeffs = list(torch.split(s, list(self.sizes(length)), dim=-1))
        return waverec(coeffs, self.filters(), self.mode, length)

    def _infer_length(self, total: int) -> int:
        for n in range(2, 2 * total + 2, 2):  # total >= n / 2 in every mode
            if sum(self.sizes(n)) == total:
                return n
        if total == 1:
            return 1
        raise ValueError(
            f"{total} coefficients match no signal length for this wavelet, levels={self.levels} and "
            f"mode={self.mode!r}; pass length=..."
        )

    def scale_ids(self, length: Optional[int] = None, leading: Sequence[int] = ()) -> Tensor:
        r"""Captum feature-mask ids over the coefficients, one group per scale: 0 for
        ``cA_J``, 1 for ``cD_J``, ..., ``J`` for ``cD_1`` (the coefficient list's order).

        Args:
            length (int, optional): the signal length. Default: this transform's ``length``
            leading (tuple of int, optional): the input's dimensions between the batch and
                        the signal (channels). Default: ()

        Returns:
            *Tensor* of shape ``(1, *leading, K)``, for TRIM's ``feature_mask``.
        """
        length = length or self.length
        if length is None:
            raise ValueError("scale_ids needs the signal length: scale_ids(x.shape[-1]).")
        sizes = self.sizes(length)
        ids = torch.repeat_interleave(torch.arange(len(sizes)), torch.tensor(sizes))
        return ids.view(1, *([1] * len(leading)), -1).expand(1, *leading, -1).contiguous()


class WaveletTransform2d(_WaveletBase):
    r"""All coefficients of a multi-level 2-D DWT over the last two dimensions, each
    subband flattened and concatenated: ``(..., H, W) -> (..., K)`` in the order
    ``[cA_J, cH_J, cV_J, cD_J, ..., cH_1, cV_1, cD_1]`` of ``pywt.wavedec2``. The inverse
    needs the image size: ``size`` when given, else the size of the last image
    ``forward`` saw with ``K`` coefficients (there is no fallback: pass ``size``).

    Args:
        wavelet (str, pywt.Wavelet, array or nn.Module, optional): as for
                    :class:`WaveletTransform` (a module such as
                    :class:`~captum_cd.wavelets.AdaptiveWavelet2d`). Default: "db5"
        levels (int, optional): number of levels. Default: the module's ``levels``, else
                    the maximum level of the image size
        mode (str, optional): signal extension mode. Default: "zero"
        size (tuple of 2 int, optional): the image size ``(H, W)``. Default: None
    """

    def __init__(self, wavelet: Any = "db5", levels: Optional[int] = None, mode: str = "zero", size: Optional[Sequence[int]] = None) -> None:
        super().__init__(wavelet, levels, mode)
        self.size = tuple(size) if size is not None else None
        self._seen: Dict[int, Tuple[int, int]] = {}

    def shapes(self, size: Sequence[int]) -> List[Tuple[int, int]]:
        r"""The shape of every subband, in the concatenation order, for an image of ``size``."""
        levels, flen = self._levels_for(size), self._filter_len()
        rows = coefficient_sizes(size[0], flen, levels, self.mode)
        cols = coefficient_sizes(size[1], flen, levels, self.mode)
        return [(rows[0], cols[0])] + [(r, c) for r, c in zip(rows[1:], cols[1:]) for _ in range(3)]

    def coefficients(self, x: Tensor) -> List[Any]:
        r"""``wavedec2(x)``: ``[cA_J, (cH_J, cV_J, cD_J), ..., (cH_1, cV_1, cD_1)]``."""
        fb = self.filters()
        return wavedec2(x, fb, self._levels_for(x.shape[-2:], fb[0].shape[0]), self.mode)

    def reconstruct(self, coeffs: Sequence[Any], size: Optional[Sequence[int]] = None) -> Tensor:
        r"""``waverec2(coeffs)`` cut to ``size`` (Default: this transform's ``size``, else
        the size of the last image decomposed into these subband shapes)."""
        size = size or self.size or self._seen.get(_count_2d(coeffs))
        return waverec2(list(coeffs), self.filters(), self.mode, size)

    def forward(self, x: Tensor) -> Tensor:
        coeffs = self.coefficients(x)
        flat = [coeffs[0].flatten(-2)] + [band.flatten(-2) for level in coeffs[1:] for band in level]
        s = torch.cat(flat, dim=-1)
        self._seen[s.shape[-1]] = tuple(x.shape[-2:])
        return s

    def inverse(self, s: Tensor, size: Optional[Sequence[int]] = None) -> Tensor:
        size = size or self.size or self._seen.get(s.shape[-1])
        if size is None:
            raise ValueError(f"cannot tell the image size of {s.shape[-1]} coefficients; pass size=(H, W).")
        shapes = self.shapes(size)
        bands = [b.unflatten(-1, shape) for b, shape in zip(torch.split(s, [prod(p) for p in shapes], dim=-1), shapes)]
        coeffs = [bands[0]] + [tuple(bands[i : i + 3]) for i in range(1, len(bands), 3)]
        return waverec2(coeffs, self.filters(), self.mode, size)

    def subband_ids(self, size: Optional[Sequence[int]] = None, leading: Sequence[int] = ()) -> Tensor:
        r"""Feature-mask ids, one group per subband: 0 for ``cA_J``, then ``1, 2, 3`` for
        ``cH_J, cV_J, cD_J``, and so on to ``3J`` for ``cD_1``. Shape ``(1, *leading, K)``."""
        return self._ids(size, leading, per_subband=True)

    def scale_ids(self, size: Optional[Sequence[int]] = None, leading: Sequence[int] = ()) -> Tensor:
        r"""Feature-mask ids, one group per scale (the three subbands of a level
        together): 0 for ``cA_J``, 1 for level ``J``, ..., ``J`` for level 1."""
        return self._ids(size, leading, per_subband=False)

    def _ids(self, size, leading, per_subband: bool) -> Tensor:
        size = size or self.size
        if size is None:
            raise ValueError("the image size is needed: pass size=x.shape[-2:].")
        counts = torch.tensor([prod(p) for p in self.shapes(size)])
        groups = torch.arange(len(counts))
        if not per_subband:
            groups = (groups + 2) // 3  # 0 | 1 1 1 | 2 2 2 | ...
        ids = torch.repeat_interleave(groups, counts)
        return ids.view(1, *([1] * len(leading)), -1).expand(1, *leading, -1).contiguous()


def _count_2d(coeffs: Sequence[Any]) -> Optional[int]:
    try:
        return coeffs[0].shape[-2:].numel() + sum(b.shape[-2:].numel() for level in coeffs[1:] for b in level)
    except (AttributeError, TypeError):
        return None  # None entries: the size must be given
