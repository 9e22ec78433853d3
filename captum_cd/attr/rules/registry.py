"""The registry: one rule per torch function, as ``torch.masked`` maps functions to rules.

A rule is ``rule(func, args, kwargs)``: it receives the torch function that was called
with its arguments (some of them :class:`~captum_cd.attr.decomposition.Decomposition`)
and returns what the function returns, with Decompositions where the result carries
a decomposition. Rules run with ``__torch_function__`` disabled and use only the
``full``/``rel`` tensors of their arguments.

In-place variants (``Tensor.add_``, ``F.relu(x, inplace=True)``, ``x += y``) are
found from the out-of-place rule: the engine computes the result out of place and
rebinds the decomposed tensor, so rules never write into their inputs.
"""

from typing import Any, Callable, Dict, Iterable, Optional, Union

import torch
import torch.nn.functional as F

Rule = Callable[[Callable, tuple, Dict[str, Any]], Any]

RULES: Dict[Callable, Rule] = {}
# In-place variant -> out-of-place function whose rule answers it.
IN_PLACE: Dict[Callable, Callable] = {}

_NAMESPACES = (torch.Tensor, torch, F, torch._C._nn)
_DUNDER_IN_PLACE = {
    "__iadd__": "__add__",
    "__isub__": "__sub__",
    "__imul__": "__mul__",
    "__itruediv__": "__truediv__",
}


def register_rule(
    funcs: Union[Callable, Iterable[Callable]], rule: Optional[Rule] = None
) -> Any:
    r"""Registers ``rule`` for one torch function or several, for every model.

    Usable as a call or as a decorator::

        >>> register_rule(torch.nn.functional.mish, captum_cd.rules.shapley_activation)
        >>> @register_rule(torch.special.erf)
        ... def erf_rule(func, args, kwargs): ...

    In-place variants (``<name>_``) of the functions are registered with them. To change
    a rule for one model or one module only, pass ``rules=`` or ``module_rules=`` to
    :class:`~captum_cd.ContextualDecomposition` instead.
    """
    if rule is None:
        return lambda r: register_rule(funcs, r) or r
    for func in [funcs] if callable(funcs) else list(funcs):
        RULES[func] = rule
        _register_in_place_variants(func)
    return None


def _register_in_place_variants(func: Callable) -> None:
    name = getattr(func, "__name__", None)
    if not name or name.startswith("__"):
        return
    for namespace in _NAMESPACES:
        if getattr(namespace, name, None) is func and hasattr(namespace, name + "_"):
            IN_PLACE[getattr(namespace, name + "_")] = func


def out_of_place(func: Callable, kwargs: Dict[str, Any]) -> Optional[Callable]:
    """The out-of-place function for an in-place call, or None if the call is not in place."""
    if kwargs.get("inplace"):
        return func
    if func in IN_PLACE:
        return IN_PLACE[func]
    name = getattr(func, "__name__", "")
    if name in _DUNDER_IN_PLACE:
        return getattr(torch.Tensor, _DUNDER_IN_PLACE[name])
    return None
