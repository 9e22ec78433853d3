"""The gradient penalties CDEP is compared with, in the same call shape
``penalty(inputs, masks, target=y)`` (docs/methods.md, "CDEP"). Both need the gradient of
the input gradient: double backpropagation, which is what makes them costly."""

from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn, Tensor

from captum_cd.penalties.base import ModelLoss


def _region_union(masks: Tensor, inputs: Tensor) -> Tensor:
    """Every penalised feature, as one mask broadcastable to the inputs: regions shared
    ``(R, *features)`` or per example ``(B, R, *features)``."""
    if masks.ndim == inputs.ndim + 1:
        return masks.amax(dim=1)  # (B, R, ...) -> (B, ...)
    return masks.amax(dim=0, keepdim=True)  # (R, ...) -> (1, ...)


class RRRPenalty(ModelLoss):
    r"""Right for the right reasons (Ross et al. 2017), as the CDEP paper's baseline
    computes it: the input gradient of the target's negative log-likelihood, summed over
    channels, squared, and summed over the masked features; times ``weight``.

    Args:
        model (nn.Module): The model being trained.
        weight (float, optional): The penalty's weight. Default: 1.0
    """

    def __init__(self, model: nn.Module, weight: float = 1.0) -> None:
        super().__init__(model)
        self.weight = weight

    def forward(self, inputs: Tensor, masks: Tensor, target: Tensor) -> Tensor:
        x = inputs.detach().requires_grad_(True)
        nll = F.cross_entropy(self.model(x), target, reduction="sum")
        (gradient,) = torch.autograd.grad(nll, x, create_graph=True)
        per_feature = gradient.sum(dim=1, keepdim=True) if x.ndim > 2 else gradient  # channels summed
        region = _region_union(masks, inputs)
        region = region.amax(dim=1, keepdim=True) if x.ndim > 2 and region.shape[1] != 1 else region
        return self.weight * (per_feature.pow(2) * region).sum()


class ExpectedGradientsPenalty(ModelLoss):
    r"""Expected-gradients attribution prior (Erion et al. 2019), as the CDEP paper's
    baseline computes it: for each example, ``n_samples`` references drawn from the batch
    and ``alpha ~ U(0, 1)``; the attribution ``|d p_y(x~)/d x~ * (x - ref)|`` at
    ``x~ = ref + alpha (x - ref)`` averaged over the samples; its sum over the mask,
    times ``weight``. Trained with double backpropagation.

    Args:
        model (nn.Module): The model being trained.
        weight (float, optional): The penalty's weight. Default: 1.0
        n_samples (int, optional): References per example (50 in the paper, 200 for
                    DecoyMNIST). Default: 50
    """

    def __init__(self, model: nn.Module, weight: float = 1.0, n_samples: int = 50) -> None:
        super().__init__(model)
        self.weight, self.n_samples = weight, n_samples

    def forward(self, inputs: Tensor, masks: Tensor, target: Tensor, generator: Optional[torch.Generator] = None) -> Tensor:
        batch, k = inputs.shape[0], self.n_samples
        references = inputs.detach()[torch.randint(0, batch, (batch * k,), device=inputs.device, generator=generator)]
        alpha = torch.rand(batch * k, *([1] * (inputs.ndim - 1)), device=inputs.device, dtype=inputs.dtype, generator=generator)
        x = inputs.detach().repeat_interleave(k, dim=0)
        path = (references + alpha * (x - references)).requires_grad_(True)
        probability = F.softmax(self.model(path), dim=1).gather(1, target.repeat_interleave(k).view(-1, 1)).sum()
        (gradient,) = torch.autograd.grad(probability, path, create_graph=True)
        attribution = (gradient * (x - references)).abs().view(batch, k, *inputs.shape[1:]).mean(1)
        return self.weight * (attribution * _region_union(masks, inputs)).sum()
