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


def bias_eps(dtype: torch.dtype) -> float:
    # The original adds 1e-20 to both magnitudes (0/0 splits the bias 50/50); in half
    # precision 1e-20 underflows, so the smallest normal number takes its place.
    return max(1e-20, torch.finfo(dtype).tiny) if dtype.is_floating_point else 1e-20


def split_bias(u: Tensor, out: Tensor, bias: Any) -> Tensor:
    r"""The relevant part after a bias: ``u + b |u| / (|u| + |v|)`` with ``v = out - b - u``.

    ``u`` is the linear image of the relevant part, ``out`` the full output (bias
    included), so ``v`` is the linear image of the irrelevant part; docs/methods.md, "Contextual decomposition".
    With gradients, a fused autograd function keeps only ``u`` (G-sized) for backward
    instead of every intermediate: this is most of CDEP's activation memory.
    """
    if not isinstance(bias, Tensor):
        bias = torch.as_tensor(bias, dtype=u.dtype, device=u.device)
    if torch.is_grad_enabled() and any(t.requires_grad for t in (u, out, bias)):
        return _SplitBias.apply(u, out, bias)
    return _split_bias_value(u, out, bias)


def _split_bias_value(u: Tensor, out: Tensor, bias: Tensor) -> Tensor:
    eps = bias_eps(u.dtype)
    a = u.abs().add_(eps)
    share = (out - bias - u).abs_().add_(eps).add_(a)  # |v| + eps + |u| + eps
    return torch.addcmul(u, bias, a.div_(share))


class _SplitBias(torch.autograd.Function):
    """``split_bias`` with a hand-written backward (d/du, d/dout, d/dbias)."""

    @staticmethod
    def forward(ctx, u: Tensor, out: Tensor, bias: Tensor) -> Tensor:
        ctx.save_for_backward(u, out, bias)
        with torch.no_grad():
            return _split_bias_value(u, out, bias)

    @staticmethod
    def backward(ctx, grad: Tensor):
        u, out, bias = ctx.saved_tensors
        eps = bias_eps(u.dtype)
        v = out - bias - u
        a, c = u.abs() + eps, v.abs() + eps
        s2 = (a + c).square()
        sign_u, sign_v = torch.sign(u), torch.sign(v)
        # rel = u + b r,  r = a / (a + c):  dr/da = c / s^2,  dr/dc = -a / s^2
        dr_dc = -a / s2
        need_u, need_out, need_bias = ctx.needs_input_grad
        grad_u = grad * (1 + bias * (c / s2 * sign_u - dr_dc * sign_v)) if need_u else None
        grad_out = _sum_to(grad * bias * dr_dc * sign_v, out.shape) if need_out else None
        grad_bias = _sum_to(grad * (a / (a + c) - bias * dr_dc * sign_v), bias.shape) if need_bias else None
        return grad_u, grad_out, grad_bias


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
