r"""Elementwise lineage: which tensor a value is an elementwise function of.

A value computed from one decomposed tensor ``z`` by elementwise steps only (activations,
adding or scaling by constants, sums and products of such values) is ``g(z)`` for a
function ``g`` that the rules can rebuild. The lineage ``(z, g)`` rides along on the
Decomposition. It is used where the step-by-step rules have no good answer: the product
or quotient of two values that are functions of the *same* ``z`` (``x * sigmoid(x)``,
``0.5 * x * (1 + tanh(...))``, ``x / (1 + exp(-x))``). Those are decomposed as the one
function ``h = g_a * g_b`` of ``z`` with the two-player Shapley form
``beta' = 1/2 [h(beta) - h(0) + h(z) - h(z - beta)]``, which is what ``F.silu`` or
``F.gelu`` get from the activation rule: the same function written two ways gets the
same scores.

A lineage is valid only for the activation it was made for (an in-place write rebinds
the activation and so drops it) and only while its root holds the activation it had.
"""

import functools
from typing import Callable, NamedTuple, Optional

import torch
from torch import Tensor

from captum_cd.attr.decomposition import Decomposition, owned
from captum_cd.attr.rules.shapley import shapley

Fn = Callable[[Tensor], Tensor]


class Lineage(NamedTuple):
    root: Decomposition  # the tensor z the value is a function of
    root_full: Tensor  # z's activation when the lineage was made
    fn: Fn  # g, with g(z) = the value's activation
    of_full: Tensor  # the activation this lineage describes


def _identity(t: Tensor) -> Tensor:
    return t


def lineage(x: Decomposition) -> Lineage:
    """The lineage of ``x``: the recorded one if still valid, else ``x`` as its own root."""
    recorded = x.__dict__.get("_cd_lineage")
    if recorded is not None and recorded.of_full is x.full and recorded.root.full is recorded.root_full:
        return recorded
    return Lineage(x, x.full, _identity, x.full)


def compose(outer: Callable[..., Tensor], inner: Fn, t: Tensor) -> Tensor:
    return outer(inner(t))


def extend(out: Decomposition, x: Decomposition, step: Callable[[Tensor], Tensor]) -> Decomposition:
    """Records ``out = step(x)`` (elementwise, same shape) in ``out``'s lineage."""
    if out.full.shape == x.full.shape:
        root = lineage(x)
        out._cd_lineage = Lineage(root.root, root.root_full, functools.partial(compose, owned(step), root.fn), out.full)
    return out


def _combine(op: Callable[[Tensor, Tensor], Tensor], fa: Fn, fb: Fn, t: Tensor) -> Tensor:
    return op(fa(t), fb(t))


def common_root(a: Decomposition, b: Decomposition, op: Callable[[Tensor, Tensor], Tensor]) -> Optional[Lineage]:
    """The lineage of ``op(a, b)`` when both are elementwise functions of the same tensor
    (and of its shape); None otherwise."""
    la, lb = lineage(a), lineage(b)
    if la.root_full is not lb.root_full or a.full.shape != b.full.shape:
        return None
    return Lineage(la.root, la.root_full, functools.partial(_combine, op, la.fn, lb.fn), None)


def shapley_of_root(lin: Lineage, out: Tensor, form: Callable = shapley) -> Tensor:
    """``1/2 [h(beta) - h(0) + h(z) - h(z - beta)]`` for ``h`` the lineage's function,
    ``beta`` the root's relevant parts and ``out = h(z)`` the activation (or ``form``'s
    variant of it, :mod:`~captum_cd.attr.rules.shapley`)."""
    z = lin.root_full
    return form(lin.root.rel, z, out, lin.fn, lin.fn(z.new_zeros(())))


def with_lineage(out: Decomposition, lin: Lineage) -> Decomposition:
    out._cd_lineage = lin._replace(of_full=out.full)
    return out
