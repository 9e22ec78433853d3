"""Property-based tests: random stacks of supported layers equal the straight-line
reference and are complete."""

import torch
from hypothesis import given, settings, strategies as st
from torch import nn

from captum_cd import ContextualDecomposition
from reference_cd import reference_cd

ACTIVATIONS = [nn.ReLU, lambda: nn.LeakyReLU(0.2), nn.ReLU6, nn.Hardtanh, nn.Tanh, nn.Sigmoid, nn.GELU, nn.SiLU, nn.ELU, nn.Softplus]


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2**16), data=st.data())
def test_random_stacks_equal_reference_and_are_complete(seed, data):
    torch.manual_seed(seed)
    channels, size = data.draw(st.integers(1, 3)), data.draw(st.integers(6, 10))
    layers, c, s = [], channels, size
    for _ in range(data.draw(st.integers(1, 3))):
        out, k = data.draw(st.integers(1, 4)), data.draw(st.sampled_from([1, 3]))
        pad = data.draw(st.sampled_from([0, k // 2])) if s >= k else k // 2
        layers.append(nn.Conv2d(c, out, k, padding=pad))
        s, c = s + 2 * pad - k + 1, out
        if data.draw(st.booleans()):
            bn = nn.BatchNorm2d(out)
            bn.running_mean.uniform_(-1, 1), bn.running_var.uniform_(0.5, 2), bn.bias.data.uniform_(-1, 1)
            layers.append(bn)
        layers.append(data.draw(st.sampled_from(ACTIVATIONS))())
        if s >= 2 and data.draw(st.booleans()):
            if data.draw(st.booleans()):
                ceil, pool_pad = data.draw(st.booleans()), data.draw(st.sampled_from([0, 1]))
                layers.append(nn.MaxPool2d(2, 2, padding=pool_pad, ceil_mode=ceil))
            else:
                layers.append(nn.AvgPool2d(2))
            s = nn.Sequential(*layers)(torch.zeros(1, channels, size, size)).shape[-1]
    hidden = data.draw(st.integers(1, 6))
    layers += [nn.Flatten(), nn.Linear(c * s * s, hidden), data.draw(st.sampled_from(ACTIVATIONS))(), nn.Linear(hidden, 3)]
    model = nn.Sequential(*layers).double().eval()
    x = torch.randn(data.draw(st.integers(1, 3)), channels, size, size, dtype=torch.float64)
    masks = (torch.rand(2, 1, size, size, dtype=torch.float64) > 0.5).double()

    rel, irrel = ContextualDecomposition(model).decompose(x, masks)
    torch.testing.assert_close(rel + irrel, model(x).expand_as(rel), atol=1e-10, rtol=1e-10)
    for g in range(2):
        beta, gamma = reference_cd(model, x, masks[g])
        torch.testing.assert_close(rel[g], beta, atol=1e-9, rtol=1e-9)
        torch.testing.assert_close(irrel[g], gamma, atol=1e-9, rtol=1e-9)
