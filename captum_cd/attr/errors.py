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
