"""What plugs into a training loop: the CDEP regulariser and the gradient penalties it is
compared with."""

from captum_cd.penalties.cdep import CDEPRegularizer
from captum_cd.penalties.gradient_penalties import ExpectedGradientsPenalty, RRRPenalty

__all__ = ["CDEPRegularizer", "ExpectedGradientsPenalty", "RRRPenalty"]
