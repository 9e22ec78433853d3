"""Building feature groups: token spans for text, blocks for images."""

from typing import Iterable, Optional, Sequence

import torch
from torch import Tensor


def token_masks(
    spans: Iterable[Sequence[int]],
    length: int,
    dtype: torch.dtype = torch.float32,
    device: Optional[torch.device] = None,
) -> Tensor:
    r"""One mask per token span, for :meth:`ContextualDecomposition.decompose`.

    Args:
        spans (iterable of (start, stop)): token positions ``start <= t < stop`` of
                    each group (Python's slice convention: ``stop`` excluded).
        length (int): the sequence length T.

    Returns:
        *Tensor* of shape ``(G, T)``: for batch-first token models it broadcasts over
        the embedding dimension as it is; for sequence-first ones use
        ``masks[:, :, None, None]``.

    Examples::

        >>> token_masks([(0, 2), (3, 4)], 5)   # "not good" and one more word
        tensor([[1., 1., 0., 0., 0.],
                [0., 0., 0., 1., 0.]])
    """
    spans = [tuple(s) for s in spans]
    masks = torch.zeros(len(spans), length, dtype=dtype, device=device)
    for g, (start, stop) in enumerate(spans):
        if not 0 <= start < stop <= length:
            raise ValueError(f"span ({start}, {stop}) is empty or outside a sequence of length {length}.")
        masks[g, start:stop] = 1
    return masks


def grid_ids(height: int, width: int, block: int, device: Optional[torch.device] = None) -> Tensor:
    r"""A Captum feature mask that tiles an image into square blocks (the last row or
    column of blocks may be smaller), shape ``(1, 1, height, width)``, ids row by row.

    Examples::

        >>> grid_ids(4, 4, 2)[0, 0]
        tensor([[0, 0, 1, 1],
                [0, 0, 1, 1],
                [2, 2, 3, 3],
                [2, 2, 3, 3]])
    """
    rows = torch.arange(height, device=device) // block
    cols = torch.arange(width, device=device) // block
    per_row = -(-width // block)
    return (rows[:, None] * per_row + cols[None, :]).view(1, 1, height, width)


def ids_to_masks(ids: Tensor) -> Tensor:
    """Integer ids ``(1, *features)`` -> one float mask per id, ``(G, *features)``."""
    values = torch.unique(ids)
    return (ids == values.view(-1, *([1] * (ids.ndim - 1)))).to(torch.float32)
