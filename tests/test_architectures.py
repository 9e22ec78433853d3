"""Completeness (relevant + irrelevant = output) on every layer and architecture the
README claims, each in a small model, float32 and float64."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from _rules import Lambda
from captum_cd import ContextualDecomposition


def seq(*layers):
    return nn.Sequential(*layers)


ARCHITECTURES = {
    "conv1d-maxpool-dilated": (seq(nn.Conv1d(2, 3, 3, dilation=2), nn.ReLU(), nn.MaxPool1d(3, 2, padding=1, dilation=1, ceil_mode=True), nn.Flatten(), nn.LazyLinear(2)), (2, 2, 17)),
    "conv3d-maxpool3d-avgpool3d": (seq(nn.Conv3d(1, 2, 3, padding=1), nn.BatchNorm3d(2), nn.ELU(), nn.MaxPool3d(2), nn.AvgPool3d(2), nn.Flatten(), nn.LazyLinear(2)), (2, 1, 8, 8, 8)),
    "conv-transpose-1d-3d": (seq(nn.ConvTranspose1d(2, 2, 3, stride=2), nn.Tanh(), Lambda(lambda x: x.unsqueeze(-1).unsqueeze(-1)), nn.ConvTranspose3d(2, 1, (1, 2, 2)), nn.Flatten(), nn.LazyLinear(2)), (2, 2, 5)),
    "adaptive-max-and-avg": (seq(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.AdaptiveMaxPool2d((3, 2)), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 2)), (2, 3, 11, 9)),
    "adaptive-max-1d-3d": (seq(nn.Conv1d(1, 2, 3), nn.AdaptiveMaxPool1d(4), nn.Flatten(), nn.Linear(8, 2)), (2, 1, 13)),
    "group-instance-layer-rms-norm": (seq(nn.Conv2d(3, 4, 3), nn.GroupNorm(2, 4), nn.SiLU(), nn.InstanceNorm2d(4, affine=True), nn.Softplus(), nn.Flatten(), nn.LayerNorm(4 * 36), nn.Linear(4 * 36, 6), nn.RMSNorm(6), nn.Linear(6, 2)), (3, 3, 8, 8)),
    "activations": (seq(nn.Linear(4, 8), nn.LeakyReLU(0.1), nn.Linear(8, 8), nn.ReLU6(), nn.Linear(8, 8), nn.Hardtanh(-2, 2), nn.Linear(8, 8), nn.PReLU(8), nn.Linear(8, 8), nn.GELU(approximate="tanh"), nn.Linear(8, 8), nn.Mish(), nn.Linear(8, 8), nn.Hardswish(), nn.Linear(8, 8), nn.Hardsigmoid(), nn.Linear(8, 8), nn.SELU(), nn.Linear(8, 8), nn.CELU(), nn.Linear(8, 8), nn.Softsign(), nn.Linear(8, 8), nn.LogSigmoid(), nn.Linear(8, 8), nn.Tanhshrink(), nn.Linear(8, 8), nn.Hardshrink(0.1), nn.Linear(8, 8), nn.Softshrink(0.1), nn.Linear(8, 2)), (4, 4)),
    "functional-structural": (seq(nn.Conv2d(2, 4, 3, padding=1), Lambda(lambda x: F.pad(x, (1, 1, 2, 0), mode="reflect")), Lambda(lambda x: F.interpolate(x, scale_factor=2, mode="bilinear")), Lambda(lambda x: F.pixel_unshuffle(x, 2)), Lambda(lambda x: x.permute(0, 2, 3, 1).contiguous().view(x.shape[0], -1, x.shape[1])), Lambda(lambda x: torch.cat([x.sum(1), x.amax(1), x[:, ::2].mean(1)], -1)), nn.Linear(48, 2)), (2, 2, 4, 4)),
    "upsample-pixelshuffle": (seq(nn.Conv2d(1, 4, 3, padding=1), nn.PixelShuffle(2), nn.Upsample(scale_factor=0.5, mode="nearest"), nn.ReLU(), nn.ZeroPad2d(1), nn.Flatten(), nn.LazyLinear(3)), (2, 1, 6, 6)),
    "dropout-eval-variants": (seq(nn.Linear(4, 6), nn.Dropout(0.3), nn.Unflatten(1, (2, 3)), nn.Dropout1d(0.2), nn.Flatten(), nn.AlphaDropout(0.1), nn.Linear(6, 2)), (3, 4)),
}  # fmt: skip


@pytest.mark.parametrize("name", ARCHITECTURES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_complete(name, dtype):
    model, shape = ARCHITECTURES[name]
    x = torch.randn(shape, dtype=dtype)
    model = model.to(dtype)
    model(x)  # materialise lazy layers
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.running_mean.uniform_(-1, 1), m.running_var.uniform_(0.5, 2)
    model.eval()
    masks = (torch.rand(3, *shape[1:]) > 0.5).to(dtype)
    rel, irrel = ContextualDecomposition(model).decompose(x, masks)
    tol = 1e-5 if dtype == torch.float32 else 1e-10
    torch.testing.assert_close(rel + irrel, model(x).expand_as(rel), atol=tol, rtol=tol)
    empty, _ = ContextualDecomposition(model).decompose(x, torch.zeros(1, *shape[1:], dtype=dtype))
    assert empty.abs().max() < tol  # no features, no relevance
