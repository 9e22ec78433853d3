"""An independent, straight-line contextual decomposition of ``nn.Sequential`` models.

Written from METHODS.md section 1 and kept deliberately naive: beta and gamma are
propagated separately (never ``gamma = z - beta``), biases are read off ``layer(0)`` as
the original code does, and max pooling gathers with Python loops over examples and
channels. Tests compare the library against it.
"""

import torch
from torch import nn

AFFINE = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d)
BATCHNORM = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)
RELU_FORM = (nn.ReLU, nn.LeakyReLU, nn.ReLU6, nn.Hardtanh)
SHAPLEY_FORM = (nn.Sigmoid, nn.Tanh, nn.GELU, nn.SiLU, nn.ELU, nn.Softplus, nn.Mish)
LINEAR = (nn.AvgPool1d, nn.AvgPool2d, nn.AdaptiveAvgPool2d, nn.Flatten, nn.Dropout, nn.Identity)
MAXPOOL = (nn.MaxPool1d, nn.MaxPool2d, nn.MaxPool3d)


def split_bias(u, v, bias):
    """Each part gets the bias in proportion to its magnitude; where both are 0, the
    irrelevant part gets all of it."""
    total = u.abs() + v.abs()
    share = u.abs() / torch.where(total > 0, total, torch.ones_like(total))
    return u + bias * share, v + bias * (1 - share)


def gather_loops(t, indices):
    """The original's unpool: one Python loop over examples and channels."""
    out = torch.empty(indices.shape, dtype=t.dtype)
    for i in range(indices.shape[0]):
        for j in range(indices.shape[1]):
            out[i, j] = t[i, j].flatten()[indices[i, j].flatten()].reshape(indices.shape[2:])
    return out


def layer_step(layer: nn.Module, beta: torch.Tensor, gamma: torch.Tensor, z: torch.Tensor):
    """(beta, gamma) after ``layer``; ``z`` is the ordinary activation it receives (max
    pooling takes its winners from it, so ties break alike)."""
    if isinstance(layer, AFFINE + BATCHNORM):
        bias = layer(torch.zeros_like(beta))
        return split_bias(layer(beta) - bias, layer(gamma) - bias, bias)
    if isinstance(layer, RELU_FORM):
        relevant = layer(beta.clone())  # (a copy: an in-place ReLU must not change beta)
        return relevant, layer(beta + gamma) - relevant
    if isinstance(layer, SHAPLEY_FORM):
        f, f0 = layer, layer(torch.zeros((), dtype=beta.dtype))
        both = f(beta + gamma)
        return 0.5 * (f(beta) - f0 + both - f(gamma)), 0.5 * (f(gamma) - f0 + both - f(beta)) + f0
    if isinstance(layer, MAXPOOL):
        pool = type(layer)(layer.kernel_size, layer.stride, layer.padding, layer.dilation, return_indices=True, ceil_mode=layer.ceil_mode)
        _, indices = pool(z)
        return gather_loops(beta, indices), gather_loops(gamma, indices)
    if isinstance(layer, LINEAR):
        return layer(beta), layer(gamma)
    raise NotImplementedError(type(layer).__name__)


def reference_cd(model: nn.Sequential, x: torch.Tensor, mask: torch.Tensor, grad: bool = False):
    """(beta, gamma) at the output for one group ``mask`` (broadcast against ``x``)."""
    beta, gamma = mask * x, (1 - mask) * x
    z = x  # the ordinary activation: max pooling takes its winners from it (ties break alike)
    with torch.set_grad_enabled(grad):
        for layer in model:
            beta, gamma = layer_step(layer, beta, gamma, z)
            z = layer(z)
    return beta, gamma
