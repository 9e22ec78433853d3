r"""Functions whose result is not decomposed: computed from the full activation alone.

- Metadata (``size``, ``dim``, ``dtype``, ``len``, ...) and values (``item``, ``bool``,
  ...): shape queries and data-dependent control flow see the real activation.
- Comparisons and indices (``x > 0``, ``argmax``, ``isnan``, ...) and tensors made
  like it (``zeros_like``, ``x.new_ones``): constants, as far as the decomposition goes.
  Values and comparisons are remembered: an output that depends on the input only
  through them is an error, where an output computed without the input scores 0.
- Softmax: probabilities computed from the full activation are constant weights, which
  is how the CD-T work treats attention (``softmax(q k^T) @ v`` decomposes through ``v``).
  A model whose *output* is a softmax is caught at the end of the forward pass, where
  the logits it came from are known: CD is defined on logits (docs/methods.md, "Contextual decomposition").
"""

import sys

import torch
import torch.nn.functional as F

from captum_cd.attr.decomposition import current_context
from captum_cd.attr.rules._util import fulls, is_dec
from captum_cd.attr.rules.registry import register_rule

T = torch.Tensor

METADATA = [
    T.size, T.dim, T.numel, torch.numel, T.nelement, T.__len__, T.stride, T.is_contiguous, T.element_size,
    T.is_floating_point, T.is_complex, T.get_device, T.data_ptr, T.storage_offset,
    T.__format__, T.__reduce_ex__, T.dim_order, T.untyped_storage,
]  # fmt: skip
VALUES = [T.item, T.tolist, T.numpy, T.__array__, T.__bool__, T.__int__, T.__float__, T.__index__]
COMPARISONS = [
    torch.eq, T.eq, T.__eq__, torch.ne, T.ne, T.__ne__, torch.lt, T.lt, T.__lt__,
    torch.le, T.le, T.__le__, torch.gt, T.gt, T.__gt__, torch.ge, T.ge, T.__ge__,
    torch.greater, torch.less, torch.isnan, T.isnan, torch.isinf, T.isinf, torch.isfinite,
    T.isfinite, torch.isclose, T.isclose, torch.allclose, T.allclose, torch.equal, T.equal,
    torch.any, T.any, torch.all, T.all, torch.argmax, T.argmax, torch.argmin, T.argmin,
    torch.argsort, T.argsort, torch.sign, T.sign, torch.signbit, T.signbit, torch.nonzero,
    T.nonzero, torch.count_nonzero, T.count_nonzero, torch.logical_not, T.logical_not,
    torch.logical_and, T.logical_and, torch.logical_or, T.logical_or, torch.unique, T.unique,
    torch.isin,
]  # fmt: skip
FACTORIES = [
    torch.zeros_like, torch.ones_like, torch.empty_like, torch.full_like, torch.rand_like,
    torch.randn_like, torch.randint_like, T.new_zeros, T.new_ones, T.new_empty, T.new_full,
    T.new_tensor,
]  # fmt: skip
SOFTMAX = [F.softmax, torch.softmax, T.softmax, F.log_softmax, torch.log_softmax, T.log_softmax, F.softmin]


def on_full(func, args, kwargs):
    """The function of the full activations; nothing of it is decomposed."""
    return func(*fulls(args), **fulls(kwargs))


def as_constant(func, args, kwargs):
    """A value read off the full activation (a comparison, ``.item()``): remembered, so an
    output that depends on the input only this way is told apart from a constant one."""
    current_context().remember_constant_read(sys._getframe())
    return on_full(func, args, kwargs)


def object_hash(func, args, kwargs):
    return id(args[0])


def softmax(func, args, kwargs):
    """Constant weights from the full activation; remembered in case it is the output."""
    out = on_full(func, args, kwargs)
    logits = next((a for a in args if is_dec(a)), None)
    context = current_context()
    if logits is not None:
        # The frame, not its description: the stack is described only if this is an error.
        context.remember_softmax(logits, out, sys._getframe())
    return out


register_rule(METADATA + FACTORIES, on_full)
register_rule(VALUES + COMPARISONS, as_constant)
register_rule(T.__hash__, object_hash)
register_rule(SOFTMAX, softmax)
