"""Transforms for TRIM: each an ``nn.Module`` with ``forward`` and ``inverse``."""

from captum_cd.attr.transforms.base import Transform
from captum_cd.attr.transforms.dictionary import DictionaryTransform
from captum_cd.attr.transforms.fourier import Fourier1d, Fourier2d, frequency_bins, radial_bands

__all__ = ["DictionaryTransform", "Fourier1d", "Fourier2d", "Transform", "frequency_bins", "radial_bands"]
