r"""A causal model's prefix before a group's first token is not decomposed.

In a causal model the activations at a position depend only on the tokens up to it, so a
group of prompt tokens has no relevant part before its first token: there, every
activation is the ordinary one, and only the positions from the group's first token on
need the G relevant parts. A chunk of groups whose first tokens are at ``s`` or later is
decomposed over the positions from ``s`` on, with the ordinary keys and values of the
positions before ``s`` given to the model as its key-value cache (constants: irrelevant,
as their relevant parts are 0 in a pass over the whole sequence).

- :func:`plan_chunks`: which groups go through one pass together and from which
  position, so that the rows decomposed (groups times positions, plus a pass's own
  cost) are fewest;
- :func:`prefix_cache`: the ordinary keys and values of a prefix, once, from which
  :func:`cache_before` gives each chunk the positions before its start without copying
  and without growing (the pass's decomposed keys and values are not kept in it).

Only Hugging Face models whose cache is a ``DynamicCache`` of layers that keep every
position (plain ones, or sliding windows longer than the sequence) are cropped; any other
model is decomposed over the whole sequence.
"""

import copy
import inspect
from typing import Any, List, Optional, Sequence, Tuple

import torch
from torch import nn, Tensor

# A pass's cost beyond its groups' rows (its ordinary pass and its fixed overhead), in
# units of one group's row: cheap passes favour more, smaller chunks.
PASS_OVERHEAD_ROWS = 2


def plan_chunks(starts: Sequence[int], length: int, largest: int) -> List[Tuple[List[int], int]]:
    """Chunks ``(groups, start)`` of the groups with first tokens ``starts`` (any order),
    each of at most ``largest`` groups and decomposed from ``start``, minimising the rows
    ``sum (groups + PASS_OVERHEAD_ROWS) * (length - start)`` (dynamic programming over
    the groups sorted by first token)."""
    order = sorted(range(len(starts)), key=lambda g: starts[g])
    first = [starts[g] for g in order]
    n = len(order)
    cost, cut = [0.0] + [float("inf")] * n, [0] * (n + 1)
    for j in range(1, n + 1):
        for i in range(max(0, j - largest), j):
            here = cost[i] + (j - i + PASS_OVERHEAD_ROWS) * (length - first[i])
            if here < cost[j]:
                cost[j], cut[j] = here, i
    chunks, j = [], n
    while j > 0:
        i = cut[j]
        chunks.append(([order[k] for k in range(i, j)], first[i]))
        j = i
    return chunks[::-1]


def cache_argument(model: nn.Module) -> Optional[str]:
    """The name under which ``model.forward`` takes a key-value cache, or None."""
    parameters = inspect.signature(model.forward).parameters
    return next((name for name in ("cache", "past_key_values") if name in parameters), None)


def prefix_cache(model: nn.Module, prefix: Tensor, length: int) -> Optional[Any]:
    """The model's key-value cache after an ordinary pass over ``prefix`` ``(1, s)``, or
    None where it is not a list of dynamic layers that keep every position of a sequence
    of ``length`` (a sliding window shorter than that, other kinds of state, older
    versions of transformers)."""
    with torch.no_grad():
        out = model(input_ids=prefix, attention_mask=torch.ones_like(prefix), use_cache=True)
    cache = getattr(out, "cache", None) or getattr(out, "past_key_values", None)
    layers = getattr(cache, "layers", None)
    if not layers or not all(_keeps_everything(layer, prefix.shape[1], length) for layer in layers):
        return None
    return cache


def _keeps_everything(layer: Any, prefix: int, length: int) -> bool:
    kind = type(layer).__name__
    window = getattr(layer, "sliding_window", None) if kind == "DynamicSlidingWindowLayer" else float("inf")
    keys = getattr(layer, "keys", None)
    return kind in ("DynamicLayer", "DynamicSlidingWindowLayer") and window > length and isinstance(keys, Tensor) and keys.shape[-2] == prefix


def cache_before(cache: Any, start: int) -> Any:
    """A view of ``cache`` holding the positions before ``start`` that returns the keys
    and values of a pass (prefix and new ones) without storing the new ones."""
    view = copy.copy(cache)
    view.layers = []
    for layer in cache.layers:
        cropped = copy.copy(layer)
        cropped.keys, cropped.values = layer.keys[..., :start, :], layer.values[..., :start, :]
        if hasattr(cropped, "cumulative_length"):  # a sliding window's count of the positions seen
            cropped.cumulative_length = start
        cropped.update = _ReadOnlyUpdate(cropped)
        view.layers.append(cropped)
    return view


class _ReadOnlyUpdate:
    """A cache layer's ``update`` that returns the prefix and the new keys and values
    together, keeping the layer as it was."""

    def __init__(self, layer: Any) -> None:
        self.layer = layer

    def __call__(self, key_states: Tensor, value_states: Tensor, *args: Any, **kwargs: Any) -> Tuple[Tensor, Tensor]:
        return torch.cat([self.layer.keys, key_states], dim=-2), torch.cat([self.layer.values, value_states], dim=-2)
