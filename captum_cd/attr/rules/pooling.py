r"""Pooling and selection: which element wins is decided by the full activation.

Max pooling takes its winners from ``beta + gamma`` (the ordinary forward) and gathers the
relevant part at them: any dimensionality, padding, dilation, ``ceil_mode``, adaptive;
one ``gather`` for all groups, examples and channels. The same holds for ``max``/``min``
along a dimension and ``amax``/``amin``.

Elementwise work still pending on the input (bias split, activation) commutes with the
gather, so it is gathered along and runs on the pooled elements only.

Average pooling is linear: see :mod:`captum_cd.attr.rules.structural`.
"""

import functools

import torch
import torch.nn.functional as F
from torch import Tensor

from captum_cd.attr.decomposition import binds_tensor, Decomposition
from captum_cd.attr.errors import DecompositionError, function_name
from captum_cd.attr.rules._util import argument, is_dec, pair
from captum_cd.attr.rules.registry import register_rule
from captum_cd.attr.windows import pool_positions, slide, spans_map

# function -> (the variant that returns indices, spatial dims, position of return_indices)
MAX_POOL = {
    F.max_pool1d: (F.max_pool1d_with_indices, 1, 6),
    F.max_pool2d: (F.max_pool2d_with_indices, 2, 6),
    F.max_pool3d: (F.max_pool3d_with_indices, 3, 6),
    F.max_pool1d_with_indices: (F.max_pool1d_with_indices, 1, 6),
    F.max_pool2d_with_indices: (F.max_pool2d_with_indices, 2, 6),
    F.max_pool3d_with_indices: (F.max_pool3d_with_indices, 3, 6),
    F.adaptive_max_pool1d: (F.adaptive_max_pool1d_with_indices, 1, 2),
    F.adaptive_max_pool2d: (F.adaptive_max_pool2d_with_indices, 2, 2),
    F.adaptive_max_pool3d: (F.adaptive_max_pool3d_with_indices, 3, 2),
    F.adaptive_max_pool1d_with_indices: (F.adaptive_max_pool1d_with_indices, 1, 2),
    F.adaptive_max_pool2d_with_indices: (F.adaptive_max_pool2d_with_indices, 2, 2),
    F.adaptive_max_pool3d_with_indices: (F.adaptive_max_pool3d_with_indices, 3, 2),
}

T = torch.Tensor
SELECT_ALONG_DIM = [torch.max, T.max, torch.min, T.min, torch.amax, T.amax, torch.amin, T.amin]


def gather_at(values: Tensor, indices: Tensor, full_shape: torch.Size, n: int) -> Tensor:
    """Gathers ``values`` at flat indices over the last ``n`` dims of ``full_shape``.

    ``values`` broadcasts against ``full_shape`` and may have an extra leading group
    dimension. A tensor constant over those dims (a per-channel bias) needs no gather.
    """
    if not isinstance(values, Tensor) or values.ndim < n or all(s == 1 for s in values.shape[-n:]):
        return values
    lead = values.shape[: values.ndim - len(full_shape)]
    flat = values.expand(*lead, *full_shape).flatten(-n)
    index = indices.flatten(-n).expand(*flat.shape[:-1], -1)
    return gather_last(flat, index).view(*flat.shape[:-1], *indices.shape[-n:])


def gather_last(values: Tensor, index: Tensor) -> Tensor:
    """``values.gather(-1, index)``; with a graph, backward keeps only ``index``."""
    if torch.is_grad_enabled() and values.requires_grad:
        return _GatherLast.apply(values, index)
    return values.gather(-1, index)


class _GatherLast(torch.autograd.Function):
    """``flat.gather(-1, index)`` keeping only the index for backward: torch's gather also
    keeps its whole input, which for CDEP is the un-pooled activation of every group."""

    @staticmethod
    def forward(ctx, flat: Tensor, index: Tensor) -> Tensor:
        ctx.save_for_backward(index)
        ctx.size = flat.shape[-1]
        return flat.gather(-1, index)

    @staticmethod
    def backward(ctx, grad: Tensor):
        (index,) = ctx.saved_tensors
        return grad.new_zeros(*grad.shape[:-1], ctx.size).scatter_add(-1, index, grad), None


def max_pool(func, args, kwargs):
    x = args[0] if args else kwargs["input"]
    with_indices, n, flag_position = MAX_POOL[func]
    wants_indices = argument(args, kwargs, flag_position, "return_indices", False)
    if "with_indices" in func.__name__:
        wants_indices = True
    plain_args = tuple(a for i, a in enumerate(args) if i != flag_position)
    plain_kwargs = {k: v for k, v in kwargs.items() if k not in ("return_indices", "input")}
    out, indices = with_indices(x.full, *plain_args[1:], **plain_kwargs)
    if x.window is not None and func in (F.max_pool2d, F.max_pool2d_with_indices) and x.full.ndim == 4:
        pooled = _max_pool_in_windows(x, out, indices, plain_args, plain_kwargs)
        return (pooled, indices) if wants_indices else pooled
    shape = x.full.shape
    # Gather the unmaterialised relevant part and the pending steps' context, then keep
    # the steps pending: they run on the pooled elements.
    rel, steps = x.lazy_parts()
    if any(binds_tensor(step, functools.partial(_varies_over, n=n)) for step, _ in steps):
        rel, steps = x.rel, ()  # (a step over a whole tensor: a Shapley form over a lineage)
    pending = tuple((step, tuple(gather_at(c, indices, shape, n) for c in context)) for step, context in steps)
    pooled = Decomposition(out, gather_at(rel, indices, shape, n), pending)
    return (pooled, indices) if wants_indices else pooled


def _varies_over(t: object, n: int) -> bool:
    return isinstance(t, Tensor) and t.ndim >= n and any(s != 1 for s in t.shape[-n:])


def _max_pool_in_windows(x: Decomposition, out: Tensor, indices: Tensor, args, kwargs) -> Decomposition:
    """Max pooling of relevant parts kept in windows: each group's output box gathers at
    the winners inside its input box (a winner outside it holds a zero part there)."""
    kernel = pair(argument(args, kwargs, 1, "kernel_size"))
    stride = argument(args, kwargs, 2, "stride", None)
    stride = kernel if stride is None or (isinstance(stride, (tuple, list)) and not stride) else pair(stride)
    padding, dilation = pair(argument(args, kwargs, 3, "padding", 0)), pair(argument(args, kwargs, 4, "dilation", 1))
    window, _ = slide(x.window, kernel, stride, padding, dilation, out.shape[-2:])
    at, inside = pool_positions(indices, x.window, window)
    boxes, steps = x.lazy_boxes()
    pooled = _gather_boxes(boxes, at) * inside
    pending = tuple((step, tuple(gather_at(c, indices, x.full.shape, 2) for c in context)) for step, context in steps)
    return Decomposition(out, pooled, pending, window=window)


def _gather_boxes(values, at: Tensor):
    """``values`` (boxes ``(G, b, c, h, w)``, or a per-channel constant) at flat positions
    ``at`` ``(G, B, C, h', w')`` within each box."""
    if not spans_map(values):
        return values
    flat = values.expand(*at.shape[:3], *values.shape[-2:]).flatten(-2)
    return gather_last(flat, at.flatten(-2)).view(at.shape)


def select_along_dim(func, args, kwargs):
    """``max``/``min`` over the whole tensor or along a dimension, and ``amax``/``amin``:
    gather at the full's winners."""
    x = args[0] if args else kwargs["input"]
    dim = argument(args, kwargs, 1, "dim")
    name = func.__name__.lstrip("a")
    if dim is None and len(args) < 2 and "other" not in kwargs:  # over the whole tensor
        flat = x.full.flatten()
        index = (flat.argmax if name == "max" else flat.argmin)()
        return Decomposition(flat[index], x.rel.flatten(1)[:, index])
    if dim is None or is_dec(dim) or isinstance(dim, Tensor):
        raise DecompositionError(
            f"{function_name(func)} of two tensors (the elementwise max of two values) has no rule; "
            "a max or min over the whole tensor or along a dimension has."
        )
    keepdim = argument(args, kwargs, 2, "keepdim", False)
    dims = [dim] if isinstance(dim, int) else list(dim)
    dims = [d % x.full.ndim for d in dims]
    # Move the reduced dims last and flatten them, so one argmax serves amax over tuples too.
    kept = [d for d in range(x.full.ndim) if d not in dims]
    full = x.full.permute(*kept, *dims).flatten(len(kept))
    rel = x.rel.permute(0, *[d + 1 for d in kept], *[d + 1 for d in dims]).flatten(len(kept) + 1)
    index = (full.argmax if name == "max" else full.argmin)(-1, keepdim=True)
    values_full = full.gather(-1, index)
    values_rel = gather_last(rel, index.expand(rel.shape[0], *index.shape))
    if keepdim:
        shape = [1 if d in dims else s for d, s in enumerate(x.full.shape)]
        values_full, values_rel = values_full.view(shape), values_rel.view(rel.shape[0], *shape)
    else:
        values_full, values_rel = values_full.squeeze(-1), values_rel.squeeze(-1)
    values = Decomposition(values_full, values_rel)
    if func in (torch.amax, T.amax, torch.amin, T.amin):
        return values
    indices = index.squeeze(-1) if not keepdim else index.view(values_full.shape)
    return torch.return_types.max((values, indices)) if name == "max" else torch.return_types.min((values, indices))


def select_in_order(func, args, kwargs):
    """``topk``, ``sort``, ``kthvalue``, ``median``/``nanmedian``/``mode`` along a dimension
    (or the median of the whole tensor):
    the order is the full activation's, and the values gather both parts at its indices
    (which, like ``argsort``'s, are constants)."""
    x = args[0] if args else kwargs.get("input")
    if not isinstance(x, Decomposition) or any(is_dec(a) for a in list(args[1:]) + list(kwargs.values())):
        raise DecompositionError(f"{function_name(func)}: only the first argument may be decomposed.")
    result = func(x.full, *args[1:], **{k: v for k, v in kwargs.items() if k != "input"})
    if isinstance(result, Tensor):  # the median of the whole tensor: the element it is
        index = func(x.full.flatten(), 0).indices
        return Decomposition(result, x.rel.flatten(1)[:, index])
    values, indices = result
    dim = _selection_dim(func, args, kwargs) % x.full.ndim
    kept = indices if indices.ndim == x.full.ndim else indices.unsqueeze(dim)  # keepdim=False drops dim
    rel = gather_last(x.rel.movedim(dim + 1, -1), kept.movedim(dim, -1).expand(x.groups, *kept.movedim(dim, -1).shape))
    rel = rel.movedim(-1, dim + 1)
    if indices.ndim != x.full.ndim:
        rel = rel.squeeze(dim + 1)
    return type(result)((Decomposition(values, rel), indices))


def _selection_dim(func, args, kwargs) -> int:
    """The dimension ``func`` selects along: after ``k`` for topk and kthvalue."""
    position = 2 if func.__name__ in ("topk", "kthvalue") else 1
    return argument(args, kwargs, position, "dim", -1)


register_rule(MAX_POOL, max_pool)
register_rule([torch.topk, T.topk, torch.sort, T.sort, torch.kthvalue, T.kthvalue, torch.median, T.median,
               torch.nanmedian, T.nanmedian, torch.mode, T.mode], select_in_order)
register_rule(SELECT_ALONG_DIM, select_along_dim)
