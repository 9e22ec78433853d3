r"""Elementwise activations, in two forms (docs/methods.md, "Contextual decomposition").

ReLU form, for piecewise-linear ``f`` with ``f(0) = 0`` (ReLU, LeakyReLU, ReLU6,
Hardtanh, PReLU, abs, shrinkage, a clamp around 0):
``beta' = f(beta)``, ``gamma' = f(beta + gamma) - f(beta)``.

Shapley form, for every other elementwise ``f`` (sigmoid, tanh, GELU, SiLU, ELU,
softplus, ...): the two-player Shapley value of the relevant part,
``beta' = 1/2 [f(beta) - f(0) + f(beta + gamma) - f(gamma)]``, and
``gamma' = f(beta + gamma) - beta'``: the constant ``f(0)`` goes to the irrelevant part.
We follow the CD papers for both choices; the Shapley form is exact for linear ``f`` and
symmetric in the two parts.

Both run lazily (see :mod:`captum_cd.attr.decomposition`), so a max pool that follows
runs them on the pooled elements only.

Functions whose Shapley form may evaluate them outside their domain or where they
overflow (``sqrt``, ``log1p``, ``exp``, ``asin``, fractional powers, ...) take the
proportional form where it does (:mod:`~captum_cd.attr.rules.shapley`).

Functions infinite at 0 (``rsqrt``, ``reciprocal``, ``log``, negative powers) have no
``f(0)``: they take the Shapley form of the whole elementwise expression they end
(``rsqrt(var + eps)``, ``1 / (1 + exp(-x))``, see :mod:`~captum_cd.attr.rules.lineage`),
computed only if it is needed and guarded as above; applied to a raw activation, their result may serve as a
statistic (a factor broadcast against a decomposed value, RMSNorm's ``rsqrt``) and is an
error as a value of its own.
"""

import functools

import torch
import torch.nn.functional as F

from captum_cd.attr.decomposition import pending_decomposition
from captum_cd.attr.errors import DecompositionError, function_name
from captum_cd.attr.rules._util import argument, fulls, is_dec
from captum_cd.attr.rules.arithmetic import singular
from captum_cd.attr.rules.lineage import extend
from captum_cd.attr.rules.registry import register_rule
from captum_cd.attr.rules.shapley import guarded, shapley

T = torch.Tensor

RELU_FORM = [
    F.relu, torch.relu, T.relu,
    F.leaky_relu, F.relu6, torch._C._nn.relu6,
    F.hardshrink, torch.hardshrink, T.hardshrink, F.softshrink,
    torch.abs, T.abs, torch.absolute, T.absolute, T.__abs__,
]  # fmt: skip

SHAPLEY_FORM = [
    torch.sigmoid, T.sigmoid, F.sigmoid,
    torch.tanh, T.tanh, F.tanh,
    F.gelu, F.silu, F.elu, F.selu, torch.selu, F.celu, torch.celu, F.softplus, F.mish,
    F.hardswish, F.hardsigmoid, F.logsigmoid, F.softsign, F.tanhshrink,
    torch.erf, T.erf, torch.special.erf, torch.sin, T.sin, torch.cos, T.cos,
    torch.atan, T.atan, torch.arctan, T.arctan, torch.square, T.square, torch.asinh, T.asinh,
    torch.arcsinh, T.arcsinh, torch.special.expit,
]  # fmt: skip
# Finite at 0, but the Shapley form may evaluate them outside their domain or where they
# overflow (a part of 1000 whose other part is -999).
GUARDED = [
    torch.sqrt, T.sqrt, torch.log1p, T.log1p, torch.special.log1p, torch.exp, T.exp,
    torch.special.exp2, torch.exp2, T.exp2, torch.expm1, T.expm1, torch.special.expm1,
    torch.sinh, T.sinh, torch.cosh, T.cosh, torch.asin, T.asin, torch.arcsin, T.arcsin,
    torch.acos, T.acos, torch.arccos, T.arccos, torch.atanh, T.atanh, torch.arctanh, T.arctanh,
    torch.erfinv, T.erfinv, torch.special.erfinv,
]  # fmt: skip
# Not finite at 0 (or undefined there).
SINGULAR = [
    torch.rsqrt, T.rsqrt, torch.reciprocal, T.reciprocal, torch.log, T.log, torch.log2, T.log2,
    torch.log10, T.log10, torch.acosh, T.acosh, torch.arccosh, T.arccosh, torch.logit, T.logit,
    torch.special.logit,
]  # fmt: skip
CLAMP = [torch.clamp, T.clamp, torch.clip, T.clip]
CLAMP_MIN, CLAMP_MAX = [torch.clamp_min, T.clamp_min], [torch.clamp_max, T.clamp_max]
POWER = [torch.pow, T.pow, T.__pow__]
LEAKY = [F.prelu, F.rrelu]
# The functions this module gives the ReLU form (a clamp or hardtanh only with 0 in range).
ZERO_AT_ZERO = frozenset(RELU_FORM + CLAMP + CLAMP_MIN + CLAMP_MAX + [F.hardtanh])


def _elementwise(func, args, kwargs):
    """``(x, f)``: the decomposed input and ``f`` with the call's other arguments bound."""
    x = args[0] if args else kwargs.pop("input")
    if not is_dec(x) or any(is_dec(a) for a in list(args[1:]) + list(kwargs.values())):
        raise DecompositionError(
            f"{function_name(func)}: only the first argument may be decomposed."
        )
    rest, kw = args[1:], {k: v for k, v in kwargs.items() if k != "input"}
    return x, functools.partial(_call, func, rest, kw)


def _call(func, rest, kwargs, value):
    return func(value, *rest, **kwargs)


def _relu_step(rel, f):
    return f(rel)


def relu_form(func, args, kwargs):
    """Rule for piecewise-linear activations with ``f(0) = 0``: ``beta' = f(beta)``."""
    x, f = _elementwise(func, args, kwargs)
    if x.window is not None and func not in ZERO_AT_ZERO:
        x.rel  # dense: a user's f may not map the zero parts outside the windows to 0
    return extend(pending_decomposition(f(x.full), x, functools.partial(_relu_step, f=f)), x, f)


def shapley_activation(func, args, kwargs, form=shapley):
    """Rule for any elementwise function: the two-player Shapley form (module docstring)."""
    x, f = _elementwise(func, args, kwargs)
    out = f(x.full)
    f0 = f(x.full.new_zeros(()))
    return extend(pending_decomposition(out, x, functools.partial(form, f=f, f0=f0), x.full, out), x, f)


def guarded_activation(func, args, kwargs):
    """Rule for an elementwise function finite at 0 whose Shapley form may leave its domain
    or overflow: the proportional form there (:mod:`~captum_cd.attr.rules.shapley`)."""
    return shapley_activation(func, args, kwargs, form=guarded)


def clamp(func, args, kwargs):
    """Clamping to ``[min, max]`` is a ReLU-form activation when the range holds 0."""
    return _clamp(func, args, kwargs, argument(args, kwargs, 1, "min"), argument(args, kwargs, 2, "max"))


def clamp_min(func, args, kwargs):
    return _clamp(func, args, kwargs, argument(args, kwargs, 1, "min"), None)


def clamp_max(func, args, kwargs):
    return _clamp(func, args, kwargs, None, argument(args, kwargs, 1, "max"))


def _clamp(func, args, kwargs, lo, hi):
    holds_zero = all(b is None or (isinstance(b, (int, float)) and s * b >= 0) for b, s in ((lo, -1), (hi, 1)))
    if holds_zero:
        return relu_form(func, args, kwargs)
    if is_dec(lo) or is_dec(hi):
        raise DecompositionError(f"{function_name(func)}: decomposed bounds have no rule.")
    return shapley_activation(func, args, kwargs)


def power(func, args, kwargs):
    """``x ** p`` for a constant p: Shapley form for p = 0, 1, 2; guarded for other p > 0
    (a fractional power of a negative part is undefined, a large power may overflow); a
    negative exponent is infinite at 0 (:func:`singular_function`)."""
    exponent = argument(args, kwargs, 1, "exponent")
    if not isinstance(exponent, (int, float)):
        raise DecompositionError(
            f"{function_name(func)}: only a decomposed base with a constant exponent has a rule "
            f"(got exponent {type(exponent).__name__})."
        )
    if exponent < 0:
        return singular_function(func, args, kwargs)
    return (shapley_activation if exponent in (0, 1, 2) else guarded_activation)(func, args, kwargs)


def singular_function(func, args, kwargs):
    """``rsqrt``, ``reciprocal``, ``log``, ``x ** -p``: infinite at 0, so the Shapley form
    is taken over the expression they are applied to (``rsqrt(var + eps)`` is finite at
    0); of a raw activation, the result can only be a statistic (a factor broadcast
    against a decomposed value, as RMSNorm's). See :func:`~captum_cd.attr.rules.arithmetic.singular`."""
    x, f = _elementwise(func, args, kwargs)
    return singular(f(x.full), x, f, function_name(func))


def leaky(func, args, kwargs):
    """PReLU (per-channel slope) and RReLU in eval mode (the mean slope): ReLU form."""
    x = args[0]
    if func is F.rrelu:
        lower, upper = argument(args, kwargs, 1, "lower", 1.0 / 8), argument(args, kwargs, 2, "upper", 1.0 / 3)
        if argument(args, kwargs, 3, "training", False):
            raise DecompositionError("F.rrelu in training mode draws random slopes; call model.eval().")
        slope = (lower + upper) / 2
        return relu_form(F.leaky_relu, (x, slope), {})
    weight = argument(args, kwargs, 1, "weight")
    if weight.numel() > 1:  # one slope per channel (dimension 1 of the full activation)
        weight = weight.view(-1, *([1] * (x.full.ndim - 2)))
    step = functools.partial(_prelu_step, weight=weight)
    return pending_decomposition(func(*fulls(args), **fulls(kwargs)), x, step)


def _prelu_step(rel, weight):
    return torch.where(rel >= 0, rel, weight * rel)


def hardtanh(func, args, kwargs):
    lo, hi = argument(args, kwargs, 1, "min_val", -1.0), argument(args, kwargs, 2, "max_val", 1.0)
    return (relu_form if lo <= 0 <= hi else shapley_activation)(func, args, kwargs)


register_rule(RELU_FORM, relu_form)
register_rule(SHAPLEY_FORM, shapley_activation)
register_rule(GUARDED, guarded_activation)
register_rule(CLAMP, clamp)
register_rule(CLAMP_MIN, clamp_min)
register_rule(CLAMP_MAX, clamp_max)
register_rule(POWER, power)
register_rule(SINGULAR, singular_function)
register_rule(LEAKY, leaky)
register_rule(F.hardtanh, hardtanh)
