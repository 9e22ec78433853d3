"""The last line of defence: parts that are not finite where the model's output is.

Every rule is meant to stay finite wherever the model is (the guarded Shapley form, the
proportional form, lineages; docs/methods.md). Should one not, the decomposition is an
error naming the first function where it happened, never a returned value. The check at
the output costs one pass over the output's parts; only when it fails is the model
decomposed again with each function's result checked, to find where.
"""

from typing import Any, Callable, Optional

import torch

from captum_cd.attr.decomposition import Decomposition, DecompositionContext, lazy_elementwise
from captum_cd.attr.errors import call_site, DecompositionError, function_name

_WHAT = "contextual decomposition gave relevant parts that are not finite where the model's own {} is finite"
_FIX = (
    "Nothing is returned rather than a wrong number. The rule of that function evaluated it "
    "outside its domain or where it overflows for these parts: register a rule that stays "
    "finite (captum_cd.register_rule; docs/methods.md describes the guarded Shapley form), "
    "or report the model."
)


def check_output(out: Decomposition, locate: Optional[Callable[[], Any]]) -> None:
    """Raises if ``out`` has non-finite parts where its activation is finite; ``locate``
    decomposes again with every function's result checked (None: it would change state,
    as a training-mode batch norm's statistics)."""
    with torch._C.DisableTorchFunctionSubclass():
        if not _non_finite_where_finite(out.rel, out.full):
            return
    if locate is not None:
        with torch.no_grad(), lazy_elementwise(False):
            locate()  # raises at the first function
    raise DecompositionError(f"{_WHAT.format('output')}. {_FIX}")


def check_result(func: Callable, result: Any, context: DecompositionContext) -> None:
    """In the locating pass: raises at the first function whose result has non-finite
    parts where its activation is finite."""
    values = result if isinstance(result, (tuple, list)) else (result,)
    for value in values:
        if not isinstance(value, Decomposition):
            continue
        rel, pending = value.lazy_parts()
        if not pending and _non_finite_where_finite(rel, value.full):  # (pending: a statistic's lazy parts)
            error = DecompositionError(
                f"{_WHAT.format('activation')}, first at {function_name(func)}, called in "
                f"{call_site(context.model)}. {_FIX}"
            )
            error.located = True  # (the dispatcher adds no second call site)
            raise error


def _non_finite_where_finite(rel: torch.Tensor, full: torch.Tensor) -> bool:
    return bool((~torch.isfinite(rel) & torch.isfinite(full)).any())
