"""Small helpers shared by the rule families."""

from typing import Any, Callable, Tuple

import torch
from torch import Tensor

from captum_cd.attr.decomposition import Decomposition


def is_dec(value: Any) -> bool:
    return isinstance(value, Decomposition)


def tree_map(fn: Callable[[Any], Any], value: Any) -> Any:
    """Maps ``fn`` over the leaves of nested lists, tuples and dicts (args of torch calls)."""
    if isinstance(value, (list, tuple)) and not isinstance(value, torch.Size):
        mapped = [tree_map(fn, v) for v in value]
        return type(value)(mapped) if isinstance(value, list) else tuple(mapped)
    if isinstance(value, dict):
        return {k: tree_map(fn, v) for k, v in value.items()}
    return fn(value)


def fulls(value: Any) -> Any:
    """The same arguments with every Decomposition replaced by its full activation."""
    return tree_map(lambda v: v.full if is_dec(v) else v, value)


def leaves(value: Any) -> list:
    out: list = []
    tree_map(out.append, value)
    return out


def argument(args: tuple, kwargs: dict, index: int, name: str, default: Any = None) -> Any:
    if len(args) > index:
        return args[index]
    return kwargs.get(name, default)


def pair(value: Any) -> Any:
    """A 2-D layer's ``int`` argument as ``(rows, columns)``; a pair or a string as it is."""
    return tuple(value) if isinstance(value, (tuple, list)) else value if isinstance(value, str) else (value, value)


def replace_argument(args: tuple, kwargs: dict, index: int, name: str, value: Any) -> Tuple[tuple, dict]:
    if len(args) > index:
        return args[:index] + (value,) + args[index + 1 :], kwargs
    return args, {**kwargs, name: value}


def batched(fn: Callable[[Tensor], Tensor], rel: Tensor, full_ndim: int, batched_ndim: int) -> Tensor:
    """Applies a batch-aware op to the G relevant parts at once.

    ``rel`` has shape ``(G, *full.shape)``. If the full activation has a batch dimension
    (``full_ndim == batched_ndim``) the group and batch dimensions are folded into one;
    an unbatched activation uses the group dimension as the batch.
    """
    if full_ndim == batched_ndim:
        out = fn(rel.flatten(0, 1))
        return out.unflatten(0, rel.shape[:2])
    return fn(rel)


def split_bias(u: Tensor, linear: Tensor, bias: Any) -> Tensor:
    r"""The relevant part after a bias: ``u + b |u| / (|u| + |v|)`` with ``v = linear - u``.

    ``u`` is the linear image of the relevant part and ``linear`` that of the full activation,
    both before the bias is added (docs/methods.md, "The bias split"). Each must be
    exactly 0 where its part is: the share is decided from them, so it never follows the
    rounding of a recomputed output. Where both are 0 the bias goes to the irrelevant part:
    a group whose input is exactly zero there contributes nothing. With gradients, a fused
    autograd function keeps only ``u`` (G-sized) for backward instead of every intermediate:
    this is most of CDEP's activation memory.
    """
    return _split(u, linear, bias, biased=False)


def split_biased(u: Tensor, out: Tensor, bias: Any) -> Tensor:
    r""":func:`split_bias` after a Linear, ConvNd or ``addmm`` kernel, given its output
    ``out`` with the bias added: the kernel adds ``b`` to an exact 0 where the input is
    zero, so ``out - b`` is the full's linear image with the zeros exact. It is formed when
    the step runs, so no second activation-sized tensor waits with the step."""
    return _split(u, out, bias, biased=True)


def _split(u: Tensor, linear: Tensor, bias: Any, biased: bool) -> Tensor:
    if not isinstance(bias, Tensor):
        bias = torch.as_tensor(bias, dtype=u.dtype, device=u.device)
    if torch.is_grad_enabled() and any(t.requires_grad for t in (u, linear, bias)):
        return _SplitBias.apply(u, linear, bias, biased)
    return _split_bias_value(u, linear - bias if biased else linear, bias)


def _split_bias_value(u: Tensor, linear: Tensor, bias: Tensor) -> Tensor:
    # Two G-sized temporaries beside u: |u| becomes the share, then the result.
    share = u.abs()
    total = (linear - u).abs_().add_(share)
    share = share.div_(total).nan_to_num_(0.0)  # 0/0 (both parts 0): none of the bias
    del total
    if bias.dtype == share.dtype and _fits_into(bias.shape, share.shape):
        return torch.addcmul(u, bias, share, out=share)
    return torch.addcmul(u, bias, share)


def _fits_into(shape: torch.Size, into: torch.Size) -> bool:
    """Whether a tensor of ``shape`` broadcasts against ``into`` without growing it."""
    return len(shape) <= len(into) and all(a in (1, b) for a, b in zip(reversed(shape), reversed(into)))


class _SplitBias(torch.autograd.Function):
    """``split_bias`` with a hand-written backward (d/du, d/dlinear, d/dbias)."""

    @staticmethod
    def forward(ctx, u: Tensor, linear: Tensor, bias: Tensor, biased: bool) -> Tensor:
        ctx.save_for_backward(u, linear, bias)
        ctx.biased = biased
        with torch.no_grad():
            return _split_bias_value(u, linear - bias if biased else linear, bias)

    @staticmethod
    def backward(ctx, grad: Tensor):
        u, linear, bias = ctx.saved_tensors
        v = (linear - bias if ctx.biased else linear) - u
        # rel = u + b r,  r = |u| / s,  s = |u| + |v|:  dr/d|u| = (1 - r) / s,  dr/d|v| = -r / s.
        # Written with 1/s, never 1/s^2: no large terms that cancel only in exact arithmetic.
        # Where s = 0 (both parts 0) r = 0 and both signs are 0, so every term is 0.
        inv = (u.abs() + v.abs()).clamp_min_(torch.finfo(u.dtype).tiny).reciprocal_()
        r = u.abs().mul_(inv)
        d_abs_u = (1 - r).mul_(inv).mul_(torch.sign(u))  # dr/du through |u|
        d_abs_v = r.mul(inv).mul_(torch.sign(v))  # -dr/dv through |v|; v = linear - u
        need_u, need_linear, need_bias, _ = ctx.needs_input_grad
        grad_u = grad * (1 + bias * (d_abs_u + d_abs_v)) if need_u else None
        grad_linear = -grad * bias * d_abs_v if need_linear or (need_bias and ctx.biased) else None
        grad_bias = grad * r if need_bias else None
        if grad_bias is not None and ctx.biased:  # linear = out - b
            grad_bias = grad_bias - grad_linear
        grad_linear = _sum_to(grad_linear, linear.shape) if need_linear else None
        grad_bias = _sum_to(grad_bias, bias.shape) if need_bias else None
        return grad_u, grad_linear, grad_bias, None


def keep_zeros(value: Tensor, rel: Tensor) -> Tensor:
    """``value`` (a fresh tensor) with exact zeros where the part ``rel`` it came from is 0.

    A Shapley-type step is exactly 0 there (``f(0) - f(0) + f(z) - f(z)``), but torch's
    kernels may round ``f`` of one number differently at different positions of a tensor
    (vectorised body, scalar tail), which leaves ~1e-16 instead. A zero part must stay
    exactly zero: the next bias split gives a part that is 0 nothing, and a part of 1e-16
    facing a 0 all of it."""
    return value.masked_fill_(rel == 0, 0)


def _sum_to(grad: Tensor, shape: torch.Size) -> Tensor:
    """Reduces a broadcast gradient back to ``shape``."""
    lead = grad.ndim - len(shape)
    if lead:
        grad = grad.sum(dim=tuple(range(lead)))
    dims = tuple(i for i, n in enumerate(shape) if n == 1 and grad.shape[i] != 1)
    return grad.sum(dim=dims, keepdim=True) if dims else grad


def zero_rel(full: Tensor, groups: int) -> Tensor:
    """A relevant part of zeros (a constant belongs to the irrelevant part), without memory."""
    return full.new_zeros(()).expand(groups, *full.shape)


def align(rel: Tensor, out_ndim: int) -> Tensor:
    """Inserts broadcast dimensions after G so ``rel`` broadcasts like its full activation
    would against an operand of ``out_ndim`` dimensions."""
    missing = out_ndim - (rel.ndim - 1)
    if missing <= 0:
        return rel
    return rel.reshape(rel.shape[0], *([1] * missing), *rel.shape[1:])
