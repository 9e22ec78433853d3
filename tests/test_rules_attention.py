"""The attention rules (captum_cd/attr/rules/attention.py) in transformers: encoder layers
against hand-written attention, scaled_dot_product_attention and MultiheadAttention
variants, a BERT-style encoder."""

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from captum_cd import ContextualDecomposition, token_masks


def sinusoidal(length, dim):
    position = torch.arange(length).unsqueeze(1)
    div = torch.exp(torch.arange(0, dim, 2) * (-math.log(10000.0) / dim))
    pe = torch.zeros(length, dim)
    pe[:, 0::2], pe[:, 1::2] = torch.sin(position * div), torch.cos(position * div)
    return pe


class TransformerClassifier(nn.Module):
    def __init__(self, norm_first, activation, pooling, positions, vocab=40, dim=8, length=7):
        super().__init__()
        self.embed = nn.Embedding(vocab, dim)
        self.pooling, self.positions = pooling, positions
        self.pos = nn.Embedding(length + 1, dim) if positions == "learned" else None
        self.register_buffer("table", sinusoidal(length + 1, dim))
        self.cls = nn.Parameter(torch.randn(1, 1, dim))
        layer = nn.TransformerEncoderLayer(dim, 2, 16, dropout=0.1, activation=activation, batch_first=True, norm_first=norm_first)
        self.encoder = nn.TransformerEncoder(layer, 2, enable_nested_tensor=False)
        self.head = nn.Linear(dim, 2)

    def forward(self, tokens, padding):  # padding: True where a token is padding
        x = self.embed(tokens)
        if self.pooling == "cls":
            x = torch.cat([self.cls.expand(x.shape[0], -1, -1), x], 1)
            padding = torch.cat([torch.zeros_like(padding[:, :1]), padding], 1)
        length = x.shape[1]
        x = x + (self.pos(torch.arange(length)) if self.positions == "learned" else self.table[:length])
        x = self.encoder(x, src_key_padding_mask=padding)
        if self.pooling == "cls":
            return self.head(x[:, 0])
        keep = (~padding).unsqueeze(-1).float()
        return self.head((x * keep).sum(1) / keep.sum(1))


@pytest.mark.parametrize("norm_first", [False, True])
@pytest.mark.parametrize("activation", ["relu", "gelu"])
@pytest.mark.parametrize("pooling, positions", [("cls", "learned"), ("mean", "sinusoidal")])
def test_transformer_classifier_complete(norm_first, activation, pooling, positions):
    model = TransformerClassifier(norm_first, activation, pooling, positions).eval()
    tokens = torch.randint(0, 40, (3, 6))
    padding = torch.zeros(3, 6, dtype=torch.bool)
    padding[0, 4:] = True
    cd = ContextualDecomposition(model, layer=model.embed)
    masks = token_masks([(0, 2), (2, 3), (0, 6)], 6)  # (G, T): broadcast over the embedding
    rel, irrel = cd.decompose(tokens, masks, additional_forward_args=(padding,))
    torch.testing.assert_close(rel + irrel, model(tokens, padding).expand_as(rel), atol=1e-4, rtol=1e-4)
    empty, _ = cd.decompose(tokens, torch.zeros(1, 6), additional_forward_args=(padding,))
    assert empty.abs().max() < 1e-5


def hand_written_encoder_layer(layer: nn.TransformerEncoderLayer, x, padding):
    """nn.TransformerEncoderLayer (post-norm, relu) written out: views, matmuls, softmax."""
    attn, dim = layer.self_attn, x.shape[-1]
    heads, head_dim = attn.num_heads, dim // attn.num_heads
    q, k, v = F.linear(x, attn.in_proj_weight, attn.in_proj_bias).chunk(3, -1)
    split = lambda t: t.view(t.shape[0], t.shape[1], heads, head_dim).transpose(1, 2)  # noqa: E731
    scores = split(q) @ split(k).transpose(-2, -1) / math.sqrt(head_dim)
    scores = scores.masked_fill(padding[:, None, None, :], float("-inf"))
    context = (scores.softmax(-1) @ split(v)).transpose(1, 2).reshape(x.shape)
    x = layer.norm1(x + attn.out_proj(context))
    return layer.norm2(x + layer.linear2(F.relu(layer.linear1(x))))


def test_attention_rule_equals_hand_written_attention():
    torch.manual_seed(2)
    layer = nn.TransformerEncoderLayer(8, 2, 16, batch_first=True).double().eval()
    x = torch.randn(3, 5, 8, dtype=torch.float64)
    padding = torch.zeros(3, 5, dtype=torch.bool)
    padding[1, 3:] = True
    masks = (torch.rand(4, 5, 1) > 0.5).double()
    by_rule, _ = ContextualDecomposition(lambda inp: layer(inp, src_key_padding_mask=padding)).decompose(x, masks)
    by_hand, _ = ContextualDecomposition(lambda inp: hand_written_encoder_layer(layer, inp, padding)).decompose(x, masks)
    torch.testing.assert_close(by_rule, by_hand, atol=1e-10, rtol=1e-8)


def test_scaled_dot_product_attention_and_mha_variants():
    torch.manual_seed(3)
    q_proj, v_proj = nn.Linear(8, 8), nn.Linear(8, 8)

    def sdpa_model(x):  # (B, H, T, d) heads, a causal mask
        q = q_proj(x).view(2, 4, 2, 4).transpose(1, 2)
        v = v_proj(x).view(2, 4, 2, 4).transpose(1, 2)
        return F.scaled_dot_product_attention(q, q, v, is_causal=True).sum((1, 2))

    x = torch.randn(2, 4, 8)
    rel, irrel = ContextualDecomposition(sdpa_model).decompose(x, (torch.rand(3, 4, 1) > 0.5).float())
    torch.testing.assert_close(rel + irrel, sdpa_model(x).expand_as(rel))
    for options in ({"add_bias_kv": True, "add_zero_attn": True}, {"kdim": 6, "vdim": 6}, {"bias": False}):
        mha = nn.MultiheadAttention(8, 2, batch_first=True, **options).eval()
        memory = torch.randn(2, 3, options.get("vdim", 8))

        def cross(inp):  # cross-attention to a constant memory, plus self-attention where dims allow
            out = mha(inp, memory, memory)[0]
            return out if "kdim" in options else out + mha(inp, inp, inp)[0]

        rel, irrel = ContextualDecomposition(cross).decompose(x, torch.ones(1, 4, 1))
        torch.testing.assert_close(rel + irrel, cross(x).expand_as(rel), atol=1e-5, rtol=1e-5)
    unbatched = nn.MultiheadAttention(8, 2).eval()
    f = lambda inp: unbatched(inp, inp, inp, need_weights=False)[0]  # noqa: E731
    rel, irrel = ContextualDecomposition(f).decompose(x[0], torch.ones(2, 4, 1))
    torch.testing.assert_close(rel + irrel, f(x[0]).expand_as(rel), atol=1e-5, rtol=1e-5)


class TinyBert(nn.Module):
    """A BERT-style encoder in plain torch: token + position + segment embeddings,
    LayerNorm, self-attention written out, GELU feed-forward, a tanh pooler on [CLS]."""

    def __init__(self, vocab=50, dim=16, heads=4, layers=2, length=12):
        super().__init__()
        self.tokens, self.positions, self.segments = nn.Embedding(vocab, dim), nn.Embedding(length, dim), nn.Embedding(2, dim)
        self.norm = nn.LayerNorm(dim)
        self.heads = heads
        self.blocks = nn.ModuleList(
            nn.ModuleDict({"qkv": nn.Linear(dim, 3 * dim), "out": nn.Linear(dim, dim), "norm1": nn.LayerNorm(dim),
                           "up": nn.Linear(dim, 4 * dim), "down": nn.Linear(4 * dim, dim), "norm2": nn.LayerNorm(dim)})
            for _ in range(layers)
        )  # fmt: skip
        self.pooler, self.classifier = nn.Linear(dim, dim), nn.Linear(dim, 3)

    def embeddings(self, ids, segments):
        positions = torch.arange(ids.shape[1])
        return self.norm(self.tokens(ids) + self.positions(positions) + self.segments(segments))

    def forward(self, ids, segments, attention_mask):
        x = self.embeddings(ids, segments)
        b, t, d = x.shape
        bias = (1.0 - attention_mask[:, None, None, :].float()) * -10000.0
        for block in self.blocks:
            q, k, v = block["qkv"](x).view(b, t, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
            weights = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(d // self.heads) + bias, dim=-1)
            x = block["norm1"](x + block["out"]((weights @ v).transpose(1, 2).reshape(b, t, d)))
            x = block["norm2"](x + block["down"](F.gelu(block["up"](x))))
        return self.classifier(torch.tanh(self.pooler(x[:, 0])))


def test_bert_style_encoder_complete():
    model = TinyBert().eval()
    ids, segments = torch.randint(0, 50, (2, 10)), torch.zeros(2, 10, dtype=torch.long)
    attention_mask = torch.ones(2, 10, dtype=torch.long)
    attention_mask[1, 7:] = 0
    cd = ContextualDecomposition(model, layer=model.tokens)
    masks = token_masks([(1, 3), (3, 6), (0, 10)], 10)
    rel, irrel = cd.decompose(ids, masks, additional_forward_args=(segments, attention_mask))
    torch.testing.assert_close(rel + irrel, model(ids, segments, attention_mask).expand_as(rel), atol=1e-4, rtol=1e-4)
    scores = cd.attribute(ids, target=0, additional_forward_args=(segments, attention_mask), feature_mask=torch.arange(10)[None])
    assert scores.shape == (2, 10, 16)  # the layer's output; every embedding dim holds its token's score
