r"""Arithmetic with constants, and of two decomposed values.

- A constant *added* to a decomposed value (a functional bias, a positional embedding,
  ``x + 1``) is a bias: it is split like the affine rule's bias, in proportion to
  ``|beta|`` and ``|gamma|`` (METHODS.md section 1).
- Multiplication or division by a constant is linear: it scales both parts.
- The sum of two decomposed values (a residual connection) adds the parts.
- The product of two decomposed values keeps ``beta_a * beta_b`` as relevant; every cross
  term involves the rest of the input, so it goes to the irrelevant part (the same
  convention as the LSTM rule's gate products).

"Constant" means: not decomposed. Tensors computed from the full activation (a mask
``x > 0``, a norm) are constants too.
"""

import functools

import torch

from captum_cd.attr.decomposition import Decomposition, pending_decomposition
from captum_cd.attr.errors import DecompositionError, function_name
from captum_cd.attr.rules._util import align, argument, fulls, is_dec, split_bias
from captum_cd.attr.rules.registry import register_rule

T = torch.Tensor

ADD = [torch.add, T.add, T.__add__, T.__radd__]
SUB = [torch.sub, T.sub, T.__sub__, torch.subtract, T.subtract]
RSUB = [torch.rsub, T.__rsub__]
MUL = [torch.mul, T.mul, T.__mul__, T.__rmul__, torch.multiply, T.multiply]
DIV = [torch.div, T.div, T.__truediv__, torch.true_divide, T.true_divide, torch.divide, T.divide]
NEG = [torch.neg, T.neg, T.__neg__, torch.negative, T.negative]


def _operands(args, kwargs):
    return args[0] if args else kwargs["input"], argument(args, kwargs, 1, "other")


def add(func, args, kwargs):
    """``a + alpha b`` (and ``-``): parts add; a constant term is split as a bias."""
    a, b = _operands(args, kwargs)
    alpha = kwargs.get("alpha", 1)
    if func in RSUB:  # b - alpha * a
        a, b, sign_a, sign_b = b, a, 1, -alpha
    else:
        sign_a, sign_b = 1, (-alpha if func in SUB else alpha)
    out = func(*fulls(args), **fulls(kwargs))
    if is_dec(a) and is_dec(b):
        rel = align(a.rel, out.ndim) * sign_a + align(b.rel, out.ndim) * sign_b
        return Decomposition(out, rel)
    (d, d_sign), (c, c_sign) = ((a, sign_a), (b, sign_b)) if is_dec(a) else ((b, sign_b), (a, sign_a))
    bias = c * c_sign if c_sign != 1 else c
    if d_sign == 1 and out.shape == d.full.shape:
        return pending_decomposition(out, d, split_bias, out, bias)
    return pending_decomposition(out, align(d.rel, out.ndim) * d_sign, split_bias, out, bias)


def mul(func, args, kwargs):
    """Scaling by a constant is linear; the product of two decomposed values keeps
    ``beta_a * beta_b`` (module docstring)."""
    a, b = _operands(args, kwargs)
    out = func(*fulls(args), **fulls(kwargs))
    if is_dec(a) and is_dec(b):
        return Decomposition(out, align(a.rel, out.ndim) * align(b.rel, out.ndim))
    d, c = (a, b) if is_dec(a) else (b, a)
    if out.shape == d.full.shape:
        return pending_decomposition(out, d, torch.mul, c)
    return Decomposition(out, align(d.rel, out.ndim) * c)


def div(func, args, kwargs):
    a, b = _operands(args, kwargs)
    if is_dec(b):
        raise DecompositionError(
            f"{function_name(func)}: dividing by a decomposed value has no rule (only "
            "division of a decomposed value by a constant is linear)."
        )
    out = func(*fulls(args), **fulls(kwargs))
    mode = kwargs.get("rounding_mode")
    if mode is not None:
        raise DecompositionError(f"{function_name(func)} with rounding_mode={mode!r} is not linear; it has no rule.")
    step = functools.partial(_divide, divisor=b)
    if out.shape == a.full.shape:
        return pending_decomposition(out, a, step)
    return Decomposition(out, step(align(a.rel, out.ndim)))


def _divide(rel, divisor):
    return rel / divisor


def neg(func, args, kwargs):
    x = args[0]
    return pending_decomposition(func(x.full), x, torch.neg)


register_rule(ADD + SUB + RSUB, add)
register_rule(MUL, mul)
register_rule(DIV, div)
register_rule(NEG, neg)
