"""From a torch function call on a Decomposition to the rule that answers it. Installed as
the Decomposition's dispatcher when this module loads (the value does not import it)."""

from typing import Any, Callable, Dict, Optional

import torch

from captum_cd.attr.decomposition import (
    current_context,
    Decomposition,
    DecompositionContext,
    decomposition_context,
    mark_view,
    OUTSIDE,
    set_dispatcher,
)
from captum_cd.attr.engines import check_history, recomputed_call
from captum_cd.attr.errors import (
    EAGER_FIX,
    inside_compiler,
    DecompositionError,
    UnsupportedOperationError,
    call_site,
    function_name,
)
from captum_cd.attr.finite import check_result
from captum_cd.attr.rules.registry import RULES, Rule, out_of_place


T = torch.Tensor
# Functions whose result may share memory with their input, as torch's views do: an
# in-place op on the result must write into the input. Only their results are checked.
VIEW_FUNCS = frozenset([
    T.__getitem__, T.view, T.view_as, T.reshape, torch.reshape, T.reshape_as, T.flatten, torch.flatten,
    T.unflatten, torch.unflatten, T.transpose, torch.transpose, T.swapaxes, torch.swapaxes, T.movedim,
    torch.movedim, T.permute, torch.permute, T.t, torch.t, T.T.__get__, T.mT.__get__, T.narrow, torch.narrow,
    T.select, torch.select, T.unsqueeze, torch.unsqueeze, T.squeeze, torch.squeeze, T.expand, T.expand_as,
    T.diagonal, torch.diagonal, T.unbind, torch.unbind, T.split, torch.split, T.chunk, torch.chunk,
    T.tensor_split, torch.tensor_split, T.contiguous, T.detach, torch.detach, T.to, T.type_as, T.float,
    T.double, T.half, T.bfloat16, T.cpu, T.cuda, T.data.__get__,
])  # fmt: skip


def find_rule(func: Callable, context: DecompositionContext) -> Optional[Rule]:
    """Module-scoped rules first (innermost module wins), then the model's, then the global."""
    for table in reversed(context.scoped_rules):
        if func in table:
            return table[func]
    return context.rules.get(func) or RULES.get(func)


def _is_property_getter(func: Callable) -> bool:
    return getattr(func, "__name__", "") == "__get__" and hasattr(func, "__self__")


def dispatch(func: Callable, args: tuple, kwargs: Dict[str, Any]) -> Any:
    context = current_context()
    if context is OUTSIDE and torch._C._current_graph_task_id() != -1:
        owner = recomputed_call(func, args, kwargs)
        if owner is not None:
            with decomposition_context(owner):
                return dispatch(func, args, kwargs)
    if kwargs.get("out") is not None:  # the result would bypass the decomposition
        raise DecompositionError(
            f"{function_name(func)} with out= writes its result into a given tensor, which CD cannot "
            f"follow (called in {call_site(context.model)}); write y = f(x) instead."
        )
    base = out_of_place(func, kwargs)
    rule = find_rule(base or func, context)
    if rule is None:
        if _is_property_getter(func):  # metadata (shape, dtype, ...): read off the full
            with torch._C.DisableTorchFunctionSubclass():
                return func(args[0].full)
        raise UnsupportedOperationError(_unsupported_message(func, context))
    with torch._C.DisableTorchFunctionSubclass():
        if torch.is_grad_enabled():
            check_history(args, kwargs, context)
        try:
            if base is None:
                result = rule(func, args, kwargs)
                if func in VIEW_FUNCS:
                    mark_view(result, rule, func, args, kwargs)
                if context.check_each_op:
                    check_result(func, result, context)
                return result
            result = rule(base, args, {**kwargs, "inplace": False} if "inplace" in kwargs else kwargs)
        except DecompositionError as error:
            if getattr(error, "located", False):
                raise
            located = type(error)(f"{error}\n  (called in {call_site(context.model)})")
            located.located = True
            raise located from None
    target = args[0]
    if not isinstance(target, Decomposition) or not isinstance(result, Decomposition):
        raise DecompositionError(
            f"{function_name(func)} writes a decomposed value in place into a tensor that "
            f"is not decomposed (called in {call_site(context.model)}); write it out of "
            "place (y = x + d instead of x += d)."
        )
    target._assign(result)
    if context.check_each_op:
        check_result(func, target, context)
    return target


def _unsupported_message(func: Callable, context: DecompositionContext) -> str:
    name = function_name(func)
    if inside_compiler():
        return f"a function compiled with torch.compile received decomposed values (in {call_site(context.model)}); " + EAGER_FIX + "call the function it was compiled from."
    return (
        f"contextual decomposition has no rule for {name}, called in "
        f"{call_site(context.model)}. Operations are never skipped silently: register a "
        f"rule with captum_cd.register_rule({name}, rule) for every model, or "
        f"ContextualDecomposition(model, rules={{{name}: rule}}) for this one; "
        "captum_cd.attr.rules has the families to reuse (linear, relu_form, "
        "shapley_activation, ...)."
    )


set_dispatcher(dispatch)
