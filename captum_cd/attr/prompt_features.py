r"""Captum's interpretable text inputs as what CD decomposes: the prompt's token ids and one
mask over its tokens per interpretable feature.

- :class:`~captum.attr.TextTemplateInput`: a feature is a template value (or the values
  that share a ``mask`` id). Each value is located where the template puts it (every
  place, if the template uses it twice), never by searching the text for its string, and
  a token belongs to the value if any of its characters does (the fast tokenizer's
  offsets). Text of the template itself belongs to no feature.
- :class:`~captum.attr.TextTokenInput`: a feature is a token, ``skip_tokens`` left out.
"""

from typing import List, Sequence, Tuple

import torch
import torch.nn.functional as F
from captum.attr import TextTemplateInput, TextTokenInput
from torch import Tensor

from captum_cd.attr.masks import character_span_masks

SUPPORTED_INPUTS = (TextTemplateInput, TextTokenInput)
# Private-use characters around each value while locating it: they never occur in text.
_OPEN, _CLOSE, _INDEX = "\ue000", "\ue001", 0xE100


def prompt_features(inp, tokenizer) -> Tuple[Tensor, Tensor]:
    """The prompt's token ids ``(1, P)`` and one boolean mask per interpretable feature,
    ``(F, P)``, for a TextTemplateInput or a TextTokenInput."""
    if isinstance(inp, TextTokenInput):
        ids = inp.inp_tensor
        positions = torch.arange(ids.shape[1]) if inp.itp_mask is None else inp.itp_mask[0].nonzero()[:, 0]
        return ids, torch.arange(ids.shape[1]) == positions[:, None]
    if isinstance(inp, TextTemplateInput):
        text, value_ranges = template_value_ranges(inp)
        ids, offsets = _encode_with_offsets(text, tokenizer)
        per_value = character_span_masks(offsets, value_ranges, dtype=torch.bool)
        feature_of_value = torch.tensor(inp.formatted_mask if inp.mask is not None else range(len(inp.values)))
        values_of_feature = F.one_hot(feature_of_value, inp.n_itp_features).t().float()
        return ids, (values_of_feature @ per_value.float()) > 0
    raise TypeError(
        f"inp is a {type(inp).__name__}; LLMContextualDecomposition takes captum.attr.TextTemplateInput "
        "(features: the template's values) or captum.attr.TextTokenInput (features: the tokens)."
    )


def template_value_ranges(inp: TextTemplateInput) -> Tuple[str, List[List[Tuple[int, int]]]]:
    """The prompt text of a TextTemplateInput and, for each value, the character ranges
    ``(start, stop)`` where the template put it. The template is filled once with each
    value wrapped in markers, which are then read off and removed; the result must be the
    prompt itself (a template that changes its values, e.g. ``{!r}`` or a width, is refused)."""
    if _OPEN in inp.to_model_input() or _CLOSE in inp.to_model_input():
        raise ValueError(
            "the prompt contains the private-use characters U+E000 or U+E001, which locate the "
            "template's values among the tokens; remove them from the template and its values, "
            "or use a TextTokenInput."
        )
    marked = [f"{_OPEN}{chr(_INDEX + i)}{value}{_CLOSE}" for i, value in enumerate(inp.values)]
    filled = inp.format_fn(**dict(zip(inp.dict_keys, marked))) if inp.dict_keys else inp.format_fn(*marked)
    text, ranges, open_at = [], [[] for _ in inp.values], []
    chars = iter(filled)
    length = 0
    for c in chars:
        if c == _OPEN:
            open_at.append((ord(next(chars)) - _INDEX, length))
        elif c == _CLOSE:
            value, start = open_at.pop()
            ranges[value].append((start, length))
        else:
            text.append(c)
            length += 1
    text = "".join(text)
    if open_at or text != inp.to_model_input():
        raise ValueError(
            "the template changes the values it is given (a conversion like {!r}, a width or a "
            "function that edits them), so the values cannot be found in the prompt; use a "
            "template that inserts them as they are, or a TextTokenInput."
        )
    return text, ranges


def _encode_with_offsets(text: str, tokenizer) -> Tuple[Tensor, Sequence[Tuple[int, int]]]:
    """Token ids as Captum's LLMAttribution computes them (special tokens added), and the
    character range of each token."""
    try:
        enc = tokenizer(text, return_offsets_mapping=True)
    except (NotImplementedError, TypeError, ValueError) as error:
        raise TypeError(
            f"the tokenizer ({type(tokenizer).__name__}) gives no character offsets, which locate "
            "the template's values among the tokens: use a fast tokenizer "
            "(AutoTokenizer.from_pretrained(..., use_fast=True)) or a TextTokenInput."
        ) from error
    return torch.tensor([enc["input_ids"]]), enc["offset_mapping"]
