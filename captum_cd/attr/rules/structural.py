r"""Linear maps that act on the decomposed value alone: applied to both parts.

View, reshape, flatten, permute, indexing, concatenation, padding, pooling by averaging,
interpolation, sums and means, dtype casts, ``matmul`` with a constant, ...: for such a
map ``L``, ``beta' = L(beta)`` and ``gamma' = L(gamma)``.

The relevant parts carry a leading group dimension G. The most common maps shift their
dimension arguments past it (fast, no copies); maps that treat dimension 0 as a batch
(pooling, padding, interpolation) fold G into the batch; the long tail runs under
``torch.vmap`` over G, which knows every op's dimension semantics.

Constants that occupy positions of their own (a CLS token concatenated, a padding value,
the constant branch of ``where``) are not part of any feature group: they belong to the
irrelevant part.
"""

from typing import Any, Callable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from captum_cd.attr.decomposition import Decomposition
from captum_cd.attr.errors import DecompositionError, function_name
from captum_cd.attr.rules._util import align, argument, batched, fulls, is_dec, leaves, tree_map, zero_rel
from captum_cd.attr.rules.registry import register_rule

T = torch.Tensor


def _shift(dim: Any) -> Any:
    """A dimension of the full activation, as a dimension of the relevant parts."""
    if isinstance(dim, (tuple, list)):
        return type(dim)(_shift(d) for d in dim)
    return dim + 1 if isinstance(dim, int) and dim >= 0 else dim


def _wrap(full_out: Any, rel_out: Any) -> Any:
    """Pairs the outputs of the two calls (a tensor, or a tuple of tensors as from split)."""
    if isinstance(full_out, Tensor):
        return Decomposition(full_out, rel_out)
    return type(full_out)(_wrap(f, r) for f, r in zip(full_out, rel_out))


def _only_decomposed_input(func, args, kwargs):
    x = args[0] if args else kwargs.get("input", kwargs.get("self"))
    if not is_dec(x) or sum(is_dec(v) for v in leaves((args, kwargs))) > 1:
        raise DecompositionError(f"{function_name(func)}: only the first argument may be decomposed.")
    return x


# --- maps with a shape or dimension argument: shift past G -------------------------------


def view_like(func, args, kwargs):
    """``view``/``reshape``: the new shape gets G in front."""
    x = _only_decomposed_input(func, args, kwargs)
    shape = args[1:] if len(args) > 1 else (kwargs.get("shape") or kwargs.get("size"),)
    if len(shape) == 1 and isinstance(shape[0], (tuple, list, torch.Size)):
        shape = tuple(shape[0])
    if not all(isinstance(s, int) for s in shape):  # view(dtype), or symbolic sizes
        return vmapped(func, args, kwargs)
    rel = x.rel
    return Decomposition(func(x.full, shape), func(rel, (rel.shape[0], *shape)))


def dim_shifted(positions: Sequence[int], names: Sequence[str]) -> Callable:
    """A rule for a unary map whose arguments at ``positions``/``names`` are dimensions."""

    def rule(func, args, kwargs):
        x = _only_decomposed_input(func, args, kwargs)
        rel_args = [x.rel] + [_shift(a) if i in positions else a for i, a in enumerate(args[1:], 1)]
        rel_kwargs = {k: (_shift(v) if k in names else v) for k, v in kwargs.items() if k != "input"}
        full_kwargs = {k: v for k, v in kwargs.items() if k != "input"}
        return _wrap(func(x.full, *args[1:], **full_kwargs), func(*rel_args, **rel_kwargs))

    return rule


def reduction(func, args, kwargs):
    """``sum``/``mean``: a reduction over all dimensions keeps G."""
    x = _only_decomposed_input(func, args, kwargs)
    dim = argument(args, kwargs, 1, "dim")
    if dim is None or (isinstance(dim, (tuple, list)) and len(dim) == 0):
        rel_dim = tuple(range(1, x.rel.ndim))
        args, kwargs = (x,), {k: v for k, v in kwargs.items() if k != "dim"}
        full = func(x.full, **kwargs)
        return Decomposition(full, func(x.rel, rel_dim, **kwargs))
    return dim_shifted([1], ["dim"])(func, args, kwargs)


def permute(func, args, kwargs):
    x = _only_decomposed_input(func, args, kwargs)
    dims = args[1:] if len(args) > 1 else (kwargs["dims"],)
    if len(dims) == 1 and isinstance(dims[0], (tuple, list)):
        dims = tuple(dims[0])
    ndim = x.full.ndim
    return Decomposition(x.full.permute(dims), x.rel.permute(0, *[d % ndim + 1 for d in dims]))


def getitem(func, args, kwargs):
    x, index = args
    if any(is_dec(i) for i in leaves(index)):
        raise DecompositionError("indexing with a decomposed index has no rule.")
    index = index if isinstance(index, tuple) else (index,)
    if _separated_advanced(index):  # torch moves those dims first: index each group's part alone
        return Decomposition(x.full[index], torch.vmap(lambda r: r[index])(x.rel))
    return Decomposition(x.full[index], x.rel[(slice(None),) + index])


def _separated_advanced(index: tuple) -> bool:
    """Whether advanced indices (tensors, lists; ints among them) are not side by side."""
    arrays = [isinstance(i, (Tensor, list)) for i in index]
    if not any(arrays):
        return False
    advanced = [k for k, (i, a) in enumerate(zip(index, arrays)) if a or isinstance(i, int)]
    return advanced != list(range(advanced[0], advanced[-1] + 1))


def setitem(func, args, kwargs):
    """``x[index] = value``: written into both parts; a constant value is irrelevant."""
    x, index, value = args
    if not is_dec(x):
        raise DecompositionError(
            "writing a decomposed value into a tensor that is not decomposed (x[i] = d) "
            "has no rule; build the tensor with torch.cat or torch.stack instead."
        )
    full, rel = x.full.clone(), x.rel.clone()
    full[index] = value.full if is_dec(value) else value
    rel[(slice(None),) + (index if isinstance(index, tuple) else (index,))] = value.rel if is_dec(value) else 0
    x._assign(Decomposition(full, rel))


def concatenate(func, args, kwargs):
    """``cat``/``stack``: a constant piece is irrelevant (zeros in the relevant part)."""
    tensors = argument(args, kwargs, 0, "tensors")
    dim = argument(args, kwargs, 1, "dim", 0)
    if func is not torch.stack:  # cat skips legacy empty 1-D tensors (a key-value cache's start)
        tensors = [t for t in tensors if is_dec(t) or not (t.ndim == 1 and t.numel() == 0)]
    groups = next(t for t in tensors if is_dec(t)).rel.shape[0]
    rels = [t.rel if is_dec(t) else zero_rel(t, groups) for t in tensors]
    full = func([t.full if is_dec(t) else t for t in tensors], dim)
    return Decomposition(full, func(rels, _shift(dim)))


def where(func, args, kwargs):
    if func is T.where:  # x.where(condition, y)
        args = (argument(args, kwargs, 1, "condition"), args[0], argument(args, kwargs, 2, "other"))
    condition, a, b = args[0], argument(args, kwargs, 1, "input"), argument(args, kwargs, 2, "other")
    if is_dec(condition):
        raise DecompositionError("torch.where with a decomposed condition: compare first (x > 0).")
    out = torch.where(condition, *fulls((a, b)))
    groups = next(v for v in (a, b) if is_dec(v)).rel.shape[0]
    parts = [align(v.rel, out.ndim) if is_dec(v) else 0.0 for v in (a, b)]
    return Decomposition(out, torch.where(condition, *parts).expand(groups, *out.shape))


def masked_fill(func, args, kwargs):
    x, mask, value = args[0], argument(args, kwargs, 1, "mask"), argument(args, kwargs, 2, "value")
    if is_dec(mask) or is_dec(value):
        raise DecompositionError("masked_fill with a decomposed mask or value has no rule.")
    return Decomposition(x.full.masked_fill(mask, value), x.rel.masked_fill(mask, 0))


def contraction(func, args, kwargs):
    """``matmul``/``mm``/``bmm`` with a constant is linear; of two decomposed values, the
    two-player Shapley split of the bilinear map, ``1/2 (beta_a @ b + a @ beta_b)``, as
    for elementwise products (:mod:`~captum_cd.attr.rules.arithmetic`)."""
    a, b = args[0] if args else kwargs["input"], argument(args, kwargs, 1, "other", argument(args, kwargs, 1, "mat2"))
    out = func(*fulls((a, b)))
    if min(v.full.ndim if is_dec(v) else v.ndim for v in (a, b)) < 2:
        return vmapped(func, args, kwargs)
    # mm and bmm check their operands' ndim: the relevant parts (G in front) use matmul
    return Decomposition(out, _bilinear(torch.matmul, a, b, out.ndim))


def _bilinear(op, a, b, ndim):
    if is_dec(a) and is_dec(b):
        return 0.5 * (op(align(a.rel, ndim), b.full) + op(a.full, align(b.rel, ndim)))
    return op(align(a.rel, ndim) if is_dec(a) else a, align(b.rel, ndim) if is_dec(b) else b)


def shape_of_other(func, args, kwargs):
    """``view_as``/``reshape_as``/``expand_as``/``type_as``: only the other tensor's shape
    or dtype is read, so a decomposed ``other`` is used as its full activation."""
    x, other = args[0], argument(args, kwargs, 1, "other")
    other = other.full if is_dec(other) else other
    if not is_dec(x):
        return func(x, other)
    rule = view_like if func in (T.view_as, T.reshape_as) else vmapped
    target = T.view if func is T.view_as else T.reshape
    if func in (T.view_as, T.reshape_as):
        return rule(target, (x, tuple(other.shape)), {})
    if func is T.type_as:
        return dim_shifted((), ())(T.to, (x, other.dtype), {})
    return rule(func, (x, other), {})


# --- maps that treat dimension 0 as a batch: fold G into it -----------------------------


def batch_linear(spatial: Callable[[Any, tuple, dict], int]) -> Callable:
    """A rule for a batch-wise linear map on ``(N, C, *spatial)``; ``spatial`` counts dims."""

    def rule(func, args, kwargs):
        x = _only_decomposed_input(func, args, kwargs)
        rest = {k: v for k, v in kwargs.items() if k != "input"}
        out = func(x.full, *args[1:], **rest)
        if func is F.pad and argument(args, kwargs, 3, "value") not in (None, 0, 0.0):
            args, rest = args[:3], {k: v for k, v in rest.items() if k != "value"}  # pads with 0
        n = spatial(x, args, rest)
        rel = batched(lambda r: func(r, *args[1:], **rest), x.rel, x.full.ndim, n + 2)
        return Decomposition(out, rel)

    return rule


def _pad_dims(x, args, kwargs):
    return len(argument(args, kwargs, 1, "pad")) // 2


def _channels_first(x, args, kwargs):
    return x.full.ndim - 2 if x.full.ndim > 2 else x.full.ndim


def _fixed(n):
    return lambda x, args, kwargs: n


# --- the long tail: vmap over G ---------------------------------------------------------


def vmapped(func, args, kwargs):
    """Any map linear in its (single) decomposed argument, run on the relevant parts under
    ``torch.vmap`` so every op's own dimension semantics apply."""
    if any(is_dec(v) for v in leaves(kwargs)):
        raise DecompositionError(f"{function_name(func)}: pass the decomposed tensor positionally.")
    full = func(*fulls(args), **kwargs)
    decs = [v for v in leaves(args) if is_dec(v)]
    in_dims = tree_map(lambda v: 0 if is_dec(v) else None, args)
    rel_args = tree_map(lambda v: v.rel if is_dec(v) else v, args)
    if len(decs) > 1 and func not in CONTRACTIONS:
        raise DecompositionError(f"{function_name(func)} of several decomposed values has no rule.")
    rel = torch.vmap(lambda *a: func(*a, **kwargs), in_dims=tuple(in_dims))(*rel_args)
    return _wrap(full, rel)


def detach_data(func, args, kwargs):
    """``x.data``: both parts, detached."""
    return Decomposition(args[0].full.detach(), args[0].rel.detach())


def iterate(func, args, kwargs):
    return iter(dim_shifted([1], ["dim"])(torch.unbind, (args[0], 0), {}))


VIEW_LIKE = [T.view, T.reshape, torch.reshape]
DIM_SHIFTED = {
    (1, 2): [T.flatten, torch.flatten, T.transpose, torch.transpose, T.swapaxes, torch.swapaxes,
             T.movedim, torch.movedim],
    (1,): [T.narrow, torch.narrow, T.unflatten, torch.unflatten, T.unsqueeze, torch.unsqueeze, T.select, torch.select, T.unbind, torch.unbind,
           T.cumsum, torch.cumsum, T.index_select, torch.index_select],
    (2,): [T.chunk, torch.chunk, T.split, torch.split, T.tensor_split, torch.tensor_split],
    (): [T.contiguous, T.clone, torch.clone, T.detach, torch.detach, T.to, T.float, T.double,
         T.half, T.bfloat16, T.cpu, T.cuda],
}  # fmt: skip
DIM_NAMES = ["dim", "dim0", "dim1", "start_dim", "end_dim", "source", "destination", "axis0", "axis1"]
REDUCTIONS = [T.sum, torch.sum, T.mean, torch.mean]
CONTRACTIONS = [torch.matmul, T.matmul, T.__matmul__, T.__rmatmul__, torch.mm, T.mm, torch.bmm, T.bmm, torch.einsum]
BATCH_LINEAR = {
    F.pad: _pad_dims,
    F.interpolate: _channels_first,
    F.avg_pool1d: _fixed(1), F.avg_pool2d: _fixed(2), F.avg_pool3d: _fixed(3),
    F.adaptive_avg_pool1d: _fixed(1), F.adaptive_avg_pool2d: _fixed(2), F.adaptive_avg_pool3d: _fixed(3),
    F.pixel_shuffle: _fixed(2), F.pixel_unshuffle: _fixed(2), F.unfold: _fixed(2), F.fold: _fixed(1),
}  # fmt: skip
VMAPPED = [
    T.squeeze, torch.squeeze, T.expand, T.repeat, T.roll, torch.roll, T.flip, torch.flip,
    T.t, torch.t, T.gather, torch.gather, T.diagonal, torch.diagonal, T.tile, torch.tile,
    T.repeat_interleave, torch.repeat_interleave, T.diff, torch.diff,
    T.take_along_dim, torch.take_along_dim, T.trace, torch.trace, torch.einsum,
]  # fmt: skip

register_rule(VIEW_LIKE, view_like)
for _positions, _funcs in DIM_SHIFTED.items():
    register_rule(_funcs, dim_shifted(_positions, DIM_NAMES))
register_rule(REDUCTIONS, reduction)
register_rule([T.permute, torch.permute], permute)
register_rule(T.__getitem__, getitem)
register_rule(T.__setitem__, setitem)
register_rule([torch.cat, torch.concat, torch.concatenate, torch.stack], concatenate)
register_rule([torch.where, T.where], where)
register_rule([T.masked_fill, torch.masked_fill], masked_fill)
register_rule([c for c in CONTRACTIONS if c is not torch.einsum], contraction)
for _func, _spatial in BATCH_LINEAR.items():
    register_rule(_func, batch_linear(_spatial))
register_rule(VMAPPED, vmapped)
register_rule([T.view_as, T.reshape_as, T.expand_as, T.type_as], shape_of_other)
register_rule(T.__iter__, iterate)
register_rule([T.T.__get__, T.mT.__get__], vmapped)
register_rule(T.data.__get__, detach_data)
