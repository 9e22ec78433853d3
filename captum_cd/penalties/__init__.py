"""What plugs into a training loop: the CDEP regulariser, the gradient penalties it is
compared with, and adaptive wavelet distillation (a learnable wavelet, its loss, its
trainer and the distilled scikit-learn models)."""

from captum_cd.penalties.awd import (
    AdaptiveWavelet,
    AdaptiveWavelet2d,
    AWDLoss,
    fit_wavelet,
    validity_terms,
    wavelet_distance,
)
from captum_cd.penalties.cdep import CDEPRegularizer
from captum_cd.penalties.gradient_penalties import ExpectedGradientsPenalty, RRRPenalty

__all__ = [
    "AWDLoss",
    "AdaptiveWavelet",
    "AdaptiveWavelet2d",
    "CDEPRegularizer",
    "ExpectedGradientsPenalty",
    "RRRPenalty",
    "WaveletDistilled",
    "WaveletDistilledClassifier",
    "fit_wavelet",
    "validity_terms",
    "wavelet_distance",
]


def __getattr__(name: str):
    # The scikit-learn estimators load on first use (see captum_cd.penalties.awd).
    if name in ("WaveletDistilled", "WaveletDistilledClassifier"):
        from captum_cd.penalties import awd

        return getattr(awd, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
