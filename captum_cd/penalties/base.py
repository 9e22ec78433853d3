"""What every loss module computed through a model has in common: how it holds the model."""

from torch import nn


class ModelLoss(nn.Module):
    r"""Base of the loss modules computed through a model that they do not own: the CDEP
    regulariser, the gradient penalties and AWD's loss.

    The model is held as a plain attribute (``self.model``), never as a submodule: the
    loss's ``parameters()`` (what an optimiser built from the loss trains), its
    ``state_dict()``, ``.to()`` and ``.train()`` leave the model alone. The training loop
    owns the model, its optimiser and its checkpoints.

    Args:
        model (nn.Module): The model the loss is computed through.
    """

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.hold(model=model)

    def hold(self, **modules: nn.Module) -> None:
        r"""Keeps ``modules`` as plain attributes, not registered as submodules (the one way
        a loss holds a module it does not own)."""
        for name, module in modules.items():
            object.__setattr__(self, name, module)
