"""Fourier transforms for TRIM, and groupings of their coefficients into bands."""

from typing import Optional, Sequence

import torch
from torch import Tensor

from captum_cd.attr.transforms.base import Transform


class Fourier1d(Transform):
    r"""Real FFT along the last dimension: ``(..., n) -> (..., n // 2 + 1, 2)``
    (real and imaginary parts). The inverse keeps ``n`` (``irfft(..., n=n)``), so odd
    lengths come back whole (the original TRIM code's ``[:, :-1]`` lost a sample).

    Args:
        n (int): the signal length.
        norm (str, optional): ``torch.fft`` normalisation. Default: "ortho"
    """

    complex_coefficients = True

    def __init__(self, n: int, norm: str = "ortho") -> None:
        super().__init__()
        self.n, self.norm = n, norm

    def forward(self, x: Tensor) -> Tensor:
        return torch.view_as_real(torch.fft.rfft(x, n=self.n, norm=self.norm))

    def inverse(self, s: Tensor) -> Tensor:
        return torch.fft.irfft(torch.view_as_complex(s.contiguous()), n=self.n, norm=self.norm)


class Fourier2d(Transform):
    r"""Real 2-D FFT over the last two dimensions:
    ``(..., H, W) -> (..., H, W // 2 + 1, 2)``; the inverse keeps ``(H, W)``.

    Args:
        size (tuple[int, int]): ``(H, W)``.
        norm (str, optional): ``torch.fft`` normalisation. Default: "ortho"
    """

    complex_coefficients = True

    def __init__(self, size: Sequence[int], norm: str = "ortho") -> None:
        super().__init__()
        self.size, self.norm = tuple(size), norm

    def forward(self, x: Tensor) -> Tensor:
        return torch.view_as_real(torch.fft.rfft2(x, s=self.size, norm=self.norm))

    def inverse(self, s: Tensor) -> Tensor:
        return torch.fft.irfft2(torch.view_as_complex(s.contiguous()), s=self.size, norm=self.norm)


def frequency_bins(n: int, band: int = 1, leading: Sequence[int] = ()) -> Tensor:
    r"""Captum feature-mask ids for :class:`Fourier1d` coefficients: one group per
    frequency bin (``band=1``) or per band of ``band`` consecutive bins, real and
    imaginary parts together. Shape ``(1, *leading, n // 2 + 1, 2)``; ``leading`` are the
    input's dimensions between the batch and the signal (channels)."""
    ids = (torch.arange(n // 2 + 1) // band).view(-1, 1).expand(-1, 2)
    return ids.reshape(1, *([1] * len(leading)), n // 2 + 1, 2).expand(1, *leading, -1, 2).contiguous()


def radial_bands(size: Sequence[int], bands: int, leading: Sequence[int] = (), edges: Optional[Sequence[float]] = None) -> Tensor:
    r"""Captum feature-mask ids for :class:`Fourier2d` coefficients: rings of equal width
    in normalised radial frequency (0 at the DC term, 1 at the Nyquist corner's radius
    along an axis), ``bands`` of them, real and imaginary parts together.

    Returns:
        *Tensor* of shape ``(1, *leading, H, W // 2 + 1, 2)`` with ids ``0..bands-1``.
    """
    height, width = size
    fy = torch.fft.fftfreq(height).abs().view(-1, 1)
    fx = torch.fft.rfftfreq(width).view(1, -1)
    radius = torch.sqrt(fy**2 + fx**2) / 0.5  # 1 = Nyquist along an axis
    edges = torch.as_tensor(edges) if edges is not None else torch.linspace(0, radius.max().item() + 1e-9, bands + 1)
    ids = (torch.bucketize(radius, edges[1:-1], right=True)).clamp(max=bands - 1)
    ids = ids.unsqueeze(-1).expand(-1, -1, 2)
    return ids.reshape(1, *([1] * len(leading)), *ids.shape).expand(1, *leading, *ids.shape).contiguous()
