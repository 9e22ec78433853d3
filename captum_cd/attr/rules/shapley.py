r"""The two-player Shapley form of an elementwise function, and where it must give way.

For ``out = f(z)`` with ``z = beta + gamma``, the relevant part is the Shapley value of
``beta`` in the game of the two parts: ``beta' = 1/2 [f(beta) - f(0) + f(z) - f(z - beta)]``
(docs/methods.md, "Contextual decomposition"). It evaluates ``f`` at the parts, which
may lie where the full activation never does: outside ``f``'s domain (``sqrt`` of a
negative part, ``log1p`` of one below -1) or where ``f`` overflows (``exp`` of a part of
1000 whose other part is -999). There the form is undefined, and :func:`guarded` uses
the proportional form ``beta' = beta (f(z) - f(0)) / z`` instead: each part gets the
share of ``f(z) - f(0)`` that it has of ``z``; it needs ``f`` only at ``z`` and at 0, and
agrees with the Shapley form where either part is 0.
"""

from typing import Callable

import torch
from torch import Tensor

from captum_cd.attr.rules._util import keep_zeros


def shapley(rel: Tensor, z: Tensor, out: Tensor, f: Callable[[Tensor], Tensor], f0: Tensor) -> Tensor:
    """``1/2 [f(rel) - f(0) + out - f(z - rel)]`` with ``out = f(z)``, exactly 0 where ``rel`` is."""
    # 1/2 [f(beta) - f(z - beta)] + 1/2 [out - f(0)]: five passes over the G parts
    part = torch.sub(f(rel), f(z - rel))  # (out of place: tanh, exp keep their result for backward)
    return keep_zeros(torch.add(0.5 * (out - f0), part, alpha=0.5), rel)


def proportional(rel: Tensor, z: Tensor, out: Tensor, f0: Tensor) -> Tensor:
    """``rel (f(z) - f(0)) / z``, 0 where ``z`` is (``f(z) - f(0)`` is too)."""
    nonzero = z != 0
    return rel * torch.where(nonzero, (out - f0) / torch.where(nonzero, z, 1), 0)


def guarded(rel: Tensor, z: Tensor, out: Tensor, f: Callable[[Tensor], Tensor], f0: Tensor) -> Tensor:
    """The Shapley form where it is finite, the proportional form where it is not."""
    value = shapley(rel, z, out, f, f0)
    finite = torch.isfinite(value)
    if value.requires_grad:  # again with the parts moved off the bad positions: no NaN in backward
        value = shapley(rel.where(finite, 0), z, out, f, f0)
    return value.where(finite, proportional(rel, z, out, f0))
