"""A differential fuzzer for contextual decomposition: seeded random small models, written
the ways people write them, checked against invariants that any correct CD satisfies.

Models: ``nn.Sequential`` stacks (MLPs, 1-D and 2-D CNNs with convolutions of every stride,
dilation, padding and groups, batch/layer/group norm, pooling) and functional code
(residuals, a module used twice, views, cat/split, gates and products, hand-written
normalisation and GELU, attention by hand, by SDPA and by ``nn.MultiheadAttention``,
recurrent layers, ``sqrt``/``log1p``/``exp`` of expressions, in-place ops, selection by
``topk``/``logsumexp`` pooling). Inputs have blank (exactly zero) regions.

Invariants, each a function of one generated case (:data:`CHECKS`):

- completeness: ``relevant + irrelevant`` equals the model's output;
- exactness: a bias-free linear model gives ``model(m * x)``; an ``nn.Sequential`` of the
  classic layers equals the straight-line reference (``tests/reference_cd.py``);
- empty: an all-zero mask, and a group of blank features, score exactly 0;
- batch: each example decomposed alone equals its row of the batch;
- groups: each group decomposed alone equals its row, with spatial windows on and off;
- untouched: two calls give bitwise equal parts, and the model's parameters, buffers,
  version counters and modes are unchanged;
- float32: float32 and float64 agree within ``F32_MULTIPLE`` times the model's own
  float32 error (:func:`check_float32`);
- attribute: ``attribute`` with a feature mask equals the target scores of ``decompose``.

Run ``python tests/fuzz_models.py --models 2000 --seed 1`` for a larger run than the
suite's (tests/test_fuzz.py); it prints every failure with its seed, which rebuilds it:
``python tests/fuzz_models.py --case 1234``.
"""

import argparse
import copy
import math
import os
import random
import sys
import time
import traceback
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import nn

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from reference_cd import AFFINE, BATCHNORM, LINEAR, MAXPOOL, RELU_FORM, reference_cd, SHAPLEY_FORM  # noqa: E402

from captum_cd import ContextualDecomposition  # noqa: E402
from captum_cd.attr.windows import spatial_windows  # noqa: E402

DT = torch.float64
TOLERANCE = 1e-9  # float64 invariants, relative to the output's largest magnitude
# float32 against float64: the largest deviation of a relevant part, relative to the
# output's largest magnitude, at most this multiple of the model's own (see check_float32;
# the zoo tests hold the same bound, tests/_zoo.py).
F32_MULTIPLE = 1e5


@dataclass
class Case:
    """A generated model with its input (blank regions included) and groups."""

    seed: int
    kind: str
    model: nn.Module
    x: torch.Tensor  # float64
    masks: torch.Tensor  # (G, *features); row 0 is empty, row 1 covers only blank features
    linear: bool  # bias-free and linear: CD must give model(m * x)
    sequential: bool  # a stack of the reference's layers

    def cd(self, model=None, x=None, masks=None):
        model = self.model if model is None else model
        return ContextualDecomposition(model).decompose(self.x if x is None else x, self.masks if masks is None else masks)


# ---------------------------------------------------------------------- building blocks


class Program(nn.Module):
    """Functional code: ``forward`` runs a list of steps ``h = step(self, h)``."""

    def __init__(self, steps: List[Callable], modules: Dict[str, nn.Module]):
        super().__init__()
        self.steps = steps
        self.parts = nn.ModuleDict(modules)

    def forward(self, x):
        h = x
        for step in self.steps:
            h = step(self.parts, h)
        return h


def _activation(rng: random.Random) -> Tuple[Callable, bool]:
    """A random elementwise nonlinearity written one of the ways people write it."""
    choices = [
        lambda h: F.relu(h), lambda h: torch.relu(h.clone()).clone(), lambda h: F.gelu(h), lambda h: torch.tanh(h),
        lambda h: torch.sigmoid(h), lambda h: F.silu(h), lambda h: h * torch.sigmoid(h), lambda h: F.softplus(h),
        lambda h: F.elu(h), lambda h: F.leaky_relu(h, 0.1), lambda h: 0.5 * h * (1 + torch.tanh(0.79788 * (h + 0.044715 * h**3))),
        lambda h: torch.clamp(h, -1.0, 2.0), lambda h: F.hardtanh(h), lambda h: F.mish(h),
        lambda h: 1 / (1 + torch.exp(-h)), lambda h: h / (1 + torch.exp(-h)),
    ]  # fmt: skip
    return rng.choice(choices)


def _domain_function(rng: random.Random) -> Callable:
    return rng.choice([
        lambda h: torch.sqrt(h * h + 1), lambda h: torch.log1p(h.abs()), lambda h: torch.exp(-h * h),
        lambda h: torch.rsqrt(h * h + 0.5), lambda h: h.abs() ** 1.5, lambda h: torch.sqrt(F.relu(h) + 0.1),
        lambda h: 1 / (1 + torch.exp(-h)), lambda h: torch.log(h * h + 1),
    ])  # fmt: skip


def _vector_steps(rng: random.Random, width: int, modules: dict, linear: bool) -> Tuple[List[Callable], int, bool]:
    """Steps on (B, width) activations; returns the steps, the final width and whether
    the program stays bias-free linear."""
    steps, n = [], rng.randint(2, 5)
    for i in range(n):
        kind = rng.choice(["linear", "residual", "reuse", "gate", "split_cat", "view", "norm", "domain", "constant", "inplace", "bilinear"])
        if linear:
            kind = rng.choice(["linear", "view", "split_cat", "reuse"])
        name = f"l{i}"
        out = rng.choice([width, 6, 8, 12])
        if kind == "linear":
            modules[name] = nn.Linear(width, out, bias=not linear)
            act = None if linear else _activation(rng)
            steps.append(lambda m, h, name=name, act=act: (act or (lambda t: t))(m[name](h)))
            width = out
        elif kind == "residual":
            modules[name] = nn.Linear(width, width)
            act = _activation(rng)
            steps.append(lambda m, h, name=name, act=act: h + act(m[name](h)))
        elif kind == "reuse":  # one module used twice
            modules[name] = nn.Linear(width, width, bias=not linear)
            act = (lambda t: t) if linear else _activation(rng)
            steps.append(lambda m, h, name=name, act=act: m[name](act(m[name](h))))
        elif kind == "gate":
            modules[name] = nn.Linear(width, width)
            steps.append(lambda m, h, name=name: h * torch.sigmoid(m[name](h)))
        elif kind == "bilinear":  # a gated MLP: two full-shape factors
            modules[name], modules[name + "b"] = nn.Linear(width, width), nn.Linear(width, width)
            steps.append(lambda m, h, name=name: F.silu(m[name](h)) * m[name + "b"](h))
        elif kind == "split_cat" and width >= 2:
            k = rng.randint(1, width - 1)
            act = (lambda t: 2 * t) if linear else _activation(rng)
            steps.append(lambda m, h, k=k, act=act: torch.cat([act(h[:, :k]), h[:, k:] * 0.5], dim=1))
        elif kind == "view" and width % 2 == 0:
            steps.append(lambda m, h, w=width: h.view(h.shape[0], 2, w // 2).transpose(1, 2).reshape(h.shape[0], w))
        elif kind == "norm":
            choice = rng.choice(["batch", "layer", "hand", "std"])
            if choice == "batch":
                modules[name] = _random_statistics(nn.BatchNorm1d(width), rng)
                steps.append(lambda m, h, name=name: m[name](h))
            elif choice == "layer":
                modules[name] = nn.LayerNorm(width)
                steps.append(lambda m, h, name=name: m[name](h))
            elif choice == "hand" and width > 1:
                steps.append(lambda m, h: (h - h.mean(-1, keepdim=True)) / torch.sqrt(h.var(-1, keepdim=True, unbiased=False) + 1e-5))
            elif width > 1:
                steps.append(lambda m, h: (h - h.mean(-1, keepdim=True)) / (h.std(-1, keepdim=True) + 1e-3))
        elif kind == "domain":
            steps.append(lambda m, h, f=_domain_function(rng): f(h))
        elif kind == "constant":
            c = rng.choice([1.5, -0.7, 3.0])
            steps.append(rng.choice([lambda m, h, c=c: h + c, lambda m, h, c=c: c - h, lambda m, h, c=c: h * c + 1]))
        elif kind == "inplace":
            modules[name] = nn.Linear(width, width)
            steps.append(lambda m, h, name=name: _inplace(m[name], h))
    return steps, width, linear


def _inplace(layer: nn.Module, h: torch.Tensor) -> torch.Tensor:
    y = layer(h)
    y += h
    F.relu(y, inplace=True)
    y[:, :1] *= 2
    return y


def _random_statistics(bn: nn.Module, rng: random.Random) -> nn.Module:
    g = torch.Generator().manual_seed(rng.randrange(2**31))
    with torch.no_grad():
        bn.running_mean.copy_(torch.randn(bn.num_features, generator=g) * 0.5)
        bn.running_var.copy_(torch.rand(bn.num_features, generator=g) + 0.5)
        bn.weight.copy_(torch.randn(bn.num_features, generator=g) * 0.3 + 1)
        bn.bias.copy_(torch.randn(bn.num_features, generator=g) * 0.5)
    return bn


def _conv(rng: random.Random, channels: int, size: int, dims: int, bias: bool) -> Tuple[nn.Module, int, int]:
    """A convolution with random kernel, stride, dilation, padding and groups."""
    out = rng.choice([channels, 4, 6])
    groups = rng.choice([g for g in (1, 2, channels) if channels % g == 0 and out % g == 0])
    kernel, stride, dilation = rng.choice([1, 2, 3]), rng.choice([1, 1, 2]), rng.choice([1, 1, 2])
    padding = rng.choice([0, kernel // 2 * dilation] + (["same"] if stride == 1 else []))
    conv = (nn.Conv1d if dims == 1 else nn.Conv2d)(channels, out, kernel, stride, padding, dilation, groups, bias=bias)
    reach = dilation * (kernel - 1)
    size = size if padding == "same" else (size + 2 * padding - reach - 1) // stride + 1
    return conv, out, size


def _map_steps(rng: random.Random, channels: int, size: int, dims: int, modules: dict, linear: bool):
    """Steps on (B, C, *map) activations, ``dims`` map dimensions of side ``size``."""
    steps = []
    for i in range(rng.randint(2, 4)):
        name = f"c{i}"
        kind = "conv" if linear else rng.choice(["conv", "conv", "block", "pool", "norm", "gate", "act"])
        if kind in ("conv", "block"):
            conv, out, new_size = _conv(rng, channels, size, dims, bias=not linear)
            if new_size < 2:
                continue
            modules[name] = conv
            if kind == "block" and out == channels and new_size == size:
                modules[name + "n"] = _random_statistics((nn.BatchNorm1d if dims == 1 else nn.BatchNorm2d)(out), rng)
                steps.append(lambda m, h, name=name: _residual(m[name], m[name + "n"], h))
            else:
                act = None if linear else _activation(rng)
                steps.append(lambda m, h, name=name, act=act: (act or (lambda t: t))(m[name](h)))
                channels, size = out, new_size
        elif kind == "pool" and size >= 4:
            ceil = rng.random() < 0.3
            pool = rng.choice([F.max_pool1d if dims == 1 else F.max_pool2d, F.avg_pool1d if dims == 1 else F.avg_pool2d])
            steps.append(lambda m, h, pool=pool, ceil=ceil: pool(h, 2, ceil_mode=ceil))
            size = math.ceil(size / 2) if ceil else size // 2
        elif kind == "norm":
            if rng.random() < 0.5:
                modules[name] = _random_statistics((nn.BatchNorm1d if dims == 1 else nn.BatchNorm2d)(channels), rng)
            else:  # (not one channel a group: see the note on instance norm in docs/methods.md)
                modules[name] = nn.GroupNorm(2 if channels % 2 == 0 and channels > 2 else 1, channels)
            steps.append(lambda m, h, name=name: m[name](h))
        elif kind == "gate":  # squeeze and excitation
            modules[name] = nn.Linear(channels, channels)
            steps.append(lambda m, h, name=name, d=dims: h * torch.sigmoid(m[name](h.mean(tuple(range(2, 2 + d))))).view(*h.shape[:2], *([1] * d)))
        elif kind == "act":
            steps.append(lambda m, h, act=_activation(rng): act(h))
    return steps, channels, size


def _residual(conv: nn.Module, norm: nn.Module, h: torch.Tensor) -> torch.Tensor:
    y = norm(conv(F.relu(h)))
    y += h
    return y


def _head(rng: random.Random, steps: list, channels: int, size: int, dims: int, modules: dict, linear: bool) -> None:
    """Map activations to (B, 3) outputs: flatten and a linear layer, or global pooling."""
    choice = "flatten" if linear else rng.choice(["flatten", "avg", "max", "logsumexp", "topk"])
    if choice == "flatten":
        modules["head"] = nn.Linear(channels * size**dims, 3, bias=not linear)
        steps.append(lambda m, h: m["head"](h.flatten(1)))
        return
    modules["head"] = nn.Linear(channels, 3)
    pool = {
        "avg": lambda h: h.flatten(2).mean(-1),
        "max": lambda h: h.flatten(2).amax(-1),
        "logsumexp": lambda h: torch.logsumexp(h.flatten(2), -1),
        "topk": lambda h: h.flatten(2).topk(min(2, h.flatten(2).shape[-1]), dim=-1).values.mean(-1),
    }[choice]
    steps.append(lambda m, h, pool=pool: m["head"](pool(h)))


def _sequence_steps(rng: random.Random, width: int, modules: dict):
    """Steps on (B, T, width) token activations ending in (B, 3)."""
    steps = []
    heads = rng.choice([1, 2])
    for i in range(rng.randint(1, 3)):
        name = f"s{i}"
        kind = rng.choice(["attention", "sdpa", "mha", "encoder", "recurrent", "ffn"])
        if kind in ("attention", "sdpa"):
            modules[name] = nn.Linear(width, 3 * width)
            causal = rng.random() < 0.5
            steps.append(lambda m, h, name=name, kind=kind, causal=causal: h + _attention(m[name](h), heads, kind, causal))
        elif kind == "mha":
            modules[name] = nn.MultiheadAttention(width, heads, batch_first=True)
            steps.append(lambda m, h, name=name: h + m[name](h, h, h, need_weights=False)[0])
        elif kind == "encoder":
            modules[name] = nn.TransformerEncoderLayer(width, heads, 2 * width, dropout=0.0, batch_first=True, norm_first=rng.random() < 0.5)
            steps.append(lambda m, h, name=name: m[name](h))
        elif kind == "recurrent":
            modules[name] = rng.choice([nn.LSTM, nn.GRU, nn.RNN])(width, width, batch_first=True)
            steps.append(lambda m, h, name=name: m[name](h)[0])
        else:
            modules[name], modules[name + "o"] = nn.Linear(width, 2 * width), nn.Linear(2 * width, width)
            modules[name + "n"] = nn.LayerNorm(width)
            steps.append(lambda m, h, name=name, act=_activation(rng): h + m[name + "o"](act(m[name](m[name + "n"](h)))))
    modules["head"] = nn.Linear(width, 3)
    last = rng.choice(["mean", "last", "max"])
    steps.append(lambda m, h, last=last: m["head"](h.mean(1) if last == "mean" else h[:, -1] if last == "last" else h.max(1).values))
    return steps


def _attention(qkv: torch.Tensor, heads: int, kind: str, causal: bool) -> torch.Tensor:
    b, t, three = qkv.shape
    q, k, v = (p.reshape(b, t, heads, -1).transpose(1, 2) for p in qkv.split(three // 3, dim=-1))
    if kind == "sdpa":
        out = F.scaled_dot_product_attention(q, k, v, is_causal=causal)
    else:
        scores = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])
        if causal:
            scores = scores.masked_fill(torch.ones(t, t, dtype=torch.bool).triu(1), float("-inf"))
        out = scores.softmax(-1) @ v
    return out.transpose(1, 2).reshape(b, t, -1)


# ---------------------------------------------------------------------- cases


def _sequential(rng: random.Random, kind: str) -> Tuple[nn.Module, Tuple[int, ...]]:
    """An ``nn.Sequential`` of the layers the straight-line reference knows."""
    acts = [nn.ReLU(), nn.Tanh(), nn.Sigmoid(), nn.GELU(), nn.SiLU(), nn.ELU(), nn.Softplus(), nn.LeakyReLU(0.1)]
    if kind == "sequential mlp":
        width, layers = rng.choice([5, 8]), []
        features = (width,)
        for _ in range(rng.randint(1, 3)):
            out = rng.choice([4, 8])
            layers += [nn.Linear(width, out), rng.choice(acts)]
            if rng.random() < 0.4:
                layers.append(_random_statistics(nn.BatchNorm1d(out), rng))
            width = out
        return nn.Sequential(*layers, nn.Linear(width, 3)), features
    channels, size, layers = 2, 8, []
    for _ in range(rng.randint(1, 2)):
        conv, out, new_size = _conv(rng, channels, size, 2, bias=True)
        if conv.padding == "same" or new_size < 2:
            continue
        layers += [conv, rng.choice(acts)]
        if rng.random() < 0.5:
            layers.append(_random_statistics(nn.BatchNorm2d(out), rng))
        if new_size >= 4 and rng.random() < 0.5:
            layers.append(rng.choice([nn.MaxPool2d(2), nn.AvgPool2d(2)]))
            new_size //= 2
        channels, size = out, new_size
    return nn.Sequential(*layers, nn.Flatten(), nn.Linear(channels * size * size, 3)), (2, 8, 8)


def build(seed: int) -> Case:
    """The case of ``seed``: one model, its float64 input with blank regions, and groups."""
    rng = random.Random(seed)
    torch.manual_seed(seed)
    kind = rng.choice(["mlp", "mlp", "cnn2d", "cnn2d", "cnn1d", "sequence", "linear", "sequential mlp", "sequential cnn"])
    modules: dict = {}
    linear = kind == "linear"
    if kind.startswith("sequential"):
        model, features = _sequential(rng, kind)
    elif kind in ("mlp", "linear") and rng.random() < 0.5:
        width = rng.choice([5, 8])
        steps, out, linear = _vector_steps(rng, width, modules, linear)
        modules["head"] = nn.Linear(out, 3, bias=not linear)
        steps.append(lambda m, h: m["head"](h))
        model, features = Program(steps, modules), (width,)
    elif kind in ("cnn2d", "cnn1d", "linear"):
        dims = 1 if kind == "cnn1d" or (linear and rng.random() < 0.5) else 2
        channels, size = 2, rng.choice([8, 10] if dims == 1 else [8, 10, 32])  # (32: windows engage)
        steps, channels_out, size_out = _map_steps(rng, channels, size, dims, modules, linear)
        _head(rng, steps, channels_out, size_out, dims, modules, linear)
        model, features = Program(steps, modules), (channels,) + (size,) * dims
    else:
        width = rng.choice([4, 8])
        model, features = Program(_sequence_steps(rng, width, modules), modules), (rng.choice([3, 5]), width)
    model = model.to(DT).eval()
    for p in model.parameters():
        p.requires_grad_(False)
    batch = rng.choice([1, 2, 3])
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, *features, generator=g, dtype=DT)
    blank = tuple(slice(0, max(1, s // 3)) for s in features)
    x[(slice(None),) + blank] = 0  # a blank corner (the first features, the first tokens)
    groups = rng.randint(3, 6)
    if len(features) == 3 and features[1] >= 32:  # blocks of an image: local groups run in windows
        masks = torch.zeros(groups + 2, *features, dtype=DT)
        for i in range(2, groups + 2):
            top, left = rng.randrange(0, features[1] - 1), rng.randrange(0, features[2] - 1)
            masks[i, :, top : top + 2, left : left + 2] = 1
    else:
        masks = (torch.rand(groups, *features, generator=g) > 0.5).to(DT)
    masks[0] = 0
    masks[1] = 0
    masks[(1,) + blank] = 1  # blank features only
    sequential = isinstance(model, nn.Sequential)
    return Case(seed, kind, model, x, masks, linear, sequential)


# ---------------------------------------------------------------------- invariants


def _scale(out: torch.Tensor) -> float:
    return float(out.abs().max()) + 1e-12


def _close(a: torch.Tensor, b: torch.Tensor, scale: float, tolerance: float = TOLERANCE) -> Optional[str]:
    deviation = float((a - b).abs().max()) if a.numel() else 0.0
    if not deviation <= tolerance * scale:  # (NaN fails too)
        return f"off by {deviation:.3g} ({deviation / scale:.3g} of the output's scale)"
    return None


def check_completeness(case: Case) -> Optional[str]:
    rel, irrel = case.cd()
    with torch.no_grad():
        out = case.model(case.x)
    if not torch.isfinite(rel).all():
        return "non-finite relevant parts"
    return _close(rel + irrel, out.expand_as(rel), _scale(out))


def check_exactness(case: Case) -> Optional[str]:
    rel, _ = case.cd()
    scale = _scale(case.model(case.x))
    if case.linear:
        with torch.no_grad():
            expected = torch.stack([case.model(m * case.x) for m in case.masks])
        return _close(rel, expected, scale)
    if case.sequential:
        expected = torch.stack([reference_cd(case.model, case.x, m)[0] for m in case.masks])
        return _close(rel, expected, scale)
    return None


def check_empty(case: Case) -> Optional[str]:
    rel, _ = case.cd()
    if not torch.equal(rel[:2], torch.zeros_like(rel[:2])):
        return f"an empty or blank group scores {float(rel[:2].abs().max()):.3g}, not exactly 0"
    return None


def check_batch(case: Case) -> Optional[str]:
    if case.x.shape[0] == 1:
        return None
    rel, _ = case.cd()
    scale = _scale(case.model(case.x))
    for i in range(case.x.shape[0]):
        alone, _ = case.cd(x=case.x[i : i + 1])
        problem = _close(alone[:, 0], rel[:, i], scale)
        if problem:
            return f"example {i} alone: {problem}"
    return None


def check_groups(case: Case) -> Optional[str]:
    scale = _scale(case.model(case.x))
    for windows in (True, False):
        with spatial_windows(windows):
            rel, _ = case.cd()
            for g in (1, case.masks.shape[0] - 1):  # the blank group and a random one
                alone, _ = case.cd(masks=case.masks[g : g + 1])
                problem = _close(alone[0], rel[g], scale)
                if problem:
                    return f"group {g} alone (windows {'on' if windows else 'off'}): {problem}"
    return None


def check_untouched(case: Case) -> Optional[str]:
    before = _state(case.model)
    first, second = case.cd(), case.cd()
    if not (torch.equal(first[0], second[0]) and torch.equal(first[1], second[1])):
        return "two calls differ"
    after = _state(case.model)
    if before[1:] != after[1:] or not all(torch.equal(a, b) for a, b in zip(before[0], after[0])):
        return "the model changed"
    return None


def _state(model: nn.Module):
    """Values, and what must equal: names, version counters, requires_grad, modes."""
    items = model.state_dict(keep_vars=True).items()
    return [v.detach().clone() for _, v in items], [(k, v._version, v.requires_grad) for k, v in items], [m.training for m in model.modules()]


def check_float32(case: Case) -> Optional[str]:
    """float32 against float64: the largest deviation of a relevant part at most
    ``F32_MULTIPLE`` times the model's own float32 error (both relative to the output's
    largest magnitude; the model's at least 2^-24). The bias split turns the rounding by
    which the relevant and the ordinary pass differ into a share of the bias, |b| du / (|u|
    + |v|), large where a pre-activation is near 0: CD's float32 error is a large multiple
    of the model's (docs/guarantees.md)."""
    model32 = copy.deepcopy(case.model).float()
    rel32, _ = ContextualDecomposition(model32).decompose(case.x.float(), case.masks.float())
    rel64, _ = case.cd()
    with torch.no_grad():
        out64, out32 = case.model(case.x), model32(case.x.float()).double()
    scale = _scale(out64)
    own = max(float((out32 - out64).abs().max()) / scale, 2.0**-24)
    return _close(rel32.double(), rel64, scale, F32_MULTIPLE * own)


def check_attribute(case: Case) -> Optional[str]:
    """attribute with a feature mask (groups: the masks' features, disjoint) equals decompose."""
    features = case.x.shape[1:]
    ids = torch.arange(features.numel()).view(features) % 3  # three interleaved groups
    masks = torch.stack([(ids == i).to(DT) for i in range(3)])
    target = 1
    scores = ContextualDecomposition(case.model).attribute(case.x, target=target, feature_mask=ids.unsqueeze(0))
    rel, _ = case.cd(masks=masks)
    expected = rel[..., target].t()  # (B, 3 groups)
    got = torch.stack([scores[(slice(None),) + tuple(int(i) for i in (ids == g).nonzero()[0])] for g in range(3)], 1)
    return _close(got, expected, _scale(case.model(case.x)))


CHECKS: Dict[str, Callable[[Case], Optional[str]]] = {
    "completeness": check_completeness,
    "exactness": check_exactness,
    "empty": check_empty,
    "batch": check_batch,
    "groups": check_groups,
    "untouched": check_untouched,
    "float32": check_float32,
    "attribute": check_attribute,
}


def run(seeds, checks=CHECKS, log=None) -> List[Tuple[int, str, str, str]]:
    """Every check on the case of every seed; returns the failures (seed, kind, check, why).
    An exception is a failure of the check it came from."""
    failures = []
    for seed in seeds:
        case = build(seed)
        for name, check in checks.items():
            try:
                problem = check(case)
            except Exception as error:  # noqa: BLE001 - every error is a finding
                problem = f"raised {type(error).__name__}: {str(error).splitlines()[0][:300]}"
                if log:
                    traceback.print_exc(file=log)
            if problem:
                failures.append((seed, case.kind, name, problem))
                if log:
                    print(f"seed {seed} ({case.kind}) {name}: {problem}", file=log, flush=True)
    return failures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", type=int, default=500)
    parser.add_argument("--seed", type=int, default=0, help="the first case's seed; cases are seed, seed + 1, ...")
    parser.add_argument("--case", type=int, help="run the case of this seed only, with tracebacks")
    args = parser.parse_args()
    torch.set_num_threads(1)
    seeds = [args.case] if args.case is not None else range(args.seed, args.seed + args.models)
    start = time.perf_counter()
    failures = run(seeds, log=sys.stdout if args.case is not None else None)
    kinds: Dict[str, int] = {}
    for seed in seeds:
        kind = build(seed).kind
        kinds[kind] = kinds.get(kind, 0) + 1
    print(f"{len(seeds)} models (seeds {seeds[0]}..{seeds[-1]}), {len(CHECKS)} checks each, {time.perf_counter() - start:.0f} s")
    print("models by kind: " + ", ".join(f"{k} {n}" for k, n in sorted(kinds.items())))
    for seed, kind, name, why in failures:
        print(f"FAIL seed {seed} ({kind}) {name}: {why}")
    print(f"{len(failures)} failures")


if __name__ == "__main__":
    main()
