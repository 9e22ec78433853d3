r"""Statistics of a decomposed value along dimensions: variance, standard deviation, norm, log-sum-exp.

- ``var`` (and ``std``, ``var_mean``, ``std_mean``) is decomposed as it reads written out
  by hand, ``sum((z - mean z)^2) / (n - correction)``: the square's Shapley form is
  ``(z - mean z)(beta - mean beta)``, so the variance's relevant part is
  ``sum((z - mean z) beta) / (n - correction)``, the part's covariance with the whole.
  ``std`` is its square root, in the guarded Shapley form (:mod:`~captum_cd.attr.rules.shapley`:
  the variance's parts may be negative). Both are lazy: as the statistic of a hand-written
  normalisation, ``(x - x.mean(-1, keepdim=True)) / x.std(-1, keepdim=True)``, only the
  full value is used (product rule 2), as LayerNorm's statistics are.
- The 2-norm (``torch.linalg.vector_norm``, ``torch.norm``, ``Tensor.norm``) likewise, as
  ``sqrt(sum z^2)`` written out: the sum of squares' relevant part is ``sum(z beta)``, the
  square root in the guarded Shapley form; lazy too, so ``x / x.norm(dim=-1, keepdim=True)``
  costs nothing beyond the division. Other orders serve only as such statistics: reading
  their parts is an error that says what to write instead.
- ``logsumexp(z) = sum_i p_i z_i + H(p)`` with ``p = softmax(z)`` and ``H`` its entropy: the
  linear term with the weights of the full activation (as attention's probabilities and
  the log-softmax of a language model's logits are treated), and the constant ``H`` to the
  irrelevant part, as the Shapley form gives ``f(0)`` to it.
"""

import functools
import math

import torch
from torch import Tensor

from captum_cd.attr.decomposition import Decomposition
from captum_cd.attr.errors import DecompositionError, function_name
from captum_cd.attr.rules._util import argument, fulls, is_dec, zero_rel
from captum_cd.attr.rules.registry import register_rule
from captum_cd.attr.rules.shapley import guarded
from captum_cd.attr.rules.structural import reduction

T = torch.Tensor
VARIANCE = [torch.var, T.var, torch.std, T.std]
NORM = [torch.linalg.vector_norm, torch.norm, T.norm]
WITH_MEAN = [torch.var_mean, torch.std_mean]
LOGSUMEXP = [torch.logsumexp, T.logsumexp, torch.special.logsumexp]


def _spread_arguments(x: Decomposition, args: tuple, kwargs: dict):
    """``(dims, correction, keepdim)`` from any of ``var``'s signatures: ``(x, dim=None, *,
    correction=1, keepdim=False)``, ``(x, dim, unbiased, keepdim)``, ``(x, unbiased)``."""
    rest, kwargs = list(args[1:]), dict(kwargs)
    unbiased = kwargs.pop("unbiased", None)
    if rest and isinstance(rest[0], bool):
        unbiased = rest.pop(0)
    dim = rest.pop(0) if rest else kwargs.pop("dim", None)
    if rest:
        unbiased = rest.pop(0)
    keepdim = rest.pop(0) if rest else kwargs.pop("keepdim", False)
    correction = kwargs.pop("correction", None)
    if correction is None:
        correction = 0 if unbiased is False else 1
    ndim = x.full.ndim
    dims = tuple(range(ndim)) if dim is None or dim == () or dim == [] else (dim,) if isinstance(dim, int) else tuple(dim)
    return tuple(d % max(ndim, 1) for d in dims), correction, keepdim


def _covariance_step(unused: Tensor, x: Decomposition, dims, correction, keepdim) -> Tensor:
    """The variance's relevant part: ``sum((z - mean z) beta) / (n - correction)``."""
    full = x.full
    centred = full - full.mean(dim=dims, keepdim=True)
    n = math.prod(full.shape[d] for d in dims)
    return (centred * x.rel).sum(dim=[d + 1 for d in dims], keepdim=keepdim) / (n - correction)


def _square_sum_step(unused: Tensor, x: Decomposition, dims, keepdim) -> Tensor:
    """The sum of squares' relevant part: ``sum(z beta)``."""
    return (x.full * x.rel).sum(dim=[d + 1 for d in dims], keepdim=keepdim)


def _sqrt(t: Tensor) -> Tensor:
    return torch.sqrt(t)


def variance(func, args, kwargs):
    """``var``/``std`` (module docstring): lazy, as the statistics of LayerNorm are."""
    x = args[0] if args else kwargs.get("input")
    if not is_dec(x) or any(is_dec(a) for a in list(args[1:]) + list(kwargs.values())):
        raise DecompositionError(f"{function_name(func)}: only the first argument may be decomposed.")
    out = func(x.full, *args[1:], **{k: v for k, v in kwargs.items() if k != "input"})
    dims, correction, keepdim = _spread_arguments(x, args, {k: v for k, v in kwargs.items() if k != "input"})
    steps = [(functools.partial(_covariance_step, x=x, dims=dims, correction=correction, keepdim=keepdim), ())]
    if func in (torch.std, T.std):
        var = torch.var(x.full, dim=dims, correction=correction, keepdim=keepdim)
        steps.append((functools.partial(guarded, f=_sqrt, f0=var.new_zeros(())), (var, out)))
    return Decomposition(out, zero_rel(out, x.groups), steps)


def variance_and_mean(func, args, kwargs):
    """``var_mean``/``std_mean``: the spread as :func:`variance`, the mean as the reduction."""
    x = args[0] if args else kwargs.get("input")
    spread = variance(torch.var if func is torch.var_mean else torch.std, args, kwargs)
    dims, _, keepdim = _spread_arguments(x, args, {k: v for k, v in kwargs.items() if k != "input"})
    return spread, reduction(torch.mean, (x,), {"dim": dims, "keepdim": keepdim})


def _refuse(unused: Tensor, message: str) -> Tensor:
    raise DecompositionError(message)


def norm(func, args, kwargs):
    """The 2-norm along dimensions (module docstring): lazy, as :func:`variance`."""
    x = args[0] if args else kwargs.get("input")
    if not is_dec(x) or any(is_dec(a) for a in list(args[1:]) + list(kwargs.values())):
        raise DecompositionError(f"{function_name(func)}: only the first argument may be decomposed.")
    order_name = "ord" if func is torch.linalg.vector_norm else "p"
    order = argument(args, kwargs, 1, order_name, 2 if func is torch.linalg.vector_norm else "fro")
    dim, keepdim = argument(args, kwargs, 2, "dim"), argument(args, kwargs, 3, "keepdim", False)
    out = func(*fulls(args), **fulls(kwargs))
    if order not in (2, 2.0, "fro") or argument(args, kwargs, 4, "dtype") is not None:
        # Still a statistic to divide by (only its full value is read); its parts are an error.
        message = (
            f"{function_name(func)} with {order_name}={order!r} has no rule for its parts; the 2-norm has "
            "(without dtype). Write the norm out with functions that have rules, e.g. x.abs().sum(dim) "
            "for the 1-norm, or x.abs().amax(dim) for the largest magnitude."
        )
        return Decomposition(out, zero_rel(out, x.groups), [(functools.partial(_refuse, message=message), ())])
    ndim = x.full.ndim
    dims = tuple(range(ndim)) if dim is None else (dim,) if isinstance(dim, int) else tuple(dim)
    dims = tuple(d % max(ndim, 1) for d in dims)
    square_sum = (x.full * x.full).sum(dim=dims, keepdim=keepdim)
    steps = [
        (functools.partial(_square_sum_step, x=x, dims=dims, keepdim=keepdim), ()),
        (functools.partial(guarded, f=_sqrt, f0=square_sum.new_zeros(())), (square_sum, out)),
    ]
    return Decomposition(out, zero_rel(out, x.groups), steps)


def logsumexp(func, args, kwargs):
    """``logsumexp`` along ``dim`` (module docstring): ``sum_i p_i beta_i``, ``p`` from the full."""
    x = args[0] if args else kwargs.get("input")
    dim, keepdim = argument(args, kwargs, 1, "dim"), argument(args, kwargs, 2, "keepdim", False)
    if not is_dec(x) or dim is None:
        raise DecompositionError(f"{function_name(func)}: only a decomposed input along given dimensions has a rule.")
    out = func(x.full, dim, keepdim)
    dims = (dim,) if isinstance(dim, int) else tuple(dim)
    weights = torch.exp(x.full - torch.logsumexp(x.full, dims, keepdim=True))  # softmax over dims
    return Decomposition(out, (weights * x.rel).sum(dim=[d % x.full.ndim + 1 for d in dims], keepdim=keepdim))


register_rule(VARIANCE, variance)
register_rule(WITH_MEAN, variance_and_mean)
register_rule(NORM, norm)
register_rule(LOGSUMEXP, logsumexp)
