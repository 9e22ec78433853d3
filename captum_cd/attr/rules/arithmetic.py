r"""Arithmetic with constants, and of two decomposed values.

- A constant *added* to a decomposed value (a functional bias, a positional embedding,
  ``x + 1``) is a bias: it is split like the affine rule's bias, in proportion to
  ``|beta|`` and ``|gamma|`` (docs/methods.md, "Contextual decomposition").
- Multiplication or division by a constant is linear: it scales both parts.
- The sum of two decomposed values (a residual connection) adds the parts.

Products (and quotients) of two decomposed values, in this order:

1. *The same function written two ways.* Both factors are elementwise functions of one
   decomposed tensor ``z`` (``x * sigmoid(x)``, ``0.5 * x * (1 + tanh(...))``,
   ``x / (1 + exp(-x))``; see :mod:`~captum_cd.attr.rules.lineage`): the product is that
   function ``h`` of ``z``, decomposed with the activations' two-player Shapley form,
   ``beta' = 1/2 [h(beta) - h(0) + h(z) - h(z - beta)]``. A hand-written SiLU or GELU
   gets what ``F.silu`` / ``F.gelu`` get.
2. *A gate or a statistic.* A factor broadcast against the other (fewer elements, size-1
   dimensions expanded: a squeeze-and-excitation gate ``(B, C, 1, 1)``, RMSNorm's
   ``rsqrt(mean(x^2))`` of shape ``(B, T, 1)``) is computed from the full activation and
   applied to the parts of the other factor: ``beta' = beta_a * b``, as attention
   probabilities and LayerNorm statistics are.
3. *Two full-shape factors* (a gated MLP, ``silu(W_g x) * (W_u x)``): the two-player
   Shapley split of the bilinear map between the relevant parts and the rest,
   ``beta' = beta_a beta_b + 1/2 (beta_a gamma_b + gamma_a beta_b)
   = 1/2 (beta_a b + a beta_b)``. Keeping only ``beta_a beta_b`` (the LSTM rule's
   convention for its gates) roughly squares the relevant share at every product, so
   deep stacks of gates leave nothing relevant; the split keeps it on the scale of the
   output.

Division by a decomposed value follows 1. and 2.; a quotient of two unrelated full-shape
values has no rule. "Constant" means: not decomposed. Tensors computed from the full
activation (a mask ``x > 0``, a norm) are constants too.
"""

import functools
from typing import Optional

import torch

from captum_cd.attr.decomposition import Decomposition, pending_decomposition
from captum_cd.attr.errors import DecompositionError, function_name
from captum_cd.attr.rules._util import align, argument, fulls, is_dec, split_bias
from captum_cd.attr.rules.lineage import common_root, compose, extend, lineage, shapley_of_root, with_lineage
from captum_cd.attr.rules.registry import register_rule
from captum_cd.attr.rules.shapley import guarded
from captum_cd.attr.windows import DENSE_SHARE, place, union

T = torch.Tensor

ADD = [torch.add, T.add, T.__add__, T.__radd__]
SUB = [torch.sub, T.sub, T.__sub__, torch.subtract, T.subtract]
RSUB = [torch.rsub, T.__rsub__]
MUL = [torch.mul, T.mul, T.__mul__, T.__rmul__, torch.multiply, T.multiply]
DIV = [torch.div, T.div, T.__truediv__, torch.true_divide, T.true_divide, torch.divide, T.divide]
RDIV = [T.__rtruediv__, T.__rdiv__]
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
        lin = common_root(a, b, functools.partial(_signed_sum, sign_a=sign_a, sign_b=sign_b))
        result = _sum_in_windows(a, b, sign_a, sign_b, out)
        if result is None:
            rel = align(a.rel, out.ndim) * sign_a + align(b.rel, out.ndim) * sign_b
            result = Decomposition(out, rel)
        return with_lineage(result, lin) if lin is not None and out.shape == a.full.shape else result
    (d, d_sign), (c, c_sign) = ((a, sign_a), (b, sign_b)) if is_dec(a) else ((b, sign_b), (a, sign_a))
    bias = c * c_sign if c_sign != 1 else c
    if d_sign == 1 and out.shape == d.full.shape:  # the value's full is its own linear image
        result = pending_decomposition(out, d, split_bias, d.full, bias)
    else:
        result = pending_decomposition(out, align(d.rel, out.ndim) * d_sign, split_bias, d.full * d_sign, bias)
    return extend(result, d, functools.partial(_signed_sum, other=bias, sign_a=d_sign))


def _sum_in_windows(a: Decomposition, b: Decomposition, sign_a, sign_b, out) -> Optional[Decomposition]:
    """A residual sum of two windowed values: both moved into boxes that hold both."""
    if a.window is None or b.window is None or not a.full.shape == b.full.shape == out.shape:
        return None
    window = union(a.window, b.window)
    boxes_a, boxes_b = (d.boxes() if d.window.same_as(window) else place(d.boxes(), d.window, into=window) for d in (a, b))
    boxes = _signed_sum(boxes_a, boxes_b, sign_a, sign_b)
    if window.share > DENSE_SHARE:
        return Decomposition(out, place(boxes, window))
    return Decomposition(out, boxes, window=window)


def _signed_sum(t, other=0, sign_a=1, sign_b=1):
    return t * sign_a + other * sign_b if sign_a != 1 or sign_b != 1 else t + other


def mul(func, args, kwargs):
    """Scaling by a constant is linear; products of two decomposed values: module docstring."""
    a, b = _operands(args, kwargs)
    out = func(*fulls(args), **fulls(kwargs))
    if is_dec(a) and is_dec(b):
        return _product(a, b, out, torch.mul)
    d, c = (a, b) if is_dec(a) else (b, a)
    if out.shape == d.full.shape:
        return extend(pending_decomposition(out, d, torch.mul, c), d, functools.partial(torch.mul, other=c))
    return Decomposition(out, align(d.rel, out.ndim) * c)


def _product(a: Decomposition, b: Decomposition, out, op) -> Decomposition:
    """``op(a, b)`` (mul or div) of two decomposed values: the three cases of the docstring."""
    lin = common_root(a, b, op)
    if lin is not None and out.shape == a.full.shape:
        return with_lineage(Decomposition(out, shapley_of_root(lin, out, form=guarded)), lin)
    a_full, b_full = a.full.shape == out.shape, b.full.shape == out.shape
    if a_full and not b_full:  # b is a gate or statistic from the full activation
        return Decomposition(out, op(a.rel, b.full))
    if op is torch.div:
        raise DecompositionError(
            "dividing by a decomposed value has a rule only when the divisor is broadcast "
            "against the dividend (a statistic such as a norm) or when both are elementwise "
            "functions of the same tensor."
        )
    if b_full and not a_full:
        return Decomposition(out, a.full * b.rel)
    rel_a, rel_b = align(a.rel, out.ndim), align(b.rel, out.ndim)
    return Decomposition(out, 0.5 * (rel_a * b.full + a.full * rel_b))


def div(func, args, kwargs):
    a, b = _operands(args, kwargs)
    if func in RDIV:  # x.__rtruediv__(c) is c / x
        a, b = b, a
    mode = kwargs.get("rounding_mode")
    if mode is not None:
        raise DecompositionError(f"{function_name(func)} with rounding_mode={mode!r} is not linear; it has no rule.")
    out = func(*fulls(args), **fulls(kwargs))
    if is_dec(b):
        if is_dec(a):
            return _product(a, b, out, torch.div)
        return singular(out, b, functools.partial(_divide_into, dividend=a), function_name(func))
    step = functools.partial(_divide, divisor=b)
    if out.shape == a.full.shape:
        return extend(pending_decomposition(out, a, step), a, step)
    return Decomposition(out, step(align(a.rel, out.ndim)))


def _divide(rel, divisor):
    return rel / divisor


def _divide_into(rel, dividend):
    return dividend / rel


def singular(out, x: Decomposition, step, name: str) -> Decomposition:
    """``step(x)`` for a function infinite at 0 (``1/x``, ``rsqrt``, ``log``): the Shapley
    form needs ``f(0)``, so it is applied to the function of the tensor ``x`` comes from
    (``1 / (1 + exp(-x))`` is finite at 0), guarded where it leaves the domain
    (:mod:`~captum_cd.attr.rules.shapley`); a raw activation has no decomposition through
    it, but its result can still serve as a gate or statistic (product rule 2)."""
    if out.shape != x.full.shape:
        raise DecompositionError(f"{name} of a decomposed value broadcast to a larger shape has no rule.")
    # Always lazy (whatever lazy_elementwise says): as a statistic the parts are never needed.
    # The step replaces x's own: x's unmaterialised parts only hold the place.
    placeholder, _ = x.lazy_parts()
    base = lineage(x)
    lin = base._replace(fn=functools.partial(compose, step, base.fn))
    lazy = functools.partial(_lazy_shapley, lin=lin, out=out, name=name)
    return with_lineage(Decomposition(out, placeholder, ((lazy, ()),)), lin)


def _lazy_shapley(unused, lin, out, name):
    if not torch.isfinite(lin.fn(lin.root_full.new_zeros(()))):  # (one number, read only if the parts are)
        raise DecompositionError(
            f"{name} of a decomposed activation has no decomposition: it is infinite at 0 (or undefined there). Its "
            "result can be a statistic (a factor broadcast against a decomposed value, as in "
            "RMSNorm) or a function of an expression finite at 0 (1 / (1 + exp(-x))), not a "
            "value of its own."
        )
    return shapley_of_root(lin, out, form=guarded)


def neg(func, args, kwargs):
    x = args[0]
    return extend(pending_decomposition(func(x.full), x, torch.neg), x, torch.neg)


def add_product(func, args, kwargs):
    """``addcmul``/``addcdiv``: ``input + value * (t1 * t2)`` (or ``t1 / t2``) through the
    product and sum rules above (timm's ResMLP affine is ``addcmul(beta, alpha, x)``)."""
    x, t1, t2 = (argument(args, kwargs, i, name) for i, name in enumerate(("input", "tensor1", "tensor2")))
    value = kwargs.get("value", 1)
    divides = func in (torch.addcdiv, T.addcdiv)
    op = torch.div if divides else torch.mul
    product = (div if divides else mul)(op, (t1, t2), {}) if is_dec(t1) or is_dec(t2) else op(t1, t2)
    if value != 1:
        product = mul(torch.mul, (product, value), {}) if is_dec(product) else product * value
    return add(torch.add, (x, product), {})


register_rule(ADD + SUB + RSUB, add)
register_rule([torch.addcmul, T.addcmul, torch.addcdiv, T.addcdiv], add_product)
register_rule(MUL, mul)
register_rule(DIV + RDIV, div)
register_rule(NEG, neg)
