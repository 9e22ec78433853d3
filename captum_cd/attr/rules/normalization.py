r"""Normalisation layers: an affine map whose scale comes from the full activation.

BatchNorm in eval mode is ``a z + c`` with per-channel ``a``, ``c`` from the running
statistics: ``a`` scales both parts and ``c`` is split as a bias, the share decided from
``a beta`` and ``a z`` (never from ``BN(z) - c``, whose rounding would decide it where both
parts are 0; there the shift goes to ``gamma``, as in the original CD code).

LayerNorm, GroupNorm, InstanceNorm and batch statistics: ``(z - mean(z)) / s * w + b``
with ``s`` the standard deviation of the *full* activation (as the CD-T work does), so
the map is linear in the decomposed value: ``beta' = (beta - mean(beta)) / s * w`` plus
the split of ``b``, decided from that and the full's ``(z - mean(z)) / s * w``. RMSNorm divides by the full activation's RMS and has no bias;
``F.normalize`` divides by the full activation's norm.

Training mode (running statistics updated) is refused unless the caller asked for batch
statistics (the CDEP regulariser): then the ordinary call updates the running statistics
as the user's training step would, and the decomposition uses the batch statistics.
"""

from typing import Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor

from captum_cd.attr.decomposition import Decomposition, current_context, pending_decomposition
from captum_cd.attr.errors import DecompositionError
from captum_cd.attr.rules._util import argument, fulls, split_bias
from captum_cd.attr.rules.registry import register_rule


def _channel_view(t: Optional[Tensor], ndim: int) -> Optional[Tensor]:
    """A per-channel vector shaped to broadcast over ``(N, C, *spatial)``."""
    return None if t is None else t.view(-1, *([1] * (ndim - 2)))


def _centered(full: Tensor, rel: Tensor, dims: Sequence[int], eps: float) -> Tuple[Tensor, Tensor]:
    """``(t - mean_dims(t)) / std_dims(full)`` of the relevant parts and of the full: linear
    in each, the scale from the full. The full's is its linear image before the shift."""
    var, mean = torch.var_mean(full, dim=dims, unbiased=False, keepdim=True)
    scale = torch.rsqrt(var + eps)
    return (rel - rel.mean(dim=[d + 1 for d in dims], keepdim=True)) * scale, (full - mean) * scale


def _affine_output(out: Tensor, u: Tensor, linear: Tensor, weight: Optional[Tensor], bias: Optional[Tensor]):
    """``u * weight`` with the shift ``bias`` split; ``linear`` is the full's image before it."""
    if weight is not None:
        u = u * weight
    if bias is None:
        return Decomposition(out, u)
    return pending_decomposition(out, u, split_bias, linear if weight is None else linear * weight, bias)


def _refuse_training(what: str) -> None:
    if current_context().training != "batch":
        raise DecompositionError(
            f"{what} in training mode: its output depends on the whole batch and it would "
            "update the running statistics, so the decomposition would not be of the model "
            "you evaluate. Call model.eval() before attributing (CD never changes the mode "
            "behind your back); to decompose during training use CDEPRegularizer."
        )


def batch_norm(func, args, kwargs):
    x = args[0] if args else kwargs["input"]
    running_mean, running_var = argument(args, kwargs, 1, "running_mean"), argument(args, kwargs, 2, "running_var")
    weight, bias = argument(args, kwargs, 3, "weight"), argument(args, kwargs, 4, "bias")
    training, eps = argument(args, kwargs, 5, "training", False), argument(args, kwargs, 7, "eps", 1e-5)
    if training and running_mean is not None:
        _refuse_training("batch norm")
    out = func(*fulls(args), **fulls(kwargs))
    ndim = x.full.ndim
    weight, bias = _channel_view(weight, ndim), _channel_view(bias, ndim)
    if training:  # batch statistics, over every dimension but the channels
        return _affine_output(out, *_centered(x.full, x.rel, [0] + list(range(2, ndim)), eps), weight, bias)
    scale = _channel_view(torch.rsqrt(running_var + eps), ndim)
    if weight is not None:
        scale = scale * weight
    shift = -_channel_view(running_mean, ndim) * scale
    if bias is not None:
        shift = shift + bias
    linear = x.full * scale  # exactly 0 where the full is, and equal to the parts' where one is 0
    if x.window is not None and ndim == 4:  # per channel: the boxes stay where they are
        return pending_decomposition(out, x.boxes() * scale, split_bias, linear, shift, window=x.window)
    return _affine_output(out, x.rel * scale, linear, None, shift)


def instance_norm(func, args, kwargs):
    x = args[0] if args else kwargs["input"]
    running_mean, running_var = argument(args, kwargs, 1, "running_mean"), argument(args, kwargs, 2, "running_var")
    weight, bias = argument(args, kwargs, 3, "weight"), argument(args, kwargs, 4, "bias")
    use_input_stats, eps = argument(args, kwargs, 5, "use_input_stats", True), argument(args, kwargs, 7, "eps", 1e-5)
    if not use_input_stats:  # running statistics: the eval-mode batch norm map
        return batch_norm(F.batch_norm, (x, running_mean, running_var, weight, bias, False, 0.0, eps), {})
    if running_mean is not None:
        _refuse_training("instance norm with running statistics")
    out = func(*fulls(args), **fulls(kwargs))
    ndim = x.full.ndim
    return _affine_output(out, *_centered(x.full, x.rel, list(range(2, ndim)), eps), _channel_view(weight, ndim), _channel_view(bias, ndim))


def layer_norm(func, args, kwargs):
    x = args[0] if args else kwargs["input"]
    shape = argument(args, kwargs, 1, "normalized_shape")
    weight, bias = argument(args, kwargs, 2, "weight"), argument(args, kwargs, 3, "bias")
    eps = argument(args, kwargs, 4, "eps", 1e-5)
    out = func(*fulls(args), **fulls(kwargs))
    n = 1 if isinstance(shape, int) else len(shape)
    return _affine_output(out, *_centered(x.full, x.rel, list(range(x.full.ndim - n, x.full.ndim)), eps), weight, bias)


def group_norm(func, args, kwargs):
    x = args[0] if args else kwargs["input"]
    num_groups = argument(args, kwargs, 1, "num_groups")
    weight, bias = argument(args, kwargs, 2, "weight"), argument(args, kwargs, 3, "bias")
    eps = argument(args, kwargs, 4, "eps", 1e-5)
    out = func(*fulls(args), **fulls(kwargs))
    full, rel = x.full, x.rel
    n = full.shape[0]
    u, linear = _centered(full.reshape(n, num_groups, -1), rel.reshape(rel.shape[0], n, num_groups, -1), [2], eps)
    ndim = full.ndim
    return _affine_output(out, u.reshape(rel.shape), linear.reshape(full.shape), _channel_view(weight, ndim), _channel_view(bias, ndim))


def rms_norm(func, args, kwargs):
    x = args[0] if args else kwargs["input"]
    shape = argument(args, kwargs, 1, "normalized_shape")
    weight, eps = argument(args, kwargs, 2, "weight"), argument(args, kwargs, 3, "eps")
    out = func(*fulls(args), **fulls(kwargs))
    n = 1 if isinstance(shape, int) else len(shape)
    dims = list(range(x.full.ndim - n, x.full.ndim))
    eps = torch.finfo(x.full.dtype).eps if eps is None else eps
    u = x.rel * torch.rsqrt(x.full.pow(2).mean(dim=dims, keepdim=True) + eps)
    return _affine_output(out, u, None, weight, None)


def normalize(func, args, kwargs):
    """``F.normalize``: ``x / max(||x||_p, eps)`` along ``dim``, the norm from the full
    activation (a statistic, as RMSNorm's), so the map is linear in the parts."""
    x = args[0] if args else kwargs["input"]
    p, dim = argument(args, kwargs, 1, "p", 2.0), argument(args, kwargs, 2, "dim", 1)
    eps = argument(args, kwargs, 3, "eps", 1e-12)
    if argument(args, kwargs, 4, "out") is not None:
        raise DecompositionError("F.normalize with out= writes past the decomposition; drop out=.")
    out = func(*fulls(args), **fulls(kwargs))
    norm = torch.linalg.vector_norm(x.full, ord=p, dim=dim, keepdim=True).clamp_min(eps)
    return Decomposition(out, x.rel / norm)


register_rule(F.batch_norm, batch_norm)
register_rule(F.normalize, normalize)
register_rule(F.instance_norm, instance_norm)
register_rule(F.layer_norm, layer_norm)
register_rule(F.group_norm, group_norm)
register_rule(F.rms_norm, rms_norm)
