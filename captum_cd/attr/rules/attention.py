r"""Attention, as the CD-T work decomposes it (contextual decomposition for transformers).

The attention probabilities are computed from the full activations (queries and keys
as the model sees them) and applied linearly to the decomposed values:
``beta' = softmax(q k^T / sqrt(d) + mask) @ beta_v``. The value and output projections
are affine maps whose biases are split as everywhere else; constant key/value rows
(``bias_v``, ``add_zero_attn``) are irrelevant.

Covers ``F.scaled_dot_product_attention`` and ``F.multi_head_attention_forward`` (so
``nn.MultiheadAttention``, ``nn.TransformerEncoderLayer`` and ``nn.TransformerEncoder``
with either ``norm_first``, padding masks and causal masks). Attention written by hand
(``(q @ k.transpose(-2, -1)).softmax(-1) @ v``) decomposes the same way without a special
rule: a softmax of decomposed values is a constant computed from the full activation.
Attention dropout in training mode is refused.
"""

import inspect
import math

import torch
import torch.nn.functional as F
from torch import Tensor

from captum_cd.attr.decomposition import Decomposition
from captum_cd.attr.errors import DecompositionError
from captum_cd.attr.rules._util import argument, fulls, is_dec, split_bias, split_biased, zero_rel
from captum_cd.attr.rules.registry import register_rule


def attention_weights(q: Tensor, k: Tensor, attn_mask=None, is_causal: bool = False, scale=None) -> Tensor:
    """``softmax(q k^T * scale + mask)`` as ``F.scaled_dot_product_attention`` computes it."""
    scale = 1.0 / math.sqrt(q.shape[-1]) if scale is None else scale
    scores = q @ k.transpose(-2, -1) * scale
    if is_causal:
        causal = torch.ones(q.shape[-2], k.shape[-2], dtype=torch.bool, device=q.device).tril()
        scores = scores.masked_fill(~causal, float("-inf"))
    if attn_mask is not None:
        scores = scores.masked_fill(~attn_mask, float("-inf")) if attn_mask.dtype == torch.bool else scores + attn_mask
    # a fully masked row (a padded query) attends to nothing, as SDPA's math path has it
    return torch._safe_softmax(scores, -1) if hasattr(torch, "_safe_softmax") else scores.softmax(-1).nan_to_num(0.0)


def _groups(*values) -> int:
    return next(v for v in values if is_dec(v)).rel.shape[0]


def _refuse_dropout(p: float, training: bool = True) -> None:
    if training and p > 0:
        raise DecompositionError(
            f"attention dropout (p={p}) is active: the weights would be random. Call model.eval() "
            "before attributing (it sets the dropout of nn.MultiheadAttention to 0)."
        )


def scaled_dot_product_attention(func, args, kwargs):
    q, k, v = (argument(args, kwargs, i, name) for i, name in enumerate(("query", "key", "value")))
    attn_mask, is_causal = argument(args, kwargs, 3, "attn_mask"), argument(args, kwargs, 5, "is_causal", False)
    _refuse_dropout(argument(args, kwargs, 4, "dropout_p", 0.0))
    out = func(*fulls(args), **fulls(kwargs))
    if not is_dec(v):  # only queries or keys decomposed: weights are constants, nothing relevant
        return Decomposition(out, zero_rel(out, _groups(q, k)))
    qf, kf, v_rel = q.full if is_dec(q) else q, k.full if is_dec(k) else k, v.rel
    if kwargs.get("enable_gqa") and qf.shape[-3] != kf.shape[-3]:
        repeat = qf.shape[-3] // kf.shape[-3]
        kf, v_rel = kf.repeat_interleave(repeat, -3), v_rel.repeat_interleave(repeat, -3)
    mask = attn_mask.full if is_dec(attn_mask) else attn_mask
    weights = attention_weights(qf, kf, mask, is_causal, kwargs.get("scale"))
    return Decomposition(out, weights @ v_rel)


_MHA_SIGNATURE = inspect.signature(F.multi_head_attention_forward)


def multi_head_attention(func, args, kwargs):
    a = _MHA_SIGNATURE.bind(*args, **kwargs)
    a.apply_defaults()
    a = a.arguments
    _refuse_dropout(a["dropout_p"], a["training"])
    if a["static_k"] is not None or a["static_v"] is not None:
        raise DecompositionError("multi_head_attention_forward with static_k/static_v has no rule.")
    value = a["value"]
    # One call on the full activations gives the output and the per-head weights.
    out, weights = func(**{**fulls(a), "need_weights": True, "average_attn_weights": False})
    returned_weights = None
    if a["need_weights"]:
        returned_weights = weights.mean(dim=-3) if a["average_attn_weights"] else weights
    if not is_dec(value):  # only queries or keys decomposed: weights are constants
        return Decomposition(out, zero_rel(out, _groups(a["query"], a["key"]))), returned_weights
    return Decomposition(out, _attention_output_rel(a, value, weights, out)), returned_weights


def _attention_output_rel(a, value: Decomposition, weights: Tensor, out: Tensor) -> Tensor:
    """The relevant part of the attention output: weights @ (W_v beta_v + split b_v), heads
    merged, then the output projection with its bias split."""
    embed, heads = a["embed_dim_to_check"], a["num_heads"]
    if a["use_separate_proj_weight"]:
        w_v = a["v_proj_weight"]
    else:
        w_v = a["in_proj_weight"][2 * embed :]
    b_v = a["in_proj_bias"][2 * embed :] if a["in_proj_bias"] is not None else None
    full, rel = value.full, value.rel
    unbatched = full.ndim == 2
    if unbatched:  # (S, E) -> (S, 1, E); weights (H, L, S) -> (1, H, L, S)
        full, rel, weights, out = full.unsqueeze(1), rel.unsqueeze(2), weights.unsqueeze(0), out.unsqueeze(1)
    v_rel = F.linear(rel, w_v)
    if b_v is not None:
        v_rel = split_bias(v_rel, F.linear(full, w_v), b_v)
    groups, batch = v_rel.shape[0], v_rel.shape[2]
    constant_rows = int(a["bias_v"] is not None) + int(a["add_zero_attn"])
    if constant_rows:  # appended key/value positions are constants: irrelevant
        v_rel = torch.cat([v_rel, v_rel.new_zeros(groups, constant_rows, batch, embed)], dim=1)
    head_dim = embed // heads
    v_heads = v_rel.view(groups, -1, batch, heads, head_dim).permute(0, 2, 3, 1, 4)  # (G, N, H, S, d)
    merged = (weights @ v_heads).permute(0, 3, 1, 2, 4).reshape(groups, -1, batch, embed)  # (G, L, N, E)
    u = F.linear(merged, a["out_proj_weight"])
    bias = a["out_proj_bias"]
    rel_out = split_biased(u, out, bias) if bias is not None else u
    return rel_out.squeeze(2) if unbatched else rel_out


register_rule(F.scaled_dot_product_attention, scaled_dot_product_attention)
register_rule(F.multi_head_attention_forward, multi_head_attention)
