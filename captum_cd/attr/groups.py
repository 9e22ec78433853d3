r"""Features -> groups -> masks -> relevant parts -> target scores: the one place where
every method (CD's ``attribute``, ``decompose`` and ``interactions``, TRIM's CD path,
AgglomerativeCD, CDEP, AWD) turns what the user gives into what the engine decomposes,
and the decomposed output into scores.

- **Groups**: :func:`one_hot_groups` (every scalar feature its own group) and
  :func:`groups_from_ids` (Captum's ``feature_mask`` of integer ids, :func:`broadcast_ids`)
  build masks a chunk of groups at a time and put scores back in the inputs' shape;
  :func:`passes`, :func:`rows_per_pass`, :func:`masks_for_examples`,
  :func:`target_for_examples`, :func:`same_rows` cut the work into batched passes.
- **Masks**: :func:`check_masks` validates masks ``(G, *features)`` (shared by the batch)
  or ``(G, B, *features)`` (per example) and shapes them ``(G, B or 1, *features)``;
  :func:`check_pairs` the pairs of :meth:`~captum_cd.ContextualDecomposition.interactions`.
- **Relevant parts**: :func:`relevant_parts` (``mask * x``, or given directly, as TRIM
  and AWD do).
- **Targets**: :func:`check_target`, :func:`output_scores` and :func:`target_scores`,
  Captum's target forms (and, for AWD, ``"predicted"``) applied to relevant parts
  ``(G, *out)``; :func:`select_rows` takes the rows of the
  extra forward arguments that follow the batch when a method samples examples.
"""

import numbers
from typing import Any, List, Optional, Tuple

import torch
from torch import Tensor

from captum_cd.attr._captum_compat import _expand_target, _select_targets, ExpansionTypes, TargetType
from captum_cd.attr.decomposition import current_context

# Groups x examples propagated at once when a method chooses the chunk size.
ROWS_PER_PASS = 1024


def rows_per_pass(perturbations_per_eval: Optional[int], batch: int) -> int:
    """Groups per batched pass: ``perturbations_per_eval`` if given (checked), else as
    many as keep groups times examples at most :data:`ROWS_PER_PASS`."""
    return positive_int(perturbations_per_eval, "perturbations_per_eval") or max(1, ROWS_PER_PASS // max(batch, 1))


def select_rows(args: Any, rows: Any, batch: int) -> Optional[Tuple[Any, ...]]:
    """The extra forward arguments of the examples ``rows`` (an index tensor or a slice):
    tensors whose first dimension is the batch are indexed, anything else passes as it is."""
    if args is None:
        return None
    args = args if isinstance(args, tuple) else (args,)
    return tuple(a[rows] if isinstance(a, Tensor) and a.ndim and a.shape[0] == batch else a for a in args)


def check_pairs(masks_a: Tuple[Tensor, ...], masks_b: Tuple[Tensor, ...]) -> int:
    """The number of pairs P: masks_a and masks_b need P rows each, one mask per input."""
    masks_a, masks_b = as_tensors(masks_a, "masks_a"), as_tensors(masks_b, "masks_b")
    if len(masks_a) != len(masks_b):
        raise ValueError(f"masks_a has {len(masks_a)} masks and masks_b {len(masks_b)}; give one per input in both.")
    rows = {m.shape[0] if m.ndim else None for m in masks_a + masks_b}
    if len(rows) != 1 or None in rows:
        raise ValueError(
            f"masks_a and masks_b need the same number of rows P (one per pair) in dimension 0; got "
            f"shapes {[tuple(m.shape) for m in masks_a]} and {[tuple(m.shape) for m in masks_b]}."
        )
    return rows.pop()


def relevant_parts(targets: Tuple[Tensor, ...], masks, relevant, what: str = "inputs") -> Tuple[Tensor, ...]:
    """The relevant part of each decomposed tensor: ``mask * x``, or given directly."""
    if relevant is None:
        masks = check_masks(as_tensors(masks, "masks"), targets, what)
        parts = tuple(m * x for m, x in zip(masks, targets))
    else:
        parts = as_tensors(relevant, "relevant")
        if len(parts) != len(targets):
            raise ValueError(f"got {len(parts)} relevant parts for {len(targets)} {what}; give one per input.")
        for i, (r, x) in enumerate(zip(parts, targets)):
            if r.ndim != x.ndim + 1 or r.shape[1:] != x.shape:
                raise ValueError(f"relevant part {i} has shape {tuple(r.shape)}; expected (G, *{tuple(x.shape)}).")
            if r.is_complex() or not r.is_floating_point():
                raise TypeError(f"relevant part {i} has dtype {r.dtype}; relevant parts are real floating-point tensors.")
    context = current_context()
    if context.collects:
        context.groups = parts[0].shape[0]
    return parts


def output_scores(rel: Tensor, full: Tensor, target: TargetType) -> Tensor:
    """Selects the target from ``rel`` of shape ``(G, *out)`` (any of Captum's target forms)
    and flattens what it selects: shape ``(G, n)``, one column per element of the selected
    output, as Captum's FeatureAblation gives one row of attributions per output element.
    An output of one number per example gives ``n = B``; a scalar or one row for the whole
    batch (a loss, a metric), or several outputs per example with ``target=None``, give
    one column for each of their elements."""
    groups = rel.shape[0]
    if groups == 0:  # no features at all: no rows, as many columns as the selection has
        return output_scores(rel.new_zeros(1, *rel.shape[1:]), full, target)[:0]
    if target is None:
        return rel.reshape(groups, -1)
    target = check_target(target, full)
    selected = _select_targets(rel.flatten(0, 1), _expand_target(target, groups, ExpansionTypes.repeat))
    return selected.reshape(groups, -1)


def target_scores(rel: Tensor, full: Tensor, target: TargetType, predicted: bool = False) -> Tensor:
    """Selects the target from ``rel`` of shape ``(G, B, *out)``: one score per group and
    example, shape ``(G, B)``, with any of Captum's target forms (and ``"predicted"`` where
    ``predicted``, see :func:`check_target`)."""
    if full.ndim == 0:
        raise ValueError("the model's output is a scalar (shape ()); CD scores need a batch-first output (B, ...).")
    if predicted and isinstance(target, str):
        target = check_target(target, full, predicted)
    scores = output_scores(rel, full, target)
    if scores.shape[1] != full.shape[0]:
        raise ValueError(
            f"the selected output has {scores.shape[1] // full.shape[0]} numbers per example (output "
            f"shape {tuple(full.shape)}); choose one number per example with target (an int or a "
            "tuple of output indices)."
        )
    return scores


def check_target(target: TargetType, full: Tensor, predicted: bool = False) -> TargetType:
    """Validates ``target`` against the output; returns it with negative indices counted
    from the end (as an int target is) in every form. With ``predicted`` (AWD's
    classifiers), ``"predicted"`` is a target too: each example's largest output ``(B, C)``."""
    if target is None:
        return None
    if full.ndim < 2:
        raise ValueError(f"a target selects an output column, but the output has shape {tuple(full.shape)}.")
    if isinstance(target, str):
        return _predicted(target, full) if predicted else _not_an_index(target)
    if isinstance(target, Tensor):
        if target.is_floating_point() or target.is_complex() or target.dtype == torch.bool:
            raise TypeError(f"a target tensor must hold integer output indices; got {target.dtype}.")
        if target.numel() > 1 and (target.ndim != 1 or target.numel() != full.shape[0]):
            raise ValueError(f"a target tensor needs one entry per example ({full.shape[0]}); got shape {tuple(target.shape)}.")
        values = target.flatten().tolist()
    elif isinstance(target, list):
        if len(target) != full.shape[0]:
            raise ValueError(f"a target list needs one entry per example ({full.shape[0]}); got {len(target)}.")
        values = target
    else:
        values = [target]
    for value in values:
        index = value if isinstance(value, tuple) else (value,)
        if not all(isinstance(i, numbers.Integral) and not isinstance(i, bool) for i in index):
            raise TypeError(f"target {value!r} is not an output index; targets are ints or tuples of ints.")
        if len(index) > full.ndim - 1:
            raise ValueError(f"target {value} has more indices than the output's dimensions {tuple(full.shape[1:])}.")
        for i, size in zip(index, full.shape[1:]):
            if not -size <= i < size:
                raise ValueError(f"target {value} is out of range for a model output of shape {tuple(full.shape)}.")
    if isinstance(target, Tensor) and min(values, default=0) < 0:
        return torch.where(target < 0, target + full.shape[1], target)
    if isinstance(target, list):
        wrap = lambda v: tuple(int(i) % n for i, n in zip(v, full.shape[1:])) if isinstance(v, tuple) else int(v) % full.shape[1]  # noqa: E731
        return [wrap(v) for v in target]
    return target


def _predicted(target: str, full: Tensor) -> Tensor:
    if target != "predicted":
        raise ValueError(f"target must be None, an int, a tuple, a list or tensor of indices, or 'predicted'; got {target!r}.")
    if full.ndim != 2:
        raise ValueError(f"target 'predicted' needs an output of shape (B, classes); got {tuple(full.shape)}.")
    return full.detach().argmax(1)


def _not_an_index(target: str):
    raise TypeError(f"target {target!r} is not an output index; targets are ints or tuples of ints.")


# The two group builders below return (number of groups, build(start, stop) -> the masks
# of groups [start, stop), assign(scores (G, n)) -> attributions shaped like the inputs
# with n rows, one per element of the selected output): masks are built a chunk at a time
# so memory stays bounded.


def one_hot_groups(shapes: List[torch.Size], batch: int, device: torch.device):
    """Every scalar feature its own group, numbered across the inputs in order. An empty
    input (no examples, as a sparse list may be) has no features, as in Captum."""
    sizes = [int(torch.Size(s[1:]).numel()) if s[0] else 0 for s in shapes]
    offsets = [sum(sizes[:i]) for i in range(len(sizes))]

    def build(start: int, stop: int) -> Tuple[Tensor, ...]:
        masks = []
        for shape, size, offset in zip(shapes, sizes, offsets):
            rows = torch.arange(start, stop, device=device) - offset
            m = torch.zeros(stop - start, size, device=device)
            inside = (rows >= 0) & (rows < size)
            m[inside.nonzero().squeeze(1), rows[inside]] = 1.0
            masks.append(m.view(stop - start, *shape[1:]) if size else m.new_zeros(stop - start, *shape[1:]))
        return tuple(masks)

    def assign(scores: Tensor) -> Tuple[Tensor, ...]:  # (G, n) -> per input (n, *features)
        n = scores.shape[1]
        per_input = scores.t().split(sizes, dim=1)
        return tuple(s.reshape(n, *shape[1:]) if size else s.new_zeros(n, *shape[1:]) for s, size, shape in zip(per_input, sizes, shapes))

    return sum(sizes), build, assign


def groups_from_ids(ids: Tuple[Tensor, ...], shapes: List[torch.Size], batch: int, across_inputs: bool = True):
    """Groups from Captum-style feature masks of integer ids: an id names one group across
    all the inputs, or, without ``across_inputs``, a group of its input only."""
    if len(ids) != len(shapes):
        raise ValueError(f"got {len(ids)} feature masks for {len(shapes)} inputs.")
    ids = tuple(broadcast_ids(m, shape, i, batch) for i, (m, shape) in enumerate(zip(ids, shapes)))
    if not across_inputs:  # (id, input) -> one integer, distinct for every pair
        ids = tuple(m.long() * len(ids) + i for i, m in enumerate(ids))
    values = torch.unique(torch.cat([m.flatten() for m in ids]))
    index = [torch.searchsorted(values, m) for m in ids]  # group number of every feature

    def build(start: int, stop: int) -> Tuple[Tensor, ...]:
        groups = torch.arange(start, stop, device=values.device)
        masks = []
        for idx in index:
            one_hot = idx.unsqueeze(0) == groups.view(-1, *([1] * idx.ndim))  # (g, 1 or B, ...)
            masks.append(one_hot.squeeze(1) if idx.shape[0] == 1 else one_hot)
        return tuple(masks)

    def assign(scores: Tensor) -> Tuple[Tensor, ...]:  # (G, n) -> per input (n, *features)
        n, out = scores.shape[1], []
        for i, (idx, shape) in enumerate(zip(index, shapes)):
            if idx.shape[0] not in (1, n):
                raise ValueError(
                    f"feature_mask {i} has a row per example ({idx.shape[0]}), but the selected output "
                    f"has {n} elements, not one per example (a scalar or a row for the whole batch): "
                    "its groups span the batch, so give a mask with first dimension 1."
                )
            full_idx = idx.to(scores.device).expand(n, *shape[1:]).reshape(n, -1)
            out.append(scores.t().gather(1, full_idx).view(n, *shape[1:]))
        return tuple(out)

    return len(values), build, assign


def broadcast_ids(m: Tensor, shape: torch.Size, i: int, batch: int, what: str = "the input's") -> Tensor:
    """A feature mask with as many dimensions as the input. As in torch and Captum, missing
    dimensions are leading ones (``(8, 8)`` over ``(B, 1, 8, 8)``); where that does not fit,
    a mask that starts with the batch dimension gets trailing ones instead (token ids
    ``(1, T)`` over an embedding ``(B, T, E)``). ``what`` names the tensor of shape
    ``shape`` in the error (TRIM's masks are over the coefficients)."""
    if not isinstance(m, Tensor):
        raise TypeError(f"feature_mask {i} is a {type(m).__name__}; feature masks are tensors of integer group ids.")
    if m.is_floating_point() or m.is_complex() or m.dtype == torch.bool:
        raise TypeError(f"feature_mask {i} must hold integer group ids, not {m.dtype}.")
    fits = lambda t: all(a in (1, b) for a, b in zip(t.shape, shape))  # noqa: E731
    if m.ndim <= len(shape):
        for candidate in (m.reshape(*([1] * (len(shape) - m.ndim)), *m.shape), m.reshape(*m.shape, *([1] * (len(shape) - m.ndim)))):
            if fits(candidate):
                return candidate
    raise ValueError(
        f"feature_mask {i} has shape {tuple(m.shape)}, which does not broadcast to {what} shape "
        f"{tuple(shape)}: aligned from the last dimension (or, for a mask that starts with the batch "
        f"dimension, from the first), each dimension equal or 1, the first 1 or {batch}."
    )


def passes(start: int, n_groups: int, per_pass: int, batch: int, split: bool) -> List[Tuple[int, int, Optional[slice]]]:
    """How ``attribute`` cuts the groups ``[start, n_groups)`` into batched passes: (first
    group, stop, examples (None: the whole batch)). Where they need several passes and
    ``split``, whole examples go through a pass with all the groups they fit, the
    ``per_pass * batch`` rows of a pass filled either way, so an example's ordinary pass
    is not repeated for every chunk of groups."""
    rows, remaining = per_pass * batch, n_groups - start
    if not split or batch <= 1 or per_pass >= remaining:
        return [(g, min(g + per_pass, n_groups), None) for g in range(start, n_groups, per_pass)]
    groups_per_pass = min(remaining, rows)
    examples = max(1, rows // groups_per_pass)
    return [
        (g, min(g + groups_per_pass, n_groups), slice(b, min(b + examples, batch)))
        for b in range(0, batch, examples)
        for g in range(start, n_groups, groups_per_pass)
    ]


def same_rows(part: Tensor, whole: Tensor) -> bool:
    """Whether ``part``, the output of some examples run alone, is ``whole``'s rows for them
    up to rounding: each row of the output then depends on its example alone."""
    if part.shape != whole.shape:
        return False
    if not part.is_floating_point():
        return bool(torch.equal(part, whole))
    tolerance = torch.finfo(part.dtype).eps ** 0.5
    scale = float(whole.abs().max()) if whole.numel() else 0.0
    return bool(torch.allclose(part, whole, rtol=tolerance, atol=tolerance * scale))


def target_for_examples(target: TargetType, examples: Optional[slice], batch: int) -> TargetType:
    """The target of some examples: per-example targets (a list, a tensor of several) sliced,
    after checking they have one entry per example of the whole batch."""
    if examples is None or target is None:
        return target
    if isinstance(target, list) or (isinstance(target, Tensor) and target.numel() > 1):
        if len(target) != batch:
            raise ValueError(f"a target {type(target).__name__} needs one entry per example ({batch}); got {len(target)}.")
        return target[examples]
    return target


def masks_for_examples(masks: Tuple[Tensor, ...], shapes: List[torch.Size], examples: Optional[slice]) -> Tuple[Tensor, ...]:
    """Group masks for some examples: per-example masks ``(g, B, *features)`` sliced,
    masks shared by the batch ``(g, *features)`` as they are."""
    if examples is None:
        return masks
    return tuple(m[:, examples] if m.ndim == len(shape) + 1 else m for m, shape in zip(masks, shapes))


def positive_int(value: Optional[int], name: str) -> Optional[int]:
    if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
        raise ValueError(f"{name} must be a positive integer or None; got {value!r}.")
    return value


def largest_over_groups(deviation: Tensor) -> Tensor:
    """Per example, the signed value of largest magnitude over the groups: (G, B) -> (B,)."""
    if deviation.shape[0] == 0:  # no groups: nothing deviates
        return deviation.new_zeros(deviation.shape[1:])
    return deviation.gather(0, deviation.abs().argmax(0, keepdim=True))[0]


def check_masks(masks: Tuple[Tensor, ...], targets: Tuple[Tensor, ...], what: str) -> Tuple[Tensor, ...]:
    """Validates masks against what they decompose and shapes them ``(G, B or 1, *features)``."""
    if len(masks) != len(targets):
        raise ValueError(f"got {len(masks)} masks for {len(targets)} {what}; give one mask per input.")
    for i, m in enumerate(masks):
        if not isinstance(m, Tensor):
            raise TypeError(f"mask {i} is a {type(m).__name__}; masks must be tensors.")
    groups = {m.shape[0] if m.ndim else None for m in masks}
    if len(groups) != 1 or None in groups:
        raise ValueError(f"every mask needs the same number of groups G in dimension 0; got shapes {[tuple(m.shape) for m in masks]}.")
    shaped = []
    for i, (m, x) in enumerate(zip(masks, targets)):
        if not isinstance(m, Tensor):
            raise TypeError(f"mask {i} is a {type(m).__name__}; masks must be tensors.")
        if m.is_complex():
            raise TypeError(f"mask {i} is complex ({m.dtype}); masks are real, 1 on a group's features and 0 elsewhere.")
        if m.device != x.device:
            raise ValueError(f"mask {i} is on {m.device} but its input is on {x.device}; put them on one device.")
        if m.ndim < x.ndim:  # trailing feature dimensions left out broadcast: (G, T) over (B, T, E)
            m = m.reshape(*m.shape, *([1] * (x.ndim - m.ndim)))
        if m.ndim == x.ndim:  # (G, *features): shared by the batch
            m = m.unsqueeze(1)
        features_ok = m.ndim == x.ndim + 1 and all(a in (1, b) for a, b in zip(m.shape[1:], x.shape))
        if not features_ok:
            raise ValueError(
                f"mask {i} has shape {tuple(masks[i].shape)}, which does not fit {what} of shape "
                f"{tuple(x.shape)}: expected (G, *{tuple(x.shape[1:])}) for groups shared by the "
                f"batch or (G, {x.shape[0]}, *{tuple(x.shape[1:])}) per example (dimensions of "
                "size 1 broadcast)."
            )
        m = m.to(x.dtype)
        if not torch.isfinite(m).all():
            raise ValueError(f"mask {i} contains NaN or infinite values.")
        if ((m < 0) | (m > 1)).any():
            raise ValueError(
                f"mask {i} has values outside [0, 1] (from {m.min().item():g} to {m.max().item():g}); "
                "1 marks a feature of the group, 0 one outside it, a value in between scales its share."
            )
        shaped.append(m)
    return tuple(shaped)


def as_tensors(value: Any, name: str) -> Tuple[Tensor, ...]:
    """A tensor or a tuple of tensors as a tuple; anything else is an error naming ``name``."""
    if isinstance(value, Tensor):
        return (value,)
    if isinstance(value, tuple) and value:
        for i, v in enumerate(value):
            if not isinstance(v, Tensor):
                raise TypeError(f"{name}[{i}] is a {type(v).__name__}; {name} must be tensors.")
        return value
    raise TypeError(f"{name} must be a tensor or a non-empty tuple of tensors; got {type(value).__name__}.")
