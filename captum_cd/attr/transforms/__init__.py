"""Transforms for TRIM: each an ``nn.Module`` with ``forward`` and ``inverse``."""

from captum_cd.attr.transforms.base import Transform
from captum_cd.attr.transforms.dictionary import DictionaryTransform
from captum_cd.attr.transforms.fourier import Fourier1d, Fourier2d, frequency_bins, radial_bands
from captum_cd.attr.transforms.wavelet import WaveletTransform, WaveletTransform2d

__all__ = [
    "DictionaryTransform",
    "Fourier1d",
    "Fourier2d",
    "Transform",
    "WaveletTransform",
    "WaveletTransform2d",
    "frequency_bins",
    "radial_bands",
]
