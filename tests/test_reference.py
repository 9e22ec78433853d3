"""The library equals independent computations: a straight-line CD written in the tests
and the original ``acd`` package (0.0.2). (Hand-derived small cases of each rule family
are in tests/test_rules_*.py.)"""

import copy

import pytest
import torch
from torch import nn

from captum_cd import ContextualDecomposition
from reference_cd import reference_cd


def lenet(channels=1):
    return nn.Sequential(
        nn.Conv2d(channels, 6, 5), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(6, 8, 5), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(8 * 4 * 4, 32), nn.ReLU(), nn.Linear(32, 10),
    ).eval()  # fmt: skip


SEQUENTIAL_MODELS = {
    "lenet": (lenet, (2, 1, 28, 28)),
    "bn-tanh-avgpool": (
        lambda: nn.Sequential(
            nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.Tanh(), nn.AvgPool2d(2),
            nn.Conv2d(4, 4, 3), nn.BatchNorm2d(4), nn.LeakyReLU(0.1), nn.MaxPool2d(3, 2, padding=1, ceil_mode=True),
            nn.Flatten(), nn.Dropout(0.5), nn.Linear(4 * 2 * 2, 6), nn.GELU(), nn.Linear(6, 3),
        ),
        (3, 3, 10, 10),
    ),
    "mlp-smooth": (
        lambda: nn.Sequential(
            nn.Linear(7, 9), nn.Sigmoid(), nn.Linear(9, 9), nn.SiLU(), nn.Linear(9, 9), nn.ELU(),
            nn.Linear(9, 5), nn.Softplus(), nn.Linear(5, 5), nn.ReLU6(), nn.Linear(5, 4), nn.BatchNorm1d(4), nn.Hardtanh(), nn.Linear(4, 2),
        ),
        (5, 7),
    ),
    "conv1d": (
        lambda: nn.Sequential(nn.Conv1d(2, 3, 3), nn.ReLU(), nn.MaxPool1d(2), nn.Conv1d(3, 3, 3, dilation=2), nn.Mish(), nn.AvgPool1d(2), nn.Flatten(), nn.Linear(3, 2)),
        (4, 2, 16),
    ),
    "transposed": (
        lambda: nn.Sequential(nn.Conv2d(1, 3, 3, stride=2), nn.ReLU(), nn.ConvTranspose2d(3, 2, 3, stride=2, output_padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(2), nn.Flatten(), nn.Linear(8, 3)),
        (2, 1, 9, 9),
    ),
}  # fmt: skip


def _randomize_batchnorm(model):
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-0.5, 0.5)
    return model.eval()


@pytest.mark.parametrize("name", SEQUENTIAL_MODELS)
def test_equals_straight_line_reference(name):
    build, shape = SEQUENTIAL_MODELS[name]
    model = _randomize_batchnorm(build())
    x = torch.randn(shape)
    masks = (torch.rand(3, *shape[1:]) > 0.5).float()
    rel, irrel = ContextualDecomposition(model).decompose(x, masks)
    for g in range(3):
        beta, gamma = reference_cd(model, x, masks[g])
        torch.testing.assert_close(rel[g], beta, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(irrel[g], gamma, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(rel + irrel, model(x).expand_as(rel), atol=1e-5, rtol=1e-5)


def test_equals_original_acd_package():
    acd = pytest.importorskip("acd")
    model = lenet()
    x = torch.randn(1, 1, 28, 28)
    cd = ContextualDecomposition(model)
    for seed in range(3):
        mask = (torch.rand(1, 28, 28, generator=torch.Generator().manual_seed(seed)) > 0.7).float()
        # acd.cd calls model.eval() and model.to(device): give it a copy.
        beta, gamma = acd.cd(x, copy.deepcopy(model), mask=mask.numpy(), device="cpu")
        rel, irrel = cd.decompose(x, mask[None])
        torch.testing.assert_close(rel[0], beta.detach(), atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(irrel[0], gamma.detach(), atol=1e-5, rtol=1e-5)
