r"""Adaptive wavelet distillation (Ha et al., NeurIPS 2021; docs/methods.md, "Adaptive wavelet distillation").

Learn an orthogonal wavelet from data and a trained model ``f`` (the teacher), so that
the model's attributions concentrate on few wavelet coefficients, then distil the model
into a linear model on a handful of coefficients per scale:

- ``adaptive``: :class:`AdaptiveWavelet` / :class:`AdaptiveWavelet2d`, the
  learnable wavelet (a DWT identical to PyWavelets whose lowpass filter is an
  ``nn.Parameter``), and :func:`validity_terms`, the penalties that keep it a wavelet;
- ``distillation``: :class:`AWDLoss` (reconstruction + validity + sparsity + interpretation) and
  :func:`fit_wavelet`, the plain training loop;
- ``estimators``: :class:`WaveletDistilledRegressor` / :class:`WaveletDistilledClassifier`, the
  distilled model as scikit-learn estimators (so ``GridSearchCV`` can choose the penalty
  weights).

Where the released ``awave`` code differs: its frequency penalty uses complex tensors and
fails on current torch (here it is real arithmetic, on a grid fine enough to pin the
condition down); its periodization is wrong for levels shorter than the filter and it
loses the length of odd signals (the DWT here matches pywt and keeps the length); its
``fit`` trains full-batch on CUDA by default (here mini-batches on the data's device).
Orthogonality is a soft penalty in the reference; ``parametrization="lattice"`` makes it
exact.
"""

from captum_cd.wavelets.adaptive import (
    AdaptiveWavelet,
    AdaptiveWavelet2d,
    lattice_angles,
    lattice_filter,
    validity_terms,
    wavelet_distance,
)
from captum_cd.wavelets.distillation import AWDLoss, fit_wavelet

__all__ = [
    "AWDLoss",
    "AdaptiveWavelet",
    "AdaptiveWavelet2d",
    "WaveletDistilledRegressor",
    "WaveletDistilledClassifier",
    "fit_wavelet",
    "lattice_angles",
    "lattice_filter",
    "top_coefficients",
    "validity_terms",
    "wavelet_distance",
]


# The distilled estimators need scikit-learn (and it loads pandas when present): imported
# on first use so that ``import captum_cd`` stays light.
_DISTILLED = ("top_coefficients", "WaveletDistilledRegressor", "WaveletDistilledClassifier")


def __getattr__(name: str):
    if name in _DISTILLED:
        from captum_cd.wavelets import estimators

        return getattr(estimators, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
