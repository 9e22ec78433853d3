"""Small reference models of the papers' experiments, and a plain training loop.

Ordinary ``nn.Module``s; nothing in the library depends on them. The CNNs are
``nn.Sequential`` with ReLU and pooling modules (see below); models written with
functional ReLUs and pooling in ``forward`` are in the tests.
"""

from typing import Optional, Tuple

import torch
import torch.nn.functional as F
from torch import nn, Tensor


# The CNNs use ReLU and pooling *modules*: Captum's DeepLift needs them to be correct,
# and the comparisons with it use these models. CD works either way.


def small_cnn(in_channels: int = 1, size: int = 8, classes: int = 10, width: int = 16) -> nn.Sequential:
    """Two conv-ReLU-max-pool blocks and a linear head, for small images
    (scikit-learn's 8x8 digits by default)."""
    return nn.Sequential(
        nn.Conv2d(in_channels, width, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(width, 2 * width, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(2 * width * (size // 4) ** 2, classes),
    )  # fmt: skip


def lenet(in_channels: int = 1, classes: int = 10, widths: Tuple[int, int] = (32, 64), hidden: int = 128) -> nn.Sequential:
    """LeNet-shaped CNN for 28x28 inputs: conv - pool - conv - pool - fc ``hidden`` - fc
    ``classes``, 5x5 convolutions of ``widths`` channels. The defaults are the benchmarks';
    the CDEP paper's code uses widths (20, 50) and hidden 256 (DecoyMNIST) or 500
    (ColorMNIST)."""
    return nn.Sequential(
        nn.Conv2d(in_channels, widths[0], 5), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(widths[0], widths[1], 5), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(widths[1] * 4 * 4, hidden), nn.ReLU(), nn.Linear(hidden, classes),
    )  # fmt: skip


def train_classifier(
    model: nn.Module,
    inputs: Tensor,
    labels: Tensor,
    epochs: int = 10,
    batch_size: int = 64,
    lr: float = 1e-3,
    seed: Optional[int] = 0,
    lengths: Optional[Tensor] = None,
) -> nn.Module:
    """Adam on cross-entropy, shuffled mini-batches; returns the model in eval mode.
    With ``lengths`` (padded token batches), each batch is cut to its longest sequence
    and the model is called as ``model(tokens, lengths)``."""
    generator = torch.Generator().manual_seed(seed) if seed is not None else None
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    model.train()
    for _ in range(epochs):
        for batch in torch.randperm(len(labels), generator=generator).split(batch_size):
            optimizer.zero_grad()
            F.cross_entropy(_forward(model, inputs, lengths, batch), labels[batch]).backward()
            optimizer.step()
    return model.eval()


def _forward(model: nn.Module, inputs: Tensor, lengths: Optional[Tensor], batch) -> Tensor:
    if lengths is None:
        return model(inputs[batch])
    return model(inputs[batch, : int(lengths[batch].max())], lengths[batch])


def accuracy(model: nn.Module, inputs: Tensor, labels: Tensor, lengths: Optional[Tensor] = None) -> float:
    """Accuracy in batches of 1,000 (``lengths`` as for :func:`train_classifier`)."""
    with torch.no_grad():
        predictions = [_forward(model, inputs, lengths, b).argmax(1) for b in torch.arange(len(labels)).split(1000)]
    return (torch.cat(predictions) == labels).float().mean().item()


class LSTMSentiment(nn.Module):
    """Embedding - LSTM - linear on the last real token's state, batch first: the CD
    paper's model for sentiment. ``forward(tokens, lengths=None)``; without lengths every
    sequence is taken to run to the end."""

    def __init__(self, vocab_size: int, embed_dim: int = 100, hidden: int = 128, classes: int = 2) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab_size, embed_dim, padding_idx=0)
        self.lstm = nn.LSTM(embed_dim, hidden, batch_first=True)
        self.out = nn.Linear(hidden, classes)

    def forward(self, tokens: Tensor, lengths: Optional[Tensor] = None) -> Tensor:
        states, _ = self.lstm(self.embed(tokens))
        if lengths is None:
            return self.out(states[:, -1])
        return self.out(states[torch.arange(tokens.shape[0]), lengths - 1])


class TransformerSentiment(nn.Module):
    """Embedding plus learned positions - ``nn.TransformerEncoder`` - mean over the real
    tokens - linear. Padding (token id 0) is masked out of attention and of the mean."""

    def __init__(self, vocab_size: int, dim: int = 64, heads: int = 4, layers: int = 2, max_len: int = 128, classes: int = 2) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab_size, dim, padding_idx=0)
        self.positions = nn.Embedding(max_len, dim)
        layer = nn.TransformerEncoderLayer(dim, heads, 2 * dim, dropout=0.1, batch_first=True)
        self.encoder = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        self.out = nn.Linear(dim, classes)

    def forward(self, tokens: Tensor, lengths: Optional[Tensor] = None) -> Tensor:
        padding = tokens == 0
        x = self.embed(tokens) + self.positions(torch.arange(tokens.shape[1], device=tokens.device))
        x = self.encoder(x, src_key_padding_mask=padding)
        keep = (~padding).unsqueeze(-1).to(x.dtype)
        return self.out((x * keep).sum(1) / keep.sum(1).clamp(min=1))
