"""Building feature groups: token spans for text, blocks for images."""

import re
from typing import Iterable, Optional, Sequence, Tuple, Union

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


def text_span_masks(
    offsets: Union[Tensor, Sequence[Tuple[int, int]]],
    spans: Iterable[Union[str, Sequence[int]]],
    text: Optional[str] = None,
    dtype: torch.dtype = torch.float32,
    device: Optional[torch.device] = None,
) -> Tensor:
    r"""One mask over the tokens of a text per span of its characters, from a fast
    tokenizer's offsets: a token belongs to a span if any of its characters does.

    Args:
        offsets (Tensor or list of (start, end)): the character range of each token, as a
                    fast tokenizer returns it (``tokenizer(text,
                    return_offsets_mapping=True)["offset_mapping"]``, shape ``(T, 2)`` or
                    ``(1, T, 2)``, or ``tokenizers``' ``Encoding.offsets``). Special tokens
                    have empty ranges ``(0, 0)`` and belong to no span.
        spans (iterable of (start, stop) or str): character positions ``start <= c <
                    stop`` of each group, or a word or phrase of ``text``, matched as whole
                    words (``"a"`` is not found inside ``"Dave"``); a phrase that occurs more
                    than once is refused (give its ``(start, stop)`` instead).
        text (str, optional): the text, needed for spans given as strings.

    Returns:
        *Tensor* of shape ``(G, T)``, like :func:`token_masks`.

    Examples::

        >>> enc = tokenizer("not a good movie", return_offsets_mapping=True)
        >>> masks = text_span_masks(enc["offset_mapping"], ["not a good", "movie"], text="not a good movie")
    """
    ranges = [_character_range(span, text) for span in spans]
    masks = character_span_masks(offsets, [[r] for r in ranges], dtype, device)
    for (start, stop), mask in zip(ranges, masks):
        if not mask.any():
            raise ValueError(f"span {start}:{stop} of the text holds no token; check the spans and offsets.")
    return masks


def character_span_masks(
    offsets: Union[Tensor, Sequence[Tuple[int, int]]],
    spans: Sequence[Sequence[Tuple[int, int]]],
    dtype: torch.dtype = torch.float32,
    device: Optional[torch.device] = None,
) -> Tensor:
    """``(G, T)``: the tokens any of whose characters lie in one of group g's character
    ranges ``spans[g]`` (a group may hold no token: its row is 0)."""
    offsets = torch.as_tensor(offsets, dtype=torch.long, device=device)
    if offsets.ndim == 3 and offsets.shape[0] == 1:
        offsets = offsets[0]
    if offsets.ndim != 2 or offsets.shape[1] != 2:
        raise ValueError(
            f"offsets has shape {tuple(offsets.shape)}; expected (T, 2) character ranges of one text's tokens."
        )
    starts, stops = offsets[:, 0], offsets[:, 1]
    masks = torch.zeros(len(spans), offsets.shape[0], dtype=torch.bool, device=device)
    for g, ranges in enumerate(spans):
        for start, stop in ranges:
            masks[g] |= (starts < stop) & (stops > start) & (stops > starts)
    return masks.to(dtype)


def _character_range(span: Union[str, Sequence[int]], text: Optional[str]) -> Tuple[int, int]:
    if isinstance(span, str):
        if text is None:
            raise ValueError(f"span {span!r} is a string: pass text= to find it in.")
        starts = _whole_word_matches(span, text)
        if not starts:
            raise ValueError(f"span {span!r} does not occur in the text as a whole word or phrase.")
        if len(starts) > 1:
            where = ", ".join(f"({s}, {s + len(span)})" for s in starts)
            raise ValueError(
                f"span {span!r} occurs {len(starts)} times in the text, at characters {where}; "
                "give the one you mean as (start, stop)."
            )
        return starts[0], starts[0] + len(span)
    start, stop = tuple(span)
    if not 0 <= start < stop:
        raise ValueError(f"span ({start}, {stop}) is empty or negative; spans are (start, stop) with start < stop.")
    return int(start), int(stop)


def _whole_word_matches(span: str, text: str) -> list:
    """Where ``span`` starts in ``text`` with no letter or digit glued to either end."""
    if not span:
        return []
    before = r"(?<!\w)" if re.match(r"\w", span[0]) else ""
    after = r"(?!\w)" if re.match(r"\w", span[-1]) else ""
    return [m.start() for m in re.finditer(before + re.escape(span) + after, text)]


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
