"""Cost of CD on text models: 64 phrases of a 50-token sentence in one batched call.

Against a forward pass at batch 65 (the floor: one ordinary pass and 64 relevant parts)
and against 64 calls of the original ``acd.cd_text`` (one per phrase, LSTM only), in
one run, 2 threads (``--threads``), medians of interleaved repeats.

Models: an LSTM classifier (embedding 128, hidden 128, the original's layout) and a
2-layer transformer encoder (width 128, 4 heads, feed-forward 256, mean pooling).

    python benchmarks/text_speed.py [--quick] [--threads N]
"""

import argparse
import copy
import types
import warnings

import torch
from torch import nn

from captum_cd import ContextualDecomposition, token_masks

try:
    from benchmarks._timing import median_times, print_table
except ImportError:
    from _timing import median_times, print_table

LENGTH, VOCAB = 50, 1000


class LSTMClassifier(nn.Module):
    """Sequence-first, as ``acd.cd_text`` expects (embed, lstm, hidden_to_label)."""

    def __init__(self, dim=128):
        super().__init__()
        self.embed, self.lstm, self.hidden_to_label = nn.Embedding(VOCAB, dim), nn.LSTM(dim, dim), nn.Linear(dim, 2)
        self.hidden_dim = dim

    def forward(self, text):
        return self.hidden_to_label(self.lstm(self.embed(text))[0][-1])


class TransformerClassifier(nn.Module):
    def __init__(self, dim=128):
        super().__init__()
        self.embed, self.pos = nn.Embedding(VOCAB, dim), nn.Embedding(LENGTH, dim)
        layer = nn.TransformerEncoderLayer(dim, 4, 256, batch_first=True)
        self.encoder = nn.TransformerEncoder(layer, 2, enable_nested_tensor=False)
        self.head = nn.Linear(dim, 2)

    def forward(self, tokens):
        x = self.embed(tokens) + self.pos(torch.arange(tokens.shape[1]))
        return self.head(self.encoder(x).mean(1))


def phrases(n=64, seed=0):
    g = torch.Generator().manual_seed(seed)
    starts = torch.randint(0, LENGTH - 5, (n,), generator=g)
    lengths = torch.randint(1, 6, (n,), generator=g)
    return [(int(s), int(s + k)) for s, k in zip(starts, lengths)]


def run(quick: bool, threads: int = 2) -> dict:
    torch.manual_seed(0)
    torch.set_num_threads(threads)
    warnings.filterwarnings("ignore")
    repeats = 3 if quick else 20
    spans = phrases()
    masks = token_masks(spans, LENGTH)
    results = {}

    lstm = LSTMClassifier().eval()
    text = torch.randint(0, VOCAB, (LENGTH, 1))
    text65 = torch.randint(0, VOCAB, (LENGTH, 65))
    cd = ContextualDecomposition(lstm, layer=lstm.embed)
    cases = {
        "forward (batch 65)": lambda: _no_grad(lstm, text65),
        "CD, 64 phrases": lambda: _no_grad(cd.decompose, text, masks[:, :, None, None]),
    }
    try:
        import acd

        original = copy.deepcopy(lstm)
        batch = types.SimpleNamespace(text=text)
        calls = lambda: [acd.cd_text(batch, original, s, e - 1) for s, e in spans]  # noqa: E731
        cases["acd 0.0.2 cd_text, 64 calls"] = lambda: _no_grad(calls)
    except ImportError:
        pass
    results["LSTM (embedding 128, hidden 128), 50 tokens"] = median_times(cases, repeats)

    transformer = TransformerClassifier().eval()
    tokens, tokens65 = torch.randint(0, VOCAB, (1, LENGTH)), torch.randint(0, VOCAB, (65, LENGTH))
    cd = ContextualDecomposition(transformer, layer=transformer.embed)
    cases = {
        "forward (batch 65)": lambda: _no_grad(transformer, tokens65),
        "CD, 64 phrases": lambda: _no_grad(cd.decompose, tokens, masks),
    }
    results["Transformer (2 layers, width 128), 50 tokens"] = median_times(cases, repeats)
    return results


def _no_grad(fn, *args):
    with torch.no_grad():
        return fn(*args)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--threads", type=int, default=2, help="1 gives steadier ratios on a machine other jobs load")
    args = parser.parse_args()
    print(f"{args.threads} thread(s), medians of {3 if args.quick else 20} interleaved repeats")
    for title, times in run(args.quick, args.threads).items():
        base = next(iter(times.values()))
        print_table(title, [(n, f"{t * 1e3:.2f}", f"{t / base:.2f}x") for n, t in times.items()], ["method", "median ms", "ratio to forward"])
