"""Penalties on explanations while training: the CDEP regulariser and the gradient
penalties it is compared with (right for the right reasons, expected gradients), each a
:class:`~captum_cd.penalties.base.ModelLoss` (the model a plain attribute, not a
submodule). Adaptive wavelet distillation lives in :mod:`captum_cd.wavelets`."""

from captum_cd.penalties.cdep import CDEPRegularizer
from captum_cd.penalties.gradient_penalties import ExpectedGradientsPenalty, RRRPenalty

__all__ = ["CDEPRegularizer", "ExpectedGradientsPenalty", "RRRPenalty"]
