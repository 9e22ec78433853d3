"""Checks shared by the zoo tests (models of torchvision, timm and transformers with
random weights, float64): complete, not vanishing, and the model left as it was."""

from typing import Dict

import torch
from torch import nn

from captum_cd.attr.decomposition import Decomposition
from captum_cd.attr.rules._util import align

DT = torch.float64


def calibrate_batch_norm(model: nn.Module, x: torch.Tensor) -> nn.Module:
    """Running statistics from a batch (random weights leave activations far from order 1
    otherwise), then eval mode."""
    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            module.reset_running_stats()
            module.momentum = None  # the plain average of the batches seen
    model.train()
    with torch.no_grad():
        model(x)
    return model.eval()


def randomise_zero_weights(model: nn.Module) -> nn.Module:
    """Some heads start at 0 (torchvision's ViT): the output would be 0 for any input."""
    with torch.no_grad():
        for p in model.parameters():
            if p.ndim >= 2 and not p.any():
                p.normal_(0, 0.05)
    return model


def snapshot(model: nn.Module) -> Dict[str, object]:
    """What CD must not change: parameters and buffers, their flags, modes, hooks."""
    return {
        "state": {k: v.detach().clone() for k, v in model.state_dict(keep_vars=True).items()},
        "grad_flags": [p.requires_grad for p in model.parameters()],
        "modes": [m.training for m in model.modules()],
        "hooks": [
            len(m._forward_hooks) + len(m._forward_pre_hooks) + len(m._backward_hooks) for m in model.modules()
        ],
        "forward": [m.__dict__.get("forward") for m in model.modules()],
    }


def assert_unchanged(model: nn.Module, before: Dict[str, object]) -> None:
    after = snapshot(model)
    assert after["state"].keys() == before["state"].keys()
    for key, value in before["state"].items():
        torch.testing.assert_close(after["state"][key], value, rtol=0, atol=0, msg=key)
    for name in ("grad_flags", "modes", "hooks", "forward"):
        assert after[name] == before[name], name


def assert_complete_and_on_scale(rel: torch.Tensor, irr: torch.Tensor, out: torch.Tensor) -> None:
    """relevant + irrelevant = output to 1e-10 of its scale, and the largest group's
    relevant part on the scale of the output (neither ~0 nor exploding)."""
    rel, irr, out = rel.detach(), irr.detach(), out.detach()
    scale = out.abs().max()
    assert scale > 0 and torch.isfinite(rel).all()
    torch.testing.assert_close(rel + irr, out.expand_as(rel), rtol=0, atol=1e-10 * float(scale))
    largest = rel.abs().max()
    assert 0.05 * scale < largest < 20 * scale, (float(largest), float(scale))


# float32 against float64 (docs/guarantees.md): CD's float32 error, the largest deviation of
# a relevant part from float64 relative to the output's scale, is at most this multiple of
# the model's own float32 error (measured up to ~3e4 on the CNNs with batch norm of this
# zoo, ~1 on the transformers: benchmarks/precision.py).
F32_MULTIPLE = 1e5


def assert_float32_agrees(model: nn.Module, rel64: torch.Tensor, out64: torch.Tensor, decompose) -> None:
    """``decompose(model)`` gives ``(relevant, output)`` in float32 after ``model.float()``
    (in place: the test's own model)."""
    model.float()
    with torch.no_grad():
        rel32, out32 = (t.detach().double() for t in decompose(model))
    scale = float(out64.abs().max())
    own = float((out32 - out64).abs().max()) / scale
    cd = float((rel32 - rel64.detach()).abs().max()) / scale
    assert cd <= F32_MULTIPLE * max(own, 2.0**-24), (cd, own)


def keep_beta_product(func, args, kwargs):
    """The product rule the library had before (only ``beta_a * beta_b`` relevant, also
    for gates), to show what the scale check catches."""
    from captum_cd.attr.rules.arithmetic import mul

    a, b = args[0], args[1]
    with torch._C.DisableTorchFunctionSubclass():
        if not (isinstance(a, Decomposition) and isinstance(b, Decomposition)):
            return mul(func, args, kwargs)
        out = a.full * b.full
        return Decomposition(out, align(a.rel, out.ndim) * align(b.rel, out.ndim))


OLD_PRODUCT_RULES = {f: keep_beta_product for f in (torch.Tensor.mul, torch.Tensor.__mul__, torch.mul)}
