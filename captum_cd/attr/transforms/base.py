"""What TRIM needs of a transform: ``forward(x) -> s`` and ``inverse(s) -> x``."""

from torch import nn, Tensor


class Transform(nn.Module):
    """An invertible (or pseudo-invertible) transform of the model's input.

    ``forward`` maps inputs ``(B, *input_shape)`` to real coefficients
    ``(B, *coefficient_shape)`` (complex coefficients carry a trailing (real, imag)
    dimension); ``inverse`` maps coefficients back. Both must be differentiable torch code
    so gradient methods and the autograd graph pass through them. ``inverse`` need not be
    exact: TRIM adds the residual ``x - inverse(forward(x))`` back.
    """

    #: True when the coefficients end in a (real, imag) dimension.
    complex_coefficients: bool = False

    def forward(self, x: Tensor) -> Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def inverse(self, s: Tensor) -> Tensor:  # pragma: no cover - abstract
        raise NotImplementedError
