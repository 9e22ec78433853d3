"""What the tests of the rule families share (tests/test_rules_*.py, test_architectures.py):
float64, a module around a function, and CD checked complete (relevant + irrelevant =
output)."""

import torch
from torch import nn

from captum_cd import ContextualDecomposition

DT = torch.float64


class Lambda(nn.Module):
    """A function as a module (CD takes either; a module names itself in errors)."""

    def __init__(self, fn):
        super().__init__()
        self.fn = fn

    def forward(self, *x):
        return self.fn(*x)


def decompose(model, x, masks, rtol=1e-12, atol=1e-12):
    """``(relevant, irrelevant)`` of ``model`` at ``x`` for ``masks``, checked complete."""
    rel, irr = ContextualDecomposition(model).decompose(x, masks)
    with torch.no_grad():
        torch.testing.assert_close(rel + irr, model(x).expand_as(rel), rtol=rtol, atol=atol)
    return rel, irr
