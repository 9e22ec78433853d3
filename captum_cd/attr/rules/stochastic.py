r"""Dropout: the identity in eval mode.

In training mode dropout is random, so CD of "the model" is not defined: it is refused,
unless the caller asked for training-mode decomposition (the CDEP regulariser), where one
random keep-mask multiplies both parts, exactly as the ordinary forward applies it.
"""

import torch
import torch.nn.functional as F

from captum_cd.attr.decomposition import Decomposition, current_context
from captum_cd.attr.errors import DecompositionError, function_name
from captum_cd.attr.rules._util import argument
from captum_cd.attr.rules.registry import register_rule

DROPOUT = [F.dropout, F.dropout1d, F.dropout2d, F.dropout3d, F.alpha_dropout, F.feature_alpha_dropout]


def dropout(func, args, kwargs):
    x = args[0] if args else kwargs["input"]
    p, training = argument(args, kwargs, 1, "p", 0.5), argument(args, kwargs, 2, "training", True)
    if not training or p == 0:
        return Decomposition(x.full, *x.lazy_parts())
    if current_context().training != "batch":
        raise DecompositionError(
            f"{function_name(func)} in training mode zeroes random elements, so the "
            "decomposition would be of a random model. Call model.eval() before "
            "attributing (CD never changes the mode behind your back)."
        )
    if func in (F.alpha_dropout, F.feature_alpha_dropout):
        raise DecompositionError(f"{function_name(func)} in training mode is affine and random; it has no rule.")
    keep = func(torch.ones_like(x.full), p, True)  # 0 or 1/(1-p), the mask the forward uses
    return Decomposition(x.full * keep, x.rel * keep)


register_rule(DROPOUT, dropout)
