"""The value that flows through the model during contextual decomposition.

A :class:`Decomposition` *is* the ordinary activation ``z`` (shape queries, ``len``,
``bool`` and data-dependent control flow see the real tensor) and carries the relevant
part ``beta`` of every feature group, shape ``(G, *z.shape)``. The irrelevant part is
never stored: ``gamma = z - beta`` at every layer, so one ordinary forward pass plus the
propagation of the G relevant parts is the whole cost, and completeness
(``beta + gamma = z``) holds by construction at every layer.

Every torch function that touches a Decomposition reaches ``__torch_function__`` and is
answered by the rule registered for it (:mod:`captum_cd.attr.rules`); a function without
a rule is an error that names it and where it was called, never a silent skip.

Elementwise rules (bias split, activations) do not run at once: they are kept as a
*pending* chain and applied when the value is next needed. A max pool whose winners come
from the full activation commutes with elementwise maps, so it gathers first and runs the
chain on a quarter of the elements (conv - ReLU - pool is the common case).
"""

import contextlib
import contextvars
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, Optional, Sequence, Tuple

import torch
from torch import Tensor

from captum_cd.attr.errors import DecompositionError

# An elementwise step: fn(rel, *context) where every context tensor broadcasts against
# the full activation (it is B-sized or a parameter, never G-sized).
Pending = Tuple[Callable[..., Tensor], Tuple[Tensor, ...]]


class Decomposition(Tensor):
    r"""The full activation ``z`` carrying the relevant parts of G feature groups.

    Attributes:
        full (Tensor): the ordinary activation ``z`` (with its autograd graph).
        rel (Tensor): the relevant parts ``beta``, shape ``(G, *full.shape)``.
        irrel (Tensor): the irrelevant parts ``gamma = full - rel``.
    """

    full: Tensor
    _rel: Tensor
    _pending: Tuple[Pending, ...]

    @staticmethod
    def __new__(cls, full: Tensor, rel: Tensor, pending: Sequence[Pending] = ()):
        # The subclass shares storage with a detached alias of ``full`` for metadata only;
        # every computation goes through ``__torch_function__`` and uses ``self.full``.
        if not pending and rel.shape[1:] != full.shape:
            raise DecompositionError(
                f"a rule produced relevant parts of shape {tuple(rel.shape)} for an activation of "
                f"shape {tuple(full.shape)}; they must be (G, *activation shape). If the rule is "
                "your own, make it return Decomposition(full, rel) with rel of that shape."
            )
        self = Tensor._make_subclass(cls, full.detach(), False)
        self.full = full
        self._rel = rel
        self._pending = tuple(pending)
        return self

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        pass

    @property
    def groups(self) -> int:
        return self._rel.shape[0]

    @property
    def rel(self) -> Tensor:
        if self._pending:
            self._rel = apply_pending(self._rel, self._pending)
            self._pending = ()
        return self._rel

    @property
    def irrel(self) -> Tensor:
        return self.full - self.rel

    def _assign(self, other: "Decomposition") -> "Decomposition":
        # An in-place operation rebinds this object's parts (the storage is never read).
        self.full, self._rel, self._pending = other.full, other._rel, other._pending
        return self

    @classmethod
    def __torch_function__(cls, func, types, args=(), kwargs=None):
        from captum_cd.attr.dispatch import dispatch

        return dispatch(func, args, kwargs or {})

    def __repr__(self) -> str:  # pragma: no cover - a convenience for debugging
        with torch._C.DisableTorchFunctionSubclass():
            return f"Decomposition(groups={self.groups}, full={self.full!r})"


def apply_pending(rel: Tensor, pending: Sequence[Pending]) -> Tensor:
    for step, context in pending:
        rel = step(rel, *context)
    return rel


# Elementwise steps wait for the next op (so a max pool can run them on its winners only).
# False runs them at once; the speed benchmark measures the difference.
LAZY_ELEMENTWISE = True


def pending_decomposition(
    full: Tensor, base: Decomposition | Tensor, step: Callable[..., Tensor], *context: Tensor
) -> Decomposition:
    """A Decomposition of ``full`` whose rel is ``step(rel_of_base, *context)``, applied lazily.

    ``base`` is either the input Decomposition of an elementwise op (its pending chain is
    extended without materialising it) or an already computed rel tensor.
    """
    if not LAZY_ELEMENTWISE:
        return Decomposition(full, step(base.rel if isinstance(base, Decomposition) else base, *context))
    if isinstance(base, Decomposition):
        return Decomposition(full, base._rel, base._pending + ((step, context),))
    return Decomposition(full, base, ((step, context),))


@dataclass
class DecompositionContext:
    """What the rules may need to know about the current ``decompose`` call."""

    model: Optional[torch.nn.Module] = None
    # "error": a training-mode batch norm or dropout raises; "batch": batch norm uses the
    # statistics of the ordinary forward pass and dropout applies one mask to both parts.
    training: str = "error"
    stop_at_softmax: bool = False
    rules: Dict[Callable, Callable] = field(default_factory=dict)
    # Function rules scoped to a module while it runs (innermost last).
    scoped_rules: list = field(default_factory=list)
    # Softmax outputs computed from decomposed logits: id(output) -> (logits, output, frame).
    softmax_outputs: Dict[int, Tuple[Decomposition, Tensor, Any]] = field(default_factory=dict)


_CONTEXT: contextvars.ContextVar[DecompositionContext] = contextvars.ContextVar(
    "captum_cd_decomposition_context", default=DecompositionContext()
)


def current_context() -> DecompositionContext:
    return _CONTEXT.get()


@contextlib.contextmanager
def decomposition_context(context: DecompositionContext):
    token = _CONTEXT.set(context)
    try:
        yield context
    finally:
        _CONTEXT.reset(token)
