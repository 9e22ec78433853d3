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

A view op's result (``x[:, :4]``, ``x.view(-1)``, ``x.t()``) remembers how it was taken
from which Decomposition: an in-place op on it writes into that base, and an in-place op
on a base is seen by its views, as with torch's views.

Elementwise rules (bias split, activations) do not run at once: they are kept as a
*pending* chain and applied when the value is next needed. A max pool whose winners come
from the full activation commutes with elementwise maps, so it gathers first and runs the
chain on a quarter of the elements (conv - ReLU - pool is the common case).

A local group of pixels may keep its relevant part as a box around the group, outside
which the part is 0 (a *window*, :mod:`captum_cd.attr.windows`): rules that know windows
work on the boxes, and reading :attr:`Decomposition.rel` gives the dense parts to every
other rule.
"""

import contextlib
import contextvars
import functools
import weakref
from dataclasses import dataclass, field
from typing import Any, Callable, ContextManager, Dict, Iterator, Optional, Sequence, Tuple

import torch
from torch import Tensor

from captum_cd.attr.errors import call_site, DecompositionError
from captum_cd.attr.windows import crop, find_window, place, spans_map, take, Window

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
    # Set only on the result of a view op (x[:, :4], x.view(-1), x.t(), ...): how it was
    # taken from which Decomposition, so an in-place op on it writes into that base.
    _view: Optional["ViewOf"] = None
    # Weak references to the views taken of this value, refreshed when it changes in place.
    _views: Optional[list] = None
    # Set where ``_rel`` holds only boxes of the map around each group, outside which
    # every group's part is 0 (module docstring).
    _window: Optional[Window] = None
    # The call that made this value (a recomputation in backward, activation
    # checkpointing, runs in it again: captum_cd.attr.dispatch), and the grad mode then.
    _context: "DecompositionContext"
    _grad_mode: bool

    @staticmethod
    def __new__(
        cls,
        full: Tensor,
        rel: Tensor,
        pending: Sequence[Pending] = (),
        window: Optional[Window] = None,
    ):
        # The subclass shares storage with a detached alias of ``full`` for metadata only;
        # every computation goes through ``__torch_function__`` and uses ``self.full``.
        if window is not None:
            if rel.shape[1:3] != full.shape[:2] or rel.shape[3:] != window.size:
                raise DecompositionError(f"windowed relevant parts of shape {tuple(rel.shape)} do not fit {tuple(full.shape)}.")
        elif not pending and rel.shape[1:] != full.shape:
            raise DecompositionError(
                f"a rule produced relevant parts of shape {tuple(rel.shape)} for an activation of "
                f"shape {tuple(full.shape)}; they must be (G, *activation shape). If the rule is "
                "your own, make it return Decomposition(full, rel) with rel of that shape."
            )
        # The alias requires grad where the activation does, so an autograd.Function that
        # takes it as a plain tensor gives its result a history (dispatch.check_history).
        self = Tensor._make_subclass(cls, full.detach(), full.requires_grad)
        self.full = full
        self._rel = rel
        self._pending = tuple(pending)
        self._window = window
        self._context, self._grad_mode = _CONTEXT.get(), torch.is_grad_enabled()
        return self

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        pass

    @property
    def groups(self) -> int:
        return self._rel.shape[0]

    @property
    def rel(self) -> Tensor:
        if self._window is not None:  # every rule that does not know windows reads this
            boxes = self.boxes()
            with self._as_made():
                self._rel = place(boxes, self._window)
            self._window = None
        if self._pending:
            with self._as_made():
                self._rel = apply_pending(self._rel, self._pending)
            self._pending = ()
        return self._rel

    @property
    def irrel(self) -> Tensor:
        return self.full - self.rel

    def lazy_parts(self) -> Tuple[Tensor, Tuple[Pending, ...]]:
        r"""The relevant parts before the pending elementwise steps, and those steps. For
        rules that commute with the steps (a gather, a pass-through) and keep them pending,
        or that replace them; any other rule reads :attr:`rel`."""
        if self._window is not None:
            self.rel
        return self._rel, self._pending

    def lazy_boxes(self) -> Tuple[Tensor, Tuple[Pending, ...]]:
        r""":meth:`lazy_parts` of a windowed value: its boxes before the pending steps
        (whose context is the full activation's), and those steps."""
        return self._rel, self._pending

    @property
    def window(self) -> Optional[Window]:
        """The boxes the relevant parts are kept in, or None (dense)."""
        return self._window

    def boxes(self) -> Tensor:
        r"""A windowed value's boxes ``(G, B, C, h, w)``, pending steps applied. For
        window-aware rules, where :attr:`window` is set."""
        if self._pending:
            with self._as_made():
                self._rel = apply_pending(self._rel, [(step, tuple(crop(c, self._window) for c in context)) for step, context in self._pending])
            self._pending = ()
        return self._rel

    def _as_made(self) -> ContextManager:
        """Pending steps run as at the op that made them, wherever they are read: in its
        grad mode (a read under no_grad must not cache parts without their graph), saving
        for backward as the CD call's caller saves, not as an activation-checkpointing
        region that only reads the value first (its recomputation in backward finds the
        value computed and would not save them again)."""
        hooks = self._context.caller_hooks
        change_grad = self._grad_mode != torch.is_grad_enabled()
        change_hooks = self._grad_mode and hooks is not CALLERS_HOOKS and saved_tensor_hooks() != hooks
        if not (change_grad or change_hooks):
            return contextlib.nullcontext()
        return _steps_context(self._grad_mode, hooks if change_hooks else CALLERS_HOOKS)

    def _assign(self, other: "Decomposition") -> "Decomposition":
        """The result of an in-place op on this value: rebinds its parts (the storage is
        never read). A view writes into its base instead, as torch's views do, and the
        base's views (this one included) are taken again from the updated base."""
        if self._view is None or not self._view.write(other):
            self._rebind(other.full, other._rel, other._pending, other._window)
        return self

    def _rebind(self, full, rel, pending, window=None) -> None:
        self.full, self._rel, self._pending, self._window = full, rel, pending, window
        if self._views:
            live = [v for v in (ref() for ref in self._views) if v is not None]
            self._views = [weakref.ref(v) for v in live]
            for view in live:
                fresh = view._view.take(self)
                view._rebind(fresh.full, fresh._rel, fresh._pending, fresh._window)

    @classmethod
    def __torch_function__(cls, func, types, args=(), kwargs=None):
        return _dispatch(func, args, kwargs or {})

    def __repr__(self) -> str:  # pragma: no cover - a convenience for debugging
        with torch._C.DisableTorchFunctionSubclass():
            return f"Decomposition(groups={self.groups}, full={self.full!r})"


def windowed(full: Tensor, rel: Tensor) -> Decomposition:
    """The input's Decomposition: relevant parts kept in boxes where its groups are local
    on a 2-D map (:mod:`captum_cd.attr.windows`), else dense."""
    window = find_window(rel) if full.ndim == 4 else None
    if window is None:
        return Decomposition(full, rel)
    return Decomposition(full, take(rel, window), window=window)


def _not_ready(func: Callable, args: tuple, kwargs: dict) -> Any:
    raise RuntimeError("no dispatcher for Decomposition: import captum_cd (captum_cd.attr.dispatch installs it).")


# How a torch function on a Decomposition is answered. The dispatcher looks rules up in the
# registry, whose rules are built on this module, so it installs itself when it loads
# (captum_cd.attr.dispatch) instead of being imported here.
_dispatch: Callable[[Callable, tuple, dict], Any] = _not_ready


def set_dispatcher(dispatcher: Callable[[Callable, tuple, dict], Any]) -> None:
    """Installs the function that answers every torch function called on a Decomposition."""
    global _dispatch
    _dispatch = dispatcher


class ViewOf:
    """How a view was taken: ``rule(func, args, kwargs)`` with the base at ``slot`` of
    the arguments (an index of ``args`` or a keyword), item ``item`` of a tuple result."""

    __slots__ = ("base", "rule", "func", "args", "kwargs", "slot", "item")

    def __init__(self, base: Decomposition, rule: Callable, func: Callable, args: tuple, kwargs: dict, slot: Any, item: Optional[int]):
        self.base, self.rule, self.func, self.args, self.kwargs = base, rule, func, args, kwargs
        self.slot, self.item = slot, item

    def take(self, base: Decomposition) -> Decomposition:
        """The same view of ``base`` (or of a copy of it)."""
        args, kwargs = self.args, self.kwargs
        if isinstance(self.slot, int):
            args = args[: self.slot] + (base,) + args[self.slot + 1 :]
        else:
            kwargs = {**kwargs, self.slot: base}
        with torch._C.DisableTorchFunctionSubclass():
            out = self.rule(self.func, args, kwargs)
        return out if self.item is None else out[self.item]

    def write(self, value: Decomposition) -> bool:
        """Writes ``value`` into the part of the base this view shows; False where the view
        op copied (torch's write stays local then too)."""
        base = self.base
        with torch._C.DisableTorchFunctionSubclass():
            full, rel = base.full.clone(), base.rel.clone()
            taken = self.take(Decomposition(full, rel))
            if not _aliases(taken.full, full):
                return False
            if not _aliases(taken.rel, rel):
                raise self._error("its relevant parts are a copy, so the write cannot reach the tensor it was taken from")
            try:
                taken.full.copy_(value.full)
                taken.rel.copy_(value.rel)
            except RuntimeError as error:  # torch refuses some (views of split under autograd)
                raise self._error(f"torch refuses it: {error}") from None
        base._assign(Decomposition(full, rel))
        return True

    def _error(self, why: str) -> DecompositionError:
        from captum_cd.attr.errors import function_name

        return DecompositionError(
            f"an in-place operation writes through a view taken by {function_name(self.func)}, "
            f"and {why}; compute the value out of place (y = x.clone(); y[...] = ...)."
        )


def _aliases(view: Tensor, base: Tensor) -> bool:
    # Storage, not ``_base``: detach() and .data share memory without being views in autograd.
    return view is base or view.untyped_storage().data_ptr() == base.untyped_storage().data_ptr()


def mark_view(result: Any, rule: Callable, func: Callable, args: tuple, kwargs: dict) -> None:
    """Records ``result`` of a view op as a view of its decomposed input where its full
    activation aliases the input's (a real torch view, or the input itself)."""
    slot, base = next(((i, a) for i, a in enumerate(args[:1]) if isinstance(a, Decomposition)), (None, None))
    if base is None:
        slot, base = next(((k, kwargs[k]) for k in ("input", "self") if isinstance(kwargs.get(k), Decomposition)), (None, None))
    if base is None:
        return
    items = [(None, result)] if isinstance(result, Decomposition) else list(enumerate(result)) if isinstance(result, (tuple, list)) else []
    for item, out in items:
        if isinstance(out, Decomposition) and out is not base and out._view is None and _aliases(out.full, base.full):
            out._view = ViewOf(base, rule, func, args, kwargs, slot, item)
            if base._views is None:
                base._views = []
            base._views.append(weakref.ref(out))


def apply_pending(rel: Tensor, pending: Sequence[Pending]) -> Tensor:
    for step, context in pending:
        rel = step(rel, *context)
    return rel


# Elementwise steps wait for the next op (so a max pool can run them on its winners only).
_LAZY_ELEMENTWISE: contextvars.ContextVar[bool] = contextvars.ContextVar("captum_cd_lazy_elementwise", default=True)


@contextlib.contextmanager
def lazy_elementwise(lazy: bool) -> Iterator[None]:
    r"""Whether elementwise steps (bias splits, activations) wait for the next op, as by
    default, or run at once: within this block, in this thread only. The values are the
    same either way; the speed benchmark measures the difference."""
    token = _LAZY_ELEMENTWISE.set(lazy)
    try:
        yield
    finally:
        _LAZY_ELEMENTWISE.reset(token)


def pending_decomposition(
    full: Tensor,
    base: Decomposition | Tensor,
    step: Callable[..., Tensor],
    *context: Tensor,
    window: Optional[Window] = None,
) -> Decomposition:
    """A Decomposition of ``full`` whose rel is ``step(rel_of_base, *context)``, applied lazily.

    ``base`` is either the input Decomposition of an elementwise op (its pending chain is
    extended without materialising it) or an already computed rel tensor (the boxes of
    ``window``, if given). A windowed value stays windowed, the step running on its
    boxes: ``step`` must keep a part that is exactly 0 exactly 0, as the parts outside
    the boxes are.
    """
    step, context = owned(step), tuple(map(owned, context))
    if isinstance(base, Decomposition):
        window = base._window
    if window is not None and (full.shape[-2:] != window.map_size or binds_tensor(step)):
        base, window = place(base.boxes() if isinstance(base, Decomposition) else base, window), None
    if isinstance(base, Decomposition):
        result = Decomposition(full, base._rel, base._pending + ((step, context),), window)
    else:
        result = Decomposition(full, base, ((step, context),), window)
    if not _LAZY_ELEMENTWISE.get():  # run the step now
        result.boxes() if window is not None else result.rel
    return result


def owned(value: Any) -> Any:
    """``value`` with every parameter in it (bound into a partial, too) copied.

    A pending step runs at a later op, and a parameter's storage may not live that long: a
    sharding engine (FSDP) gathers a layer's parameters for its forward and frees them
    right after. A copy (a bias: C numbers) belongs to the step, and gradients flow
    through it to the parameter.
    """
    if isinstance(value, Tensor):
        return value.clone() if isinstance(value, torch.nn.Parameter) or isinstance(value._base, torch.nn.Parameter) else value
    if isinstance(value, functools.partial) and any(isinstance(v, (Tensor, functools.partial)) for v in (*value.args, *value.keywords.values())):
        return functools.partial(value.func, *map(owned, value.args), **{k: owned(v) for k, v in value.keywords.items()})
    return value


def binds_tensor(value: Any, varies: Callable[[Any], bool] = spans_map) -> bool:
    """Whether a step binds a tensor for which ``varies`` holds (by default: one that
    varies over a 2-D map). A tensor bound into the step, not passed as its context, is not
    cut to boxes or gathered with the parts: such a step must run on the whole value."""
    if isinstance(value, functools.partial):
        value = (*value.args, *value.keywords.values())
    if isinstance(value, dict):
        value = tuple(value.values())
    if isinstance(value, (tuple, list)):
        return any(binds_tensor(v, varies) for v in value)
    return varies(value)


CALLERS_HOOKS = object()


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
    # False for the context outside any call, which must not keep anything.
    collects: bool = True
    # The saved-tensor hooks of the call's caller (None: none; CALLERS_HOOKS: whatever is
    # active), under which lazy steps save for backward (Decomposition._as_made).
    caller_hooks: Any = CALLERS_HOOKS
    # What a recomputation in backward cannot repeat (module hooks are gone by then).
    not_recomputable: Optional[str] = None
    # The number of groups decomposed (the relevant parts' first dimension).
    groups: Optional[int] = None
    # Where a decomposed value was first read as a constant (a comparison, .item(), ...).
    constant_read: Any = None
    # Every function's result checked for parts that are not finite where it is
    # (captum_cd.attr.finite: the pass that finds where they first appeared).
    check_each_op: bool = False

    def close(self) -> None:
        """The call is over: nothing more is collected (a recomputation in backward
        still runs in this context), and what was collected is dropped: the values of the
        call remember their context, and a remembered frame holds the values."""
        self.collects = False
        self.softmax_outputs = {}
        self.constant_read = None

    def remember_softmax(self, logits: Decomposition, out: Tensor, frame: Any) -> None:
        if self.collects:
            self.softmax_outputs[id(out)] = (logits, out, frame)

    def remember_constant_read(self, frame: Any) -> None:
        if self.collects and self.constant_read is None:
            self.constant_read = frame

    def model_output(self, out: Any) -> Decomposition:
        """The decomposition of the model's output ``out``; a softmax of decomposed logits
        is diagnosed here (its logits with ``stop_at_softmax``, else an error saying so)."""
        if isinstance(out, Decomposition):
            return out
        if isinstance(out, Tensor) and id(out) in self.softmax_outputs:
            logits, _, frame = self.softmax_outputs[id(out)]
            if self.stop_at_softmax:
                return logits
            raise DecompositionError(
                "the model's output is a softmax of its logits (called in "
                f"{call_site(self.model, frame)}). CD is defined on logits: return the "
                "logits, or pass stop_at_softmax=True to decompose the logits the softmax receives."
            )
        if not isinstance(out, Tensor):
            future = " Call attribute_future for a forward that returns a Future." if isinstance(out, torch.futures.Future) else ""
            raise DecompositionError(
                f"the model returned a {type(out).__name__}; CD needs one output tensor. Wrap the "
                f"model so it returns the tensor to explain (e.g. lambda x: model(x)[0]).{future}"
            )
        if self.softmax_outputs or self.constant_read is not None:
            where = next(iter(self.softmax_outputs.values()))[2] if self.softmax_outputs else self.constant_read
            raise DecompositionError(
                "the model's output does not depend on the decomposed input except through values "
                "CD takes as constants (comparisons, argmax, .item(), softmax weights, ...), the first in "
                f"{call_site(self.model, where)}; CD gives such an output no relevant part. If a "
                "softmax was the prediction, return the logits instead."
            )
        # Computed without the input at all (a constant): no group has any part of it.
        return Decomposition(out, out.new_zeros(self.groups, *out.shape))


# Ops on a Decomposition outside a call (a returned output used further) see this one:
# it holds no state, so nothing is kept between calls or shared between threads.
OUTSIDE = DecompositionContext(collects=False)
_CONTEXT: contextvars.ContextVar[DecompositionContext] = contextvars.ContextVar(
    "captum_cd_decomposition_context", default=OUTSIDE
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


def saved_tensor_hooks() -> Optional[Tuple[Callable, Callable]]:
    """The saved-tensor hooks active now (activation checkpointing, offloading), or None."""
    return torch._C._autograd._top_saved_tensors_default_hooks(False)


def _keep(tensor: Tensor) -> Tensor:
    return tensor


@contextlib.contextmanager
def _steps_context(grad_mode: bool, hooks: Any) -> Iterator[None]:
    with torch.set_grad_enabled(grad_mode):
        if hooks is CALLERS_HOOKS:
            yield
        else:
            with torch.autograd.graph.saved_tensors_hooks(*(hooks or (_keep, _keep))):
                yield
