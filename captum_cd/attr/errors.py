"""Errors of the decomposition engine, and where in the user's model they happened."""

import linecache
import os
import sys
from types import FrameType
from typing import Callable, Optional

import torch

_TORCH_DIR = os.path.dirname(torch.__file__)
_PACKAGE_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class DecompositionError(RuntimeError):
    """Contextual decomposition cannot go on; the message says why and what to do."""


class UnsupportedOperationError(DecompositionError, NotImplementedError):
    """A torch function touched a decomposed tensor and no rule is registered for it."""


EAGER_FIX = (
    "CD follows the Python code op by op, which compiled code does not run. Run the CD call "
    "under `with torch.compiler.set_stance(\"force_eager\"):` (compiled code then runs as the "
    "Python it was compiled from, with the same output), or "
)


def compiled(obj: object) -> bool:
    """A module or function compiled with torch.compile (a wrapper, or a module compiled in
    place with ``module.compile()``)."""
    return (
        type(obj).__name__ == "OptimizedModule"
        or hasattr(obj, "_torchdynamo_orig_callable")
        or getattr(obj, "_compiled_call_impl", None) is not None
    )


def compiled_message(what: str, obj: object) -> str:
    if getattr(obj, "_compiled_call_impl", None) is not None:
        how, original = "compiled in place (module.compile())", "an uncompiled instance of the module (same weights)"
    elif isinstance(obj, torch.nn.Module):
        how, original = "compiled with torch.compile", "the original module (._orig_mod of the compiled one)"
    else:
        how, original = "compiled with torch.compile", "the function you compiled"
    return f"{what} is {how}; {EAGER_FIX}pass {original}."


def runs_eagerly() -> bool:
    """Whether compiled code runs as plain Python now (torch.compiler.set_stance("force_eager"))."""
    stance = getattr(sys.modules.get("torch._dynamo.eval_frame"), "_stance", None)
    return getattr(stance, "stance", "default") == "force_eager"


def inside_compiler() -> bool:
    """Whether torch.compile is tracing the code that runs now (an error path only: it
    walks the stack)."""
    frame = sys._getframe(1)
    while frame is not None:
        if f"{os.sep}_dynamo{os.sep}" in frame.f_code.co_filename:
            return True
        frame = frame.f_back
    return False


def function_name(func: Callable) -> str:
    getter_of = getattr(getattr(func, "__self__", None), "__name__", None)
    if getattr(func, "__name__", "") == "__get__" and getter_of:
        return f"torch.Tensor.{getter_of} (attribute access)"
    try:
        return torch.overrides.resolve_name(func) or repr(func)
    except Exception:  # pragma: no cover - resolve_name is best effort
        return getattr(func, "__qualname__", repr(func))


def call_site(model: Optional[torch.nn.Module], frame: Optional[FrameType] = None) -> str:
    """Describes the innermost module of ``model`` and the user's source line running at
    ``frame`` (default: now).

    Computed only when an error is raised: it walks the Python stack, so the hot path
    pays nothing for it.
    """
    names = {id(m): n for n, m in model.named_modules()} if model is not None else {}
    module_desc, line_desc = None, None
    frame = frame or sys._getframe(1)
    while frame is not None and (module_desc is None or line_desc is None):
        filename = frame.f_code.co_filename
        inside = filename.startswith(_TORCH_DIR) or filename.startswith(_PACKAGE_DIR)
        if line_desc is None and not inside:
            source = linecache.getline(filename, frame.f_lineno).strip()
            line_desc = f"{filename}:{frame.f_lineno} in {frame.f_code.co_name}: `{source}`"
        owner = frame.f_locals.get("self")
        if module_desc is None and isinstance(owner, torch.nn.Module) and id(owner) in names:
            name = names[id(owner)] or "<the model itself>"
            module_desc = f"module '{name}' ({type(owner).__name__})"
        frame = frame.f_back
    parts = [p for p in (module_desc, line_desc and f"at {line_desc}") if p]
    return ", ".join(parts) if parts else "outside any module of the model"
