r"""``module_rules``: rules that hold for one module of the model only, installed with hooks
for one forward pass and removed after it (also when it raises).

A value is either a dict of function rules that hold while that module runs (pushed on
the call's context by a pre-hook, popped by a forward hook) or a callable
``rule(module, *args, **kwargs)`` that answers the module for decomposed inputs. The
hooks act only for the call's own context, so other threads running the model meanwhile
see it as it is; ``module.forward`` is never patched.

Modules of common libraries that spell out a torch activation by hand get that function
as their rule unless the caller names them (:data:`FUSED_EQUIVALENTS`).
"""

import contextlib
from typing import Any, Callable, Dict, Iterator, List, Tuple, Union

import torch.nn.functional as F
from torch import nn

from captum_cd.attr.decomposition import current_context, Decomposition, DecompositionContext
from captum_cd.attr.errors import DecompositionError
from captum_cd.attr.rules._util import fulls, leaves

ModuleKey = Union[str, nn.Module, type]


def _gelu_tanh(module: nn.Module, x: Any) -> Any:
    return F.gelu(x, approximate="tanh")


# Modules of common libraries that write a torch activation out by hand (transformers'
# GPT-2 GELU: eight operations): answered by that torch function, which computes the same
# values, so its rule does a few passes over the G relevant parts instead of a pass per
# operation of the formula (twice over: the Shapley form evaluates it at two points).
# Keyed by the class's module and name, so that the library need not be imported.
FUSED_EQUIVALENTS: Dict[Tuple[str, str], Callable] = {
    ("transformers.activations", "NewGELUActivation"): _gelu_tanh,
    ("transformers.activations", "FastGELUActivation"): _gelu_tanh,
    ("transformers.activations", "AccurateGELUActivation"): _gelu_tanh,
}


def _fused_equivalents(model: nn.Module) -> Dict[ModuleKey, Callable]:
    found = {}
    for m in model.modules():
        rule = FUSED_EQUIVALENTS.get((type(m).__module__, type(m).__name__))
        if rule is not None:
            found[m] = rule
    return found


@contextlib.contextmanager
def module_rules_installed(model: Any, module_rules: Dict[ModuleKey, Any], context: DecompositionContext) -> Iterator[None]:
    """Installs ``module_rules`` (and the :data:`FUSED_EQUIVALENTS` of the model's
    modules that no rule of the caller names) for one forward pass, and removes them
    after, also on error."""
    if not module_rules and not isinstance(model, nn.Module):
        yield
        return
    if not isinstance(model, nn.Module):
        raise DecompositionError("module_rules need the model to be an nn.Module.")
    undo: List[Callable[[], None]] = []
    try:
        chosen = list(_resolve_module_rules(model, module_rules))
        named = {id(m) for m, _ in chosen}
        chosen += [(m, rule) for m, rule in _fused_equivalents(model).items() if id(m) not in named]
        for module, rule in chosen:
            if isinstance(rule, dict):
                undo += _scope_rules(module, rule, context)
            else:
                undo += _replace_forward(module, rule, context)
        yield
    finally:
        for step in reversed(undo):
            step()


def _resolve_module_rules(model: nn.Module, module_rules: Dict[ModuleKey, Any]):
    named = dict(model.named_modules())
    for key, rule in module_rules.items():
        if isinstance(key, str):
            if key not in named:
                raise ValueError(f"module_rules: the model has no module named '{key}'.")
            yield named[key], rule
        elif isinstance(key, type):
            matches = [m for m in model.modules() if isinstance(m, key)]
            if not matches:
                raise ValueError(f"module_rules: the model has no module of type {key.__name__}.")
            for m in matches:
                yield m, rule
        elif isinstance(key, nn.Module):
            if not any(m is key for m in model.modules()):
                raise ValueError(f"module_rules: {type(key).__name__} is not a module of the model.")
            yield key, rule
        else:
            raise TypeError(f"module_rules keys are modules, module classes or names; got {key!r}.")


def _scope_rules(module: nn.Module, rules: Dict[Callable, Callable], context: DecompositionContext) -> List[Callable[[], None]]:
    """Function rules that hold while ``module`` runs in this call (not in other threads)."""

    def enter(m, args):
        if current_context() is context:
            context.scoped_rules.append(rules)

    def leave(m, args, output):
        if current_context() is context:
            context.scoped_rules.pop()

    return [module.register_forward_pre_hook(enter).remove, module.register_forward_hook(leave).remove]


def _replace_forward(module: nn.Module, rule: Callable, context: DecompositionContext) -> List[Callable[[], None]]:
    """``rule`` answers ``module`` for decomposed inputs in this call. ``module.forward`` is
    never patched (other threads see the module as it is): a pre-hook computes the rule's
    output and hands the module's own forward the ordinary activations, and a forward hook
    returns the rule's output in place of the ordinary one."""
    answers: List[Any] = []  # a stack: the module may run inside itself

    def before(m, args, kwargs):
        if current_context() is not context:
            return None
        if not any(isinstance(v, Decomposition) for v in leaves((args, kwargs))):
            answers.append(None)
            return None
        answers.append(rule(m, *args, **kwargs))
        return fulls(args), fulls(kwargs)

    def after(m, args, kwargs, output):
        if current_context() is not context:
            return None
        return answers.pop()

    return [
        module.register_forward_pre_hook(before, with_kwargs=True).remove,
        module.register_forward_hook(after, with_kwargs=True, prepend=True).remove,
    ]
