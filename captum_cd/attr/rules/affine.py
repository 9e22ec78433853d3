r"""Affine maps ``W z + b``: Linear, ConvNd and ConvTransposeNd.

``beta' = W beta + b |W beta| / (|W beta| + |W gamma|)``: the weight applies to both
parts and the bias is split per output element in proportion to the magnitudes
(docs/methods.md, "Contextual decomposition"). The full output is the ordinary call, so ``W gamma`` comes free
as ``out - b - W beta`` (exactly 0 where ``gamma`` is: the kernel adds ``b`` to an exact
0): one extra bias-free call on the G relevant parts, nothing more.
"""

import torch
import torch.nn.functional as F

from captum_cd.attr.decomposition import Decomposition, pending_decomposition
from captum_cd.attr.errors import DecompositionError, function_name
from captum_cd.attr.rules._util import argument, batched, fulls, is_dec, pair, replace_argument, split_biased
from captum_cd.attr.rules.registry import register_rule
from captum_cd.attr.rules.structural import _bilinear
from captum_cd.attr.windows import DENSE_SHARE, inputs_for, place, slide

# function -> number of spatial dimensions (0 for linear: any leading dimensions work)
AFFINE = {
    F.linear: 0,
    F.conv1d: 1,
    F.conv2d: 2,
    F.conv3d: 3,
    F.conv_transpose1d: 1,
    F.conv_transpose2d: 2,
    F.conv_transpose3d: 3,
}


def affine(func, args, kwargs):
    r"""The affine rule (``captum_cd.rules.affine_map``): the weight applied to both parts, the bias split
    between them in proportion to ``|W beta|`` and ``|W gamma|``. For a function ``func(input, weight,
    bias, ...)`` of which only the input is decomposed (Linear, ConvNd, ConvTransposeNd)."""
    x, weight = argument(args, kwargs, 0, "input"), argument(args, kwargs, 1, "weight")
    bias = argument(args, kwargs, 2, "bias")
    if not is_dec(x) or is_dec(weight) or is_dec(bias):
        raise DecompositionError(
            f"{function_name(func)}: only the input may be decomposed; a decomposed weight "
            "or bias is a product of two decomposed values, which has no affine rule."
        )
    out = func(*fulls(args), **fulls(kwargs))
    if x.window is not None and func is F.conv2d and x.full.ndim == 4:
        windowed = conv2d_in_windows(x, out, args, kwargs)
        if windowed is not None:
            return windowed
    rest_args, rest_kwargs = replace_argument(args, kwargs, 2, "bias", None)
    rest_args, rest_kwargs = rest_args[1:], {k: v for k, v in rest_kwargs.items() if k != "input"}

    spatial = AFFINE[func]
    u = batched(
        lambda r: func(r, *rest_args, **rest_kwargs),
        x.rel,
        full_ndim=x.full.ndim,
        batched_ndim=spatial + 2 if spatial else x.full.ndim,
    )
    if bias is None:
        return Decomposition(out, u)
    if spatial:
        bias = bias.view(-1, *([1] * spatial))
    return pending_decomposition(out, u, split_biased, out, bias)


def conv2d_in_windows(x: Decomposition, out, args, kwargs):
    """A 2-D convolution of relevant parts kept in windows: each group's output box from
    the input region it reads (:mod:`captum_cd.attr.windows`); None for string padding."""
    weight, bias = argument(args, kwargs, 1, "weight"), argument(args, kwargs, 2, "bias")
    stride, padding, dilation = (
        pair(argument(args, kwargs, i, name, default)) for i, name, default in ((3, "stride", 1), (4, "padding", 0), (5, "dilation", 1))
    )
    if isinstance(padding[0], str):
        return None
    groups = argument(args, kwargs, 6, "groups", 1)
    window, needs = slide(x.window, weight.shape[2:], stride, padding, dilation, out.shape[-2:])
    region = inputs_for(x.boxes(), x.window, needs)
    u = F.conv2d(region.flatten(0, 1), weight, None, stride, 0, dilation, groups).unflatten(0, region.shape[:2])
    if window.share > DENSE_SHARE:
        u, window = place(u, window), None
    if bias is None:
        return Decomposition(out, u, window=window)
    return pending_decomposition(out, u, split_biased, out, bias.view(-1, 1, 1), window=window)


def add_matmul(func, args, kwargs):
    """``addmm``/``baddbmm``: ``beta * input + alpha * (m1 @ m2)``, Hugging Face's ``Conv1D``
    (GPT-2) among others. The product is the contraction rule's; a constant ``input`` is a
    bias, split as above; a decomposed one adds its parts."""
    bias, m1, m2 = (argument(args, kwargs, i, name) for i, name in enumerate(("input", "mat1", "mat2")))
    if func in (torch.baddbmm, torch.Tensor.baddbmm):
        m1, m2 = argument(args, kwargs, 1, "batch1"), argument(args, kwargs, 2, "batch2")
    scale_bias, scale_product = kwargs.get("beta", 1), kwargs.get("alpha", 1)
    out = func(*fulls(args), **fulls(kwargs))
    u = _bilinear(torch.matmul, m1, m2, out.ndim) * scale_product if is_dec(m1) or is_dec(m2) else None
    if is_dec(bias):
        rel = bias.rel * scale_bias if u is None else u + bias.rel * scale_bias
        return Decomposition(out, rel.expand(rel.shape[0], *out.shape))
    return pending_decomposition(out, u, split_biased, out, bias * scale_bias)


def grouped_mm(func, args, kwargs):
    """``F.grouped_mm(tokens, weights, offs=...)`` (mixture-of-experts layers): each run of
    tokens up to an offset meets its own expert's weight, linear in the tokens. The G
    relevant parts of a token are laid next to each other, so every expert's run of
    tokens stays contiguous with offsets scaled by G: one call, no loop over groups."""
    x, weight = argument(args, kwargs, 0, "mat_a"), argument(args, kwargs, 1, "mat_b")
    offs, bias = kwargs.get("offs"), kwargs.get("bias")
    if not is_dec(x) or is_dec(weight) or is_dec(bias) or x.full.ndim != 2 or offs is None:
        raise DecompositionError(
            f"{function_name(func)}: only 2-D tokens (mat_a) with offsets may be decomposed, "
            "against constant expert weights."
        )
    out = func(*fulls(args), **fulls(kwargs))
    rel = x.rel
    groups, tokens = rel.shape[0], rel.shape[1]
    folded = rel.transpose(0, 1).reshape(tokens * groups, -1)
    u = func(folded, weight, offs=offs * groups, out_dtype=kwargs.get("out_dtype"))
    u = u.view(tokens, groups, -1).transpose(0, 1)
    if bias is None:
        return Decomposition(out, u)
    raise DecompositionError(f"{function_name(func)} with a bias has no rule yet; add the bias after the call.")


register_rule(AFFINE, affine)
register_rule([torch._grouped_mm] + ([F.grouped_mm] if hasattr(F, "grouped_mm") else []), grouped_mm)
register_rule([torch.addmm, torch.Tensor.addmm, torch.baddbmm, torch.Tensor.baddbmm], add_matmul)
