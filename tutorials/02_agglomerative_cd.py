# %% [markdown]
# # Hierarchical interpretations with AgglomerativeCD
#
# Agglomerative contextual decomposition (ACD) builds, for one prediction, a hierarchy of
# feature groups: which words join into phrases, which pixels into regions, with a CD
# score at every node. This tutorial builds hierarchies for
#
# 1. sentences of the Stanford Sentiment Treebank with an LSTM trained on it, and
# 2. digits with a small CNN,
#
# saves the pictures, and plugs a level of the hierarchy into Captum's visualisation.
# Run it in Jupyter, or as a script (`python 02_agglomerative_cd.py`); `CAPTUM_CD_QUICK=1` makes a
# shorter run (the test suite and the documentation site use it), `CAPTUM_CD_OUT` says
# where pictures and results go (default `outputs/`).

# %%
import collections
import json
import os
import re
import time
import warnings

import matplotlib.pyplot as plt
import sklearn.datasets
import torch
import torch.nn.functional as F
from captum.attr import visualization
from IPython.display import display
from torch import nn

from captum_cd import AgglomerativeCD, ContextualDecomposition, token_masks

QUICK = os.environ.get("CAPTUM_CD_QUICK") == "1"  # a shorter run: the test suite and the documentation site use it
OUT = os.environ.get("CAPTUM_CD_OUT", "outputs")  # pictures and results are written here
os.makedirs(OUT, exist_ok=True)
warnings.filterwarnings("ignore")
torch.manual_seed(0)
torch.set_num_threads(2)


def show(figure, path, **savefig_kwargs):
    """Writes the figure to ``path`` and shows it (inline in a notebook)."""
    figure.savefig(path, **savefig_kwargs)
    display(figure)
    plt.close(figure)  # shown once



# %% [markdown]
# ## Data and a training loop
# Plain PyTorch, written out here so that the notebook runs from any folder.

# %%
# The treebank's train.txt and test.txt: CAPTUM_CD_SST, else ../shared/data/sst seen from
# the repository's root or from tutorials/.
SST = os.environ.get("CAPTUM_CD_SST") or next((p for p in ("../shared/data/sst", "../../shared/data/sst") if os.path.isdir(p)), "sst")
Phrase = collections.namedtuple("Phrase", "start stop fine_label label")  # label: 0 or 1, None for neutral
Sentence = collections.namedtuple("Sentence", "tokens label phrases")
ESCAPED = {"-LRB-": "(", "-RRB-": ")", "-LSB-": "[", "-RSB-": "]", "-LCB-": "{", "-RCB-": "}"}


def read_sst(split):
    """The binary task: every non-neutral sentence of a split, lowercased, with every node
    of its tree as a Phrase (the root first). A line is a tree in the PTB format, a label
    0-4 (very negative ... very positive) at every node: ``(3 (2 not) (3 (2 too) (3 bad)))``."""
    sentences = []
    with open(os.path.join(SST, f"{split}.txt"), encoding="utf-8") as f:
        for line in f:
            parts = re.findall(r"[()]|[^ \t\r\n()]+", line)
            tokens, phrases, open_nodes, i = [], [], [], 0
            while i < len(parts):
                if parts[i] == "(":  # a node: its label follows
                    open_nodes.append((len(tokens), int(parts[i + 1]), len(phrases)))
                    phrases.append(None)
                    i += 2
                    continue
                if parts[i] == ")":
                    start, fine, index = open_nodes.pop()
                    phrases[index] = Phrase(start, len(tokens), fine, None if fine == 2 else int(fine > 2))
                else:
                    word = parts[i]
                    tokens.append(ESCAPED.get(word) or word.replace("\\/", "/").replace("\\*", "*").lower())
                i += 1
            if phrases and phrases[0].label is not None:
                sentences.append(Sentence(tokens, phrases[0].label, phrases))
    return sentences


class Vocab:
    """Token ids: 0 padding, 1 unknown, then the words of ``sentences`` in alphabetical order."""

    PAD, UNK = 0, 1

    def __init__(self, sentences):
        self.itos = ["<pad>", "<unk>"] + sorted({t for s in sentences for t in s.tokens})
        self.stoi = {t: i for i, t in enumerate(self.itos)}

    def __len__(self):
        return len(self.itos)

    def encode(self, tokens):
        return [self.stoi.get(t, self.UNK) for t in tokens]


def encode(sentences, vocab, max_len=None):
    """``(ids, lengths, labels)``, batch first, padded at the end."""
    rows = [vocab.encode(s.tokens[:max_len]) for s in sentences]
    width = max(len(r) for r in rows)
    ids = torch.tensor([r + [Vocab.PAD] * (width - len(r)) for r in rows])
    return ids, torch.tensor([len(r) for r in rows]), torch.tensor([s.label for s in sentences])


def train_classifier(model, inputs, labels, epochs, batch_size=64, lr=1e-3, lengths=None):
    """Adam on cross-entropy, shuffled mini-batches; returns the model in eval mode. With
    ``lengths`` (padded sentences) a batch is cut to its longest sentence and the model
    is called as ``model(tokens, lengths)``."""
    generator = torch.Generator().manual_seed(0)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    model.train()
    for _ in range(epochs):
        for batch in torch.randperm(len(labels), generator=generator).split(batch_size):
            optimizer.zero_grad()
            F.cross_entropy(forward(model, inputs, lengths, batch), labels[batch]).backward()
            optimizer.step()
    return model.eval()


def forward(model, inputs, lengths, batch):
    if lengths is None:
        return model(inputs[batch])
    return model(inputs[batch, : int(lengths[batch].max())], lengths[batch])


def accuracy(model, inputs, labels, lengths=None):
    """Accuracy in batches of 1,000."""
    with torch.no_grad():
        predictions = [forward(model, inputs, lengths, b).argmax(1) for b in torch.arange(len(labels)).split(1000)]
    return (torch.cat(predictions) == labels).float().mean().item()


def load_digits():
    """scikit-learn's 1,797 8x8 digits (shipped with it), scaled to [0, 1], split at random
    into 1,348 training and 449 test images: ``(x_train, y_train, x_test, y_test)``."""
    digits = sklearn.datasets.load_digits()
    images = torch.tensor(digits.images, dtype=torch.float32).unsqueeze(1) / 16.0
    labels = torch.tensor(digits.target, dtype=torch.long)
    order = torch.randperm(len(labels), generator=torch.Generator().manual_seed(0))
    test, train = order[:449], order[449:]
    return images[train], labels[train], images[test], labels[test]




class LSTMSentiment(nn.Module):
    """Embedding - LSTM - linear on the last real token's state: the CD paper's model."""

    def __init__(self, vocab_size, embed_dim=100, hidden=128, classes=2):
        super().__init__()
        self.embed = nn.Embedding(vocab_size, embed_dim, padding_idx=0)
        self.lstm = nn.LSTM(embed_dim, hidden, batch_first=True)
        self.out = nn.Linear(hidden, classes)

    def forward(self, tokens, lengths=None):
        states, _ = self.lstm(self.embed(tokens))
        if lengths is None:
            return self.out(states[:, -1])
        return self.out(states[torch.arange(tokens.shape[0]), lengths - 1])


def lenet():
    """A LeNet-sized CNN for 28x28 images."""
    return nn.Sequential(
        nn.Conv2d(1, 32, 5), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(32, 64, 5), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(64 * 4 * 4, 128), nn.ReLU(), nn.Linear(128, 10),
    )  # fmt: skip


# %% [markdown]
# ## 1. Text: an LSTM on SST
# Trained on the training sentences and their labelled phrases (a minute or two; the quick
# version uses 2,000 sentences).

# %%
train, test = read_sst("train"), read_sst("test")
vocab = Vocab(train)
if QUICK:
    pick = torch.randperm(len(train), generator=torch.Generator().manual_seed(0))[:2000]
    data = [train[i] for i in pick]
else:
    data = [Sentence(e.tokens[p.start : p.stop], p.label, []) for e in train for p in e.phrases if p.label is not None and p.stop - p.start >= 2]
x, lengths, y = encode(data, vocab)
lstm = train_classifier(LSTMSentiment(len(vocab)), x, y, epochs=1, batch_size=128, lengths=lengths)
test_ids, test_lengths, test_labels = encode(test, vocab)
print(f"LSTM test accuracy: {100 * accuracy(lstm, test_ids, test_labels, test_lengths):.1f}%")

# %% [markdown]
# Before the hierarchy: CD of phrases directly. `token_masks` turns spans into groups;
# all of them go through the LSTM in one batched pass. A negation shows what a group
# score has that a sum of word scores does not: the interaction of "not" and "bad".

# %%

sentence = "the acting is not bad at all".split()
ids = torch.tensor([vocab.encode(sentence)])
cd_text = ContextualDecomposition(lstm, layer=lstm.embed)
spans = [(3, 4), (4, 5), (3, 5), (0, 7)]  # "not", "bad", "not bad", everything
with torch.no_grad():
    rel, _ = cd_text.decompose(ids, token_masks(spans, len(sentence)))
    inter = cd_text.interactions(ids, token_masks([(3, 4)], 7), token_masks([(4, 5)], 7))
for (start, stop), r in zip(spans, rel[:, 0]):
    print(f"  CD of {' '.join(sentence[start:stop])!r:<32} positive - negative = {(r[1] - r[0]).item():+.2f}")
print(f"  interaction of 'not' and 'bad': {(inter[0, 0, 1] - inter[0, 0, 0]).item():+.2f}")

# %% [markdown]
# `AgglomerativeCD(model, layer=model.embed)` decomposes from the embedding (token ids are
# not decomposed). For a binary model the score can be the difference of the two class
# scores, as the original code does. Each level is one batched CD pass.

# %%
acd_text = AgglomerativeCD(lstm, layer=lstm.embed)
sentences = ["the acting is not bad at all , but the plot is a mess", "a gorgeous , witty , seductive movie ."]
for i, sentence in enumerate(sentences):
    tokens = sentence.split()
    ids = torch.tensor([vocab.encode(tokens)])
    label = int(lstm(ids).argmax(1))
    start = time.perf_counter()
    h = acd_text.hierarchy(ids, label, score="difference", tokens=[tokens])
    print(f"'{sentence}': predicted {'positive' if label else 'negative'}, {len(h.levels)} levels in {time.perf_counter() - start:.2f} s")
    for level in h.levels[:4]:
        print("   ", [(" ".join(tokens[u] for u in c.units), round(c.score, 2)) for c in level])
    show(h.plot(), os.path.join(OUT, f"tutorial02_text{i}.png"), dpi=110, bbox_inches="tight")
with open(os.path.join(OUT, "tutorial02_text0.json"), "w") as f:
    json.dump(acd_text.hierarchy(torch.tensor([vocab.encode(sentences[0].split())]), 1).to_dict(), f)

# %% [markdown]
# ## 2. Images: a CNN on digits
# scikit-learn's 8x8 digits, upsampled to 28x28, and a LeNet-sized CNN. Base units are
# 2x2 blocks here (`block_size=1` is pixels; `superpixels=n` uses scikit-image's SLIC).

# %%
x_train, y_train, x_test, y_test = load_digits()
up = lambda images: F.interpolate(images, size=28, mode="bilinear")  # noqa: E731
cnn = train_classifier(lenet(), up(x_train), y_train, epochs=1 if QUICK else 3)
print(f"CNN test accuracy: {100 * accuracy(cnn, up(x_test), y_test):.1f}%")

acd_image = AgglomerativeCD(cnn)
images = up(x_test[:2])
targets = cnn(images).argmax(1)
start = time.perf_counter()
hierarchies = acd_image.hierarchy(images, targets, percentile=95, block_size=2)
print(f"two image hierarchies in {time.perf_counter() - start:.2f} s; levels: {[len(h.levels) for h in hierarchies]}")
for i, h in enumerate(hierarchies):
    show(h.plot(), os.path.join(OUT, f"tutorial02_image{i}.png"), dpi=110, bbox_inches="tight")
superpixel_h = acd_image.hierarchy(images[:1], targets[:1], superpixels=30, percentile=90)
show(superpixel_h.plot(), os.path.join(OUT, "tutorial02_superpixels.png"), dpi=110, bbox_inches="tight")

# %% [markdown]
# ## 3. A level of the hierarchy in Captum's shape
# `attribute` gives every feature the score of its component at a chosen level, shaped
# like the input, so Captum's visualisation and metrics take it as they are.

# %%
attr = acd_image.attribute(images[:1], target=targets[:1], level=3, percentile=95, block_size=2)
figure, _ = visualization.visualize_image_attr(
    attr[0].permute(1, 2, 0).numpy(), images[0].permute(1, 2, 0).numpy(), method="blended_heat_map", sign="all", use_pyplot=False
)
show(figure, os.path.join(OUT, "tutorial02_captum_view.png"))
print("pictures written to", OUT)
