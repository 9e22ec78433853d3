"""Where the decomposition meets the autograd engines around a model.

- Non-reentrant activation checkpointing runs part of the model again in backward, on the
  same decomposed values: each value remembers the CD call that made it, and an op during
  backward runs in that call's context again (:func:`recomputed_call`).
- A ``torch.autograd.Function`` runs its forward without autograd and sees one tensor per
  value: given a decomposed value, it would drop the relevant parts from the graph
  (reentrant checkpointing does this). It is refused, except FSDP2's mark on a unit's
  inputs, which passes values through and is applied to the parts (:func:`check_history`).
"""

from typing import Any, Callable, Iterator, Optional

from captum_cd.attr.decomposition import Decomposition, DecompositionContext, OUTSIDE
from captum_cd.attr.errors import DecompositionError, call_site, function_name


def recomputed_call(func: Callable, args: tuple, kwargs: dict) -> Optional[DecompositionContext]:
    """The CD call whose forward a backward pass is recomputing (non-reentrant activation
    checkpointing runs the checkpointed part again on the same values), or None."""
    owner = next((v._context for v in _decomposed(args, kwargs) if v._context is not OUTSIDE), None)
    if owner is not None and owner.not_recomputable:
        raise DecompositionError(
            f"activation checkpointing recomputes part of the model in backward (reached "
            f"{function_name(func)}), and that part cannot be recomputed as it ran: "
            f"{owner.not_recomputable}."
        )
    return owner


def _decomposed(args: tuple, kwargs: dict) -> Iterator[Decomposition]:
    """The Decompositions among the arguments, and in lists of them (torch.cat)."""
    for value in (*args, *kwargs.values()):
        if isinstance(value, Decomposition):
            yield value
        elif isinstance(value, (list, tuple)):
            yield from (v for v in value if isinstance(v, Decomposition))


def check_history(args: tuple, kwargs: dict, context: DecompositionContext) -> None:
    """A decomposed value must never get an autograd history of its own: that happens when
    a ``torch.autograd.Function`` took it as a plain tensor (its forward runs without
    autograd, its backward sees the ordinary value's gradient only), and the relevant
    parts would leave the autograd graph. FSDP2's mark on a unit's inputs is the one
    Function that is known to pass values through: it is applied to the parts instead.
    Called with torch functions of subclasses disabled."""
    for value in _decomposed(args, kwargs):
        node = value.grad_fn
        if node is None or value.__dict__.get("_passed_through") is node:
            continue
        if type(node).__name__ == "RegisterPostBackwardFunctionBackward" and hasattr(node, "param_group"):
            _mark_parts(value, node)
        else:
            raise DecompositionError(_history_message(type(node).__name__, context))


def _mark_parts(value: Decomposition, node: Any) -> None:
    """FSDP2 passes a unit's inputs through an identity Function whose backward reduce-
    scatters the unit's gradients once the inputs' gradients are complete. Torch gave the
    value a copy of its parts without autograd; the Function is applied to the parts of
    the value it was given, so it runs after the backward of both."""
    given = value._view.base if value._view is not None else value
    full, rel = type(node)._forward_cls.apply(node.param_group, given.full, given.rel)
    value._rebind(full, rel, ())
    value._passed_through = node


def _history_message(node: str, context: DecompositionContext) -> str:
    where = f"(found in {call_site(context.model)})"
    if node.startswith("CheckpointFunction"):
        return (
            f"reentrant activation checkpointing ran part of the model on decomposed values {where}: "
            "it runs that part without autograd and keeps the gradient of the ordinary output "
            "only, so the relevant parts would leave the autograd graph and their gradients "
            "would be missing. Use non-reentrant checkpointing, which CD recomputes exactly: "
            "torch.utils.checkpoint.checkpoint(fn, *args, use_reentrant=False), or "
            "model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={'use_reentrant': "
            "False}) in Hugging Face. (Under torch.no_grad() the values are exact either way.)"
        )
    return (
        f"a torch.autograd.Function ({node}) took a decomposed value as a plain tensor {where}: its "
        "forward runs without autograd, so the relevant parts would leave the autograd graph. "
        "Register a rule for what it computes (captum_cd.register_rule), or decompose under "
        "torch.no_grad() for attributions only."
    )
