r"""Gradient hooks on a decomposed value (``x.register_hook(fn)``).

A decomposed value is two tensors in autograd, the ordinary activation and the relevant
parts, and backward may reach either first. The hook is registered on both, so it runs
before any gradient of the value goes further back; it sees each part's gradient in turn
(the relevant parts' with the group dimension in front). This is what a sharding engine
needs: FSDP's pre-backward hook on a unit's output gathers the unit's parameters again,
and must run before the backward of either part reads them.
"""

from typing import List

import torch

from captum_cd.attr.errors import DecompositionError
from captum_cd.attr.rules.registry import register_rule


class Hooks:
    """The handles of one hook registered on several tensors; ``remove()`` removes all."""

    def __init__(self, handles: List) -> None:
        self.handles = handles

    def remove(self) -> None:
        for handle in self.handles:
            handle.remove()


def register_hook(func, args, kwargs):
    x, hook = args[0], (args[1] if len(args) > 1 else kwargs["hook"])
    parts = [t for t in (x.full, x.rel) if t.requires_grad]
    if not parts:
        raise DecompositionError("cannot register a hook on a decomposed value that does not require grad.")
    return Hooks([t.register_hook(hook) for t in parts])


register_rule(torch.Tensor.register_hook, register_hook)
